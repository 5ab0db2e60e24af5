"""Faults a replay injects, as the user writes them (`--fault SPEC`, the marker's `faults=[...]`):
the grammar, its checks, and the frozen `Fault` the replayer's core and server act on.

A spec is `KIND[:ARG][,KEY=VALUE...]`, e.g. `drop:10%`, `drop:nth=3,channel=/v2/me/outbound`,
`delay:100ms-2s`, `unknown-client:at=5s`, `close:code=1011,after=20`, `http-503:at=2s,count=3`.
Every time (`at=`) counts from the client's handshake; `after=N` from its Nth delivery.
"""

from __future__ import annotations

import math
import random
import re
from dataclasses import dataclass, field, replace
from typing import Any

MESSAGE_KINDS = ("drop", "duplicate", "delay", "reorder", "corrupt")
SESSION_KINDS = ("unknown-client", "disconnect", "hold-connect", "advice")
TRANSPORT_KINDS = ("close", "reset", "http-500", "http-503", "slow", "stall")
KINDS = MESSAGE_KINDS + SESSION_KINDS + TRANSPORT_KINDS
RECONNECTS = ("retry", "handshake", "none")
_KEYS = {
    "at", "after", "channel", "p", "nth", "count", "for", "over", "code", "window",
    "reconnect", "interval", "median", "p99",
}  # fmt: skip
# What a bare argument (`drop:10%`) stands for, per kind.
_MAIN = {
    "drop": "p", "duplicate": "p", "delay": "delay", "reorder": "window", "corrupt": "nth",
    "advice": "reconnect", "close": "code", "http-500": "count", "http-503": "count",
    "slow": "over", "stall": "for", "hold-connect": "for", "unknown-client": "at",
    "disconnect": "at", "reset": "at",
}  # fmt: skip
_DURATION = re.compile(r"^(\d+(?:\.\d+)?)(ms|s|m)?$")
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, None: 1.0}


class FaultError(ValueError):
    """A fault spec that cannot be used; the message says what to write instead."""


@dataclass(frozen=True, slots=True)
class Delay:
    """A delay: fixed (low == high), uniform in [low, high], or lognormal (median, p99)."""

    low: float
    high: float
    lognormal: bool = False

    def sample(self, rng: random.Random) -> float:
        if self.lognormal:  # low = median, high = p99; 2.326 = the normal's 99th percentile
            sigma = math.log(self.high / self.low) / 2.326 if self.high > self.low else 0.0
            return rng.lognormvariate(math.log(self.low), sigma)
        return self.low if self.high == self.low else rng.uniform(self.low, self.high)


@dataclass(frozen=True, slots=True)
class Fault:
    """One fault to inject. `count` bounds how often a session or transport fault fires over
    the whole replay (a client that re-handshakes does not meet it again unless count > 1)."""

    kind: str
    text: str = ""
    at: float | None = None  # seconds after the client's handshake
    after: int | None = None  # after this many deliveries to the client
    channel: str | None = None  # only deliveries on channels this pattern matches
    fraction: float | None = None  # message faults: each delivery with this probability
    nth: int | None = None  # message faults: the nth matching delivery (1-based)
    count: int = 1
    delay: Delay | None = None
    window: int = 3  # reorder: deliveries shuffled together
    code: int = 1011  # close: the WebSocket close code
    reconnect: str = "retry"  # advice
    interval: int = 0  # advice: ms
    duration: float | None = None  # hold-connect, stall: how long (None: until the client
    # gives up); slow: over how long each answer's bytes are dribbled
    extra: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)

    @property
    def layer(self) -> str:
        """'message', 'session' or 'transport': where the fault is injected."""
        if self.kind in MESSAGE_KINDS:
            return "message"
        return "session" if self.kind in SESSION_KINDS else "transport"

    @property
    def fires(self) -> int:
        """How many times over the replay a timed fault fires. For http-500/503 `count` is how
        many polls fail, and the fault fires once."""
        return 1 if self.kind in ("http-500", "http-503") else self.count

    def describe(self) -> str:
        return self.text or self.kind


def parse_fault(text: str) -> Fault:
    """A `Fault` from its spec; FaultError says what is wrong and what to write."""
    kind, _, rest = text.strip().partition(":")
    kind = kind.strip().lower()
    if kind not in KINDS:
        raise FaultError(f"unknown fault {kind!r} in {text!r}: use one of {', '.join(KINDS)}")
    values: dict[str, str] = {}
    for item in filter(None, (part.strip() for part in rest.split(","))):
        key, eq, value = item.partition("=")
        if not eq:
            key, value = _MAIN[kind], item
        key = key.strip().lower()
        if key not in _KEYS and key != "delay":
            raise FaultError(f"unknown setting {key!r} in {text!r}: use {', '.join(sorted(_KEYS))}")
        values[key] = value.strip()
    try:
        fault = _build(kind, values, text.strip())
    except FaultError as exc:
        raise FaultError(f"{exc} (in {text!r})") from None
    _check(fault)
    return fault


def parse_faults(texts: list[str] | tuple[str, ...]) -> tuple[Fault, ...]:
    return tuple(parse_fault(text) for text in texts)


def duration(value: str) -> float:
    """Seconds from `500ms`, `2s`, `1.5`, `1m`."""
    match = _DURATION.match(value.strip().lower())
    if match is None:
        raise FaultError(f"{value!r} is not a duration: write it as 500ms, 2s or 1m")
    return float(match.group(1)) * _UNITS[match.group(2)]


def _fraction(value: str) -> float:
    try:
        number = float(value[:-1]) / 100 if value.endswith("%") else float(value)
    except ValueError:
        raise FaultError(f"{value!r} is not a fraction: write 10% or 0.1") from None
    if not 0 <= number <= 1:
        raise FaultError(f"{value!r} is not between 0 and 100%")
    return number


def _whole(value: str, name: str, least: int = 1) -> int:
    if not value.isdigit() or int(value) < least:
        raise FaultError(f"{name}={value!r} must be a whole number of at least {least}")
    return int(value)


def _delay(values: dict[str, str]) -> Delay | None:
    if "median" in values or "p99" in values:
        median, p99 = duration(values.get("median", "0")), duration(values.get("p99", "0"))
        if median <= 0 or p99 < median:
            raise FaultError("a lognormal delay needs median=T and p99=T with p99 >= median > 0")
        return Delay(median, p99, lognormal=True)
    if "delay" not in values:
        return None
    low, dash, high = values["delay"].partition("-")
    first = duration(low)
    last = duration(high) if dash else first
    if last < first:
        raise FaultError(f"a delay range runs from the smaller: {values['delay']!r}")
    return Delay(first, last)


def _build(kind: str, values: dict[str, str], text: str) -> Fault:
    get = values.get
    code = get("code")
    fault = Fault(
        kind,
        text,
        at=duration(values["at"]) if "at" in values else None,
        after=_whole(values["after"], "after", 0) if "after" in values else None,
        channel=get("channel"),
        fraction=_fraction(values["p"]) if "p" in values else None,
        nth=_whole(values["nth"], "nth") if "nth" in values else None,
        count=_whole(values["count"], "count") if "count" in values else 1,
        delay=_delay(values),
        window=_whole(values["window"], "window", 2) if "window" in values else 3,
        code=_whole(code, "code", 1000) if code else 1011,
        reconnect=get("reconnect", "retry").lower(),
        interval=_whole(values["interval"], "interval", 0) if "interval" in values else 0,
        duration=_span(values),
    )
    if kind == "corrupt" and fault.nth is None and fault.fraction is None:
        fault = replace(fault, nth=1)
    return fault


def _span(values: dict[str, str]) -> float | None:
    text = values.get("for", values.get("over"))
    return None if text is None else duration(text)


def _check(fault: Fault) -> None:
    kind = fault.kind
    if kind in ("drop", "duplicate") and fault.fraction is None and fault.nth is None:
        raise FaultError(f"{kind} needs a fraction ({kind}:10%) or nth=N (in {fault.text!r})")
    if kind == "delay" and fault.delay is None:
        raise FaultError(f"delay needs a time: delay:500ms, delay:100ms-2s, or median=,p99= "
                         f"(in {fault.text!r})")  # fmt: skip
    timed = fault.layer != "message" and kind not in ("slow", "stall")
    if timed and fault.at is None and fault.after is None:
        raise FaultError(f"{kind} needs at=TIME or after=N (in {fault.text!r})")
    if kind == "advice" and fault.reconnect not in RECONNECTS:
        raise FaultError(f"advice reconnect must be one of {', '.join(RECONNECTS)}")
    if kind == "slow" and not fault.duration:
        raise FaultError(f"slow needs over=TIME: slow:over=2s (in {fault.text!r})")
    # RFC 6455 7.4.1: 1004-1006 and 1015 are reserved and never sent in a close frame.
    sendable = 1000 <= fault.code <= 1003 or 1007 <= fault.code <= 1014
    if kind == "close" and not (sendable or 3000 <= fault.code <= 4999):
        raise FaultError(f"close code {fault.code} cannot be sent: use 1000-1003, 1007-1014 "
                         "or 3000-4999")  # fmt: skip
