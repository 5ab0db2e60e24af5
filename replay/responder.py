"""Reactive replay: an incoming REST request answered by the recorded exchange it matches."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from replay.exchange import FollowUp, Incoming, RecordedExchange, path_pattern, record_handle
from replay.exchange_loader import REPLAYED_HEADERS, load_exchanges
from replay.matchers import DEFAULT_MATCHERS, Matcher, body_field, method, operation, path
from replay.substitution import substitute

__all__ = [
    "DEFAULT_MATCHERS",
    "REPLAYED_HEADERS",
    "FollowUp",
    "Incoming",
    "Matcher",
    "RecordedExchange",
    "Responder",
    "Served",
    "Unmatched",
    "body_field",
    "load_exchanges",
    "method",
    "operation",
    "path",
    "path_pattern",
    "record_handle",
    "substitute",
]


@dataclass
class Unmatched:
    request: dict[str, Any]
    closest: dict[str, Any] | None
    differences: list[str]

    def as_json(self) -> dict[str, Any]:
        return {
            "error": "cometd-tape replay: no recorded request matches "
            f"{self.request['method']} {self.request['path']}",
            "request": self.request,
            "closest": self.closest,
            "differences": self.differences,
        }


@dataclass
class Served:
    exchange: RecordedExchange
    follow_ups: list[tuple[float, str, bytes]]  # (delay_s, channel, data with substitutions)


@dataclass
class Responder:
    """Answers a request with the recorded exchanges every matcher accepts: the first not yet
    served, in recorded order; once all have been served, the last one repeats. A request
    nothing matches is Unmatched, with the closest recorded request and the differences (the
    server answers it 404). The follow-ups carry the new request's referenceId and handle."""

    exchanges: list[RecordedExchange]
    matchers: Sequence[Matcher] = DEFAULT_MATCHERS
    unmatched: list[Unmatched] = field(default_factory=list)
    served: int = 0
    _used: set[int] = field(default_factory=set)

    def answer(self, incoming: Incoming) -> Served | Unmatched:
        candidates = [
            n
            for n, recorded in enumerate(self.exchanges)
            if all(m(incoming, recorded) is None for m in self.matchers)
        ]
        if not candidates:
            miss = self._miss(incoming)
            self.unmatched.append(miss)
            return miss
        chosen = next((n for n in candidates if n not in self._used), candidates[-1])
        self._used.add(chosen)
        self.served += 1
        recorded = self.exchanges[chosen]
        new_ref = None if incoming.body is None else incoming.body.get("referenceId")
        new_handle = record_handle(incoming.path)
        follow = [
            (f.delay_s, f.channel, substitute(f.data, recorded, new_ref, new_handle))
            for f in recorded.follow_ups
        ]
        return Served(recorded, follow)

    def _miss(self, incoming: Incoming) -> Unmatched:
        if not self.exchanges:
            return Unmatched(incoming.describe(), None, ["the tape has no recorded requests"])
        scored = [
            (sum(d is not None for d in diffs), n, diffs)
            for n, recorded in enumerate(self.exchanges)
            for diffs in [[m(incoming, recorded) for m in self.matchers]]
        ]
        _, best, diffs = min(scored, key=lambda s: (s[0], s[1]))
        return Unmatched(
            incoming.describe(),
            self.exchanges[best].describe(),
            [d for d in diffs if d is not None],
        )

    @property
    def follow_up_keys(self) -> frozenset[tuple[str, int, int]]:
        return frozenset(f.key for e in self.exchanges for f in e.follow_ups)
