"""A small WebSocket client (RFC 6455) on an asyncio Protocol, for the recorder's hot path.

Frames are parsed by the same sans-I/O reader as the capture proxy's (recorder/wsframes.py) and
handed to the caller's callback straight from `data_received`: no queue, no future, no task per
frame, and text frames stay bytes (they are stored as bytes, and orjson reads bytes). Measured
here receiving ~500-byte frames: websockets 12.9 us of CPU a frame, aiohttp 9.1 us, this ~3 us,
which is most of what the recorder spent per message outside the codec and the tape.

It does what a recorder needs and no more: the opening handshake (with extra headers), masked
text frames out, pings every `ping_interval` seconds with the connection dropped when no pong
comes within `ping_timeout`, pongs for the server's pings, and the closing handshake. No
extensions are negotiated (compression is off: DESIGN.md).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import os
import re
import ssl
import time
from collections.abc import Callable, Mapping
from typing import cast
from urllib.parse import quote, urlsplit

from recorder.wsframes import BINARY, CLOSE, PING, PONG, TEXT, FrameError, WsReader, mask_frame

_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
_SAFE = "/%:@!$&'()*+,;=-._~"  # RFC 3986 pchar, and "%" so an encoded URL stays as it is
MAX_HEAD = 64 * 1024  # an HTTP response head longer than this is not a WebSocket upgrade
_STATUS = re.compile(r"[0-9]{3}")

OnMessage = Callable[[int, bytes], None]  # (TEXT or BINARY, payload)
OnLost = Callable[[str], None]  # why the connection ended; called once


class HandshakeError(Exception):
    """The server did not upgrade to WebSocket; `status` is its HTTP status, if it sent one."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


def accept_key(key: bytes) -> bytes:
    return base64.b64encode(hashlib.sha1(key + _GUID).digest())


class WsConnection(asyncio.Protocol):
    """One client connection. Create it with `connect()`."""

    def __init__(
        self,
        on_message: OnMessage,
        on_lost: OnLost,
        *,
        key: bytes,
        max_size: int,
        on_read: Callable[[], None] | None = None,
    ) -> None:
        self._on_message, self._on_lost, self._on_read = on_message, on_lost, on_read
        self._key = key
        self._head = bytearray()
        self._opened: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._reader = WsReader(
            self._message, max_size=max_size, on_control=self._control, strict=True
        )
        self._transport: asyncio.Transport | None = None
        self._upgraded = False
        self._lost = False
        self._close_sent = False
        self._awaiting_pong = False
        self._keepalive: asyncio.Task[None] | None = None
        self.close_code: int | None = None

    # --- asyncio.Protocol -------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass

    def data_received(self, data: bytes) -> None:
        if self._upgraded:
            try:
                self._reader.feed(data)
            except FrameError as exc:
                self._fail(f"not a WebSocket stream: {exc}", code=exc.code)
            finally:
                if self._on_read is not None:
                    self._on_read()
            return
        self._head += data
        end = self._head.find(b"\r\n\r\n")
        if end < 0:
            if len(self._head) > MAX_HEAD:
                self._refuse(HandshakeError("the server's HTTP response head is too long"))
            return
        head, rest = bytes(self._head[:end]), bytes(self._head[end + 4 :])
        self._head = bytearray()
        problem = self._check_upgrade(head)
        if problem is not None:
            self._refuse(problem)
            return
        self._upgraded = True
        if not self._opened.done():
            self._opened.set_result(None)
        if rest:
            self.data_received(rest)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self._opened.done():
            self._opened.set_exception(
                HandshakeError(f"the server closed the connection during the handshake ({exc})")
                if exc
                else HandshakeError("the server closed the connection during the handshake")
            )
        if self._keepalive is not None:
            self._keepalive.cancel()
        if self._upgraded and not self._lost:
            self._lost = True
            if self.close_code is not None:
                self._on_lost(f"closed with code {self.close_code}")
            else:
                self._on_lost(str(exc) if exc else "the connection was closed")

    # --- use --------------------------------------------------------------------------------

    def send_text(self, payload: bytes) -> None:
        if not self._close_sent:  # nothing may follow our close frame
            self._send(TEXT, payload)

    async def close(self, timeout: float = 2.0) -> None:
        """Closing handshake: send a close frame, wait briefly for the server's, then drop."""
        transport = self._transport
        if transport is None or transport.is_closing():
            return
        if not self._close_sent:
            self._close_sent = True
            self._send(CLOSE, (1000).to_bytes(2, "big"))
        deadline = time.monotonic() + timeout
        while not transport.is_closing() and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        transport.abort()

    def abort(self) -> None:
        if self._transport is not None:
            self._transport.abort()

    def start_keepalive(self, interval: float, timeout: float) -> None:
        transport = self._transport
        if self._lost or transport is None or transport.is_closing():
            return  # it ended already (a close in the same read as the 101 response)
        self._keepalive = asyncio.get_running_loop().create_task(self._ping(interval, timeout))

    # --- internals --------------------------------------------------------------------------

    def _check_upgrade(self, head: bytes) -> HandshakeError | None:
        lines = head.decode("latin-1").split("\r\n")
        parts = lines[0].split(" ", 2)
        if len(parts) < 2 or not parts[0].startswith("HTTP/") or not _STATUS.fullmatch(parts[1]):
            return HandshakeError(f"not an HTTP response: {lines[0][:80]!r}")
        status = int(parts[1])
        if status != 101:
            return HandshakeError(
                f"server rejected WebSocket connection: HTTP {status}", status=status
            )
        headers: dict[str, str] = {}
        name = ""
        for line in lines[1:]:
            if line[:1] in (" ", "\t") and name:  # an obsolete folded continuation
                headers[name] += " " + line.strip()
                continue
            name, _, value = line.partition(":")
            name, value = name.strip().lower(), value.strip()
            headers[name] = f"{headers[name]}, {value}" if name in headers else value
        connection = {token.strip().lower() for token in headers.get("connection", "").split(",")}
        if headers.get("upgrade", "").lower() != "websocket" or "upgrade" not in connection:
            return HandshakeError("the server's 101 response does not upgrade to websocket")
        if headers.get("sec-websocket-protocol"):
            return HandshakeError("the server chose a subprotocol that was not offered")
        if headers.get("sec-websocket-accept", "").encode() != accept_key(self._key):
            return HandshakeError("the server's Sec-WebSocket-Accept does not match the key")
        if headers.get("sec-websocket-extensions", "").strip(", "):
            return HandshakeError("the server negotiated an extension that was not offered")
        return None

    def _refuse(self, error: HandshakeError) -> None:
        if not self._opened.done():
            self._opened.set_exception(error)
        if self._transport is not None:
            self._transport.abort()

    def _message(self, opcode: int, payload: bytes) -> None:
        if opcode in (TEXT, BINARY):
            self._on_message(opcode, payload)

    def _control(self, opcode: int, payload: bytes) -> None:
        if opcode == PING:
            self._send(PONG, payload)
        elif opcode == PONG:
            self._awaiting_pong = False
        elif opcode == CLOSE:
            self._closed_by_peer(payload)

    def _closed_by_peer(self, payload: bytes) -> None:
        self.close_code = int.from_bytes(payload[:2], "big") if len(payload) >= 2 else 1005
        if not self._close_sent:  # echo it, as RFC 6455 5.5.1 asks, then let the server close
            self._close_sent = True
            # 1005, 1006 and 1015 stand for "no code" and must never be sent
            self._send(CLOSE, b"" if self.close_code in (1005, 1006, 1015) else payload[:2])
        if self._transport is not None:
            self._transport.close()

    def _fail(self, reason: str, *, code: int) -> None:
        if not self._lost:
            self._lost = True
            self._on_lost(reason)
        if not self._close_sent:
            self._close_sent = True
            self._send(CLOSE, code.to_bytes(2, "big"))
        if self._transport is not None:
            self._transport.abort()

    def _send(self, opcode: int, payload: bytes) -> None:
        transport = self._transport
        if transport is not None and not transport.is_closing():
            transport.write(mask_frame(opcode, payload, os.urandom(4)))

    async def _ping(self, interval: float, timeout: float) -> None:
        while True:
            await asyncio.sleep(interval)
            self._awaiting_pong = True
            self._send(PING, os.urandom(4))
            await asyncio.sleep(timeout)
            if self._awaiting_pong:
                self._fail(f"no pong within {timeout:g} s (keepalive)", code=1011)
                return


async def connect(
    url: str,
    on_message: OnMessage,
    on_lost: OnLost,
    *,
    on_read: Callable[[], None] | None = None,
    headers: Mapping[str, str] = {},
    max_size: int = 64 * 2**20,
    open_timeout: float = 10.0,
    ping_interval: float = 20.0,
    ping_timeout: float = 20.0,
) -> WsConnection:
    """Open a ws:// or wss:// connection; raises HandshakeError, OSError or TimeoutError.

    `on_message(opcode, payload)` is called for every text or binary message, and `on_read()`
    after each read from the socket has been parsed (which may hold many messages)."""
    parts = urlsplit(url)
    if parts.scheme not in ("ws", "wss") or not parts.hostname:
        raise HandshakeError(f"not a ws:// or wss:// URL: {url}")
    secure = parts.scheme == "wss"
    port = parts.port or (443 if secure else 80)
    key = base64.b64encode(os.urandom(16))
    loop = asyncio.get_running_loop()

    def factory() -> WsConnection:
        return WsConnection(on_message, on_lost, key=key, max_size=max_size, on_read=on_read)

    host = parts.hostname
    if not host.isascii():
        host = host.encode("idna").decode("ascii")
    default_port = port == (443 if secure else 80)
    host_header = host if ":" not in host else f"[{host}]"
    if not default_port:
        host_header += f":{port}"
    # as a browser sends them: non-ASCII and spaces percent-encoded, an IDN host in ASCII
    target = quote(parts.path or "/", safe=_SAFE) + (
        f"?{quote(parts.query, safe=_SAFE + '?')}" if parts.query else ""
    )
    lines = [
        f"GET {target} HTTP/1.1",
        f"Host: {host_header}",
        "Upgrade: websocket",
        "Connection: Upgrade",
        f"Sec-WebSocket-Key: {key.decode()}",
        "Sec-WebSocket-Version: 13",
        *(f"{name}: {value}" for name, value in headers.items()),
    ]
    try:
        request = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
    except UnicodeEncodeError:
        bad = [name for name, value in headers.items() if not f"{name}{value}".isascii()]
        raise HandshakeError(f"header {bad[0] if bad else '?'} is not ASCII text") from None

    async def opening() -> WsConnection:
        context = ssl.create_default_context() if secure else None
        transport, protocol = await loop.create_connection(factory, host, port, ssl=context)
        try:
            transport.write(request)
            await protocol._opened
        except BaseException:
            transport.abort()
            raise
        return protocol

    try:
        conn = await asyncio.wait_for(opening(), open_timeout)
    except TimeoutError:
        raise TimeoutError(f"no WebSocket handshake within {open_timeout:g} s") from None
    conn.start_keepalive(ping_interval, ping_timeout)
    return conn
