"""HTTP/1.1 forwarding with httptools: a client's connection and its upstream connection.

Asyncio protocols with httptools' HTTP/1.1 parser (llhttp, C), not an HTTP framework (with
aiohttp on both sides the proxy gave ~35-43% of direct throughput on 2 cores). Each client
connection gets its own upstream connection; request heads are re-sent with the upstream's
Host, bodies pass through as they arrive (a chunked body is re-chunked), and the upstream's
bytes go back to the client exactly as received, while a parser reads them for the tape. A
read holding exactly one whole message whose head the parser has read before (a desktop's
requests differ in the request line and body, a server's answers in the body and Date) skips
the parser: the head's bytes are looked up (Heads.block), the request line split, the body's
length checked against the Content-Length. After a WebSocket upgrade both directions are
spliced byte for byte, and a frame reader (recorder/wsframes.py) takes the messages out for
the tape. What is recorded, and for whom, is the CaptureProxy's (recorder/proxy.py): these
protocols call it at each request, answer and WebSocket message.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
import zlib
from collections import deque
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, cast

import httptools

from recorder.proxy_sessions import Client, Head, Socket
from recorder.wsframes import FrameError, WsReader
from tape.session import HttpExchange

if TYPE_CHECKING:
    from recorder.proxy import CaptureProxy

# Requests taken without the parser: these methods (not HEAD, whose answer has no body, nor
# CONNECT), an origin-form target of visible ASCII, HTTP/1.1 or 1.0; anything else is parsed.
QUICK_METHODS = frozenset({b"GET", b"POST", b"PUT", b"DELETE", b"PATCH", b"OPTIONS"})
QUICK_TARGET = re.compile(rb"/[!-~]*")
QUICK_VERSIONS = {b"HTTP/1.1": b"1.1", b"HTTP/1.0": b"1.0"}


@dataclass(slots=True)
class Request:
    """One request on a client connection, from its first byte to its response."""

    at: tuple[int, int]
    method: str = ""
    url: bytes | bytearray = field(default_factory=bytearray)
    headers: list[tuple[bytes, bytes]] = field(default_factory=list)  # as parsed; see head
    body: list[bytes] = field(default_factory=list)
    chunked: bool = False
    answered: bool = False  # the upstream answered before the body was all in
    exchange: HttpExchange | None = None  # once complete (an upgrade is recorded as frames)
    client: Client | None = None
    head: Head | None = None  # once the headers are in

    @property
    def path(self) -> str:
        return self.url.decode("latin-1")


class Downstream(asyncio.Protocol):
    """A client's connection: requests parsed, re-headed and sent on its upstream connection."""

    def __init__(self, proxy: CaptureProxy) -> None:
        self.proxy = proxy
        self.parser = httptools.HttpRequestParser(self)
        self.transport: asyncio.Transport | None = None
        self.upstream: Upstream | None = None
        self.failed: str | None = None
        self.backlog: list[bytes] = []  # bytes for the upstream while it connects
        self.awaiting: deque[Request] = deque()  # sent, not yet answered, in order
        self.current: Request | None = None
        self.tunnel: WsReader | None = None
        self.spliced = False  # after an upgrade: bytes pass through, read by `tunnel` if any
        self.link: Socket | None = None
        self.ws_path = ""
        self.early = b""  # WebSocket bytes that came with the upgrade request
        self.eof = False  # the client half-closed
        # While a read is parsed: what it sends upstream, sent as one write after it (a
        # request's head and body in one system call, not two), and the requests it
        # completed, recorded once they are on their way.
        self.outbox: list[bytes] | None = None
        self.completed: list[Request] = []
        self.begun = 0  # messages the parser began in the current read

    # asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass
        self.proxy.connections.add(self)
        loop = asyncio.get_running_loop()
        connecting = loop.create_task(
            loop.create_connection(lambda: Upstream(self), self.proxy.up_host, self.proxy.up_port)
        )
        connecting.add_done_callback(self._connected)

    def _connected(self, task: asyncio.Task[tuple[asyncio.BaseTransport, Upstream]]) -> None:
        if task.cancelled() or task.exception() is not None:
            exc = task.exception() if not task.cancelled() else None
            self.failed = _describe(exc) if exc else "cancelled"
            self._fail_all()
            return
        _, self.upstream = task.result()
        if self.transport is None or self.transport.is_closing():
            self.upstream.close()
            return
        for data in self.backlog:
            self.upstream.write(data)
        self.backlog.clear()
        if self.eof and self.upstream.transport is not None:
            with contextlib.suppress(OSError, RuntimeError):
                self.upstream.transport.write_eof()

    def data_received(self, data: bytes) -> None:
        if self.spliced:
            self._to_upstream(data)
            if self.tunnel is not None:
                self._read_ws(self.tunnel, data)
            return
        line_end = head_end = -1
        if self.current is None:  # at a message's start
            line_end = data.find(b"\r\n")
            head_end = data.find(b"\r\n\r\n", line_end)
            if line_end > 0 and head_end >= line_end and self._quick(data, line_end, head_end):
                return
        self.outbox = outbox = cast(list[bytes], [])
        self.begun = 0
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade as upgrade:
            if self.current is not None:  # complete, whether or not the parser said so
                self.awaiting.append(self.current)
                self.current = None
            self.spliced = True  # from here on, bytes pass through (read once a 101 comes)
            rest = data[upgrade.args[0] :]
            if rest:
                self._to_upstream(rest)
                self.early = rest
        except httptools.HttpParserError as exc:
            self._bad_request(str(exc))
        finally:
            self.outbox = None
            if outbox:
                self._to_upstream(outbox[0] if len(outbox) == 1 else b"".join(outbox))
        if self.completed:
            completed, self.completed = self.completed, []
            if self.begun == 1 and len(completed) == 1 and line_end > 0 and head_end >= line_end:
                self._learn(completed[0], data, line_end, head_end)
            for request in completed:
                self.proxy.request_complete(request)
            if self.failed is not None:
                self._fail_all()

    def _quick(self, data: bytes, line_end: int, head_end: int) -> bool:
        """Take a read holding one whole request with a head seen before, without the parser:
        the same bytes upstream and the same record as the parser's way. False: parse it."""
        known = self.proxy.heads.block(data[line_end + 2 : head_end])
        if known is None or self.failed is not None or self.upstream is None:
            return False
        head = known[1]
        if head.length != len(data) - head_end - 4:
            return False
        parts = data[:line_end].split(b" ")
        if len(parts) != 3 or parts[0] not in QUICK_METHODS or parts[2] not in QUICK_VERSIONS:
            return False
        method, target, version = parts
        if not QUICK_TARGET.fullmatch(target):
            return False
        body = data[head_end + 4 :]
        out = (method, b" ", self.proxy.up_prefix_bytes, target, b" HTTP/")
        self.upstream.write(
            b"".join((*out, QUICK_VERSIONS[version], b"\r\n", head.forward, b"\r\n", body))
        )
        request = Request(now(), method.decode("latin-1"), target, head=head)
        if body:
            request.body.append(body)
        self.awaiting.append(request)
        self.proxy.stats.quick += 1
        self.proxy.request_complete(request)
        return True

    def _learn(self, request: Request, data: bytes, line_end: int, head_end: int) -> None:
        """The parser read `data` as this one request: remember its head for _quick."""
        head = request.head
        if (
            head is not None
            and not head.chunked
            and not head.upgrade
            and head.length == len(data) - head_end - 4
            and request.method.encode("latin-1") in QUICK_METHODS
        ):
            self.proxy.heads.learn(data[line_end + 2 : head_end], (0, head))

    def connection_lost(self, exc: Exception | None) -> None:
        self.proxy.connections.discard(self)
        if self.upstream is not None:
            self.upstream.close()
        for request in self.awaiting:
            self.proxy.client_gone(request)
        self.awaiting.clear()
        if self.link is not None:
            self.proxy.websocket_closed(self.link, self.ws_path, "client")
            self.link = None

    def eof_received(self) -> bool:
        """The client is done sending (a half-close): pass that on, and keep the connection
        open for the answers still to come, if any are."""
        if not self.awaiting and self.current is None:
            return False  # nothing owed: close
        self.eof = True
        if self.upstream is not None and self.upstream.transport is not None:
            with contextlib.suppress(OSError, RuntimeError):
                self.upstream.transport.write_eof()
        return True

    def pause_writing(self) -> None:
        if self.upstream is not None:
            self.upstream.pause_reading()

    def resume_writing(self) -> None:
        if self.upstream is not None:
            self.upstream.resume_reading()

    def abort(self) -> None:
        if self.transport is not None:
            self.transport.abort()
        if self.upstream is not None:
            self.upstream.abort()

    # httptools callbacks

    def on_message_begin(self) -> None:
        self.current = Request(now())
        self.begun += 1

    def on_url(self, url: bytes) -> None:
        assert self.current is not None
        self.current.url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        assert self.current is not None
        self.current.headers.append((name, value))

    def on_headers_complete(self) -> None:
        request = self.current
        assert request is not None
        method = self.parser.get_method()
        request.method = method.decode("latin-1")
        request.head = head = self.proxy.heads.of_raw(request.headers)
        request.chunked = head.chunked
        version = self.parser.get_http_version().encode("latin-1")
        prefix, url = self.proxy.up_prefix_bytes, request.url
        head_out = (method, b" ", prefix, url, b" HTTP/", version, b"\r\n", head.forward, b"\r\n")
        self._to_upstream(b"".join(head_out))

    def on_body(self, body: bytes) -> None:
        if self.current is None:
            return
        self.current.body.append(body)
        if self.current.chunked:
            self._to_upstream(b"%x\r\n%b\r\n" % (len(body), body))
        else:
            self._to_upstream(body)

    def on_message_complete(self) -> None:
        request = self.current
        if request is None:
            return
        if request.chunked:
            self._to_upstream(b"0\r\n\r\n")
        self.current = None
        if request.answered:  # recorded with its early answer; the rest went on as it came
            return
        if not self.parser.should_upgrade():  # an upgrade is recorded as its socket's frames
            self.completed.append(request)  # recorded once sent on (data_received)
        self.awaiting.append(request)

    # plumbing

    def _to_upstream(self, data: bytes) -> None:
        if self.outbox is not None:
            self.outbox.append(data)
        elif self.upstream is not None:
            self.upstream.write(data)
        elif self.failed is None:
            self.backlog.append(data)

    def write(self, data: bytes) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(data)

    def response_done(self, status: int, head: Head, body: bytes) -> None:
        if 100 <= status < 200 and status != 101:
            return  # interim (100 Continue): the final answer follows
        if self.awaiting:
            request = self.awaiting.popleft()
        elif self.current is not None and not self.current.answered:
            # answered before its body was all in (a 413, a 401): record both now, and keep
            # passing the rest of the body on as it comes
            request = self.current
            request.answered = True
            self.proxy.request_complete(request)
        else:
            return
        if status != 101:
            self.proxy.response_complete(request, status, head, body)
        else:
            self.link = self.proxy.websocket_opened(request)
            self.ws_path = request.path
            link = self.link
            self.tunnel = WsReader(
                lambda opcode, raw: self.proxy.ws_message(link, "out", raw),
                lambda: None,
            )
            if self.early:
                self._read_ws(self.tunnel, self.early)

    def _read_ws(self, reader: WsReader, data: bytes) -> None:
        try:
            reader.feed(data)
        except (FrameError, zlib.error) as exc:
            self.tunnel = None  # keep splicing, stop reading: the bytes are not ours to judge
            if self.link is not None and self.link.client is not None:
                self.link.client.log.lifecycle("websocket-unreadable", error=str(exc))

    def _fail_all(self) -> None:
        """The upstream could not be reached: every complete request gets a 502."""
        reason = self.failed or "unknown"
        out = b""
        while self.awaiting:
            out += self.proxy.upstream_failed(self.awaiting.popleft(), reason)
        if out:
            self.write(out)
        if (out or self.eof) and self.transport is not None:
            self.transport.close()

    def _bad_request(self, why: str) -> None:
        self.write(
            b"HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain\r\nConnection: close\r\n"
            b"Content-Length: %d\r\n\r\n%b" % (len(why), why.encode())
        )
        if self.transport is not None:
            self.transport.close()


class Upstream(asyncio.Protocol):
    """The upstream side of one client connection: bytes straight back, parsed for the tape."""

    def __init__(self, downstream: Downstream) -> None:
        self.down = downstream
        self.parser = httptools.HttpResponseParser(self)
        self.transport: asyncio.Transport | None = None
        self.headers: list[tuple[bytes, bytes]] = []
        self.head: Head | None = None
        self.body: list[bytes] = []
        self.tunnel: WsReader | None = None
        self.opaque = False  # after an upgrade, or bytes we cannot parse: pass them on only
        self.in_message = False  # headers seen, end not yet
        self.started = False  # a message begun, not yet done: the parser is within it
        self.begun = 0  # messages the parser began in the current read
        self.last: tuple[int, Head, int] | None = None  # status, head, body length: last done

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass

    def data_received(self, data: bytes) -> None:
        self.down.write(data)  # first, unchanged
        if self.opaque:
            if self.tunnel is not None:
                self._read_ws(data)
            return
        end = -1
        if not self.started:
            end = data.find(b"\r\n\r\n")
            known = self.down.proxy.heads.block(data[:end]) if end > 0 else None
            if known is not None and known[1].length == len(data) - end - 4:
                self.down.proxy.stats.quick += 1
                self.down.response_done(known[0], known[1], data[end + 4 :])
                return
        self.begun, self.last = 0, None
        try:
            self.parser.feed_data(data)
            last = self.last
            if end > 0 and self.begun == 1 and last is not None and not self.started:
                status, head, size = last
                if status >= 200 and head.length == size == len(data) - end - 4:
                    self.down.proxy.heads.learn(data[:end], (status, head))
        except httptools.HttpParserUpgrade as upgrade:
            self.opaque = True
            rest = data[upgrade.args[0] :]
            link = self.down.link
            if link is not None:
                self.tunnel = WsReader(
                    lambda opcode, raw: self.down.proxy.ws_message(link, "in", raw),
                    lambda: None,
                )
                if rest:
                    self._read_ws(rest)
        except httptools.HttpParserError:
            self.opaque = True  # not HTTP we can read: keep passing the bytes on

    def _read_ws(self, data: bytes) -> None:
        assert self.tunnel is not None
        try:
            self.tunnel.feed(data)
        except (FrameError, zlib.error):
            self.tunnel = None

    def connection_lost(self, exc: Exception | None) -> None:
        if self.in_message and not self.opaque and self._ends_with_connection():
            self.in_message = False
            self._done()  # a body delimited by the connection's end is complete now
        if self.down.link is not None:
            self.down.proxy.websocket_closed(self.down.link, self.down.ws_path, "upstream")
            self.down.link = None
        if self.down.transport is not None:
            self.down.transport.close()

    def pause_writing(self) -> None:
        if self.down.transport is not None:
            self.down.transport.pause_reading()

    def resume_writing(self) -> None:
        if self.down.transport is not None:
            self.down.transport.resume_reading()

    # httptools callbacks

    def on_message_begin(self) -> None:
        self.headers, self.body, self.head = [], [], None
        self.started = True
        self.begun += 1

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name, value))

    def on_headers_complete(self) -> None:
        self.in_message = True
        self.head = self.down.proxy.heads.of_raw(self.headers)
        if self.parser.get_status_code() == 101:
            self.in_message = False
            self._done()

    def on_body(self, body: bytes) -> None:
        self.body.append(body)

    def on_message_complete(self) -> None:
        self.in_message = False
        if self.parser.get_status_code() != 101:
            self._done()

    def _ends_with_connection(self) -> bool:
        """No Content-Length and not chunked: only then does the close end the body (else the
        body was cut short, and is not recorded as if whole)."""
        return self.head is not None and not self.head.delimited

    def _done(self) -> None:
        self.started = False
        head = self.head or self.down.proxy.heads.of_raw(self.headers)
        parts = self.body
        body = parts[0] if len(parts) == 1 else b"".join(parts)
        status = self.parser.get_status_code()
        self.last = (status, head, len(body))
        self.down.response_done(status, head, body)

    # for the downstream

    def write(self, data: bytes) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(data)

    def pause_reading(self) -> None:
        if self.transport is not None:
            self.transport.pause_reading()

    def resume_reading(self) -> None:
        if self.transport is not None:
            self.transport.resume_reading()

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()

    def abort(self) -> None:
        if self.transport is not None:
            self.transport.abort()


def now() -> tuple[int, int]:
    return time.time_ns(), time.monotonic_ns()


def _describe(exc: BaseException) -> str:
    return str(exc) or type(exc).__name__
