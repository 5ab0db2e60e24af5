"""The capture proxy: a reverse proxy that forwards everything unchanged and records it.

REST calls, long-polling Bayeux POSTs and WebSocket upgrades (with every frame, both ways) go
to the upstream as they came, and their answers come back as they left it. Each HTTP exchange
and each WebSocket message is written to the tape with timestamps taken here, at the proxy.

How: asyncio protocols with httptools' HTTP/1.1 parser (llhttp, C), not an HTTP framework.
Each client connection gets its own upstream connection; request heads are re-sent with the
upstream's Host, bodies pass through as they arrive (a chunked body is re-chunked), and the
upstream's bytes go back to the client exactly as received, while a parser reads them for the
tape. After a WebSocket upgrade both directions are spliced byte for byte, and a frame reader
(recorder/wsframes.py) takes the messages out for the tape. Measured on a 2-core machine
(benchmarks/proxy.py, recording included): with aiohttp on both sides the proxy gave ~35-43%
of direct throughput; this way ~70%, and it adds ~0.25 ms at p50.

Sessions: each client's traffic becomes its own tape session. A client is known by its
session cookie (`JSESSIONID` by default: GWS ties REST calls and Bayeux to it), else by its
Bayeux clientId, else, over WebSocket, by its connection. The first exchange of a client with
neither a cookie nor a clientId yet (a login GET, a handshake) is written when its answer
tells who it is (the Set-Cookie, or the handshake's clientId), with the times it happened.
Traffic that never identifies itself goes to one `unattributed` session.

Secrets: headers named like secrets (Authorization, Cookie, Set-Cookie, X-Auth-Token...) and
the CSRF header GWS names are redacted here; the writer then redacts by its Privacy (the
default name pattern and --redact names: headers, query and form fields, JSON bodies, Bayeux
`ext`) and masks personal data (tape/privacy.py), in every frame and lifecycle detail.

If the tape fails (the writer process died, the disk is full), forwarding goes on and
`tape_error` says why; `cometd-tape proxy` then stops with that error.

Limits: HTTP/1.1 and 1.0 only (no HTTP/2, no TLS termination: put it behind one). Upgrades other
than WebSocket (`Upgrade: h2c`) and HEAD requests are forwarded, but recording stops for the rest
of that connection, since the parser cannot frame what follows them.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import itertools
import re
import time
import zlib
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, cast
from urllib.parse import urlsplit

import httptools
import orjson

from recorder.wire import decode, stored_headers
from recorder.wsframes import FrameError, WsReader
from tape.frame import Kind, Session
from tape.redact import redact_url
from tape.schema import TapeError, package_version
from tape.session import SessionLog, new_session_id
from tape.writer import FrameSink

DEFAULT_BAYEUX_PATHS = ("/api/v2/notifications", "/cometd")


@dataclass(frozen=True, slots=True)
class ProxyOptions:
    upstream: str  # http://host:port, optionally with a path prefix
    bayeux_paths: tuple[str, ...] = DEFAULT_BAYEUX_PATHS
    cookie: str = "JSESSIONID"
    labels: dict[str, str] = field(default_factory=dict)


@dataclass
class ProxyStats:
    exchanges: int = 0
    ws_frames: int = 0
    upstream_errors: int = 0
    client_gone: int = 0
    bytes_up: int = 0
    bytes_down: int = 0


class _Client:
    """One tape session: one client's traffic."""

    def __init__(self, log: SessionLog) -> None:
        self.log = log
        self.keys: set[str] = set()
        self.channels: list[str] = []
        self.closed = False


@dataclass(slots=True)
class _Seen:
    """A frame seen before its client was known, kept until it is."""

    direction: str
    raw: bytes
    at: tuple[int, int]
    fields: dict[str, Any]


@dataclass(slots=True)
class _Socket:
    """A proxied WebSocket: the keys its upgrade carried, and its frames until it has a client."""

    keys: list[str]
    own_key: str
    client: _Client | None = None
    pending: list[_Seen] = field(default_factory=list)


@dataclass(slots=True)
class _Request:
    """One request on a client connection, from its first byte to its response."""

    at: tuple[int, int]
    method: str = ""
    url: bytearray = field(default_factory=bytearray)
    headers: list[tuple[str, str]] = field(default_factory=list)
    body: list[bytes] = field(default_factory=list)
    chunked: bool = False
    exchange: str = ""
    bayeux: bool = False
    answered: bool = False  # the upstream answered before the body was all in
    client: _Client | None = None
    pending: list[_Seen] = field(default_factory=list)

    @property
    def path(self) -> str:
        return self.url.decode("latin-1")


class CaptureProxy:
    def __init__(self, options: ProxyOptions, sink: FrameSink) -> None:
        self.options = options
        parts = urlsplit(options.upstream)
        if parts.scheme != "http" or not parts.hostname:
            raise ValueError(
                f"{options.upstream!r}: give the upstream as http://host:port (TLS upstreams "
                "are not supported; put the proxy in front of the plain-HTTP side)"
            )
        self.upstream = options.upstream.rstrip("/")
        self.up_host, self.up_port = parts.hostname, parts.port or 80
        self.up_prefix = parts.path.rstrip("/")
        self.up_authority = parts.hostname + (f":{parts.port}" if parts.port else "")
        if ":" in parts.hostname:
            self.up_authority = f"[{parts.hostname}]" + (f":{parts.port}" if parts.port else "")
        self.sink = sink
        self.stats = ProxyStats()
        self._clients: dict[str, _Client] = {}
        self._all: list[_Client] = []
        self._exchanges = itertools.count(1)
        self._sockets = itertools.count(1)
        self._secret_headers: set[str] = set()
        self._server: asyncio.AbstractServer | None = None
        self._connections: set[_Downstream] = set()
        self._stopping = False
        self.tape_error: str | None = None  # the first tape failure; forwarding goes on
        self.host, self.port = "127.0.0.1", 0

    # --- lifecycle ------------------------------------------------------------------------

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> None:
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(lambda: _Downstream(self), host, port)
        self.host, self.port = host, self._server.sockets[0].getsockname()[1]

    async def stop(self, reason: str = "proxy stopped") -> None:
        self._stopping = True
        if self._server is not None:
            self._server.close()
        for connection in list(self._connections):
            connection.abort()
        if self._server is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._server.wait_closed(), 2)
        for client in self._all:
            self._close(client, reason)

    @property
    def origin(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    @property
    def sessions(self) -> int:
        return len(self._all)

    # --- HTTP exchanges ---------------------------------------------------------------------

    def request_complete(self, request: _Request) -> None:
        """Record a request once it has all come in (its client, if known, now)."""
        body = b"".join(request.body)
        self.stats.exchanges += 1
        self.stats.bytes_up += len(body)
        request.exchange = f"p{next(self._exchanges)}"
        request.bayeux = self._is_bayeux(request.path.split("?", 1)[0])
        messages = decode(body)[0] if request.bayeux and body else []
        seen = _Seen(
            "out",
            body,
            request.at,
            {
                "kind": Kind.BAYEUX if request.bayeux else Kind.HTTP_REQUEST,
                "transport": "long-polling" if request.bayeux else "http",
                "exchange_id": request.exchange,
                "http_method": request.method,
                "http_path": request.path,
                "headers": self._headers(request.headers),
            },
        )
        request.client = self._known(request.headers, messages)
        if request.client is not None:
            self._write(request.client, seen)
        else:
            request.pending.append(seen)

    def response_complete(
        self,
        request: _Request,
        status: int,
        headers: list[tuple[str, str]],
        body: bytes,
    ) -> None:
        self.stats.bytes_down += len(body)
        if any(k.lower() == "x-csrf-header" for k, _ in headers):
            self._secret_headers.update(v for k, v in headers if k.lower() == "x-csrf-header")
        encoding = next((v for k, v in headers if k.lower() == "content-encoding"), None)
        plain = _decoded(body, encoding)
        replies = decode(plain)[0] if request.bayeux and plain else []
        self._respond_frames(request, plain, status, headers, replies)

    def upstream_failed(self, request: _Request, reason: str) -> bytes:
        """The 502 a client gets when the upstream cannot be reached; recorded too."""
        self.stats.upstream_errors += 1
        text = f"cometd-tape proxy: upstream {redact_url(self.upstream)} unreachable: {reason}"
        payload = orjson.dumps({"error": text})
        headers = [("Content-Type", "application/json"), ("Content-Length", str(len(payload)))]
        self._respond_frames(request, payload, 502, headers, [])
        head = "HTTP/1.1 502 Bad Gateway\r\n" + "".join(f"{k}: {v}\r\n" for k, v in headers)
        return head.encode() + b"Connection: close\r\n\r\n" + payload

    def client_gone(self, request: _Request) -> None:
        """The connection ended before its answer: the client left, or the proxy stopped."""
        self.stats.client_gone += 1
        client = request.client
        if client is None:
            keys = self._keys_of(request.headers, [], [])
            client = self._resolve(keys, transport="http", since=request.at)
            for seen in request.pending:
                self._write(client, seen)
            request.pending.clear()
        event = "proxy-stopped" if self._stopping else "client-gone"
        owner = client
        self._tape(lambda: owner.log.lifecycle(event, exchange_id=request.exchange))

    def _respond_frames(
        self,
        request: _Request,
        raw: bytes,
        status: int,
        headers: list[tuple[str, str]],
        replies: list[Any],
    ) -> None:
        frame = _Seen(
            "in",
            raw,
            _now(),
            {
                "kind": Kind.BAYEUX if request.bayeux else Kind.HTTP_RESPONSE,
                "transport": "long-polling" if request.bayeux else "http",
                "exchange_id": request.exchange,
                "http_status": status,
                "headers": self._headers(headers),
            },
        )
        keys = self._keys_of(request.headers, [], headers)
        keys += [f"client:{m.client_id}" for m in replies if m.client_id]
        client = request.client
        if client is None:
            transport = "long-polling" if request.bayeux else "http"
            client = request.client = self._resolve(keys, transport=transport, since=request.at)
        else:
            self._register(client, keys)
        for seen in request.pending:
            self._write(client, seen)
        request.pending.clear()
        self._write(client, frame)
        self._after_replies(client, replies)

    # --- WebSocket ------------------------------------------------------------------------

    def websocket_opened(self, request: _Request) -> _Socket:
        return _Socket(self._keys_of(request.headers, [], []), f"ws:{next(self._sockets)}")

    def ws_message(self, link: _Socket, direction: str, raw: bytes) -> None:
        self.stats.ws_frames += 1
        if direction == "out":
            self.stats.bytes_up += len(raw)
        else:
            self.stats.bytes_down += len(raw)
        messages, problem = decode(raw)
        link.pending.append(
            _Seen(
                direction,
                raw,
                _now(),
                {
                    "kind": Kind.BAYEUX,
                    "transport": "websocket",
                    "parse_error": problem,
                    "checked": True,
                },
            )
        )
        client = self._ws_client(link, [f"client:{m.client_id}" for m in messages if m.client_id])
        if client is not None and direction == "in":
            self._after_replies(client, messages)

    def websocket_closed(self, link: _Socket, path: str, why: str) -> None:
        client = self._ws_client(link, [], final=True)
        assert client is not None
        shown = redact_url(path) or ""
        self._tape(lambda: client.log.lifecycle("websocket-closed", path=shown, by=why))

    def _ws_client(self, link: _Socket, ids: list[str], *, final: bool = False) -> _Client | None:
        """The socket's client, once a cookie or a clientId names it (or at its end, when
        nothing did: then the socket is its own session); its pending frames are written."""
        if link.client is None:
            keys = [*link.keys, *ids]
            known = next((self._clients[k] for k in keys if k in self._clients), None)
            if known is not None or ids or final:
                since = link.pending[0].at if link.pending else None
                link.client = self._resolve(
                    [*keys, link.own_key], transport="websocket", since=since
                )
        elif ids:
            self._register(link.client, ids)
        if link.client is not None:
            for seen in link.pending:
                self._write(link.client, seen)
            link.pending.clear()
        return link.client

    # --- sessions ---------------------------------------------------------------------------

    def _keys_of(
        self,
        request_headers: Iterable[tuple[str, str]],
        messages: Iterable[Any],
        response_headers: Iterable[tuple[str, str]],
    ) -> list[str]:
        keys = []
        cookies = [v for k, v in request_headers if k.lower() == "cookie"]
        cookie = _cookie(cookies, self.options.cookie)
        if cookie:
            keys.append(f"cookie:{cookie}")
        for name, value in response_headers:
            if name.lower() == "set-cookie":
                set_value = _cookie([value], self.options.cookie)
                if set_value:
                    keys.append(f"cookie:{set_value}")
        keys += [f"client:{m.client_id}" for m in messages if m.client_id]
        return keys

    def _known(self, headers: list[tuple[str, str]], messages: list[Any]) -> _Client | None:
        keys = self._keys_of(headers, messages, [])
        for key in keys:
            found = self._clients.get(key)
            if found is not None:
                self._register(found, keys)
                return found
        return None

    def _resolve(
        self, keys: list[str], *, transport: str, since: tuple[int, int] | None = None
    ) -> _Client:
        """The client these keys name, or a new session for it; `since` is when its first
        frame was seen, if that was before now."""
        keys = keys or ["unattributed"]
        for key in keys:
            found = self._clients.get(key)
            if found is not None:
                self._register(found, keys)
                return found
        session = Session(
            session_id=new_session_id(),
            mode="proxy",
            endpoint=redact_url(self.upstream),
            transport=transport,
            recorder_version=package_version(),
            labels=dict(self.options.labels),
            started_ns=since[0] if since else None,
        )
        log = SessionLog(self.sink, session, mono0_ns=since[1] if since else None)
        client = _Client(log)
        self._all.append(client)
        self._register(client, keys)
        return client

    def _register(self, client: _Client, keys: Iterable[str]) -> None:
        for key in keys:
            if key not in self._clients:
                self._clients[key] = client
                client.keys.add(key)
                if key.startswith("client:") and client.log.session.client_id is None:
                    self._tape(functools.partial(client.log.update, client_id=key[7:]))

    def _after_replies(self, client: _Client, replies: Iterable[Any]) -> None:
        for reply in replies:
            if reply.channel == "/meta/subscribe" and reply.successful:
                names = reply.subscription
                for name in [names] if isinstance(names, str) else list(names or ()):
                    if name not in client.channels:
                        client.channels.append(name)
                self._tape(lambda: client.log.update(channels=tuple(client.channels)))
            elif reply.channel == "/meta/disconnect" and reply.successful:
                self._close(client, "disconnected")

    def _close(self, client: _Client, reason: str) -> None:
        if not client.closed:
            client.closed = True
            self._tape(lambda: client.log.close(reason))

    def _write(self, client: _Client, seen: _Seen) -> None:
        transport = seen.fields.get("transport")
        if transport in ("long-polling", "websocket") and client.log.session.transport != transport:
            # the session's transport is its Bayeux one, not that of the login that opened it
            self._tape(lambda: client.log.update(transport=transport))
        self._tape(lambda: client.log.append(seen.direction, seen.raw, at=seen.at, **seen.fields))

    def _tape(self, action: Callable[[], object]) -> None:
        """Every write to the tape goes through here: a failing tape must not stop forwarding
        (nor turn a forwarded request into an error for the client)."""
        if self.tape_error is not None:
            return
        try:
            action()
        except TapeError as exc:
            self.tape_error = str(exc)

    def _is_bayeux(self, path: str) -> bool:
        return any(path == p or path.startswith(p + "/") for p in self.options.bayeux_paths)

    def _headers(self, pairs: Iterable[tuple[str, str]]) -> str:
        return stored_headers(list(pairs), self._secret_headers)


class _Downstream(asyncio.Protocol):
    """A client's connection: requests parsed, re-headed and sent on its upstream connection."""

    def __init__(self, proxy: CaptureProxy) -> None:
        self.proxy = proxy
        self.parser = httptools.HttpRequestParser(self)
        self.transport: asyncio.Transport | None = None
        self.upstream: _Upstream | None = None
        self.failed: str | None = None
        self.backlog: list[bytes] = []  # bytes for the upstream while it connects
        self.awaiting: deque[_Request] = deque()  # sent, not yet answered, in order
        self.current: _Request | None = None
        self.tunnel: WsReader | None = None
        self.spliced = False  # after an upgrade: bytes pass through, read by `tunnel` if any
        self.link: _Socket | None = None
        self.ws_path = ""
        self.early = b""  # WebSocket bytes that came with the upgrade request
        self.eof = False  # the client half-closed

    # asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass
        self.proxy._connections.add(self)
        loop = asyncio.get_running_loop()
        connecting = loop.create_task(
            loop.create_connection(lambda: _Upstream(self), self.proxy.up_host, self.proxy.up_port)
        )
        connecting.add_done_callback(self._connected)

    def _connected(self, task: asyncio.Task[tuple[asyncio.BaseTransport, _Upstream]]) -> None:
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

    def connection_lost(self, exc: Exception | None) -> None:
        self.proxy._connections.discard(self)
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
        self.current = _Request(_now())

    def on_url(self, url: bytes) -> None:
        assert self.current is not None
        self.current.url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        assert self.current is not None
        self.current.headers.append((name.decode("latin-1"), value.decode("latin-1")))

    def on_headers_complete(self) -> None:
        request = self.current
        assert request is not None
        request.method = self.parser.get_method().decode("latin-1")
        version = self.parser.get_http_version()
        lines = [f"{request.method} {self.proxy.up_prefix}{request.path} HTTP/{version}\r\n"]
        for name, value in request.headers:
            lower = name.lower()
            if lower == "host":
                value = self.proxy.up_authority
            elif lower == "transfer-encoding" and "chunked" in value.lower():
                request.chunked = True
            lines.append(f"{name}: {value}\r\n")
        lines.append("\r\n")
        self._to_upstream("".join(lines).encode("latin-1"))

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
            self.proxy.request_complete(request)
        self.awaiting.append(request)
        if self.failed is not None:
            self._fail_all()

    # plumbing

    def _to_upstream(self, data: bytes) -> None:
        if self.upstream is not None:
            self.upstream.write(data)
        elif self.failed is None:
            self.backlog.append(data)

    def write(self, data: bytes) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(data)

    def response_done(self, status: int, headers: list[tuple[str, str]], body: bytes) -> None:
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
            self.proxy.response_complete(request, status, headers, body)
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


class _Upstream(asyncio.Protocol):
    """The upstream side of one client connection: bytes straight back, parsed for the tape."""

    def __init__(self, downstream: _Downstream) -> None:
        self.down = downstream
        self.parser = httptools.HttpResponseParser(self)
        self.transport: asyncio.Transport | None = None
        self.headers: list[tuple[str, str]] = []
        self.body: list[bytes] = []
        self.tunnel: WsReader | None = None
        self.opaque = False  # after an upgrade, or bytes we cannot parse: pass them on only
        self.in_message = False  # headers seen, end not yet

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass

    def data_received(self, data: bytes) -> None:
        self.down.write(data)  # first, unchanged
        if self.opaque:
            if self.tunnel is not None:
                self._read_ws(data)
            return
        try:
            self.parser.feed_data(data)
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
        self.headers, self.body = [], []

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name.decode("latin-1"), value.decode("latin-1")))

    def on_headers_complete(self) -> None:
        self.in_message = True
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
        names = {k.lower(): v.lower() for k, v in self.headers}
        return "content-length" not in names and "chunked" not in names.get("transfer-encoding", "")

    def _done(self) -> None:
        self.down.response_done(self.parser.get_status_code(), self.headers, b"".join(self.body))

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


def _cookie(headers: Iterable[str], name: str) -> str | None:
    """The value of cookie `name` in Cookie or Set-Cookie header values (a regex: the stdlib's
    SimpleCookie measured as 4% of the proxy's time)."""
    pattern = _COOKIE_PATTERNS.get(name)
    if pattern is None:
        pattern = re.compile(rf"(?:^|[;,]\s*){re.escape(name)}=\s*\"?([^\";,\s]*)")
        _COOKIE_PATTERNS[name] = pattern
    for header in headers:
        found = pattern.search(header)
        if found:
            return found.group(1)
    return None


_COOKIE_PATTERNS: dict[str, re.Pattern[str]] = {}


def _decoded(body: bytes, encoding: str | None) -> bytes:
    """What the application sees: gzip/deflate undone for the tape (the client gets `body`)."""
    if encoding in ("gzip", "deflate"):
        with contextlib.suppress(zlib.error):
            return zlib.decompress(body, 47 if encoding == "gzip" else 15)
    return body


def _now() -> tuple[int, int]:
    return time.time_ns(), time.monotonic_ns()


def _describe(exc: BaseException) -> str:
    return str(exc) or type(exc).__name__
