"""The replayer's HTTP and WebSocket server (aiohttp): one port, the Bayeux paths served over
long-polling POSTs and WebSocket upgrades, with the message-type URL suffix accepted.

It is a thin loop around the sans-I/O `BayeuxServer`: requests go in, `data_to_send()` comes
out to the waiting HTTP responses and sockets, and `next_wakeup()` drives one timer.

Limits, so that no client can stall or grow it: a body of at most MAX_BODY bytes (413 over
it; a WebSocket message over it gets a Bayeux 400 error, and one over MAX_WS_MESSAGE, which
aiohttp refuses to read, a close with 1009), read within READ_TIMEOUT_S (408); a
request head within READ_TIMEOUT_S of the connection opening or of the previous response (the
connection is closed); a WebSocket whose client stops reading is closed (1008) once
MAX_SEND_BUFFER bytes wait for it, its session's queue then bounded by the protocol.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Hashable, Mapping
from typing import Any, Protocol

import orjson
from aiohttp import WSCloseCode, WSMsgType, web

from replay.events import (
    ClientDisconnected,
    ClientExpired,
    Event,
    HeldConnect,
    Outbound,
    Reply,
    TransportFaultDue,
)
from replay.longpoll import PollConnection
from replay.protocol import BayeuxServer
from replay.session import rejection
from replay.transport_faults import MAX_STALLED, TransportFaults

DEFAULT_PATHS = ("/api/v2/notifications", "/cometd")
MAX_BODY = 2**20
# Read whole, then refused with an error reply: closing on a message still arriving resets the
# connection (unread data), and the client may never see the close frame's code.
MAX_WS_MESSAGE = 8 * MAX_BODY
READ_TIMEOUT_S = 15.0
MAX_SEND_BUFFER = 4 * 2**20
STOP_S = 0.25  # what stop() gives sockets, then requests, to finish: 0.5 s in all
CLOSE_S = 2.0  # a WebSocket's close handshake, before the connection is cut
Listener = Callable[[Event], None]


# Told of each successful handshake with the HTTP request it came on (the WebSocket upgrade, or
# the long-polling POST), so an application can tie the new clientId to cookies or auth.
class HasCookies(Protocol):
    @property
    def cookies(self) -> Mapping[str, str]: ...


HandshakeHook = Callable[[HasCookies, str], None]


class _Socket:
    """A WebSocket connection. Sends are written at once, in call order, as text frames by
    aiohttp's own framing; the socket is closed when its client stops reading."""

    def __init__(self, ws: web.WebSocketResponse, request: web.Request) -> None:
        self.ws = ws
        self.request = request
        self.closing: asyncio.Task[None] | None = None

    def buffered(self) -> int:
        transport = self.request.transport
        return 0 if transport is None else transport.get_write_buffer_size()

    def send(self, data: bytes) -> bool:
        """Write one text frame; False when it was not (closing, or the client stopped
        reading: then the socket is closed, 1008)."""
        writer = self.ws._writer  # the frame is written synchronously, without a task a send
        if self.closing is not None or self.ws.closed or writer is None:
            return False
        if self.buffered() > MAX_SEND_BUFFER:
            self.close(WSCloseCode.POLICY_VIOLATION, b"client too slow: send buffer full")
            return False
        try:
            writer._write_websocket_frame(data, WSMsgType.TEXT, 0)
        except ConnectionError:  # closing: the read loop ends it
            return False
        return True

    def close(self, code: int = WSCloseCode.GOING_AWAY, message: bytes = b"") -> None:
        if self.closing is None:
            self.closing = asyncio.get_running_loop().create_task(self._close(code, message))

    async def _close(self, code: int, message: bytes) -> None:
        """The close handshake, for CLOSE_S at most: a client that does not read never
        answers, and its unsent bytes must not be held for ever."""
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.ws.close(code=code, message=message), CLOSE_S)
        transport = self.request.transport
        if transport is not None:  # even one closing: a graceful close waits for the buffer
            transport.abort()


class ReplayServer:
    def __init__(
        self,
        protocol: BayeuxServer,
        *,
        paths: tuple[str, ...] = DEFAULT_PATHS,
        listener: Listener | None = None,
        on_handshake: HandshakeHook | None = None,
        read_timeout_s: float = READ_TIMEOUT_S,
    ) -> None:
        self.protocol = protocol
        self.read_timeout_s = read_timeout_s
        self.paths = paths
        self._listener = listener
        self._on_handshake = on_handshake
        self._waiting: dict[Hashable, asyncio.Future[list[dict[str, Any]]]] = {}
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = 0.0
        self._stopping = False
        self._sockets: set[_Socket] = set()
        self.fast_connections: set[PollConnection] = set()
        self._listening: asyncio.Server | None = None
        self._fast = False
        faults = protocol.faults
        self.faults = TransportFaults(self, faults) if faults is not None else None
        self.poll_transports: dict[Hashable, Any] = {}  # aiohttp's held polls, for a fault
        self.app = web.Application(client_max_size=MAX_BODY)
        for path in paths:
            for route in (path, path + "/{suffix:.*}"):
                self.app.router.add_post(route, self._long_poll)
                self.app.router.add_get(route, self._websocket)
        self._runner: web.AppRunner | None = None
        self.port = 0
        self.host = "127.0.0.1"

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self._runner = web.AppRunner(
            self.app,
            handle_signals=False,
            shutdown_timeout=STOP_S,
            keepalive_timeout=self.read_timeout_s,  # aiohttp's idle timer bounds a head's read
            access_log=None,  # a line per long-poll cost ~3% of the CPU; the protocol logs
            handler_cancellation=True,  # a held poll whose client left is freed at once
        )
        await self._runner.setup()
        # Long-polls are served from the socket (replay/longpoll.py) unless a middleware (the
        # simulator's auth) must see every request; everything else goes to aiohttp.
        self._fast = not self.app.middlewares
        aiohttp_server = self._runner.server
        assert aiohttp_server is not None
        loop = asyncio.get_running_loop()
        self._listening = await loop.create_server(
            lambda: PollConnection(self, aiohttp_server), host, port
        )
        self.host, self.port = host, self._listening.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        """Answer held long-polls and close sockets first, so shutdown never waits on them."""
        self._stopping = True
        if self._timer is not None:
            self._timer.cancel()
        if self.faults is not None:
            self.faults.flush_all()  # slow answers: whole frames before the close frames
        for future in self._waiting.values():
            if not future.done():
                future.set_result([])
        for sock in self._sockets:
            sock.close()
        closing = [sock.closing for sock in self._sockets if sock.closing is not None]
        if closing:
            await asyncio.wait(closing, timeout=STOP_S)
        for sock in self._sockets:  # no close frame back in time (a busy client): cut it
            if sock.request.transport is not None:
                sock.request.transport.abort()
        if self._listening is not None:
            self._listening.close()
        await asyncio.sleep(0)  # the held polls' answers are written
        for connection in list(self.fast_connections):
            connection.close()
        if self._runner is not None:
            await self._runner.cleanup()

    def backlog(self, client_id: str) -> int:
        """Messages a client has waiting, counting a WebSocket whose client lags behind as
        full (over 1 MB unsent)."""
        queued = self.protocol.queued(client_id)
        sock = self.protocol.push_connection(client_id)
        if isinstance(sock, _Socket) and sock.buffered() > 2**20:
            return max(queued, 1 << 30)
        return queued

    def pushes_to_socket(self, client_id: str) -> bool:
        return isinstance(self.protocol.push_connection(client_id), _Socket)

    def sizes(self) -> dict[str, int]:
        """What the server holds, for logs and for tests that it is freed."""
        held = {
            "held_polls": len(self._waiting),
            "sockets": len(self._sockets),
            "poll_connections": len(self.fast_connections),
        }
        return self.protocol.sizes() | held

    def url(self, path: str | None = None, scheme: str = "http") -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{scheme}://{host}:{self.port}{path or self.paths[0]}"

    # --- driving the protocol ---------------------------------------------------------------

    def pump(self) -> None:
        """Hand out everything the protocol wants sent, pass on its events, re-arm the timer.
        A stalled server (a fault) sends nothing: it waits in the protocol, bounded there."""
        if self.faults is None or not self.faults.is_stalled():
            for out in self.protocol.data_to_send():
                self._route(out)
        events = self.protocol.events_received()
        if self.faults is not None:
            events = self._transport_faults(events)
        if self._listener is not None:
            for event in events:
                self._listener(event)
        self._arm()

    def _transport_faults(self, events: list[Event]) -> list[Event]:
        assert self.faults is not None
        kept: list[Event] = []
        for event in events:
            if isinstance(event, TransportFaultDue):
                self.faults.apply(event)
                continue
            if isinstance(event, ClientDisconnected | ClientExpired):
                self.faults.forget(event.client_id)
            kept.append(event)
        return kept

    def _route(self, out: Outbound) -> None:
        waiting = self._waiting.pop(out.connection, None)
        if waiting is not None:
            if not waiting.done():
                waiting.set_result(out.messages)
        elif isinstance(out.connection, _Socket) and not self._send(
            out.connection, out.messages, out.client_id
        ):
            # Not sent: the session's messages wait in its (bounded) queue for a reconnect.
            self.protocol.connection_closed(out.connection, time.monotonic())
            if out.completes is None:
                self.protocol.requeue(out.client_id, out.messages)

    def _arm(self) -> None:
        """One timer at the protocol's next wake-up. One armed for earlier stays: it fires, the
        tick finds nothing due, and it is armed again (cheaper than re-arming at every pump)."""
        wake = self.protocol.next_wakeup()
        if self._stopping or wake is None or (self._timer is not None and self._timer_at <= wake):
            return
        if self._timer is not None:
            self._timer.cancel()
        loop = asyncio.get_running_loop()
        self._timer_at = wake
        self._timer = loop.call_later(max(0.0, wake - time.monotonic()), self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        self.protocol.tick(time.monotonic())
        self.pump()

    # --- transports ---------------------------------------------------------------------------

    def is_poll(self, data: bytes) -> bool:
        """Whether a request starting with `data` (its request line at least) is a
        long-polling POST on a Bayeux path, for PollConnection to serve itself."""
        parts = data.split(b"\r\n", 1)[0].split(b" ")
        if not self._fast or len(parts) != 3 or parts[0] != b"POST":
            return False
        path = parts[1].split(b"?", 1)[0].decode("latin-1")
        return any(path == p or path.startswith(p + "/") for p in self.paths)

    def begin_poll(
        self, body: bytes, token: object
    ) -> tuple[Reply, asyncio.Future[list[dict[str, Any]]] | None]:
        """A long-polling POST: its reply, and the future of its answer when it is held."""
        faults = self.faults
        if faults is not None:
            if faults.is_stalled():  # accepted, read, and never answered
                if len(self._waiting) >= MAX_STALLED:
                    return Reply([], status=503), None
                stalled = asyncio.get_running_loop().create_future()
                self._waiting[token] = stalled
                return Reply([], HeldConnect("", token, float("inf"))), stalled
            status = faults.poll_status(body)
            if status:
                return Reply([], status=status), None
        reply = self.protocol.handle(
            body, time.monotonic(), transport="long-polling", connection=token
        )
        future = None
        if reply.hold is not None:
            future = asyncio.get_running_loop().create_future()
            self._waiting[token] = future
        self.pump()
        return reply, future

    def end_poll(self, token: object) -> None:
        """The client of a held poll went away."""
        if self._waiting.pop(token, None) is not None:
            self.protocol.connection_closed(token, time.monotonic())
            self.pump()

    async def _long_poll(self, request: web.Request) -> web.Response:
        body = await read_body(request, self.read_timeout_s)  # chunked bodies too
        token = object()
        reply, held = self.begin_poll(body, token)
        if reply.status:
            return web.Response(status=reply.status, text="injected fault")
        messages = reply.messages
        if held is not None:
            self.poll_transports[token] = request.transport
            try:
                messages = await held
            finally:
                self.poll_transports.pop(token, None)
                self.end_poll(token)
        self.handshaken(request, messages)  # a handshake may share a held connect's answer
        status = 400 if reply.bad_request else 200
        return web.Response(
            body=orjson.dumps(messages), status=status, content_type="application/json"
        )

    async def _websocket(self, request: web.Request) -> web.StreamResponse:
        # A slow fault writes frames itself, so they must not be compressed.
        compress = self.faults is None or not self.faults.slow_asked
        ws = web.WebSocketResponse(
            max_msg_size=MAX_WS_MESSAGE, autoping=True, heartbeat=None, compress=compress
        )
        if not ws.can_prepare(request).ok:
            return web.Response(status=400, text="expected a WebSocket upgrade or a POST")
        while self.faults is not None and self.faults.is_stalled() and not self._stopping:
            await asyncio.sleep(0.1)  # a stalled server does not answer the upgrade either
        if self._stopping:
            return web.Response(status=503, text="the replayer is stopping")
        await ws.prepare(request)
        sock = _Socket(ws, request)
        self._sockets.add(sock)
        try:
            async for frame in ws:
                if frame.type in (WSMsgType.TEXT, WSMsgType.BINARY):
                    self._on_frame(sock, frame.data)
        finally:
            self._sockets.discard(sock)
            self.protocol.connection_closed(sock, time.monotonic())
            self.pump()
        return ws

    def _on_frame(self, sock: _Socket, data: str | bytes) -> None:
        raw = data.encode() if isinstance(data, str) else data
        if len(raw) > MAX_BODY:
            reason = f"a message of {len(raw)} bytes is over the limit of {MAX_BODY}"
            sock.send(orjson.dumps([rejection(None, reason)]))
            return
        if self.faults is not None and self.faults.is_stalled():
            return  # read, never answered
        reply = self.protocol.handle(raw, time.monotonic(), transport="websocket", connection=sock)
        if reply.messages:
            self.handshaken(sock.request, reply.messages)
            self._send(sock, reply.messages)
        self.pump()

    def _send(self, sock: _Socket, messages: list[Any], client_id: str | None = None) -> bool:
        data = orjson.dumps(messages)
        if self.faults is not None:
            over = self.faults.slow_for(messages, client_id)
            transport = sock.request.transport
            if over is not None and transport is not None and sock.closing is None:
                self.faults.dribble_frame(transport, data, over)
                return True
        return sock.send(data)

    def handshaken(self, request: HasCookies, messages: list[dict[str, Any]]) -> None:
        if self._on_handshake is None:
            return
        for message in messages:  # a corrupt fault's message is not a dict
            if not isinstance(message, dict):
                continue
            if message.get("channel") == "/meta/handshake" and message.get("successful"):
                self._on_handshake(request, str(message.get("clientId")))


async def read_body(request: web.Request, timeout: float = READ_TIMEOUT_S) -> bytes:
    """The whole body, within `timeout` (408 after) and MAX_BODY (413, by aiohttp)."""
    if request.content.is_eof():  # it all came with the head: no timer needed
        return await request.read()
    try:
        async with asyncio.timeout(timeout):
            return await request.read()
    except TimeoutError:
        raise web.HTTPRequestTimeout(text="the request body did not arrive in time") from None
