"""The hostile client of the fuzz test (test_fuzz.py). Hypothesis strategies for hostile Bayeux
traffic (wrong types, huge numbers, deep nesting, oversized batches, invalid channels, bytes that
are not JSON or not UTF-8, WebSocket frames that break the protocol, bad upgrades, malformed REST
bodies) are drawn up front into `Hostile` requests whose bodies are bytes ready to send, so
sending them costs the test almost nothing; a `Barrage` sends them, a few at a time, over
long-polling POSTs and WebSockets, and records what became of each; `trickle` sends a request
head one byte at a time."""

from __future__ import annotations

import asyncio
import contextlib
import io
import itertools
import os
import random
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar
from urllib.parse import quote

import aiohttp
import orjson
from aiohttp import WSMsgType
from hypothesis import HealthCheck, Phase, given, seed, settings
from hypothesis import strategies as st

from replay.simulator import ACKS
from tests.agent import basic
from tests.constants import TIMEOUT
from tests.replay.tapes import CHANNELS

T = TypeVar("T")
SESSIONS = 4  # live hostile sessions whose clientIds stand in for the CID placeholders
CID = "@@cid{}@@"
BAYEUX_PATHS = (
    "/api/v2/notifications",
    "/cometd",
    "/cometd/connect",
    "/cometd/handshake",
    "/cometd/",
    "/api/v2/notifications/meta/subscribe",
)
METAS = ("handshake", "connect", "subscribe", "unsubscribe", "disconnect")
VALID_CHANNELS = (*(f"/meta/{m}" for m in METAS), *CHANNELS, "/service/echo", "/a/b")
INVALID_CHANNELS = (
    *("/a/*/b", "meta", "/meta/foo", "//", "", "/**/x", "/*", "/**", "/v2/me/*", "/v2/**"),
    *("/meta/*", "/meta/**", "/meta/", "/a//b", "/a/", " /a", "/a b", "/\x00", "/é/ü", "*"),
    *("**", "/a/**/b", "/meta/connect/x", "/META/CONNECT", "\\a", "/a\nb", "/x" * 2000),
    "/" + "y" * 10_000,
)
HUGE = (
    *(b"1e999", b"-1e999", b"1e-999", b"1" + b"0" * 400, b"-" + b"9" * 400, b"2e308"),
    *(b"18446744073709551616", b"-9223372036854775809", b"9223372036854775808", b"4e-400"),
    *(b"1.7976931348623159e308", b"0." + b"0" * 400 + b"1", b"1E+99999999999", b"-0"),
)
NOT_JSON = (
    *(b"", b" ", b"NaN", b"Infinity", b"-Infinity", b"[1,]", b"{'a':1}", b"[", b"]", b"{"),
    *(b"[{}", b"01", b"1.", b".5", b"+1", b"0x10", b"\x00", b'"\\ud800"', b"nul", b"tru"),
    *(b'[{"channel":"/meta/handshake"}]x', b'[{"channel":"/a"}][{"channel":"/a"}]'),
    *(b'\xef\xbb\xbf[{"channel":"/meta/handshake","version":"1.0"}]', b"\xff\xfe[\x00]\x00"),
    '[{"channel":"/meta/handshake"}]'.encode("utf-16"),
    b'[{"channel":"/meta/connect","clientId":"\\ud800\\udc00\\ud800"}]',
)
BAD_UTF8 = (b"\xff", b"\xfe\xff", b"\xc3\x28", b"\xc0\xaf", b"\xed\xa0\x80", b"\xf4\x90\x80\x80")
# (opcode, payload): reserved opcodes, a continuation with nothing to continue, a control
# frame over 125 bytes, close frames with invalid codes or reasons, invalid UTF-8 text.
WS_FRAMES = (
    *((0x3, b""), (0x7, b"x"), (0xB, b""), (0xF, b"abc"), (0x0, b"[]"), (0x9, b"p" * 126)),
    *((0x8, b"\x03\xe7"), (0x8, b"\x03"), (0x8, b"\x03\xe8\xff"), (0x8, b"\x03\xed")),
    *((0x1, b"\xff\xfe"), (0x1, b'[{"channel":"/meta/handshake\xc0\xaf"}]'), (0xA, b"pong")),
)
BAD_UPGRADES: tuple[tuple[tuple[str, str], ...], ...] = (
    (("Upgrade", "websocket"), ("Connection", "Upgrade")),
    (("Upgrade", "websocket"), ("Connection", "Upgrade"), ("Sec-WebSocket-Version", "8")),
    (("Upgrade", "websocket"), ("Connection", "Upgrade"), ("Sec-WebSocket-Key", "short")),
    (("Upgrade", "h2c"), ("Connection", "Upgrade, HTTP2-Settings")),
    (),
)
CONTENT_TYPES = ("application/json", "application/json;charset=UTF-8", "text/plain", "", "x/y")


@dataclass(frozen=True, slots=True)
class Raw:
    """A JSON token written as is: numbers no double holds, and tokens JSON does not allow."""

    text: bytes


def dumps(value: Any) -> bytes:
    """JSON text of values that may hold `Raw` tokens and integers of any size."""
    if isinstance(value, Raw):
        return value.text
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value).encode()
    if isinstance(value, list):
        return b"[" + b",".join(map(dumps, value)) + b"]"
    if isinstance(value, dict):
        items = (orjson.dumps(str(k)) + b":" + dumps(v) for k, v in value.items())
        return b"{" + b",".join(items) + b"}"
    return orjson.dumps(value)


@dataclass(frozen=True, slots=True)
class Hostile:
    """One hostile request: a POST body, a WebSocket frame, or an upgrade GET."""

    kind: str  # what is wrong with it: the strategy it came from
    via: str  # "post", "text" / "binary" (WebSocket frames), "frame" (raw opcode), "upgrade"
    path: str
    body: bytes
    auth: str = "session"  # simulator: "session", "no-csrf", "none", "bad-password", "bad-cookie"
    opcode: int = 0
    headers: tuple[tuple[str, str], ...] = ()

    def __str__(self) -> str:
        what = {"post": "POST", "upgrade": "GET", "frame": "WebSocket frame on"}.get(
            self.via, f"WebSocket {self.via} frame on"
        )
        path = self.path if len(self.path) < 80 else f"{self.path[:60]}...({len(self.path)})"
        body = repr(self.body[:150]) + (f"... ({len(self.body):,} bytes)" * (len(self.body) > 150))
        extra = f" opcode {self.opcode:#x}" * (self.via == "frame")
        if self.via != "post" or any(k != "Content-Type" for k, _ in self.headers):
            extra += f" headers {dict(self.headers)}" * bool(self.headers)
        extra += f" auth={self.auth}" * (self.auth != "session")
        return f"{what} {path} [{self.kind}]{extra}: {body}"


# --- JSON values ---------------------------------------------------------------------------

huge_numbers = st.one_of(
    st.sampled_from(HUGE),
    st.integers(10**19, 10**500).map(lambda n: str(n).encode()),
    st.integers(-(10**500), -(2**63) - 1).map(lambda n: str(n).encode()),
).map(Raw)
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**63), 2**64 - 1),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=12),
)


def _containers(inner: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3)


any_json = st.recursive(scalars, _containers, max_leaves=5)
client_ids = st.one_of(
    st.sampled_from([CID.format(i) for i in range(SESSIONS)]), st.text(max_size=40)
)
subscribable = st.sampled_from((*CHANNELS, "/**", "/v2/**", "/me/*", "/a/b"))
versions = st.sampled_from(("1.0", "1.0beta", "0.9", "2.0", "", "1"))
PLAUSIBLE: dict[str, st.SearchStrategy[Any]] = {
    "id": st.one_of(st.sampled_from(("1", "2", "x-1")), st.integers(0, 2**31)),
    "clientId": client_ids,
    "subscription": subscribable | st.lists(subscribable, max_size=3),
    "advice": st.fixed_dictionaries(
        {},
        optional={
            "timeout": st.integers(0, 500),
            "interval": st.integers(0, 100),
            "maxInterval": st.integers(0, 10**6),
            "reconnect": st.sampled_from(("retry", "handshake", "none")),
        },
    ),
    "data": any_json,
    "ext": st.dictionaries(st.text(max_size=5), scalars, max_size=2),
    "supportedConnectionTypes": st.lists(
        st.sampled_from(("long-polling", "websocket", "callback-polling", "x")), max_size=3
    ),
    "version": versions,
    "minimumVersion": versions,
    "connectionType": st.sampled_from(("long-polling", "websocket", "x")),
    "successful": st.booleans(),
}
valid_channels = st.sampled_from(VALID_CHANNELS)


def messages(
    channel: st.SearchStrategy[Any], field: Callable[[str], st.SearchStrategy[Any]]
) -> st.SearchStrategy[dict[str, Any]]:
    return st.fixed_dictionaries({"channel": channel}, optional={k: field(k) for k in PLAUSIBLE})


plausible = messages(valid_channels, PLAUSIBLE.__getitem__)
wrong = messages(valid_channels | any_json, lambda k: PLAUSIBLE[k] | any_json)


def batches(message: st.SearchStrategy[dict[str, Any]]) -> st.SearchStrategy[bytes]:
    return st.one_of(st.lists(message, min_size=1, max_size=4), message).map(dumps)


# --- what is wrong with a body -------------------------------------------------------------


def _with_huge(message: dict[str, Any], where: str, number: Raw) -> Any:
    if where == "top":
        return number
    if where == "advice.timeout":
        return {**message, "advice": {"timeout": number}}
    if where == "data.nested":
        return {**message, "data": {"a": [1, {"b": number}]}}
    return {**message, where: number}


def _invalid_channel(message: dict[str, Any], channel: str, how: str, cid: str) -> Any:
    if how == "channel":
        return {**message, "channel": channel, "clientId": cid}
    if how == "publish":
        return {"channel": channel, "clientId": cid, "data": message.get("data", 1)}
    subscription: Any = channel if how == "subscribe" else [CHANNELS[0], channel]
    return {"channel": "/meta/subscribe", "clientId": cid, "subscription": subscription, "id": "s"}


def _deep(depth: int, shape: str, where: str, closed: bool) -> bytes:
    opening, closing = {"array": (b"[", b"]"), "object": (b'{"a":', b"}")}.get(
        shape, (b'[{"a":', b"}]")
    )
    count = depth if shape != "mixed" else depth // 2
    nested = opening * count + b"1" + closing * count * closed
    if where == "top":
        return nested
    cid = CID.format(0).encode()
    channel = CHANNELS[0].encode() if where == "data" else b"/meta/subscribe"
    head = b'[{"channel":"' + channel + b'","clientId":"' + cid + b'","' + where.encode() + b'":'
    return head + nested + b"}]" * closed


# Short messages for the biggest batches: each is little to send and more to do.
SMALL = (
    {"channel": "/meta/handshake", "version": "1.0", "supportedConnectionTypes": ["long-polling"]},
    {"channel": "/meta/handshake", "version": "1.0", "supportedConnectionTypes": ["websocket"]},
    {"channel": "/meta/connect", "clientId": "nobody", "connectionType": "long-polling"},
    {"channel": "/meta/subscribe", "clientId": CID.format(0), "subscription": "/a/b"},
)


def _batch(message: dict[str, Any], count: int) -> bytes:
    return b"[" + b",".join([dumps(message)] * count) + b"]"


def _megabytes(size: int, how: str) -> bytes:
    cid = CID.format(1).encode()
    if how == "string":  # one delivery, to the well-behaved clients' channel
        head = b'[{"channel":"' + CHANNELS[1].encode() + b'","clientId":"' + cid + b'","data":"'
        return head + b"x" * (size << 20) + b'"}]'
    if how == "array":
        return b'[{"channel":"/a/b","data":[' + b"1," * (size << 19) + b"1]}]"
    one = b'{"channel":"/meta/connect","clientId":"nobody","connectionType":"long-polling"}'
    return b"[" + b",".join([one] * ((size << 20) // len(one))) + b"]"


def _corrupt(body: bytes, bad: bytes, where: float) -> bytes:
    quote_at = [i for i, c in enumerate(body) if c == 0x22] or [0]  # inside a string, mostly
    at = quote_at[int(where * (len(quote_at) - 1))] + 1
    return body[:at] + bad + body[at:]


def _rest_path(kind: str, name: str) -> str:
    return f"/api/v2/me/{kind}/{quote(name, safe='')}"


bodies: dict[str, st.SearchStrategy[bytes]] = {
    "wrong types": st.one_of(batches(wrong), any_json.map(dumps)),
    "huge numbers": st.builds(
        _with_huge,
        plausible,
        st.sampled_from(("top", "advice.timeout", "data.nested", "channel", *PLAUSIBLE)),
        huge_numbers,
    ).map(lambda m: dumps([m])),
    "invalid channels": st.lists(
        st.builds(
            _invalid_channel,
            plausible,
            st.sampled_from(INVALID_CHANNELS),
            st.sampled_from(("channel", "publish", "subscribe", "subscribe-list")),
            st.sampled_from([CID.format(i) for i in range(SESSIONS)]),
        ),
        min_size=1,
        max_size=3,
    ).map(dumps),
    # Depths from what a serializer refuses (orjson: 255) to what a parser refuses (1024),
    # mostly in published data, which is delivered to the well-behaved clients.
    "deep nesting": st.builds(
        _deep,
        st.sampled_from((200, 255, 256, 300, 500, 1000, 1023, 1024, 1025, 10_000, 100_000)),
        st.sampled_from(("array", "object", "mixed")),
        st.sampled_from(("top", *("data",) * 3, "subscription", "ext", "advice", "id", "clientId")),
        st.booleans(),
    ),
    "oversized batch": st.one_of(
        st.builds(_batch, plausible | wrong, st.integers(1_000, 10_000)),
        st.builds(_batch, st.sampled_from(SMALL), st.integers(10_000, 40_000)),
    ),
    "several MB": st.builds(
        _megabytes, st.integers(2, 6), st.sampled_from(("string", "array", "batch"))
    ),
    "not JSON": st.one_of(
        st.binary(max_size=64),
        st.sampled_from(NOT_JSON),
        st.builds(_corrupt, batches(plausible), st.sampled_from(BAD_UTF8), st.floats(0, 1)),
    ),
}


def _echoed_deep(depth: int, operation: str) -> bytes:
    reference = _deep(depth, "array", "top", closed=True)
    return b'{"operationName":"' + operation.encode() + b'","referenceId":' + reference + b"}"


rest_bodies = st.one_of(
    st.fixed_dictionaries(
        {"operationName": st.sampled_from((*ACKS, "GetPreviewRecord")) | any_json},
        optional={
            "referenceId": st.one_of(st.text(max_size=10), any_json, huge_numbers),
            "campaignName": any_json,
            "callingList": any_json,
            "applicationId": any_json | huge_numbers,
            "phoneNumber": any_json,
        },
    ).map(dumps),
    # a referenceId the simulator echoes in the ack it delivers
    st.builds(
        _echoed_deep, st.sampled_from((200, 254, 255, 256, 300, 1000)), st.sampled_from(tuple(ACKS))
    ),
    bodies["not JSON"],
    any_json.map(dumps),
)
rest_paths = st.builds(
    _rest_path,
    st.sampled_from(("outbound-records", "outbound-campaigns")),
    st.one_of(st.integers(-(10**30), 10**30).map(str), st.text(max_size=10), st.just("9" * 500)),
)
auths = st.sampled_from(("session",) * 16 + ("no-csrf", "none", "bad-password", "bad-cookie"))
transports = st.sampled_from(("post", "post", "post", "text", "binary"))
content_types = st.sampled_from(CONTENT_TYPES).map(lambda t: (("Content-Type", t),) * bool(t))


def _frame(frame: tuple[int, bytes], path: str, auth: str) -> Hostile:
    return Hostile("WebSocket protocol", "frame", path, frame[1], auth, frame[0])


def _upgrade(headers: tuple[tuple[str, str], ...], path: str, auth: str) -> Hostile:
    return Hostile("bad upgrades", "upgrade", path, b"", auth, headers=headers)


def _request(
    kind: str, via: str, path: str, body: bytes, auth: str, headers: tuple[tuple[str, str], ...]
) -> Hostile:
    return Hostile(kind, via, path, body, auth, headers=headers if via == "post" else ())


def requests(kind: str, body: st.SearchStrategy[bytes]) -> st.SearchStrategy[Hostile]:
    paths = st.sampled_from(BAYEUX_PATHS)
    return st.builds(_request, st.just(kind), transports, paths, body, auths, content_types)


# How many of each to draw. The costly kinds (several MB, batches of up to 40,000) are few:
# the sender and the server share this process's two cores.
STRATEGIES: dict[str, tuple[st.SearchStrategy[Hostile], int]] = {
    "wrong types": (requests("wrong types", bodies["wrong types"]), 600),
    "huge numbers": (requests("huge numbers", bodies["huge numbers"]), 250),
    "invalid channels": (requests("invalid channels", bodies["invalid channels"]), 300),
    "deep nesting": (requests("deep nesting", bodies["deep nesting"]), 100),
    "oversized batch": (requests("oversized batch", bodies["oversized batch"]), 20),
    "several MB": (requests("several MB", bodies["several MB"]), 4),
    "not JSON": (requests("not JSON", bodies["not JSON"]), 250),
    "REST bodies": (
        st.builds(Hostile, st.just("REST bodies"), st.just("post"), rest_paths, rest_bodies, auths),
        150,
    ),
    "WebSocket protocol": (
        st.builds(_frame, st.sampled_from(WS_FRAMES), st.sampled_from(BAYEUX_PATHS), auths),
        40,
    ),
    "bad upgrades": (
        st.builds(_upgrade, st.sampled_from(BAD_UPGRADES), st.sampled_from(BAYEUX_PATHS), auths),
        20,
    ),
}


def fuzz_seed() -> int:
    """COMETD_TAPE_FUZZ_SEED replays a run; CI (a derandomized profile) always draws seed 0."""
    if "COMETD_TAPE_FUZZ_SEED" in os.environ:
        return int(os.environ["COMETD_TAPE_FUZZ_SEED"])
    return 0 if settings().derandomize else random.randrange(2**32)


def drawn(strategy: st.SearchStrategy[T], count: int, seed_value: int) -> list[T]:
    """`count` examples of `strategy`, as Hypothesis generates them for a test (no shrinking:
    the test sends them all, and its failures name the requests)."""
    out: list[T] = []

    @seed(seed_value)
    @settings(
        max_examples=count,
        database=None,
        deadline=None,
        phases=[Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @given(strategy)
    def collect(value: T) -> None:
        out.append(value)

    collect()
    return out


# Drawn or not, two batches of 60,000 handshakes: the most work per byte a batch can ask for.
WORST = (
    Hostile("oversized batch", "post", "/cometd", _batch(SMALL[0], 60_000)),
    Hostile("oversized batch", "binary", "/cometd", _batch(SMALL[1], 60_000)),
)


def hostile_requests(seed_value: int) -> list[Hostile]:
    """Every kind's requests, and the WORST, shuffled together."""
    out = [r for s, n in STRATEGIES.values() for r in drawn(s, n, seed_value)] + list(WORST)
    random.Random(seed_value).shuffle(out)
    return out


# --- sending them ----------------------------------------------------------------------------

LOAD_BUDGET = 1.5 * TIMEOUT  # the hostile load must be through by then
GIVE_UP = 0.15 * TIMEOUT  # a hostile request unanswered this long (plus 0.5 s a MB) is dropped
WS_WAIT = 0.03 * TIMEOUT  # how long a hostile WebSocket waits for a reply to each frame
POSTERS, SOCKETS = 10, 4  # hostile requests in flight over HTTP, and WebSockets open
TRICKLE_EVERY = 0.1  # a slow-header connection sends one byte this often
SLOW_HEADS = (
    b"POST /cometd HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ",
    b"GET /api/v2/notifications HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
    b"Connection: Upgrade\r\nX-Slow: ",
    b"POST /cometd HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 1000000\r\n\r\n[",  # body
    b"GET /",  # the request line itself
)
REFUSED = frozenset({401, 403, 408, 413, 414, 431})  # no credentials: refused (or too big)


@dataclass(frozen=True, slots=True)
class Target:
    name: str
    origin: str  # http://127.0.0.1:<port>
    gws: bool  # the simulator: HTTP basic, then the JSESSIONID cookie and the CSRF header

    def url(self, path: str, scheme: str = "http") -> str:
        return scheme + self.origin.removeprefix("http") + path

    @property
    def port(self) -> int:
        return int(self.origin.rsplit(":", 1)[1])


async def login(target: Target, http: aiohttp.ClientSession) -> dict[str, str]:
    """GWS: GET /api/v2/me with basic auth sets JSESSIONID; POSTs send the CSRF token back."""
    if not target.gws:
        return {}
    async with http.get(target.origin + "/api/v2/me", headers=basic("agent", "agent")) as r:
        assert r.status == 200, await r.text()
        return {"X-CSRF-TOKEN": r.headers["X-CSRF-TOKEN"]}


def handshake(kind: str) -> bytes:
    message = {"channel": "/meta/handshake", "version": "1.0", "id": "1"}
    return orjson.dumps([message | {"supportedConnectionTypes": [kind]}])


def subscribe(client_id: str) -> bytes:
    message = {"channel": "/meta/subscribe", "clientId": client_id, "subscription": CHANNELS}
    return orjson.dumps([message | {"id": "2"}])


def refused(target: Target, request: Hostile) -> bool:
    """Whether the simulator must refuse it: no valid login, or (a POST) no CSRF token."""
    no_csrf_is_fine = request.via != "post" and request.auth == "no-csrf"
    return target.gws and request.auth != "session" and not no_csrf_is_fine


@dataclass
class Outcome:
    """What became of one hostile request."""

    request: Hostile
    started: float
    ended: float = float("inf")  # while in flight
    status: int | None = None  # HTTP status of the POST or GET, or of the WebSocket upgrade
    close: str = ""  # how the server closed the WebSocket right after this frame, if it did
    dropped: bool = False  # ... without a close frame
    after: Hostile | None = None  # the frame sent before this one on the same WebSocket
    note: str = ""  # given up on: no answer in time


class Barrage:
    """Sends the hostile requests: POSTERS at a time over HTTP, and over SOCKETS WebSockets,
    each frame waiting WS_WAIT for a reply; records an Outcome for each."""

    def __init__(self, target: Target, requests: list[Hostile]) -> None:
        self.target, self.requests = target, requests
        self.outcomes: list[Outcome] = []
        self.client_ids: list[str] = []
        self.csrf: dict[str, str] = {}
        self.finished = False
        self._stack = contextlib.AsyncExitStack()
        self._https: dict[str, aiohttp.ClientSession] = {}

    async def __aenter__(self) -> Barrage:
        jar = aiohttp.CookieJar(unsafe=True)
        http = await self._stack.enter_async_context(aiohttp.ClientSession(cookie_jar=jar))
        self.csrf = await login(self.target, http)
        self._https = {"session": http, "no-csrf": http}
        for auth, headers in (
            ("none", {}),
            ("bad-password", basic("agent", "nope")),
            ("bad-cookie", {"Cookie": "JSESSIONID=0123456789abcdef"}),
        ):
            anonymous = aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar(), headers=headers)
            self._https[auth] = await self._stack.enter_async_context(anonymous)
        url = self.target.url("/cometd")
        for _ in range(SESSIONS):  # live sessions, for the messages that name a real clientId
            async with http.post(url, data=handshake("long-polling"), headers=self.csrf) as r:
                client_id = (await r.json(content_type=None))[0]["clientId"]
            async with http.post(url, data=subscribe(client_id), headers=self.csrf) as r:
                await r.read()
            self.client_ids.append(client_id)
        return self

    async def __aexit__(self, *_: object) -> None:
        await self._stack.aclose()

    async def run(self) -> None:
        over_http = deque(r for r in self.requests if r.via in ("post", "upgrade"))
        frames = deque(r for r in self.requests if r.via not in ("post", "upgrade"))
        workers = [self._http(over_http) for _ in range(POSTERS)]
        workers += [self._websocket(frames) for _ in range(SOCKETS)]
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(LOAD_BUDGET):
                await asyncio.gather(*workers)
                self.finished = True

    def _start(self, request: Hostile) -> Outcome:
        outcome = Outcome(request, time.monotonic())
        self.outcomes.append(outcome)
        return outcome

    def _body(self, request: Hostile) -> bytes:
        body = request.body
        if b"@@cid" in body:
            for i, client_id in enumerate(self.client_ids):
                body = body.replace(CID.format(i).encode(), client_id.encode())
        return body

    def _headers(self, request: Hostile) -> dict[str, str]:
        return dict(request.headers) | (self.csrf if request.auth == "session" else {})

    async def _http(self, queue: deque[Hostile]) -> None:
        while queue:
            request = queue.popleft()
            outcome = self._start(request)
            http, url = self._https[request.auth], self.target.url(request.path)
            headers, limit = self._headers(request), GIVE_UP + len(request.body) / 2**21
            try:
                async with asyncio.timeout(limit):
                    if request.via == "upgrade":
                        sending = http.get(url, headers=headers)
                    else:  # aiohttp warns of large bytes bodies: it wants a stream
                        body, big = self._body(request), len(request.body) > 2**20
                        data = io.BytesIO(body) if big else body
                        sending = http.post(url, data=data, headers=headers)
                    async with sending as response:
                        outcome.status = response.status
                        await response.read()
            except TimeoutError:
                outcome.note = f"no answer within {limit:.1f} s"
            except aiohttp.ClientError as exc:
                outcome.note = f"no answer: {exc!r}"
            outcome.ended = time.monotonic()

    async def _websocket(self, queue: deque[Hostile]) -> None:
        ws: aiohttp.ClientWebSocketResponse | None = None
        before: Hostile | None = None
        try:
            while queue:
                request = queue.popleft()
                if refused(self.target, request):
                    await self._open(request)  # records how it was refused
                    continue
                if ws is None:
                    ws, before = await self._open(request), None
                    if ws is None:
                        continue
                outcome = await self._frame(ws, request, before)
                before = request
                if outcome.close:
                    await ws.close()
                    ws = None
        finally:
            if ws is not None:
                await ws.close()

    async def _open(self, request: Hostile) -> aiohttp.ClientWebSocketResponse | None:
        """A WebSocket on the request's path; None (and an Outcome saying why) if refused."""
        outcome = Outcome(request, time.monotonic())
        url = self.target.url(request.path, "ws")
        try:
            async with asyncio.timeout(GIVE_UP):
                ws = await self._https[request.auth].ws_connect(url, max_msg_size=0, heartbeat=None)
        except aiohttp.WSServerHandshakeError as exc:
            outcome.status = exc.status
        except (TimeoutError, aiohttp.ClientError) as exc:
            outcome.note = f"upgrade failed: {exc!r}"
        else:
            if not refused(self.target, request):
                return ws
            outcome.status = 101  # upgraded without credentials
            await ws.close()
        outcome.ended = time.monotonic()
        self.outcomes.append(outcome)
        return None

    async def _frame(
        self, ws: aiohttp.ClientWebSocketResponse, request: Hostile, before: Hostile | None
    ) -> Outcome:
        outcome = self._start(request)
        outcome.after = before
        body, sent = self._body(request), True
        try:
            async with asyncio.timeout(GIVE_UP + len(body) / 2**21):
                try:
                    await _send(ws, request, body)
                except (ConnectionError, aiohttp.ClientError):
                    sent = False  # the server dropped it already: see how, below
                message = await ws.receive(timeout=WS_WAIT)
        except TimeoutError:
            pass  # no reply: a held connect, an empty batch, a ping
        else:
            if message.type is WSMsgType.CLOSE:
                outcome.close = f"closed with code {message.data}"
            elif message.type not in (WSMsgType.TEXT, WSMsgType.BINARY):
                outcome.dropped = True
                when = "right after" if sent else "before this could be sent"
                outcome.close = f"dropped without a close frame ({message.type.name}) {when}"
        outcome.ended = time.monotonic()
        return outcome


async def _send(ws: aiohttp.ClientWebSocketResponse, request: Hostile, body: bytes) -> None:
    if request.via == "binary":
        await ws.send_bytes(body)
        return
    try:
        text = body.decode() if request.via == "text" else None
    except UnicodeDecodeError:
        text = None
    if text is not None:
        await ws.send_str(text)
    else:  # invalid UTF-8 in a text frame, or a frame that breaks the protocol
        opcode = request.opcode if request.via == "frame" else WSMsgType.TEXT
        await ws._writer.send_frame(body, opcode)


async def trickle(port: int, head: bytes, notes: list[str]) -> None:
    """A request head (or body) sent one byte every TRICKLE_EVERY, then filler, until cancelled."""
    _, writer = await asyncio.open_connection("127.0.0.1", port)
    started = time.monotonic()
    try:
        for byte in itertools.chain(head, itertools.repeat(ord("a"))):
            writer.write(bytes([byte]))
            await writer.drain()
            await asyncio.sleep(TRICKLE_EVERY)
    except ConnectionError as exc:
        notes.append(f"{head[:20]!r}... cut off after {time.monotonic() - started:.1f} s ({exc!r})")
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()
