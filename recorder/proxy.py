"""The capture proxy: a reverse proxy that forwards everything unchanged and records it.

REST calls, long-polling Bayeux POSTs and WebSocket upgrades (with every frame, both ways) go
to the upstream as they came, and their answers come back as they left it. Each HTTP exchange
and each WebSocket frame is written to the tape with timestamps taken here, at the proxy.

Sessions: each client's traffic becomes its own tape session. A client is known by its
session cookie (`JSESSIONID` by default: GWS ties REST calls and Bayeux to it), else by its
Bayeux clientId, else, over WebSocket, by its connection. The first exchange of a client with
neither a cookie nor a clientId yet (a login GET, a handshake) is written when its answer
tells who it is (the Set-Cookie, or the handshake's clientId), with the times it happened.
Traffic that never identifies itself goes to one `unattributed` session.

Secrets: Authorization, Cookie, Set-Cookie and the CSRF token header are redacted before
anything is stored (the writer also redacts password fields in bodies).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import re
import time
import zlib
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import orjson
from aiohttp import WSMsgType, web
from multidict import CIMultiDict, CIMultiDictProxy
from yarl import URL

from recorder.wire import decode, stored_headers
from tape.frame import Kind, Session
from tape.redact import redact_url
from tape.schema import package_version
from tape.session import SessionLog, new_session_id
from tape.writer import FrameSink

HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "te",
        "trailer",
        "trailers",
        "transfer-encoding",
        "upgrade",
        "host",
        "content-length",
    }
)
WS_HANDSHAKE = frozenset({"sec-websocket-key", "sec-websocket-version", "sec-websocket-extensions"})
DEFAULT_BAYEUX_PATHS = ("/api/v2/notifications", "/cometd")


@dataclass(frozen=True, slots=True)
class ProxyOptions:
    upstream: str  # http://host:port, optionally with a path prefix
    bayeux_paths: tuple[str, ...] = DEFAULT_BAYEUX_PATHS
    cookie: str = "JSESSIONID"
    labels: dict[str, str] = field(default_factory=dict)
    timeout_s: float = 120.0  # an upstream answer may take this long (long-polls are held)


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
class _Socket:
    """A proxied WebSocket: the keys its upgrade carried, and its frames until it has a client."""

    keys: list[str]
    own_key: str
    client: _Client | None = None
    pending: list[_Seen] = field(default_factory=list)


@dataclass(slots=True)
class _Seen:
    """A frame seen before its client was known, kept until it is."""

    direction: str
    raw: bytes
    at: tuple[int, int]
    fields: dict[str, Any]


class CaptureProxy:
    def __init__(self, options: ProxyOptions, sink: FrameSink) -> None:
        self.options = options
        self.upstream = URL(options.upstream.rstrip("/"))
        self.sink = sink
        self.stats = ProxyStats()
        self._clients: dict[str, _Client] = {}
        self._all: list[_Client] = []
        self._exchanges = itertools.count(1)
        self._sockets = itertools.count(1)
        self._secret_headers: set[str] = set()
        self._http: aiohttp.ClientSession | None = None
        self._runner: web.AppRunner | None = None
        self._ws: set[web.WebSocketResponse] = set()
        self.host, self.port = "127.0.0.1", 0
        self.app = web.Application(client_max_size=64 * 2**20)
        self.app.router.add_route("*", "/{tail:.*}", self._handle)

    # --- lifecycle ------------------------------------------------------------------------

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self._http = aiohttp.ClientSession(
            auto_decompress=False,
            cookie_jar=aiohttp.DummyCookieJar(),  # cookies pass through as headers, untouched
            connector=aiohttp.TCPConnector(limit=0, ttl_dns_cache=300),
            timeout=aiohttp.ClientTimeout(total=None, sock_read=self.options.timeout_s),
            skip_auto_headers=("User-Agent", "Accept-Encoding", "Accept"),
        )
        self._runner = web.AppRunner(self.app, handle_signals=False, shutdown_timeout=1.0)
        await self._runner.setup()
        site = web.TCPSite(self._runner, host, port)
        await site.start()
        server = site._server
        assert server is not None
        self.host, self.port = host, server.sockets[0].getsockname()[1]  # type: ignore[attr-defined]

    async def stop(self, reason: str = "proxy stopped") -> None:
        for ws in list(self._ws):
            await ws.close()
        if self._runner is not None:
            await self._runner.cleanup()
        if self._http is not None:
            await self._http.close()
        for client in self._all:
            self._close(client, reason)

    @property
    def origin(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    @property
    def sessions(self) -> int:
        return len(self._all)

    # --- HTTP -------------------------------------------------------------------------------

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        if request.headers.get("Upgrade", "").lower() == "websocket":
            return await self._websocket(request)
        at = _now()
        body = await request.read()
        bayeux = self._is_bayeux(request.path)
        exchange = f"p{next(self._exchanges)}"
        self.stats.exchanges += 1
        self.stats.bytes_up += len(body)
        messages = decode(body)[0] if bayeux and body else []
        client = self._known(request.headers, messages)
        request_frame = _Seen(
            "out",
            body,
            at,
            {
                "kind": Kind.BAYEUX if bayeux else Kind.HTTP_REQUEST,
                "transport": "long-polling" if bayeux else "http",
                "exchange_id": exchange,
                "http_method": request.method,
                "http_path": request.path_qs,
                "headers": self._headers(request.headers.items()),
            },
        )
        pending: list[_Seen] = []
        if client is not None:
            self._write(client, request_frame)
        else:
            pending.append(request_frame)

        upstream_url = self.upstream.with_path(
            self.upstream.path.rstrip("/") + request.path, encoded=False
        ).with_query(request.query)
        try:
            assert self._http is not None
            async with self._http.request(
                request.method,
                upstream_url,
                headers=_forwarded(request.headers),
                data=body if body else None,
                allow_redirects=False,
            ) as upstream:
                answer = await upstream.read()
                status, reply_headers = upstream.status, upstream.headers
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            self.stats.upstream_errors += 1
            text = f"cometd-tape proxy: upstream {self.upstream} unreachable: {_describe(exc)}"
            payload = orjson.dumps({"error": text})
            self._respond_frames(
                client,
                pending,
                exchange,
                bayeux,
                payload,
                502,
                [("Content-Type", "application/json")],
                request.headers,
                [],
            )
            return web.Response(body=payload, status=502, content_type="application/json")
        self.stats.bytes_down += len(answer)
        self._learn_csrf(reply_headers)
        plain = _decoded(answer, reply_headers.get("Content-Encoding"))
        replies = decode(plain)[0] if bayeux and plain else []
        self._respond_frames(
            client,
            pending,
            exchange,
            bayeux,
            plain,
            status,
            list(reply_headers.items()),
            request.headers,
            replies,
        )
        response = web.Response(body=answer, status=status)
        for name, value in reply_headers.items():
            if name.lower() not in HOP_BY_HOP:
                response.headers.add(name, value)
        try:
            await response.prepare(request)
            await response.write_eof()
        except (ConnectionResetError, ConnectionError):
            self._client_gone(client, exchange)
        return response

    def _respond_frames(
        self,
        client: _Client | None,
        pending: list[_Seen],
        exchange: str,
        bayeux: bool,
        raw: bytes,
        status: int,
        headers: list[tuple[str, str]],
        request_headers: CIMultiDictProxy[str],
        replies: list[Any],
    ) -> None:
        frame = _Seen(
            "in",
            raw,
            _now(),
            {
                "kind": Kind.BAYEUX if bayeux else Kind.HTTP_RESPONSE,
                "transport": "long-polling" if bayeux else "http",
                "exchange_id": exchange,
                "http_status": status,
                "headers": self._headers(headers),
            },
        )
        keys = self._keys_of(request_headers, [], headers)
        keys += [f"client:{m.client_id}" for m in replies if m.client_id]
        if client is None:
            client = self._resolve(keys, transport="long-polling" if bayeux else "http")
        else:
            self._register(client, keys)
        for seen in pending:
            self._write(client, seen)
        self._write(client, frame)
        self._after_replies(client, replies)

    # --- WebSocket ------------------------------------------------------------------------

    async def _websocket(self, request: web.Request) -> web.StreamResponse:
        assert self._http is not None
        socket_key = f"ws:{next(self._sockets)}"
        url = self.upstream.with_scheme(
            "wss" if self.upstream.scheme == "https" else "ws"
        ).with_path(self.upstream.path.rstrip("/") + request.path, encoded=False)
        url = url.with_query(request.query)
        headers = {
            k: v
            for k, v in _forwarded(request.headers).items()
            if k.lower() not in WS_HANDSHAKE and k.lower() != "sec-websocket-protocol"
        }
        protocols = [
            p.strip() for p in request.headers.get("Sec-WebSocket-Protocol", "").split(",") if p
        ]
        try:
            upstream = await self._http.ws_connect(
                url, headers=headers, protocols=protocols, autoping=True, max_msg_size=0
            )
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            self.stats.upstream_errors += 1
            client = self._resolve(
                [*self._keys_of(request.headers, [], []), socket_key], transport="websocket"
            )
            client.log.lifecycle("upstream-unreachable", error=_describe(exc), path=request.path)
            text = f"cometd-tape proxy: upstream {self.upstream} unreachable: {_describe(exc)}"
            return web.json_response({"error": text}, status=502)
        downstream = web.WebSocketResponse(
            protocols=[upstream.protocol] if upstream.protocol else (),
            max_msg_size=0,
            autoping=True,
        )
        await downstream.prepare(request)
        self._ws.add(downstream)
        link = _Socket(self._keys_of(request.headers, [], []), socket_key)

        async def pump(
            source: web.WebSocketResponse | aiohttp.ClientWebSocketResponse,
            target: web.WebSocketResponse | aiohttp.ClientWebSocketResponse,
            direction: str,
        ) -> None:
            async for message in source:
                if message.type == WSMsgType.TEXT:
                    raw = message.data.encode()
                    await target.send_str(message.data)
                elif message.type == WSMsgType.BINARY:
                    raw = message.data
                    await target.send_bytes(message.data)
                else:
                    break
                self._ws_frame(link, direction, raw)
            await target.close()

        up = asyncio.ensure_future(pump(downstream, upstream, "out"))
        down = asyncio.ensure_future(pump(upstream, downstream, "in"))
        try:
            await asyncio.wait({up, down}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (up, down):
                task.cancel()
            await asyncio.gather(up, down, return_exceptions=True)
            await upstream.close()
            await downstream.close()
            self._ws.discard(downstream)
            owner = self._ws_client(link, [], final=True)
            assert owner is not None
            owner.log.lifecycle("websocket-closed", path=request.path)
        return downstream

    def _ws_frame(self, link: _Socket, direction: str, raw: bytes) -> None:
        self.stats.ws_frames += 1
        if direction == "out":
            self.stats.bytes_up += len(raw)
        else:
            self.stats.bytes_down += len(raw)
        messages, problem = decode(raw)
        seen = _Seen(
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
        link.pending.append(seen)
        client = self._ws_client(link, [f"client:{m.client_id}" for m in messages if m.client_id])
        if client is not None and direction == "in":
            self._after_replies(client, messages)

    def _ws_client(self, link: _Socket, ids: list[str], *, final: bool = False) -> _Client | None:
        """The socket's client, once a cookie or a clientId names it (or at its end, when
        nothing did: then the socket is its own session); its pending frames are written."""
        if link.client is None:
            keys = [*link.keys, *ids]
            known = next((self._clients[k] for k in keys if k in self._clients), None)
            if known is not None or ids or final:
                link.client = self._resolve([*keys, link.own_key], transport="websocket")
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
        request_headers: CIMultiDictProxy[str] | CIMultiDict[str],
        messages: Iterable[Any],
        response_headers: Iterable[tuple[str, str]],
    ) -> list[str]:
        keys = []
        cookie = _cookie(request_headers.getall("Cookie", []), self.options.cookie)
        if cookie:
            keys.append(f"cookie:{cookie}")
        for name, value in response_headers:
            if name.lower() == "set-cookie":
                set_value = _cookie([value], self.options.cookie)
                if set_value:
                    keys.append(f"cookie:{set_value}")
        keys += [f"client:{m.client_id}" for m in messages if m.client_id]
        return keys

    def _known(self, headers: CIMultiDictProxy[str], messages: list[Any]) -> _Client | None:
        keys = self._keys_of(headers, messages, [])
        for key in keys:
            found = self._clients.get(key)
            if found is not None:
                self._register(found, keys)
                return found
        return None

    def _resolve(self, keys: list[str], *, transport: str) -> _Client:
        for key in keys:
            found = self._clients.get(key)
            if found is not None:
                self._register(found, keys)
                return found
        session = Session(
            session_id=new_session_id(),
            mode="proxy",
            endpoint=redact_url(str(self.upstream)),
            transport=transport,
            recorder_version=package_version(),
            labels=dict(self.options.labels),
        )
        client = _Client(SessionLog(self.sink, session))
        self._all.append(client)
        self._register(client, keys or ["unattributed"])
        return client

    def _register(self, client: _Client, keys: Iterable[str]) -> None:
        for key in keys:
            if key not in self._clients:
                self._clients[key] = client
                client.keys.add(key)
                if key.startswith("client:") and client.log.session.client_id is None:
                    client.log.update(client_id=key[7:])

    def _after_replies(self, client: _Client, replies: Iterable[Any]) -> None:
        for reply in replies:
            if reply.channel == "/meta/subscribe" and reply.successful:
                names = reply.subscription
                for name in [names] if isinstance(names, str) else list(names or ()):
                    if name not in client.channels:
                        client.channels.append(name)
                client.log.update(channels=tuple(client.channels))
            elif reply.channel == "/meta/disconnect" and reply.successful:
                self._close(client, "disconnected")

    def _close(self, client: _Client, reason: str) -> None:
        if not client.closed:
            client.closed = True
            client.log.close(reason)

    def _client_gone(self, client: _Client | None, exchange: str) -> None:
        self.stats.client_gone += 1
        if client is not None:
            client.log.lifecycle("client-gone", exchange_id=exchange)

    def _write(self, client: _Client, seen: _Seen) -> None:
        client.log.append(seen.direction, seen.raw, at=seen.at, **seen.fields)

    def _is_bayeux(self, path: str) -> bool:
        return any(path == p or path.startswith(p + "/") for p in self.options.bayeux_paths)

    def _learn_csrf(self, headers: CIMultiDictProxy[str]) -> None:
        name = headers.get("X-CSRF-HEADER")
        if name:
            self._secret_headers.add(name)

    def _headers(self, pairs: Iterable[tuple[str, str]]) -> str:
        return stored_headers(list(pairs), self._secret_headers)


def _forwarded(headers: CIMultiDictProxy[str]) -> CIMultiDict[str]:
    out: CIMultiDict[str] = CIMultiDict()
    for name, value in headers.items():
        if name.lower() not in HOP_BY_HOP:
            out.add(name, value)
    return out


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
