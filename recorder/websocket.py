"""WebSocket transport (websockets): each batch is one text frame; frames arrive on one socket.

Compression is off: permessage-deflate cut throughput 3-4x here (DESIGN.md). A ping every 20 s
keeps idle connections alive through proxies. Every frame is logged before it is decoded.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Collection

import orjson
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidURI

from recorder.auth import Credentials
from recorder.events import Outgoing
from recorder.wire import log_received
from tape.bayeux import Message
from tape.session import SessionLog

Deliver = Callable[[list[Message]], None]
Fail = Callable[[str, int | None, Collection[str] | None], None]

MAX_FRAME = 64 * 2**20  # a 5 MB frame must be recorded, not refused (the default is 1 MiB)


def ws_url(url: str) -> str:
    if url.startswith("http"):
        return "ws" + url[len("http") :]
    return url


class WebSocketTransport:
    name = "websocket"

    def __init__(
        self, url: str, log: SessionLog, deliver: Deliver, fail: Fail, *, credentials: Credentials
    ) -> None:
        self.url = ws_url(url)
        self._log, self._deliver, self._fail = log, deliver, fail
        self._credentials = credentials
        self._outbox: asyncio.Queue[Outgoing] = asyncio.Queue()
        self._ws: ClientConnection | None = None
        self._task: asyncio.Task[None] | None = None
        self.bytes_in = 0

    async def open(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        if self._ws is not None:
            await self._ws.close()

    def send(self, batch: Outgoing) -> None:
        self._outbox.put_nowait(batch)

    def reset(self) -> None:
        """Drop the socket (a server that stopped answering connects on it); the next batch
        opens a new one."""
        ws = self._ws
        if ws is not None:
            ws.transport.abort()  # at once: a closing handshake would wait on the stuck server

    def _headers(self) -> dict[str, str]:
        headers = dict(self._credentials.headers)
        if self._credentials.cookies:
            headers["Cookie"] = "; ".join(f"{k}={v}" for k, v in self._credentials.cookies.items())
        return {**self._credentials.authorization(), **headers}

    async def _run(self) -> None:
        """Connect when there is something to send; after a loss, wait for the next batch."""
        while True:
            first = await self._outbox.get()
            try:
                async with connect(
                    self.url,
                    additional_headers=self._headers(),
                    compression=None,
                    max_size=MAX_FRAME,
                    ping_interval=20,
                    open_timeout=10,
                ) as ws:
                    self._ws = ws
                    await self._session(ws, first)
            except (OSError, TimeoutError, InvalidHandshake, InvalidURI) as exc:
                self._drop_outbox()
                self._fail(
                    f"cannot open {self.url}: {exc or type(exc).__name__}", _status(exc), None
                )
            except (ConnectionClosed, _SocketGoneError) as exc:
                self._drop_outbox()
                self._fail(f"websocket closed: {exc or 'by the server'}", None, None)
            finally:
                self._ws = None

    async def _session(self, ws: ClientConnection, first: Outgoing) -> None:
        reader = asyncio.get_running_loop().create_task(self._read(ws))
        try:
            await self._write(ws, first)
            while True:
                await self._write(ws, await self._outbox.get())
        finally:
            reader.cancel()
            await asyncio.gather(reader, return_exceptions=True)

    async def _write(self, ws: ClientConnection, batch: Outgoing) -> None:
        if batch is _CLOSED:
            raise _SocketGoneError(f"closed with code {ws.close_code}")
        raw = orjson.dumps(list(batch.messages))
        self._log.append("out", raw, transport=self.name, checked=True)
        await ws.send(raw.decode())

    async def _read(self, ws: ClientConnection) -> None:
        try:
            async for frame in ws:
                self._on_frame(frame)
        except ConnectionClosed:
            pass
        # The reader ends when the socket does; wake the writer so the loss is reported.
        self._outbox.put_nowait(_CLOSED)

    def _on_frame(self, frame: str | bytes) -> None:
        if isinstance(frame, bytes):
            self.bytes_in += len(frame)
            log_received(self._log, frame, self.name, error="binary WebSocket frame")
            return
        raw = frame.encode()
        self.bytes_in += len(raw)
        messages = log_received(self._log, raw, self.name)
        if messages:
            self._deliver(messages)

    def _drop_outbox(self) -> None:
        while not self._outbox.empty():
            self._outbox.get_nowait()


class _SocketGoneError(Exception):
    pass


# Put in the outbox by the reader when the socket ends, so the writer stops and reports it.
_CLOSED = Outgoing("disconnect", ())


def _status(exc: BaseException) -> int | None:
    status = getattr(getattr(exc, "response", None), "status_code", None)
    return status if isinstance(status, int) else None
