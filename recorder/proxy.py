"""The capture proxy: a reverse proxy that forwards everything unchanged and records it.

REST calls, long-polling Bayeux POSTs and WebSocket upgrades (with every frame, both ways) go
to the upstream as they came, and their answers come back as they left it. Each HTTP exchange
and each WebSocket message is written to the tape with timestamps taken here, at the proxy.
Forwarding is recorder/proxy_forward.py's; who each exchange belongs to (one tape session per
client) is recorder/proxy_sessions.py's; an HTTP exchange goes to its session with one call
(SessionLog.exchange).

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
import itertools
import signal
import sys
import zlib
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import orjson

from recorder.proxy_forward import Downstream, Request, now
from recorder.proxy_sessions import Head, Heads, Seen, Sessions, Socket
from recorder.wire import decode
from tape.frame import Kind, Session
from tape.privacy import Privacy
from tape.process_writer import ProcessTapeWriter, Segments
from tape.redact import redact_url
from tape.runtime import settle_gc
from tape.schema import TapeError, package_version
from tape.session import HttpExchange, HttpMessage, SessionLog, new_session_id
from tape.sink import FrameSink

DEFAULT_BAYEUX_PATHS = ("/api/v2/notifications", "/cometd")
Stats = tuple[int, int, int, int, int]  # exchanges, ws frames, sessions, upstream errors, bytes


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
    quick: int = 0  # messages taken without the HTTP parser (proxy_forward: a head seen before)


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
        self.up_prefix_bytes = self.up_prefix.encode("latin-1")
        self.up_authority = parts.hostname + (f":{parts.port}" if parts.port else "")
        if ":" in parts.hostname:
            self.up_authority = f"[{parts.hostname}]" + (f":{parts.port}" if parts.port else "")
        self.sink = sink
        self.stats = ProxyStats()
        self.clients = Sessions(options.cookie, self._open_log)
        self.heads = Heads(options.cookie, self.up_authority)
        self._bayeux_exact = frozenset(options.bayeux_paths)
        self._bayeux_under = tuple(p + "/" for p in options.bayeux_paths)
        self._bayeux_roots = tuple(options.bayeux_paths)  # what a Bayeux path starts with
        self._exchanges = itertools.count(1)
        self._sockets = itertools.count(1)
        # replaced, never changed in place: an exchange keeps the names known when it was seen
        self._secret_headers: frozenset[str] = frozenset()
        self._server: asyncio.AbstractServer | None = None
        self.connections: set[Downstream] = set()
        self._stopping = False
        self.host, self.port = "127.0.0.1", 0

    # --- lifecycle ------------------------------------------------------------------------

    async def start(
        self, host: str = "127.0.0.1", port: int = 0, *, reuse_port: bool = False
    ) -> None:
        """Listen; with `reuse_port`, beside other processes on the same port (SO_REUSEPORT:
        the kernel spreads the connections over them)."""
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            lambda: Downstream(self), host, port, reuse_port=reuse_port or None
        )
        self.host, self.port = host, self._server.sockets[0].getsockname()[1]

    async def stop(self, reason: str = "proxy stopped") -> None:
        self._stopping = True
        if self._server is not None:
            self._server.close()
        for connection in list(self.connections):
            connection.abort()
        if self._server is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._server.wait_closed(), 2)
        for client in self.clients.all:
            self.clients.close(client, reason)

    @property
    def origin(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    @property
    def sessions(self) -> int:
        return len(self.clients.all)

    def totals(self) -> Stats:
        s = self.stats
        return s.exchanges, s.ws_frames, self.sessions, s.upstream_errors, s.bytes_up + s.bytes_down

    @property
    def tape_error(self) -> str | None:
        """The first tape failure; forwarding goes on."""
        return self.clients.tape_error

    def _open_log(self, transport: str, since: tuple[int, int] | None) -> SessionLog:
        session = Session(
            session_id=new_session_id(),
            mode="proxy",
            endpoint=redact_url(self.upstream),
            transport=transport,
            recorder_version=package_version(),
            labels=dict(self.options.labels),
            started_ns=since[0] if since else None,
        )
        return SessionLog(self.sink, session, mono0_ns=since[1] if since else None)

    # --- HTTP exchanges ---------------------------------------------------------------------

    def request_complete(self, request: Request) -> None:
        """Record a request once it has all come in (its client, if known, now)."""
        parts = request.body
        body = parts[0] if len(parts) == 1 else b"".join(parts)
        self.stats.exchanges += 1
        self.stats.bytes_up += len(body)
        path = request.path
        bayeux = path.startswith(self._bayeux_roots) and self._is_bayeux(path.partition("?")[0])
        messages = decode(body)[0] if bayeux and body else []
        head = request.head or self.heads.of_raw(request.headers)
        request.exchange = HttpExchange(
            f"p{next(self._exchanges)}",
            bayeux,
            HttpMessage(
                body,
                request.at,
                head.headers,
                self._secret_headers,
                method=request.method,
                path=path,
            ),
        )
        request.client = self.clients.known(head, messages)
        if request.client is not None:
            self.clients.record(request.client, request.exchange, self.heads)

    def response_complete(self, request: Request, status: int, head: Head, body: bytes) -> None:
        self.stats.bytes_down += len(body)
        if head.csrf and not head.csrf <= self._secret_headers:
            self._secret_headers = self._secret_headers | head.csrf
        plain = decoded(body, head.encoding)
        bayeux = request.exchange is not None and request.exchange.bayeux
        replies = decode(plain)[0] if bayeux and plain else []
        self._respond(request, plain, status, head, replies)

    def upstream_failed(self, request: Request, reason: str) -> bytes:
        """The 502 a client gets when the upstream cannot be reached; recorded too."""
        self.stats.upstream_errors += 1
        text = f"cometd-tape proxy: upstream {redact_url(self.upstream)} unreachable: {reason}"
        payload = orjson.dumps({"error": text})
        headers = [("Content-Type", "application/json"), ("Content-Length", str(len(payload)))]
        self._respond(request, payload, 502, self.heads.of(headers), [])
        head = "HTTP/1.1 502 Bad Gateway\r\n" + "".join(f"{k}: {v}\r\n" for k, v in headers)
        return head.encode() + b"Connection: close\r\n\r\n" + payload

    def client_gone(self, request: Request) -> None:
        """The connection ended before its answer: the client left, or the proxy stopped."""
        self.stats.client_gone += 1
        client = request.client
        exchange = request.exchange
        if client is None:
            keys = self.clients.keys_of(request.head, [])
            client = self.clients.resolve(keys, transport="http", since=request.at)
            if exchange is not None:
                self.clients.record(client, exchange, self.heads)
        event = "proxy-stopped" if self._stopping else "client-gone"
        owner, exchange_id = client, exchange.exchange_id if exchange is not None else ""
        self.clients.tape(lambda: owner.log.lifecycle(event, exchange_id=exchange_id))

    def _respond(
        self,
        request: Request,
        raw: bytes,
        status: int,
        head: Head,
        replies: list[Any],
    ) -> None:
        response = HttpMessage(raw, now(), head.headers, self._secret_headers, status=status)
        exchange = request.exchange
        if exchange is None:  # an upgrade answered without one: recorded as the answer alone
            exchange = request.exchange = HttpExchange("")
        exchange.response = response
        keys = self.clients.keys_of(request.head, replies, head)
        client = request.client
        if client is None:
            transport = "long-polling" if exchange.bayeux else "http"
            client = request.client = self.clients.resolve(
                keys, transport=transport, since=request.at
            )
        else:
            self.clients.register(client, keys)
        self.clients.record(client, exchange, self.heads)
        self.clients.after_replies(client, replies)

    # --- WebSocket ------------------------------------------------------------------------

    def websocket_opened(self, request: Request) -> Socket:
        return Socket(self.clients.keys_of(request.head, []), f"ws:{next(self._sockets)}")

    def ws_message(self, link: Socket, direction: str, raw: bytes) -> None:
        self.stats.ws_frames += 1
        if direction == "out":
            self.stats.bytes_up += len(raw)
        else:
            self.stats.bytes_down += len(raw)
        messages, problem = decode(raw)
        link.pending.append(
            Seen(
                direction,
                raw,
                now(),
                {
                    "kind": Kind.BAYEUX,
                    "transport": "websocket",
                    "parse_error": problem,
                    "checked": True,
                },
            )
        )
        ids = [f"client:{m.client_id}" for m in messages if m.client_id]
        client = self.clients.ws_client(link, ids)
        if client is not None and direction == "in":
            self.clients.after_replies(client, messages)

    def websocket_closed(self, link: Socket, path: str, why: str) -> None:
        client = self.clients.ws_client(link, [], final=True)
        assert client is not None
        shown = redact_url(path) or ""
        self.clients.tape(lambda: client.log.lifecycle("websocket-closed", path=shown, by=why))

    def _is_bayeux(self, path: str) -> bool:
        return path in self._bayeux_exact or path.startswith(self._bayeux_under)


def decoded(body: bytes, encoding: str | None) -> bytes:
    """What the application sees: gzip/deflate undone for the tape (the client gets `body`)."""
    if encoding in ("gzip", "deflate"):
        with contextlib.suppress(zlib.error):
            return zlib.decompress(body, 47 if encoding == "gzip" else 15)
    return body


# --- a worker of `cometd-tape proxy --workers N` ---------------------------------------------


def serve_worker(
    options: ProxyOptions,
    folder: Path,
    segments: Segments,
    host: str,
    port: int,
    privacy: Privacy,
    conn: Connection,
) -> None:
    """A worker: its own proxy on the shared port, recording into its own segments of the tape
    set in `folder` (`segments.prefix`: `w1-` for worker 1; cut by `segments.rotation`)."""
    # Ctrl-C reaches the whole process group; the parent stops the workers, each in turn
    # closing its tape. SIGTERM to a worker alone stops it too (_work).
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    from tape.cli import run_loop  # here: recorder.proxy alone need not load the CLI's DuckDB

    settle_gc()
    try:
        run_loop(_work(options, folder, segments, host, port, privacy, conn))
    except Exception as exc:  # said to the parent, which reports it on one line
        with contextlib.suppress(OSError):
            conn.send(("failed", str(exc) or type(exc).__name__))
        sys.exit(1)


async def _work(
    options: ProxyOptions,
    folder: Path,
    segments: Segments,
    host: str,
    port: int,
    privacy: Privacy,
    conn: Connection,
) -> None:
    writer = ProcessTapeWriter(folder, privacy=privacy, segments=segments)
    proxy = CaptureProxy(options, writer)
    try:
        await proxy.start(host, port, reuse_port=True)
    except OSError as exc:
        writer.close()
        raise RuntimeError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, stop.set)

    def from_parent() -> None:
        with contextlib.suppress(EOFError, OSError):  # EOF: the parent is gone; stop too
            conn.recv()  # "stop" is all the parent says
        loop.remove_reader(conn.fileno())
        stop.set()

    loop.add_reader(conn.fileno(), from_parent)
    conn.send(("ready", None))
    reporter = loop.create_task(_report(proxy, stop, conn))
    await stop.wait()
    reporter.cancel()
    await proxy.stop()
    try:
        writer.close()
    except TapeError as exc:
        raise RuntimeError(str(exc)) from None
    if proxy.tape_error is not None:
        raise RuntimeError(f"recording failed: {proxy.tape_error}")
    with contextlib.suppress(OSError):
        conn.send(("stopped", proxy.totals()))


async def _report(proxy: CaptureProxy, stop: asyncio.Event, conn: Connection) -> None:
    while True:
        await asyncio.sleep(1)
        if proxy.tape_error is not None:
            stop.set()
            return
        with contextlib.suppress(OSError):
            conn.send(("stats", proxy.totals()))
