"""Who a proxied request belongs to: one tape session per client, known by cookie or clientId.

A client is known by its session cookie (`JSESSIONID` by default: GWS ties REST calls and
Bayeux to it), else by its Bayeux clientId, else, over WebSocket, by its connection. The first
exchange of a client with neither a cookie nor a clientId yet (a login GET, a handshake) is
written when its answer tells who it is (the Set-Cookie, or the handshake's clientId), with
the times it happened. Traffic that never identifies itself goes to one `unattributed` session.

What the proxy needs of a message's headers (the session cookie, a Set-Cookie, the names GWS
gives in X-CSRF-HEADER, the encoding, the stored JSON form) is worked out once per distinct
header list (`Heads`): a desktop sends the same headers with every request, and working them
out each time was a quarter of the proxy's Python time per request. `Heads` also remembers the
raw bytes of heads the HTTP parser has read as one whole message with a Content-Length body,
so that the next message with the same head can be taken without the parser (proxy_forward).
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Collection, Iterable, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from tape.redact import headers_json
from tape.schema import TapeError
from tape.session import HttpExchange, HttpMessage, SessionLog

# A new session's log, given its Bayeux transport and when its first frame was seen
OpenLog = Callable[[str, tuple[int, int] | None], SessionLog]


Pairs = tuple[tuple[str, str], ...]
RawPairs = tuple[tuple[bytes, bytes], ...]  # as the parser gives them
Known = tuple[int, "Head"]  # a head's status (responses; 0 for a request) and its Head
HEADS_KEPT = 4096  # distinct header lists remembered (then forgotten all at once)


@dataclass(slots=True)
class Head:
    """One distinct header list, and what the proxy reads of it."""

    headers: Pairs
    cookie: str | None  # the session cookie's value in the Cookie headers
    set_cookies: list[str]  # its values in Set-Cookie headers
    csrf: frozenset[str]  # the header names X-CSRF-HEADER gives
    encoding: str | None  # Content-Encoding
    chunked: bool
    delimited: bool  # Content-Length or chunked: the body does not end with the connection
    forward: bytes  # the header lines as sent upstream: Host is the upstream's
    length: int | None  # the Content-Length, when there is exactly one, a number
    upgrade: bool  # Upgrade or Connection: upgrade: the connection may change protocol
    texts: dict[frozenset[str], str] = field(default_factory=dict)

    def text(self, secret: Collection[str]) -> str:
        """headers_json(headers, secret): the stored form, redacted."""
        key = secret if isinstance(secret, frozenset) else frozenset(secret)
        found = self.texts.get(key)
        if found is None:
            found = self.texts[key] = headers_json(self.headers, key)
        return found


class Heads:
    """Head of each distinct header list seen lately, by the list."""

    def __init__(self, cookie: str, authority: str) -> None:
        self.cookie = cookie
        self.authority = authority  # the upstream's Host
        self._known: dict[Pairs, Head] = {}
        self._raw: dict[RawPairs, Head] = {}
        self._blocks: dict[bytes, Known] = {}

    def block(self, raw: bytes) -> Known | None:
        """A head's bytes (a response's status line and headers, a request's headers) that
        the parser has read before as one whole message: its status and Head."""
        return self._blocks.get(raw)

    def learn(self, raw: bytes, known: Known) -> None:
        if len(self._blocks) >= HEADS_KEPT:
            self._blocks.clear()
        self._blocks[raw] = known

    def of(self, headers: Sequence[tuple[str, str]]) -> Head:
        pairs = tuple(headers)
        head = self._known.get(pairs)
        if head is None:
            if len(self._known) >= HEADS_KEPT:
                self._known.clear()
            head = self._known[pairs] = self._read(pairs)
        return head

    def of_raw(self, headers: list[tuple[bytes, bytes]]) -> Head:
        """The Head of headers as the parser gave them (bytes, decoded only when new)."""
        pairs = tuple(headers)
        head = self._raw.get(pairs)
        if head is None:
            if len(self._raw) >= HEADS_KEPT:
                self._raw.clear()
            decoded = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in pairs]
            head = self._raw[pairs] = self.of(decoded)
        return head

    def _read(self, pairs: Pairs) -> Head:
        lowered = [(k.lower(), v) for k, v in pairs]
        encoding = None
        transfer = []
        lines = []
        for (name, value), (lower, _) in zip(pairs, lowered, strict=True):
            if lower == "content-encoding" and encoding is None:
                encoding = value
            elif lower == "transfer-encoding":
                transfer.append(value.lower())
            lines.append(f"{name}: {self.authority if lower == 'host' else value}\r\n")
        chunked = any("chunked" in value for value in transfer)
        set_cookies = (cookie_value([v], self.cookie) for k, v in lowered if k == "set-cookie")
        lengths = [v.strip() for k, v in lowered if k == "content-length"]
        length = lengths[0] if len(lengths) == 1 else ""
        connection = ",".join(v.lower() for k, v in lowered if k == "connection")
        return Head(
            pairs,
            cookie_value([v for k, v in lowered if k == "cookie"], self.cookie),
            [value for value in set_cookies if value],
            frozenset(v for k, v in lowered if k == "x-csrf-header"),
            encoding,
            chunked,
            # as a dict of the headers reads it: the last Transfer-Encoding counts
            any(k == "content-length" for k, _ in lowered) or "chunked" in "".join(transfer[-1:]),
            "".join(lines).encode("latin-1"),
            int(length) if length.isascii() and length.isdigit() else None,
            any(k == "upgrade" for k, _ in lowered) or "upgrade" in connection,
        )


class Client:
    """One tape session: one client's traffic."""

    def __init__(self, log: SessionLog) -> None:
        self.log = log
        self.keys: set[str] = set()
        self.channels: list[str] = []
        self.closed = False


@dataclass(slots=True)
class Seen:
    """A WebSocket frame seen before its client was known, kept until it is."""

    direction: str
    raw: bytes
    at: tuple[int, int]
    fields: dict[str, Any]


@dataclass(slots=True)
class Socket:
    """A proxied WebSocket: the keys its upgrade carried, and its frames until it has a client."""

    keys: list[str]
    own_key: str
    client: Client | None = None
    pending: list[Seen] = field(default_factory=list)


class Sessions:
    """The proxy's clients by key (`cookie:V`, `client:ID`, `ws:N`), and every write to their
    tape sessions: a failing tape must not stop forwarding, so writes go through `tape`."""

    def __init__(self, cookie: str, open_log: OpenLog) -> None:
        self.cookie = cookie
        self._open_log = open_log
        self._clients: dict[str, Client] = {}
        self.all: list[Client] = []
        self.tape_error: str | None = None  # the first tape failure

    def tape(self, action: Callable[[], object]) -> None:
        """Every write to the tape goes through here: a failing tape must not stop forwarding
        (nor turn a forwarded request into an error for the client)."""
        if self.tape_error is not None:
            return
        try:
            action()
        except TapeError as exc:
            self.tape_error = str(exc)

    # --- who ------------------------------------------------------------------------------

    def keys_of(
        self, request: Head | None, messages: Sequence[Any], response: Head | None = None
    ) -> list[str]:
        keys = [f"cookie:{request.cookie}"] if request is not None and request.cookie else []
        if response is not None and response.set_cookies:
            keys += [f"cookie:{value}" for value in response.set_cookies]
        if messages:  # (a comprehension costs a function object per call, even over nothing)
            keys += [f"client:{m.client_id}" for m in messages if m.client_id]
        return keys

    def known(self, head: Head | None, messages: list[Any]) -> Client | None:
        keys = self.keys_of(head, messages)
        for key in keys:
            found = self._clients.get(key)
            if found is not None:
                self.register(found, keys)
                return found
        return None

    def resolve(
        self, keys: list[str], *, transport: str, since: tuple[int, int] | None = None
    ) -> Client:
        """The client these keys name, or a new session for it; `since` is when its first
        frame was seen, if that was before now."""
        keys = keys or ["unattributed"]
        for key in keys:
            found = self._clients.get(key)
            if found is not None:
                self.register(found, keys)
                return found
        client = Client(self._open_log(transport, since))
        self.all.append(client)
        self.register(client, keys)
        return client

    def register(self, client: Client, keys: Iterable[str]) -> None:
        for key in keys:
            if key not in self._clients:
                self._clients[key] = client
                client.keys.add(key)
                if key.startswith("client:") and client.log.session.client_id is None:
                    self.tape(functools.partial(client.log.update, client_id=key[7:]))

    def ws_client(self, link: Socket, ids: list[str], *, final: bool = False) -> Client | None:
        """The socket's client, once a cookie or a clientId names it (or at its end, when
        nothing did: then the socket is its own session); its pending frames are written."""
        if link.client is None:
            keys = [*link.keys, *ids]
            known = next((self._clients[k] for k in keys if k in self._clients), None)
            if known is not None or ids or final:
                since = link.pending[0].at if link.pending else None
                link.client = self.resolve(
                    [*keys, link.own_key], transport="websocket", since=since
                )
        elif ids:
            self.register(link.client, ids)
        if link.client is not None:
            for seen in link.pending:
                self.write(link.client, seen)
            link.pending.clear()
        return link.client

    # --- what -----------------------------------------------------------------------------

    def after_replies(self, client: Client, replies: Iterable[Any]) -> None:
        for reply in replies:
            if reply.channel == "/meta/subscribe" and reply.successful:
                names = reply.subscription
                for name in [names] if isinstance(names, str) else list(names or ()):
                    if name not in client.channels:
                        client.channels.append(name)
                self.tape(lambda: client.log.update(channels=tuple(client.channels)))
            elif reply.channel == "/meta/disconnect" and reply.successful:
                self.close(client, "disconnected")

    def close(self, client: Client, reason: str) -> None:
        if not client.closed:
            client.closed = True
            self.tape(lambda: client.log.close(reason))

    def record(self, client: Client, exchange: HttpExchange, heads: Heads) -> None:
        """What of an HTTP exchange is not yet on its client's session."""
        if exchange.bayeux:
            self._bayeux_transport(client, "long-polling")
        if self.tape_error is None:
            try:
                client.log.exchange(exchange, partial(_text, heads=heads))
            except TapeError as exc:
                self.tape_error = str(exc)

    def write(self, client: Client, seen: Seen) -> None:
        self._bayeux_transport(client, "websocket")
        self.tape(lambda: client.log.append(seen.direction, seen.raw, at=seen.at, **seen.fields))

    def _bayeux_transport(self, client: Client, transport: str) -> None:
        if client.log.session.transport != transport:
            # the session's transport is its Bayeux one, not that of the login that opened it
            self.tape(lambda: client.log.update(transport=transport))


def _text(message: HttpMessage, heads: Heads) -> str:
    return heads.of(message.headers).text(message.secret_headers)


def cookie_value(headers: Iterable[str], name: str) -> str | None:
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
