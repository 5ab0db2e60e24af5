"""The replayer's HTTP and WebSocket server (aiohttp): one port, the Bayeux paths served over
long-polling POSTs and WebSocket upgrades, with the message-type URL suffix accepted.

It is a thin loop around the sans-I/O `BayeuxServer`: requests go in, `data_to_send()` comes
out to the waiting HTTP responses and sockets, and `next_wakeup()` drives one timer.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Hashable
from typing import Any

import orjson
from aiohttp import WSMsgType, web

from replay.events import Event, Outbound
from replay.protocol import BayeuxServer

DEFAULT_PATHS = ("/api/v2/notifications", "/cometd")
Listener = Callable[[Event], None]
# Told of each successful handshake with the HTTP request it came on (the WebSocket upgrade, or
# the long-polling POST), so an application can tie the new clientId to cookies or auth.
HandshakeHook = Callable[[web.Request, str], None]


class _Socket:
    """A WebSocket connection: sends go through one queue so their order is kept."""

    def __init__(self, ws: web.WebSocketResponse, request: web.Request) -> None:
        self.ws = ws
        self.request = request
        self.queue: asyncio.Queue[bytes | None] = asyncio.Queue()

    async def run_writer(self) -> None:
        while (data := await self.queue.get()) is not None:
            if self.ws.closed:
                return
            await self.ws.send_str(data.decode())


class ReplayServer:
    def __init__(
        self,
        protocol: BayeuxServer,
        *,
        paths: tuple[str, ...] = DEFAULT_PATHS,
        listener: Listener | None = None,
        on_handshake: HandshakeHook | None = None,
    ) -> None:
        self.protocol = protocol
        self.paths = paths
        self._listener = listener
        self._on_handshake = on_handshake
        self._waiting: dict[Hashable, asyncio.Future[list[dict[str, Any]]]] = {}
        self._timer: asyncio.TimerHandle | None = None
        self._sockets: set[_Socket] = set()
        self.app = web.Application(client_max_size=64 * 2**20)
        for path in paths:
            for route in (path, path + "/{suffix:.*}"):
                self.app.router.add_post(route, self._long_poll)
                self.app.router.add_get(route, self._websocket)
        self._runner: web.AppRunner | None = None
        self.port = 0
        self.host = "127.0.0.1"

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self._runner = web.AppRunner(self.app, handle_signals=False, shutdown_timeout=2.0)
        await self._runner.setup()
        site = web.TCPSite(self._runner, host, port)
        await site.start()
        server = site._server
        assert server is not None
        self.host, self.port = host, server.sockets[0].getsockname()[1]  # type: ignore[attr-defined]

    async def stop(self) -> None:
        """Answer held long-polls and close sockets first, so shutdown never waits on them."""
        if self._timer is not None:
            self._timer.cancel()
        for future in self._waiting.values():
            if not future.done():
                future.set_result([])
        for sock in list(self._sockets):
            await sock.ws.close()
        if self._runner is not None:
            await self._runner.cleanup()

    def url(self, path: str | None = None, scheme: str = "http") -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{scheme}://{host}:{self.port}{path or self.paths[0]}"

    # --- driving the protocol ---------------------------------------------------------------

    def pump(self) -> None:
        """Hand out everything the protocol wants sent, pass on its events, re-arm the timer."""
        for out in self.protocol.data_to_send():
            self._route(out)
        if self._listener is not None:
            for event in self.protocol.events_received():
                self._listener(event)
        else:
            self.protocol.events_received()
        self._arm()

    def _route(self, out: Outbound) -> None:
        waiting = self._waiting.pop(out.connection, None)
        if waiting is not None:
            if not waiting.done():
                waiting.set_result(out.messages)
        elif isinstance(out.connection, _Socket):
            out.connection.queue.put_nowait(orjson.dumps(out.messages))

    def _arm(self) -> None:
        wake = self.protocol.next_wakeup()
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if wake is not None:
            loop = asyncio.get_running_loop()
            self._timer = loop.call_later(max(0.0, wake - time.monotonic()), self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        self.protocol.tick(time.monotonic())
        self.pump()

    # --- transports ---------------------------------------------------------------------------

    async def _long_poll(self, request: web.Request) -> web.Response:
        body = await request.read()  # chunked bodies with no Content-Length too
        token = object()
        reply = self.protocol.handle(
            body, time.monotonic(), transport="long-polling", connection=token
        )
        messages = reply.messages
        self._handshaken(request, messages)
        if reply.hold is not None:
            future: asyncio.Future[list[dict[str, Any]]] = (
                asyncio.get_running_loop().create_future()
            )
            self._waiting[token] = future
            self.pump()
            try:
                messages = await future
            finally:
                if self._waiting.pop(token, None) is not None:  # the client went away
                    self.protocol.connection_closed(token, time.monotonic())
                    self.pump()
        else:
            self.pump()
        status = 400 if reply.bad_request else 200
        return web.Response(
            body=orjson.dumps(messages), status=status, content_type="application/json"
        )

    async def _websocket(self, request: web.Request) -> web.StreamResponse:
        ws = web.WebSocketResponse(max_msg_size=64 * 2**20, autoping=True, heartbeat=None)
        if not ws.can_prepare(request).ok:
            return web.Response(status=400, text="expected a WebSocket upgrade or a POST")
        await ws.prepare(request)
        sock = _Socket(ws, request)
        self._sockets.add(sock)
        writer = asyncio.get_running_loop().create_task(sock.run_writer())
        try:
            async for frame in ws:
                if frame.type in (WSMsgType.TEXT, WSMsgType.BINARY):
                    self._on_frame(sock, frame.data)
        finally:
            self._sockets.discard(sock)
            self.protocol.connection_closed(sock, time.monotonic())
            self.pump()
            sock.queue.put_nowait(None)
            with contextlib.suppress(Exception):
                await writer
        return ws

    def _on_frame(self, sock: _Socket, data: str | bytes) -> None:
        raw = data.encode() if isinstance(data, str) else data
        reply = self.protocol.handle(raw, time.monotonic(), transport="websocket", connection=sock)
        if reply.messages:
            self._handshaken(sock.request, reply.messages)
            sock.queue.put_nowait(orjson.dumps(reply.messages))
        self.pump()

    def _handshaken(self, request: web.Request, messages: list[dict[str, Any]]) -> None:
        if self._on_handshake is None:
            return
        for message in messages:
            if message.get("channel") == "/meta/handshake" and message.get("successful"):
                self._on_handshake(request, str(message.get("clientId")))
