"""WebSocket transport: each batch is one text frame; frames arrive on one socket.

The socket is our own small RFC 6455 client (recorder/wsclient.py): received frames go from
`data_received` straight to the tape and the protocol, ~10 us a frame less than the websockets
library, which was the largest share of the recorder's time per message. Compression is off:
permessage-deflate cut throughput 3-4x here (DESIGN.md). A ping every 20 s keeps idle
connections alive through proxies, and a missing pong drops the connection. Every frame is
logged before it is decoded.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Collection

import orjson

from recorder.auth import Credentials
from recorder.events import Outgoing
from recorder.wire import log_received
from recorder.wsclient import HandshakeError, WsConnection, connect
from recorder.wsframes import BINARY
from tape.bayeux import Message
from tape.schema import TapeError
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
        self._ws: WsConnection | None = None
        self._task: asyncio.Task[None] | None = None
        self._lost_reason = ""
        self._received: list[Message] = []
        self._closing = False
        self.bytes_in = 0

    async def open(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def close(self) -> None:
        """Stop, with a closing handshake on a live socket."""
        ws = self._ws
        self._closing = True  # the task's cancellation must not abort the socket first
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        if ws is not None:
            await ws.close()

    def send(self, batch: Outgoing) -> None:
        self._outbox.put_nowait(batch)

    def reset(self) -> None:
        """Drop the socket (a server that stopped answering connects on it); the next batch
        opens a new one."""
        ws = self._ws
        if ws is not None:
            ws.abort()  # at once: a closing handshake would wait on the stuck server

    def _headers(self) -> dict[str, str]:
        headers = dict(self._credentials.headers)
        if self._credentials.cookies:
            headers["Cookie"] = "; ".join(f"{k}={v}" for k, v in self._credentials.cookies.items())
        return {**self._credentials.authorization(), **headers}

    async def _run(self) -> None:
        """Connect when there is something to send; after a loss, wait for the next batch."""
        while True:
            first = await self._outbox.get()
            if first is _CLOSED:  # the end of a socket already reported
                continue
            try:
                ws = await connect(
                    self.url,
                    self._on_frame,
                    self._on_lost,
                    on_read=self._on_read,
                    headers=self._headers(),
                    max_size=MAX_FRAME,
                    open_timeout=10,
                    ping_interval=20,
                    ping_timeout=20,
                )
            except (OSError, TimeoutError, HandshakeError, ValueError) as exc:
                # ValueError: a URL or header the request cannot carry (UnicodeError is one)
                self._drop_outbox()
                status = exc.status if isinstance(exc, HandshakeError) else None
                reason = str(exc) or type(exc).__name__
                self._fail(f"cannot open {self.url}: {reason}", status, None)
                continue
            self._ws = ws
            try:
                await self._session(ws, first)
            except _SocketGoneError as exc:
                self._drop_outbox()
                self._fail(f"websocket closed: {exc or 'by the server'}", None, None)
            finally:
                self._ws = None
                if not self._closing:
                    ws.abort()

    async def _session(self, ws: WsConnection, first: Outgoing) -> None:
        self._write(ws, first)
        while True:
            self._write(ws, await self._outbox.get())

    def _write(self, ws: WsConnection, batch: Outgoing) -> None:
        if batch is _CLOSED:
            raise _SocketGoneError(self._lost_reason)
        raw = orjson.dumps(list(batch.messages))
        self._log.append("out", raw, transport=self.name, checked=True)
        ws.send_text(raw)

    def _on_lost(self, reason: str) -> None:
        """The socket ended: wake the writer so the loss is reported."""
        self._lost_reason = reason
        self._outbox.put_nowait(_CLOSED)

    def _on_frame(self, opcode: int, raw: bytes) -> None:
        """Log each frame as it is parsed; its messages go to the protocol after the read."""
        self.bytes_in += len(raw)
        try:
            if opcode == BINARY:
                log_received(self._log, raw, self.name, error="binary WebSocket frame")
                return
            self._received += log_received(self._log, raw, self.name)
        except TapeError:  # the tape is done for: see _on_read
            return

    def _on_read(self) -> None:
        """Hand the protocol every message of one socket read at once, in order, with its
        per-call cost paid once per read: a 64 kB read holds ~100 of Faye's one-message frames,
        and this was ~15% of the time. The lifecycle frames the recorder writes on a reply
        ("connected", "gap") then follow the read's last frame rather than the reply's own."""
        try:
            self._log.release()  # the read's frames, to the tape together
        except TapeError:
            # The tape can take no more frames: the recorder's loop stops on it (log.check)
            # and says why, once. Raised here, it would fail the socket with a traceback.
            self._received = []
            return
        if self._received:
            messages, self._received = self._received, []
            try:
                self._deliver(messages)  # may write lifecycle frames ("connected", "gap")
            except TapeError:
                return

    def _drop_outbox(self) -> None:
        while not self._outbox.empty():
            self._outbox.get_nowait()


class _SocketGoneError(Exception):
    pass


# Put in the outbox by the reader when the socket ends, so the writer stops and reports it.
_CLOSED = Outgoing("disconnect", ())
