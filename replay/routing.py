"""The server's two indexes, so that its work grows with subscribers and due times, not with
sessions: channel pattern -> subscribed clients, and a heap of wake-up deadlines."""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Iterable
from functools import lru_cache


@lru_cache(maxsize=4096)
def _keys(channel: str) -> tuple[str, ...]:
    """Every subscription that can match `channel`: itself, its parent's `*`, and `**` at each
    ancestor (Bayeux 1.0 "Channel Globbing": wildcards are only ever the last segment)."""
    keys = [channel]
    cut = channel.rfind("/")
    keys.append(channel[: cut + 1] + "*")
    while cut >= 0:
        keys.append(channel[: cut + 1] + "**")
        cut = channel.rfind("/", 0, cut)
    return tuple(keys)


class SubscriberIndex:
    """Subscription text -> the clients subscribed with it."""

    def __init__(self) -> None:
        self._by_pattern: dict[str, dict[str, None]] = {}  # ordered sets: delivery order is stable

    def add(self, client_id: str, patterns: Iterable[str]) -> None:
        for pattern in patterns:
            self._by_pattern.setdefault(pattern, {})[client_id] = None

    def remove(self, client_id: str, patterns: Iterable[str]) -> None:
        for pattern in patterns:
            found = self._by_pattern.get(pattern)
            if found is not None:
                found.pop(client_id, None)
                if not found:
                    del self._by_pattern[pattern]

    def subscribers(self, channel: str) -> list[str]:
        """The clients a message on the concrete `channel` reaches, each once."""
        by_pattern = self._by_pattern
        hits = [found for key in _keys(channel) if (found := by_pattern.get(key))]
        if len(hits) == 1:
            return list(hits[0])
        return list(dict.fromkeys(itertools.chain.from_iterable(hits)))

    def __len__(self) -> int:
        """How many patterns have subscribers (for tests of what is freed)."""
        return len(self._by_pattern)


class Wakeups:
    """Deadlines per key in a heap. Setting a key's deadline again leaves the old entry stale;
    stale entries are skipped when they surface, and the heap is rebuilt once they outnumber
    the live ones, so its size stays within a small multiple of the keys."""

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, str]] = []
        self._current: dict[str, tuple[float, int]] = {}
        self._order = itertools.count()

    def set(self, key: str, deadline: float) -> None:
        entry = (deadline, next(self._order))
        self._current[key] = entry
        heapq.heappush(self._heap, (*entry, key))
        if len(self._heap) > 2 * len(self._current) + 64:
            self._heap = [(d, n, k) for k, (d, n) in self._current.items()]
            heapq.heapify(self._heap)

    def discard(self, key: str) -> None:
        self._current.pop(key, None)

    def earliest(self) -> float | None:
        heap, current = self._heap, self._current
        while heap:
            deadline, order, key = heap[0]
            if current.get(key) == (deadline, order):
                return deadline
            heapq.heappop(heap)
        return None

    def pop_due(self, now: float) -> list[str]:
        """The keys whose deadline is at or before `now`, earliest first; they are unset."""
        due = []
        while (key := self.pop_next(now)) is not None:
            due.append(key)
        return due

    def pop_next(self, now: float) -> str | None:
        """The earliest key whose deadline is at or before `now`, unset; else None."""
        deadline = self.earliest()
        if deadline is None or deadline > now:
            return None
        key = heapq.heappop(self._heap)[2]
        del self._current[key]
        return key

    def __len__(self) -> int:
        """The keys with a deadline."""
        return len(self._current)

    @property
    def heap_size(self) -> int:
        """Entries in the heap, stale ones included (bounded by a multiple of len())."""
        return len(self._heap)
