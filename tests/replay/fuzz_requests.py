"""The hostile requests of the fuzz test (test_fuzz.py): `Hostile`, a POST body, a WebSocket frame
or an upgrade GET, and the Hypothesis strategies of each kind (bodies: fuzz_strategies.py), drawn
up front for a seed so that sending them costs the test almost nothing."""

from __future__ import annotations

import os
import random
from dataclasses import dataclass
from typing import TypeVar
from urllib.parse import quote

from hypothesis import HealthCheck, Phase, given, seed, settings
from hypothesis import strategies as st

from tests.replay.fuzz_strategies import SMALL, batch_of, bodies, rest_bodies

T = TypeVar("T")
BAYEUX_PATHS = (
    "/api/v2/notifications",
    "/cometd",
    "/cometd/connect",
    "/cometd/handshake",
    "/cometd/",
    "/api/v2/notifications/meta/subscribe",
)
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


def _rest_path(kind: str, name: str) -> str:
    return f"/api/v2/me/{kind}/{quote(name, safe='')}"


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
    Hostile("oversized batch", "post", "/cometd", batch_of(SMALL[0], 60_000)),
    Hostile("oversized batch", "binary", "/cometd", batch_of(SMALL[1], 60_000)),
)


def hostile_requests(seed_value: int) -> list[Hostile]:
    """Every kind's requests, and the WORST, shuffled together."""
    out = [r for s, n in STRATEGIES.values() for r in drawn(s, n, seed_value)] + list(WORST)
    random.Random(seed_value).shuffle(out)
    return out
