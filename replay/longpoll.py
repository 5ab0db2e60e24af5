"""Long-polling POSTs served straight from the socket, with httptools' HTTP/1.1 parser (llhttp,
C), as the capture proxy does; any connection whose next request is anything else (a WebSocket
upgrade, a REST call) is handed, with the bytes read so far, to aiohttp.

Why not aiohttp for these too: 1,000 long-polling clients at 5 messages/s (2,500 polls a
second) took 40% of a core through aiohttp's request cycle, against Faye's 24%; about half of
ours was aiohttp's own (routing, the request and response objects, a task per request).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from http.cookies import CookieError, SimpleCookie
from typing import TYPE_CHECKING, Any

import httptools
import orjson

if TYPE_CHECKING:
    from replay.server import ReplayServer

_REASONS = {
    200: b"OK",
    400: b"Bad Request",
    408: b"Request Timeout",
    413: b"Payload Too Large",
    500: b"Internal Server Error",
    503: b"Service Unavailable",
}


class Head:
    """What the handshake hook may read of a request: its cookies, like aiohttp's."""

    def __init__(self, cookie_header: str) -> None:
        self.cookies: dict[str, str] = {}
        try:
            parsed = SimpleCookie(cookie_header)
        except CookieError:
            return
        self.cookies = {name: morsel.value for name, morsel in parsed.items()}


class PollConnection(asyncio.Protocol):
    """One client connection, while its requests are long-polling POSTs on a Bayeux path."""

    def __init__(self, server: ReplayServer, fallback: Callable[[], asyncio.Protocol]) -> None:
        self.server, self.fallback = server, fallback
        self.parser = httptools.HttpRequestParser(self)
        self.transport: asyncio.Transport | None = None
        self.lead = b""  # a request's first bytes, until its request line says where it goes
        self.partial = False  # the parser is inside a message
        self.body: list[bytes] = []
        self.size = 0
        self.cookie = ""
        self.url, self.expect, self.length = b"", False, 0
        self.http10 = False
        self.token: object | None = None  # the held poll this connection waits on
        self.timer: asyncio.TimerHandle | None = None

    # --- asyncio --------------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's is not a subclass
        self.server.fast_connections.add(self)
        self._expect_head()

    def data_received(self, data: bytes) -> None:
        if self.transport is None or self.token is not None:
            if self.token is not None:  # pipelined behind a held poll: not supported
                self._fail(400, b"one request at a time on a long-polling connection")
            return
        if not self.partial:
            self.lead += data
            if b"\n" not in self.lead[:8192]:
                if len(self.lead) > 8192:
                    self._fail(400, b"request line too long")
                return
            data, self.lead = self.lead, b""
            if not self.server.is_poll(data):
                self._hand_over(data)
                return
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:  # a POST asking for an upgrade: refused above
            self._fail(400, b"no upgrade on a long-polling POST")
        except httptools.HttpParserError as exc:
            self._fail(400, str(exc).encode()[:200])

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop_timer()
        self.server.fast_connections.discard(self)
        if self.token is not None:
            self.server.end_poll(self.token)  # the client went away while held
        self.transport = None

    # --- httptools callbacks --------------------------------------------------------------------

    def on_message_begin(self) -> None:
        if self.token is not None:  # pipelined behind a held poll, in the same read
            self._fail(400, b"one request at a time on a long-polling connection")
            return
        self.partial, self.body, self.size, self.cookie = True, [], 0, ""
        self.url, self.expect, self.length = b"", False, 0

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        lowered = name.lower()
        if lowered == b"cookie":
            self.cookie = value.decode("latin-1")
        elif lowered == b"expect":
            self.expect = value.lower() == b"100-continue"
        elif lowered == b"content-length" and value.isdigit():
            self.length = int(value)

    def on_headers_complete(self) -> None:
        from replay.server import MAX_BODY

        # Pipelined in the same read as a long-poll, a request must be one too: the bytes
        # before it were read, so it cannot go to aiohttp.
        line = self.parser.get_method() + b" " + self.url + b" HTTP/1.1"
        self.http10 = self.parser.get_http_version() == "1.0"
        if self.parser.should_upgrade() or not self.server.is_poll(line):
            self._fail(400, b"pipelined behind a long-poll, send it on another connection")
        elif self.length > MAX_BODY:
            self._fail(413, b"request body over the limit")
        else:
            if self.expect and self.transport is not None:
                self.transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")
            self._arm(self._timeout, 408, b"the request body did not arrive in time")

    def on_body(self, body: bytes) -> None:
        from replay.server import MAX_BODY

        self.size += len(body)
        if self.size > MAX_BODY:
            self._fail(413, b"request body over the limit")
            return
        self.body.append(body)

    def on_message_complete(self) -> None:
        self.partial = False
        self._stop_timer()
        if self.transport is None or self.transport.is_closing():
            return
        keep = self.parser.should_keep_alive()
        token = object()
        reply, held = self.server.begin_poll(b"".join(self.body), token)
        cookie = self.cookie
        if reply.status:  # an injected http-500/503
            self._write(reply.status, b"injected fault", keep)
            return
        if held is None:
            self._respond(reply.messages, 400 if reply.bad_request else 200, keep, cookie)
            return
        self.token = token
        held.add_done_callback(lambda done: self._answered(done, token, keep, cookie))

    # --- answers ----------------------------------------------------------------------------

    def _answered(
        self, done: asyncio.Future[list[dict[str, Any]]], token: object, keep: bool, cookie: str
    ) -> None:
        if self.token is token:
            self.token = None
        if not done.cancelled() and self.transport is not None:
            self._respond(done.result(), 200, keep, cookie)

    def _respond(
        self, messages: list[dict[str, Any]], status: int, keep: bool, cookie: str
    ) -> None:
        self.server.handshaken(Head(cookie), messages)  # a handshake may share a held answer
        faults = self.server.faults
        over = None if faults is None else faults.slow_for(messages)
        self._write(status, orjson.dumps(messages), keep, over)

    def _write(self, status: int, body: bytes, keep: bool, over: float | None = None) -> None:
        transport = self.transport
        if transport is None:
            return
        head = b"HTTP/1.1 %d %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\n" % (
            status,
            _REASONS.get(status, b"Error"),
            len(body),
        )
        if not keep:
            head += b"Connection: close\r\n"
        elif self.http10:  # HTTP/1.0 closes unless told otherwise
            head += b"Connection: keep-alive\r\n"
        if over is not None and self.server.faults is not None:  # a slow fault
            then = self._expect_head if keep else transport.close
            self.server.faults.dribble(transport, head + b"\r\n" + body, over, then)
            return
        transport.write(head + b"\r\n")
        transport.write(body)  # not joined to the head: a copy of megabytes at speed 0
        if keep:
            self._expect_head()
        else:
            transport.close()

    def _fail(self, status: int, text: bytes) -> None:
        if self.token is not None:
            self.server.end_poll(self.token)
            self.token = None
        self._write(status, orjson.dumps({"error": text.decode("latin-1")}), False)
        self.transport = None

    # --- hand-over and timers -----------------------------------------------------------------

    def _hand_over(self, data: bytes) -> None:
        """aiohttp takes the connection from here, starting with the request in `data`."""
        transport = self.transport
        assert transport is not None
        self._stop_timer()
        self.server.fast_connections.discard(self)
        self.transport = None
        handler = self.fallback()
        transport.set_protocol(handler)
        handler.connection_made(transport)
        handler.data_received(data)

    @property
    def _timeout(self) -> float:
        return self.server.read_timeout_s

    def _expect_head(self) -> None:
        """A request head must come within the read timeout (of the opening, or the answer)."""
        self._arm(self._timeout, 0, b"")

    def _arm(self, delay: float, status: int, text: bytes) -> None:
        self._stop_timer()
        self.timer = asyncio.get_running_loop().call_later(delay, self._expired, status, text)

    def _stop_timer(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None

    def _expired(self, status: int, text: bytes) -> None:
        self.timer = None
        if status:
            self._fail(status, text)
        elif self.transport is not None:  # no head: close, as aiohttp's keep-alive timer does
            self.transport.close()
            self.transport = None

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()
