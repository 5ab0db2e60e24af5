"""WebSocket transport: each batch is one text frame; frames arrive on one socket.

The socket is the `websockets` library's asyncio client: its opening handshake, TLS, HTTP
CONNECT proxies (HTTPS_PROXY/NO_PROXY, or `--proxy`), redirects, keepalive, pongs and closing
handshake. Only the reading of received frames is ours (`_Connection`, with the capture proxy's
reader, recorder/wsframes.py): each data frame goes straight to the tape as bytes, and the
frames of one socket read are handed to the protocol together. Compression is off:
permessage-deflate cut throughput 3-4x here. A ping every 20 s keeps idle
connections alive through proxies, and a missing pong drops the connection.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Callable, Collection
from typing import Any, cast

import orjson
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus, WebSocketException
from websockets.frames import Frame, Opcode
from websockets.protocol import State

from recorder.auth import Credentials, Handover
from recorder.events import Outgoing
from recorder.net import NetOptions, describe_error
from recorder.wire import log_received
from recorder.wsframes import CLOSE, TEXT, FrameError, WsReader
from tape.bayeux import Message
from tape.schema import TapeError
from tape.session import SessionLog

Deliver = Callable[[list[Message]], None]
Fail = Callable[[str, int | None, Collection[str] | None], None]

MAX_FRAME = 64 * 2**20  # a 5 MB frame must be recorded, not refused (the default is 1 MiB)
OPEN_TIMEOUT_S = 10.0
PING_INTERVAL_S = 20.0
PING_TIMEOUT_S = 20.0
CLOSE_TIMEOUT_S = 2.0


def ws_url(url: str) -> str:
    if url.startswith("http"):
        return "ws" + url[len("http") :]
    return url


class UpgradeError(Exception):
    """The WebSocket could not be opened; `status` is the server's HTTP status, if any."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


OnFrame = Callable[[int, bytes], None]  # (TEXT or BINARY, payload), as WsReader calls it


class _Connection(ClientConnection):
    """websockets' client connection, whose received frames, once the handshake is done, are
    read by recorder/wsframes.py (as the capture proxy reads them) rather than by the library.

    The library's frame parser costs ~2.5 us of CPU a frame here (a generator per frame, an
    enum, a dataclass, then a queue and `recv()`), ours ~0.4 us: at the recorder's ~6 us a
    message, that decides whether it keeps up with a fast server (benchmarks/record.py). So
    data frames go to `on_frame` as bytes straight from the read (no UTF-8 decoding: a text
    frame that is not UTF-8 is stored as it came, with a parse error), `on_read` follows each
    read, and every control frame is handed back to the library, whole, to act on: it answers
    pings, matches pongs to its keepalive pings, and runs the closing handshake. Everything
    before the first frame (proxy, TLS, the upgrade and its checks, redirects) is the
    library's. A frame RFC 6455 forbids fails the connection with the code that says why.
    """

    def __init__(
        self,
        *args: Any,
        on_frame: OnFrame,
        on_read: Callable[[], None],
        on_lost: Callable[[str], None],
        max_size: int,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        self._on_frame, self._on_read, self._on_lost = on_frame, on_read, on_lost
        self._max_size = max_size
        self._frames: WsReader | None = None  # from the first byte after the 101 response
        self._tail = b""  # the end of what the library read of the response head so far
        self._frame_error: str | None = None
        self.lost_exc: Exception | None = None
        self._upgraded = False  # on_lost is called once the upgrade succeeded, not before

    def data_received(self, data: bytes) -> None:
        frames = self._frames
        if frames is not None:
            try:
                frames.feed(data)
            except FrameError as exc:
                self._fail_frames(exc)
            self._on_read()
            return
        if self.response is None:
            seen = self._tail + data
            end = seen.find(b"\r\n\r\n")
            if end < 0:
                self._tail = seen[-3:]
            else:  # the library reads the head, and no further
                cut = end + 4 - len(self._tail)
                super().data_received(data[:cut])
                if self.protocol.state is State.OPEN:
                    self._upgraded = True
                    self._frames = WsReader(
                        self._on_frame,  # straight to the transport: one call a frame
                        max_size=self._max_size,
                        on_control=self._control,
                        strict=True,
                    )
                    if len(data) > cut:
                        self.data_received(data[cut:])
                    return
                data = data[cut:]  # a refusal's body: the library's
                if not data:
                    return
        super().data_received(data)  # before the head ends, or after a close: the library's

    def process_event(self, event: Any) -> None:
        if self.response is None:  # the handshake response
            super().process_event(event)
        elif cast(Frame, event).opcode is Opcode.PONG:
            self.acknowledge_pings(bytes(cast(Frame, event).data))

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost_exc = exc  # a TLS alert during the upgrade is only seen here
        super().connection_lost(exc)
        if self._upgraded:
            self._frames = None
            self._on_lost(self._why_lost(exc))

    def _control(self, opcode: int, payload: bytes) -> None:
        """A ping, pong or close, whole: the library acts on it as if it had read it."""
        super().data_received(Frame(Opcode(opcode), payload).serialize(mask=False))
        if opcode == CLOSE:
            # The library has echoed it. It would then wait for the server to drop the TCP
            # connection, and only a send would time that wait out: drop it now, with the echo
            # written first, so a loss is noticed (and a reconnect started) at once.
            self._frames = None  # what follows a close is not read (RFC 6455 1.4)
            self.transport.close()

    def _fail_frames(self, exc: FrameError) -> None:
        self._frames, self._frame_error = None, str(exc)
        self.protocol.fail(exc.code, str(exc)[:123])  # a close frame's reason: <= 123 bytes
        self.send_data()
        self.transport.close()  # the close frame written first

    def _why_lost(self, exc: Exception | None) -> str:
        protocol = self.protocol
        if self._frame_error is not None:
            return f"not a WebSocket stream: {self._frame_error}"
        if protocol.close_rcvd is not None:
            return f"closed with code {protocol.close_rcvd.code}"
        sent = protocol.close_sent
        if sent is not None and sent.reason == "keepalive ping timeout":
            return f"no pong within {self.ping_timeout:g} s (keepalive)"
        return str(exc) if exc else "the connection was closed"


class WebSocketTransport:
    name = "websocket"

    def __init__(
        self,
        url: str,
        log: SessionLog,
        deliver: Deliver,
        fail: Fail,
        *,
        credentials: Credentials,
        net: NetOptions | None = None,
        ping_interval: float = PING_INTERVAL_S,
        ping_timeout: float = PING_TIMEOUT_S,
        open_timeout: float = OPEN_TIMEOUT_S,
    ) -> None:
        self.url_given, self.url = url, ws_url(url)
        self._log, self._deliver, self._fail = log, deliver, fail
        self._credentials = credentials
        self._net = net or NetOptions()
        self._ssl: ssl.SSLContext | None = None
        self._ping = (ping_interval, ping_timeout)
        self._open_timeout = open_timeout
        self._outbox: asyncio.Queue[Outgoing] = asyncio.Queue()
        self._ws: _Connection | None = None
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

    async def login(self, login_url: str) -> None:
        """GET the login URL over a long-polling HTTP session of its own (its frames go to the
        same log), then carry its cookies and CSRF pair to the upgrade; raises LoginError."""
        from recorder.long_polling import LongPollingTransport  # aiohttp: only when logging in

        http = LongPollingTransport(
            self.url_given,
            self._log,
            lambda messages: None,  # it sends no batch
            lambda reason, status, ids: None,
            credentials=self._credentials,
            net=self._net,
        )
        await http.open()
        try:
            await http.login(login_url)
        finally:
            await http.close()
        self._credentials = self._credentials.carrying(http.handover())

    def handover(self) -> Handover:
        """The cookies and headers this socket carries (a session handed on from it keeps them)."""
        return Handover(dict(self._credentials.cookies), dict(self._credentials.headers))

    def reset(self) -> None:
        """Drop the socket (a server that stopped answering connects on it); the next batch
        opens a new one."""
        ws = self._ws
        if ws is not None:
            ws.transport.abort()  # at once: a closing handshake would wait on the stuck server

    async def upgrade(self) -> None:
        """Open the socket now (transport negotiation); raises UpgradeError."""
        self._ws = await self._connect()

    def _headers(self) -> dict[str, str]:
        headers = dict(self._credentials.headers)
        if self._credentials.cookies:
            headers["Cookie"] = "; ".join(f"{k}={v}" for k, v in self._credentials.cookies.items())
        return {**self._credentials.authorization(), **headers}

    def _ssl_context(self) -> ssl.SSLContext | None:
        if not self.url.startswith("wss:"):
            return None  # websockets refuses an ssl argument for ws://
        if self._ssl is None:
            self._ssl = self._net.ssl_context()
        return self._ssl

    async def _connect(self) -> _Connection:
        """A new socket, through the proxy if any; raises UpgradeError."""
        proxy = self._net.proxy
        made: list[_Connection] = []

        def factory(*args: Any, **kwargs: Any) -> _Connection:
            conn = _Connection(
                *args,
                on_frame=self._on_frame,
                on_read=self._on_read,
                on_lost=self._on_lost,
                max_size=MAX_FRAME,
                **kwargs,
            )
            made.append(conn)
            return conn

        try:
            ws = await connect(
                self.url,
                additional_headers=self._headers(),
                compression=None,
                max_size=MAX_FRAME,
                open_timeout=self._open_timeout,
                ping_interval=self._ping[0],
                ping_timeout=self._ping[1],
                close_timeout=CLOSE_TIMEOUT_S,
                proxy=True if proxy is None else (proxy or None),  # True: from the environment
                ssl=self._ssl_context(),
                create_connection=cast(type[ClientConnection], factory),
            )
        except InvalidStatus as exc:
            status = exc.response.status_code
            raise UpgradeError(
                f"server rejected WebSocket connection: HTTP {status}", status
            ) from exc
        except (OSError, TimeoutError, WebSocketException, ValueError, ImportError) as exc:
            # ImportError: websockets needs python-socks for a SOCKS proxy (from SOCKS_PROXY)
            # ValueError: a URL or header the request cannot carry (UnicodeError is one)
            lost = made[-1].lost_exc if made else None
            if lost is not None and describe_error(lost) != describe_error(exc):
                raise UpgradeError(f"{describe_error(exc)} ({describe_error(lost)})") from exc
            raise UpgradeError(describe_error(exc)) from exc
        return cast(_Connection, ws)

    async def _run(self) -> None:
        """Connect when there is something to send; after a loss, wait for the next batch."""
        while True:
            first = await self._outbox.get()
            if first is _CLOSED:  # the end of a socket already reported, or never used
                continue
            ws = self._ws
            if ws is None or ws.state is not State.OPEN:
                try:
                    ws = self._ws = await self._connect()
                except UpgradeError as exc:
                    self._drop_outbox()
                    self._fail(f"cannot open {self.url}: {exc}", exc.status, None)
                    continue
            try:
                await self._session(ws, first)
            except _SocketGoneError as exc:
                self._drop_outbox()
                self._fail(f"websocket closed: {exc or 'by the server'}", None, None)
            finally:
                self._ws = None
                if not self._closing:
                    ws.transport.abort()

    async def _session(self, ws: _Connection, first: Outgoing) -> None:
        await self._write(ws, first)
        while True:
            await self._write(ws, await self._outbox.get())

    async def _write(self, ws: _Connection, batch: Outgoing) -> None:
        if batch is _CLOSED:
            raise _SocketGoneError(self._lost_reason)
        raw = orjson.dumps(list(batch.messages))
        self._log.append("out", raw, transport=self.name, checked=True)
        try:
            await ws.send(raw, text=True)
        except ConnectionClosed as exc:
            raise _SocketGoneError(self._lost_reason or str(exc)) from exc

    def _on_lost(self, reason: str) -> None:
        """The socket ended: wake the writer so the loss is reported."""
        self._lost_reason = reason
        self._outbox.put_nowait(_CLOSED)

    def _on_frame(self, opcode: int, raw: bytes) -> None:
        """Log each frame as it is parsed; its messages go to the protocol after the read."""
        self.bytes_in += len(raw)
        try:
            if opcode != TEXT:
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
