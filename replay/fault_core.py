"""Which deliveries and sessions meet which fault, sans I/O: the message faults are applied to
each client's deliveries as they are queued, and the timed faults (at=, after=) fall due here
for the Bayeux core (session faults) or the HTTP/WebSocket server (transport faults) to act on.

Deterministic: each client's n-th handshake and each fault get their own random stream from
the seed, so the same seed, tape and client behaviour inject the same faults.
"""

from __future__ import annotations

import heapq
import itertools
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import orjson

from replay.events import Wire
from replay.faults import Fault
from replay.routing import Wakeups
from tape.channel import matches

# A delivery and the message faults chosen for it (decided on the tape's order).
_Item = tuple[Wire, frozenset[int]]
LOG_LIMIT = 10_000  # faults kept in the log; the rest are counted
MAX_HELD = 10_000  # deliveries one client may have delayed or buffered; past it they go at once
REORDER_HOLD_S = 1.0  # a reorder window not filled in this time is shuffled and sent as it is


@dataclass(frozen=True, slots=True)
class InjectedFault:
    """One fault as it was injected: when (seconds since the replay started), what, to whom."""

    time: float
    kind: str
    client_id: str
    target: str  # a channel, "connect", "websocket", "long-polling", "server"
    detail: str = ""

    def __str__(self) -> str:
        return f"{self.time:.3f} s {self.kind} -> {self.client_id} ({self.target}): {self.detail}"


@dataclass(slots=True)
class _Client:
    ordinal: int
    rngs: dict[int, random.Random]  # by fault, made when first needed
    delivered: int = 0
    seen: list[int] = field(default_factory=list)  # matching deliveries per fault
    buffers: dict[int, list[_Item]] = field(default_factory=dict)  # reorder windows
    held: int = 0  # deliveries waiting in the delay heap or a reorder window


class FaultInjector:
    """Feed it on_handshake(), deliveries through deliver(), and tick at next_wakeup();
    take what falls due with released() and timed_due()."""

    def __init__(self, faults: Sequence[Fault], *, seed: int = 0, clock: float | None = None):
        self.faults = tuple(faults)
        self.seed = seed
        self.started = time.monotonic() if clock is None else clock
        self.log: list[InjectedFault] = []
        self.unlogged = 0
        self.listener: Callable[[InjectedFault], None] | None = None  # told of each one
        self._message = [i for i, f in enumerate(self.faults) if f.layer == "message"]
        self._timed = [i for i, f in enumerate(self.faults) if f.layer != "message"]
        # Timed faults that count deliveries (after=N, no at=); the rest are armed by time.
        self._after = [i for i in self._timed if self.faults[i].after and self.faults[i].at is None]
        self._fired = [0] * len(self.faults)
        self._clients: dict[str, _Client] = {}
        self._ordinals = itertools.count()
        self._timers = Wakeups()  # "client\0fault index" -> when
        self._delayed: list[tuple[float, int, str, int, _Item]] = []  # due, order, client,
        # the delaying fault, the delivery
        self._order = itertools.count()
        self._pending: list[tuple[str, int]] = []  # timed faults due now (after= reached)
        self._windows = Wakeups()  # "client\0fault index" -> when its reorder window flushes

    @property
    def active(self) -> bool:
        return bool(self.faults)

    # --- clients --------------------------------------------------------------------------

    @property
    def due_now(self) -> bool:
        """Whether a timed fault fell due on a delivery (after=N) and waits to be applied."""
        return bool(self._pending)

    def on_handshake(self, client_id: str, now: float) -> None:
        ordinal = next(self._ordinals)
        self._clients[client_id] = _Client(ordinal, {}, seen=[0] * len(self.faults))
        for index in self._timed:
            if index not in self._after:  # at=T, or after=0: at the handshake
                self._timers.set(f"{client_id}\0{index}", now + (self.faults[index].at or 0.0))

    def _rng(self, found: _Client, index: int) -> random.Random:
        """The random stream of one fault for one client's session, made when first needed:
        the same seed, session order and fault give the same choices."""
        rng = found.rngs.get(index)
        if rng is None:
            rng = found.rngs[index] = random.Random(
                (self.seed << 40) ^ (found.ordinal << 8) ^ index
            )
        return rng

    def forget(self, client_id: str) -> None:
        """The session ended: its timers, windows and delayed deliveries go."""
        found = self._clients.pop(client_id, None)
        if found is None:
            return
        for index in range(len(self.faults)):
            self._timers.discard(f"{client_id}\0{index}")
            self._windows.discard(f"{client_id}\0{index}")
        if found.held:
            self._delayed = [d for d in self._delayed if d[2] != client_id]
            heapq.heapify(self._delayed)

    # --- deliveries -----------------------------------------------------------------------

    def deliver(
        self, client_id: str, messages: list[Wire], now: float
    ) -> tuple[list[Wire], list[Wire]]:
        """What of `messages` to queue for the client now, and what comes after a delivery that
        made a timed fault due (after=N): the caller applies that fault, then delivers the rest.
        What is dropped, delayed or buffered stays here. Messages are shared dicts, never
        changed. Which deliveries a fault takes (nth=, p=) is decided on the tape's order."""
        found = self._clients.get(client_id)
        if found is None or not (self._message or self._after):
            if found is not None:
                found.delivered += len(messages)
            return messages, []
        out: list[Wire] = []
        for position, message in enumerate(messages):
            found.delivered += 1
            chosen = frozenset(i for i in self._message if self._selected(found, i, message))
            out += self._through(client_id, found, [(message, chosen)], now, 0)
            if self._count(client_id, found, message):
                return out, messages[position + 1 :]
        return out, []

    def _count(self, client_id: str, found: _Client, message: Wire) -> bool:
        """Count a delivery for the after=N faults; True when one fell due."""
        due = False
        for index in self._after:
            fault = self.faults[index]
            if fault.channel is None or _on(fault, message):
                found.seen[index] += 1
                if found.seen[index] == fault.after and self._fired[index] < fault.fires:
                    self._pending.append((client_id, index))
                    due = True
        return due

    def _selected(self, found: _Client, index: int, message: Wire) -> bool:
        fault = self.faults[index]
        if fault.channel is not None and not _on(fault, message):
            return False
        found.seen[index] += 1
        if fault.nth is not None:
            return found.seen[index] == fault.nth
        if fault.fraction is not None:
            return self._rng(found, index).random() < fault.fraction
        return True

    def _through(
        self, client_id: str, found: _Client, items: list[_Item], now: float, start: int
    ) -> list[Wire]:
        """Deliveries through the message faults from the `start`-th on."""
        for position in range(start, len(self._message)):
            index = self._message[position]
            fault = self.faults[index]
            passed: list[_Item] = []
            for item in items:
                # An open reorder window takes every delivery on its channels.
                window = found.buffers.get(index) and (fault.channel is None or _on(fault, item[0]))
                if window or index in item[1]:
                    passed += self._apply(client_id, found, index, item, now)
                else:
                    passed.append(item)
            items = passed
        return [message for message, _chosen in items]

    def _apply(
        self, client_id: str, found: _Client, index: int, item: _Item, now: float
    ) -> list[_Item]:
        fault, message = self.faults[index], item[0]
        kind = fault.kind
        if kind in ("drop", "duplicate", "corrupt"):
            what = {"drop": "not sent", "duplicate": "sent twice", "corrupt": "as invalid JSON"}
            self._note(client_id, found, kind, message, now, what[kind])
            if kind == "corrupt":
                return [(corrupted(message), item[1] - {index})]
            return [] if kind == "drop" else [item, item]
        if found.held >= MAX_HELD:
            return [item]
        found.held += 1
        if kind == "delay":
            assert fault.delay is not None
            wait = fault.delay.sample(self._rng(found, index))
            self._note(client_id, found, kind, message, now, f"{wait * 1000:.0f} ms later")
            entry = (now + wait, next(self._order), client_id, index, item)
            heapq.heappush(self._delayed, entry)
            return []
        buffer = found.buffers.setdefault(index, [])
        buffer.append(item)
        key = f"{client_id}\0{index}"
        if len(buffer) == 1:
            self._windows.set(key, now + (fault.duration or REORDER_HOLD_S))
        if len(buffer) < fault.window:
            return []
        self._windows.discard(key)
        return self._shuffled(client_id, found, index, now)

    def _note(
        self, client_id: str, found: _Client, kind: str, message: Wire, now: float, what: str
    ) -> None:
        detail = f"delivery #{found.delivered} ({_id(message)}) {what}"
        self.record(now, kind, client_id, _channel(message), detail)

    def _shuffled(self, client_id: str, found: _Client, index: int, now: float) -> list[_Item]:
        buffer = found.buffers.pop(index, [])
        found.held -= len(buffer)
        order = list(range(len(buffer)))
        if len(order) > 1:
            while order == sorted(order):
                self._rng(found, index).shuffle(order)
            ids = "; ".join(_id(buffer[i][0]) for i in order)
            self.record(now, "reorder", client_id, _channel(buffer[0][0]), f"sent as {ids}")
        return [buffer[i] for i in order]

    # --- time -----------------------------------------------------------------------------

    def next_wakeup(self) -> float | None:
        times = [self._timers.earliest(), self._windows.earliest()]
        if self._delayed:
            times.append(self._delayed[0][0])
        if self._pending:
            times.append(0.0)
        return min((t for t in times if t is not None), default=None)

    def released(self, now: float) -> dict[str, list[Wire]]:
        """Delayed deliveries now due and reorder windows that waited long enough, by client;
        each has passed the faults after the one that held it."""
        out: dict[str, list[Wire]] = {}
        while self._delayed and self._delayed[0][0] <= now:
            _due, _order, client_id, index, item = heapq.heappop(self._delayed)
            found = self._clients.get(client_id)
            if found is not None:
                found.held -= 1
                self._resume(out, client_id, found, index, [item], now)
        for key in self._windows.pop_due(now):
            client_id, number = key.split("\0")
            found = self._clients.get(client_id)
            if found is not None:
                shuffled = self._shuffled(client_id, found, int(number), now)
                self._resume(out, client_id, found, int(number), shuffled, now)
        return out

    def _resume(
        self,
        out: dict[str, list[Wire]],
        client_id: str,
        found: _Client,
        index: int,
        items: list[_Item],
        now: float,
    ) -> None:
        start = self._message.index(index) + 1
        out.setdefault(client_id, []).extend(self._through(client_id, found, items, now, start))

    def timed_due(self, now: float) -> list[tuple[str, Fault]]:
        """Session and transport faults due now, each within its count over the replay."""
        due, self._pending = self._pending, []
        for key in self._timers.pop_due(now):
            client, number = key.split("\0")
            due.append((client, int(number)))
        fired = []
        for client_id, index in due:
            fault = self.faults[index]
            if self._fired[index] < fault.fires and client_id in self._clients:
                self._fired[index] += 1
                fired.append((client_id, fault))
        return fired

    def record(self, now: float, kind: str, client_id: str, target: str, detail: str) -> None:
        if len(self.log) >= LOG_LIMIT:
            self.unlogged += 1
            return
        injected = InjectedFault(round(now - self.started, 6), kind, client_id, target, detail)
        self.log.append(injected)
        if self.listener is not None:
            self.listener(injected)

    def sizes(self) -> dict[str, int]:
        return {
            "fault_clients": len(self._clients),
            "fault_delayed": len(self._delayed),
            "fault_timers": len(self._timers) + len(self._windows),
        }


def corrupted(message: Wire) -> Wire:
    """The message with its data cut in half and marked: still a dict with its channel (later
    faults and the queue read it), but the batch it goes out in is invalid JSON."""
    data = orjson.dumps(message.get("data"))  # "<" is invalid JSON wherever it falls
    return message | {"data": orjson.Fragment(data[: len(data) // 2] + b"<corrupted>")}


def _on(fault: Fault, message: Wire) -> bool:
    channel = _channel(message)
    return channel == fault.channel or matches(fault.channel or "", channel)


def _channel(message: Wire) -> str:
    channel = message.get("channel")
    return channel if isinstance(channel, str) else "?"


def _id(message: Wire) -> str:
    """How the log names a message: its referenceId, else its id, else its channel's name."""
    data = message.get("data")
    if isinstance(data, orjson.Fragment):  # the player's recorded bytes
        try:
            data = orjson.loads(orjson.dumps(data))
        except orjson.JSONDecodeError:
            data = None
    ref = data.get("referenceId") if isinstance(data, dict) else None
    if ref is not None:
        return f"referenceId {ref}"
    return f"id {message['id']}" if "id" in message else "on " + _channel(message)
