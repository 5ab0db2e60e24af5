"""The comparison behind `cometd-tape diff` and assert_same_traffic, with no I/O: two traffics
(deliveries per channel, REST exchanges) in, the differences out, as unified-diff hunks and
counts. difflib aligns each sequence, so one changed delivery is one change, not a cascade.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Literal

from tape.diff_rules import Rules, rules_for
from tape.diff_timing import Timing

EXCHANGES = "REST exchanges"


@dataclass(frozen=True, slots=True)
class Delivery:
    """A message a client received on a non-meta channel; `offset`: seconds after its
    session's first delivery (None when not known: a list of messages given in a test)."""

    channel: str
    message: Any
    offset: float | None = None


@dataclass(frozen=True, slots=True)
class Exchange:
    """A REST request and its response; bodies as JSON values (text when not JSON, None when
    empty; a request with no response has status and response None)."""

    method: str | None
    path: str | None
    status: int | None
    request: Any
    response: Any


@dataclass(frozen=True, slots=True)
class Traffic:
    """What one side holds. `exchanges` is None when not known (a list of messages)."""

    name: str
    deliveries: tuple[Delivery, ...]
    exchanges: tuple[Exchange, ...] | None = None


@dataclass(frozen=True, slots=True)
class DiffOptions:
    """What to compare and how: the ignore rules, a timing tolerance (None: order only),
    whether the REST exchanges count, and the lines of context around each change."""

    rules: Rules = field(default_factory=rules_for)  # DEFAULT_IGNORES
    timing: Timing | None = None
    exchanges: bool = True  # compare the REST exchanges when both sides have them
    context: int = 3


@dataclass(frozen=True, slots=True)
class Section:
    """One compared sequence (a channel, or the exchanges): its hunks and its counts."""

    name: str
    noun: str  # "delivery" or "exchange"
    compared: int
    hunks: tuple[str, ...] = ()
    differ: int = 0
    missing: int = 0  # in A, not in B
    extra: int = 0  # in B, not in A
    late: tuple[str, ...] = ()  # deliveries equal but off time


@dataclass(frozen=True, slots=True)
class TrafficDiff:
    """The differences between two traffics (tape/diff_report.py renders them)."""

    a: str
    b: str
    sections: tuple[Section, ...]
    timing: Timing | None = None

    @property
    def equal(self) -> bool:
        return not any(s.hunks or s.late for s in self.sections)


def is_delivery(message: Any) -> bool:
    """A delivered message: on a non-meta channel, with data. A publish's reply shares its
    channel but carries no data."""
    return (
        isinstance(message, Mapping)
        and isinstance(message.get("channel"), str)
        and not message["channel"].startswith("/meta/")
        and "data" in message
    )


def traffic_of(messages: Iterable[Any], name: str) -> Traffic:
    """A list of messages (what a client received, as dicts) as a traffic: its deliveries."""
    kept = tuple(Delivery(m["channel"], m) for m in messages if is_delivery(m))
    return Traffic(name, kept, None)


def compare(a: Traffic, b: Traffic, options: DiffOptions) -> TrafficDiff:
    """The differences between `a` and `b`: per channel in order, then the exchanges."""
    if options.timing is not None:
        for side in (a, b):
            if any(d.offset is None for d in side.deliveries):
                raise ValueError(f"timing needs recorded times, and {side.name} has none")
    mine, theirs = _by_channel(a), _by_channel(b)
    names = (a.name, b.name)
    sections = [
        _channel(channel, mine.get(channel, []), theirs.get(channel, []), names, options)
        for channel in dict.fromkeys([*mine, *theirs])
    ]
    if options.exchanges and a.exchanges is not None and b.exchanges is not None:
        sections.append(_exchanges(a, b, options))
    return TrafficDiff(a.name, b.name, tuple(sections), options.timing)


def _by_channel(traffic: Traffic) -> dict[str, list[Delivery]]:
    out: dict[str, list[Delivery]] = {}
    for delivery in traffic.deliveries:
        out.setdefault(delivery.channel, []).append(delivery)
    return out


def _channel(
    channel: str,
    mine: list[Delivery],
    theirs: list[Delivery],
    names: tuple[str, str],
    options: DiffOptions,
) -> Section:
    lines_a = [options.rules.line(d.message) for d in mine]
    lines_b = [options.rules.line(d.message) for d in theirs]
    matcher = _Matcher(lines_a, lines_b)
    section = _section(channel, "delivery", matcher, names, options.context)
    if options.timing is None:
        return section
    return replace(section, late=tuple(_late(mine, theirs, matcher.get_opcodes(), options.timing)))


def _exchanges(a: Traffic, b: Traffic, options: DiffOptions) -> Section:
    lines = [[_exchange_line(e, options.rules) for e in t.exchanges or ()] for t in (a, b)]
    matcher = _Matcher(lines[0], lines[1])
    return _section(EXCHANGES, "exchange", matcher, (a.name, b.name), options.context)


def _exchange_line(exchange: Exchange, rules: Rules) -> str:
    """An exchange as a line; the ignore rules apply to each body on its own."""
    shown = {
        "method": exchange.method,
        "path": exchange.path,
        "status": exchange.status,
        "request": rules.apply(exchange.request),
        "response": rules.apply(exchange.response),
    }
    return Rules().line(shown)


def _section(
    name: str, noun: str, matcher: _Matcher, names: tuple[str, str], context: int
) -> Section:
    a, b = matcher.lines
    differ = missing = extra = 0
    for tag, i1, i2, j1, j2 in matcher.get_opcodes():
        if tag == "equal":
            continue
        paired = min(i2 - i1, j2 - j1)
        differ += paired
        missing += i2 - i1 - paired
        extra += j2 - j1 - paired
    if not differ + missing + extra:
        return Section(name, noun, len(a))
    header = (f"--- {names[0]}  {name}", f"+++ {names[1]}  {name}")
    hunks = [line for group in matcher.get_grouped_opcodes(context) for line in _hunk(group, a, b)]
    return Section(name, noun, len(a), (*header, *hunks), differ, missing, extra)


Opcode = tuple[Literal["replace", "delete", "insert", "equal"], int, int, int, int]


class _Matcher(difflib.SequenceMatcher[str]):
    """difflib's alignment with no junk heuristic (a run of equal lines is not noise here), run
    on what is left once the common head and tail are set aside: tapes mostly agree."""

    def __init__(self, a: Sequence[str], b: Sequence[str]) -> None:
        super().__init__(None, (), (), autojunk=False)  # its own index is not needed: the
        self.lines = (a, b)  # inner matcher below indexes only what differs
        self._ops: list[Opcode] | None = None

    def get_opcodes(self) -> list[Opcode]:
        if self._ops is None:  # asked for by the counts, the hunks and the timing
            self._ops = self._aligned()
        return self._ops

    def _aligned(self) -> list[Opcode]:
        a, b = self.lines
        head = 0
        while head < min(len(a), len(b)) and a[head] == b[head]:
            head += 1
        tail = 0
        while tail < min(len(a), len(b)) - head and a[-1 - tail] == b[-1 - tail]:
            tail += 1
        inner = difflib.SequenceMatcher(
            None, a[head : len(a) - tail], b[head : len(b) - tail], autojunk=False
        ).get_opcodes()
        ops: list[Opcode] = [("equal", 0, head, 0, head)]
        ops += [(t, i1 + head, i2 + head, j1 + head, j2 + head) for t, i1, i2, j1, j2 in inner]
        ops.append(("equal", len(a) - tail, len(a), len(b) - tail, len(b)))
        return _merged([op for op in ops if op[0] != "equal" or op[1] < op[2]])


def _merged(ops: list[Opcode]) -> list[Opcode]:
    """Adjacent equal runs joined (the head, the inner equal runs and the tail meet)."""
    out: list[Opcode] = []
    for op in ops:
        if out and op[0] == "equal" and out[-1][0] == "equal":
            out[-1] = ("equal", out[-1][1], op[2], out[-1][3], op[4])
        else:
            out.append(op)
    return out


def _hunk(
    group: Sequence[tuple[str, int, int, int, int]], a: Sequence[str], b: Sequence[str]
) -> list[str]:
    """One unified-diff hunk, as difflib.unified_diff writes it."""
    first, last = group[0], group[-1]
    lines = [f"@@ -{_range(first[1], last[2])} +{_range(first[3], last[4])} @@"]
    for tag, i1, i2, j1, j2 in group:
        if tag == "equal":
            lines += [" " + line for line in a[i1:i2]]
            continue
        lines += ["-" + line for line in a[i1:i2]]
        lines += ["+" + line for line in b[j1:j2]]
    return lines


def _range(start: int, stop: int) -> str:
    """A hunk's range: 1-based first line, and the count unless it is 1 (difflib's form)."""
    length = stop - start
    if length == 1:
        return str(start + 1)
    return f"{start + 1 if length else start},{length}"


def _late(
    mine: list[Delivery],
    theirs: list[Delivery],
    ops: list[Opcode],
    timing: Timing,
) -> list[str]:
    """The deliveries aligned as equal whose offsets differ by more than `timing` allows."""
    out = []
    for tag, i1, i2, j1, _j2 in ops:
        if tag != "equal":
            continue
        for k in range(i2 - i1):
            at_a, at_b = mine[i1 + k].offset, theirs[j1 + k].offset
            if at_a is None or at_b is None:  # compare() refused this
                continue
            allowed = timing.allowed(at_a)
            if abs(at_b - at_a) > allowed:
                out.append(
                    f"#{i1 + k + 1} in A, #{j1 + k + 1} in B: at {at_a:.3f} s in A, "
                    f"{at_b:.3f} s in B (allowed ±{allowed:.3f} s)"
                )
    return out
