"""Tape diffs for tests: `assert_same_traffic(a, b)` fails with the same unified diff that
`cometd-tape diff A B` prints (docs/diff.md). Each side is a tape (DuckDB, JSONL, HAR, a tape
set: a folder or a glob), a list of messages a client received, or a Traffic from read_traffic.

    from tape.diff import assert_same_traffic

    assert_same_traffic("tests/golden/desk.jsonl", received, ignore=["$.data.record.id"])
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from typing import Any

from tape.diff_core import (
    Delivery,
    DiffOptions,
    Exchange,
    Traffic,
    TrafficDiff,
    compare,
    traffic_of,
)
from tape.diff_report import render, summary
from tape.diff_rules import DEFAULT_IGNORES, IGNORED, RuleError, rules_for
from tape.diff_source import read_traffic
from tape.diff_timing import Timing

__all__ = [
    "DEFAULT_IGNORES",
    "IGNORED",
    "Delivery",
    "DiffOptions",
    "Exchange",
    "RuleError",
    "Timing",
    "Traffic",
    "TrafficDiff",
    "assert_same_traffic",
    "diff_traffic",
    "read_traffic",
    "render",
    "summary",
]

Side = str | os.PathLike[str] | Traffic | Iterable[Mapping[str, Any]]


def assert_same_traffic(
    a: Side,
    b: Side,
    *,
    ignore: Iterable[str] = (),
    default_ignores: bool = True,
    timing: str | None = None,
    exchanges: bool = True,
) -> None:
    """Fail, with the unified diff as the message, unless `a` and `b` carry the same traffic:
    the same deliveries per channel in order and, when both are tapes, the same REST exchanges.

    `ignore`: JSONPath rules added to DEFAULT_IGNORES (or replacing them with
    `default_ignores=False`); `timing`: a tolerance such as "10%" or "10%+50ms" (tapes only);
    `exchanges=False` compares the deliveries alone."""
    diff = diff_traffic(
        a, b, ignore=ignore, default_ignores=default_ignores, timing=timing, exchanges=exchanges
    )
    if not diff.equal:
        raise AssertionError(render(diff))


def diff_traffic(
    a: Side,
    b: Side,
    *,
    ignore: Iterable[str] = (),
    default_ignores: bool = True,
    timing: str | None = None,
    exchanges: bool = True,
) -> TrafficDiff:
    """The differences between `a` and `b` (see assert_same_traffic); `render(diff)` reads."""
    options = DiffOptions(
        rules=rules_for(ignore, default_ignores=default_ignores),
        timing=None if timing is None else Timing.parse(timing),
        exchanges=exchanges,
    )
    return compare(_traffic(a, "A"), _traffic(b, "B"), options)


def _traffic(side: Side, name: str) -> Traffic:
    if isinstance(side, Traffic):
        return side
    if isinstance(side, str | os.PathLike):
        return read_traffic(os.fspath(side))
    messages = list(side)
    return traffic_of(messages, f"{name} ({len(messages)} messages given)")
