"""Playback: re-emits a timeline to the clients of a ReplayServer, at the recorded offsets
divided by the speed, against an absolute clock so no drift accumulates.

With a per-client clock each client's timeline starts once it has subscribed (after a short
settle, since clients often subscribe channel by channel); with a shared clock every client
sees one broadcast stream, like a live server.

One scheduler serves every timeline: a heap of when each one is next due, a timer for the
earliest, and batches of at most ~1 ms of work, each ending with one pump (one long-poll reply
or one WebSocket write per client, however many messages it carries). A timeline that falls
behind catches up in such batches, and the loop gets control back between any two of them.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from replay import events as ev
from replay.protocol import MAX_QUEUE
from replay.resume import Resume
from replay.routing import Wakeups
from replay.server import ReplayServer
from replay.timeline import Emission

SETTLE_S = 0.2  # wait this long after a client's last subscribe before its timeline starts
BATCH_S = 0.001  # work done between two returns to the event loop
FAST_BATCH_S = 0.005  # at speed 0: bigger batches, bigger long-poll replies
GATHER_S = 0.002  # a batch waits this long after the last one, to gather what falls due in it
MAX_WAIT_S = 0.064  # at speed 0, the longest between two looks at a client with no room
WINDOW = MAX_QUEUE  # at speed 0, messages a client may have waiting: its queue's limit
CHUNK = 1_000  # emissions handed to the server in one call
SHARED = "shared"
HISTORY = 100  # departed clients remembered (for logs and the pytest fixture)


@dataclass
class ClientSeen:
    """What the replayer saw of one client, for logs and the pytest fixture."""

    client_id: str
    subscriptions: list[str] = field(default_factory=list)
    emitted: int = 0
    finished: bool = False


@dataclass(frozen=True, slots=True)
class PlayOptions:
    speed: float = 1.0  # 0 = as fast as possible
    clock: str = "per-client"  # or "shared"
    loop: bool = False
    settle: float = SETTLE_S


@dataclass(slots=True)
class _Cursor:
    """Where one timeline is: the next emission, and when its offset 0 was (monotonic)."""

    start: float
    index: int = 0
    wait: float = 0.0  # at speed 0, how long it last waited for a full client to take some


class Player:
    def __init__(
        self,
        server: ReplayServer,
        timeline: list[Emission],
        options: PlayOptions,
        log: Callable[[str], None] | None = None,
    ) -> None:
        self.server, self.timeline, self.options = server, timeline, options
        self.clients: dict[str, ClientSeen] = {}  # live clients
        self.departed: deque[ClientSeen] = deque(maxlen=HISTORY)
        self.served = 0  # clients that ever handshook
        self.emitted = 0
        self._cursors: dict[str, _Cursor] = {}
        self._started: set[str] = set()  # timelines past their settle (live clients, or shared)
        self._due = Wakeups()
        self._timer: asyncio.TimerHandle | None = None
        self._armed_at: float | None = None
        self._last_batch = 0.0
        speed = options.speed
        self._span = (timeline[-1].offset + 0.001) / speed if timeline and speed else 0.0
        # Offsets at this speed, for a binary search of what is due; the messages are shared
        # by every delivery (the server queues them as they are), so they are never changed.
        self._offsets = [e.offset / speed if speed else 0.0 for e in timeline]
        self._messages = [e.message for e in timeline]
        self._channels = sorted({e.channel for e in timeline})  # few: a timeline's channels
        self._resume = Resume(server.protocol, self._messages, self._offsets)  # ext.replay
        self._log = log or (lambda _line: None)
        self._changed = asyncio.Event()
        # Timelines of clients a fault ended: the next client to handshake takes one up where
        # it is (what fell due in between went to nobody, as on a live server).
        self._orphans: deque[str] = deque(maxlen=HISTORY)

    # --- events from the server ---------------------------------------------------------------

    def on_event(self, event: ev.Event) -> None:
        if isinstance(event, ev.ClientHandshaken):
            self.clients[event.client_id] = ClientSeen(event.client_id)
            self.served += 1
            self._log(f"client {event.client_id} handshook")
            self._adopt(event.client_id)
        elif isinstance(event, ev.FaultInjected):
            self._log(f"client {event.client_id}: fault {event.kind} injected")
            if event.ends_session and self.options.clock != SHARED:
                self._orphan(event.client_id)
        elif isinstance(event, ev.ClientSubscribed):
            self._subscribed(event)
        elif isinstance(event, ev.ClientUnsubscribed):
            self._log(f"client {event.client_id} unsubscribed from {', '.join(event.channels)}")
        elif isinstance(event, ev.ClientFellBehind):
            self._log(
                f"client {event.client_id} fell {event.limit} messages behind: "
                "its oldest queued messages are dropped"
            )
        elif isinstance(event, ev.ClientDisconnected | ev.ClientExpired):
            self._gone(event.client_id, type(event).__name__[len("Client") :].lower())
        self._changed.set()

    def _subscribed(self, event: ev.ClientSubscribed) -> None:
        seen = self.clients.get(event.client_id)
        if seen is None:
            return  # already gone
        seen.subscriptions += [c for c in event.channels if c not in seen.subscriptions]
        self._log(f"client {event.client_id} subscribed to {', '.join(event.channels)}")
        key = SHARED if self.options.clock == SHARED else event.client_id
        if key in self._started:
            if self._resume.joined(event, self._cursors.get(key), time.monotonic()):
                self._schedule(key, time.monotonic())  # the retained events it asked for
            return  # playing or played: later emissions see the new subscription
        # Not started, or still settling: (re)start the settle from this subscription.
        start = time.monotonic() + self.options.settle
        self._cursors[key] = _Cursor(*self._resume.begin(event.client_id, key == SHARED, start))
        self._schedule(key, start)  # started from then on, whenever its first message is

    def _orphan(self, client_id: str) -> None:
        """Keep a faulted client's timeline running, under a key no client has."""
        cursor = self._cursors.pop(client_id, None)
        if cursor is None or client_id not in self._started:
            return
        key = f"orphan:{client_id}"
        self._cursors[key] = cursor
        self._started.add(key)
        self._due.discard(client_id)
        self._schedule(key, time.monotonic())
        if len(self._orphans) == self._orphans.maxlen:
            self._drop(self._orphans[0])
        self._orphans.append(key)

    def _adopt(self, client_id: str) -> None:
        while self._orphans:
            key = self._orphans.popleft()
            cursor = self._cursors.pop(key, None)
            self._started.discard(key)
            self._due.discard(key)
            if cursor is not None:
                self._cursors[client_id] = cursor
                self._started.add(client_id)
                self._schedule(client_id, time.monotonic())
                self._log(f"client {client_id} takes up the timeline of {key[7:]}")
                return

    def _drop(self, key: str) -> None:
        self._cursors.pop(key, None)
        self._started.discard(key)
        self._due.discard(key)

    def _gone(self, client_id: str, how: str) -> None:
        seen = self.clients.pop(client_id, None)
        if self.options.clock != SHARED:
            self._cursors.pop(client_id, None)
            self._started.discard(client_id)
            self._due.discard(client_id)
        if seen is not None:  # nothing more will go to it: wait_emitted() must not wait for it
            seen.finished = True
            self.departed.append(seen)
        self._log(f"client {client_id} {how}")

    # --- the scheduler --------------------------------------------------------------------------

    def _offset(self, index: int) -> float:
        return self._offsets[index] if self._offsets else 0.0

    def _schedule(self, key: str, when: float) -> None:
        self._due.set(key, when)
        self._arm()

    def _arm(self) -> None:
        earliest = self._due.earliest()
        if earliest is None:
            return
        when = max(earliest, self._last_batch + GATHER_S)
        if self._timer is not None and self._armed_at is not None and self._armed_at <= when:
            return
        if self._timer is not None:
            self._timer.cancel()
        loop = asyncio.get_running_loop()
        self._armed_at = when
        self._timer = loop.call_at(loop.time() + max(0.0, when - time.monotonic()), self._batch)

    def _batch(self) -> None:
        """Emit what is due, for at most BATCH_S, then send it all and come back later."""
        self._timer = self._armed_at = None
        now = time.monotonic()
        self._last_batch = now
        budget = now + (BATCH_S if self.options.speed else FAST_BATCH_S)
        # One due timeline at a time, and at least one a batch: the rest stay due in the heap
        # for the next batch (taking them all out first could spend the budget on that alone).
        while (key := self._due.pop_next(now)) is not None:
            self._play(key, now, budget)
            if time.monotonic() > budget:
                break
        self.server.pump()
        self._changed.set()
        earliest = self._due.earliest()
        if earliest is not None and earliest <= time.monotonic():
            self._last_batch = 0.0  # behind: come back as soon as the loop has had its turn
        self._arm()

    def _play(self, key: str, now: float, budget: float) -> None:
        cursor = self._cursors.get(key)
        if cursor is None:
            return
        self._started.add(key)
        offsets, speed, size = self._offsets, self.options.speed, len(self._offsets)
        if not size:
            self._finished(key)
            return
        room = self._room(key) if speed == 0 else size
        if room <= 0:  # as fast as the client takes them: look again, less often each time
            cursor.wait = min(max(GATHER_S, 2 * cursor.wait), MAX_WAIT_S)
            self._due.set(key, now + cursor.wait)
            return
        cursor.wait = 0.0
        while cursor.index < size:
            first = cursor.index
            last = min(size, first + CHUNK, first + room)
            end = bisect.bisect_right(offsets, now - cursor.start, first, last)
            if end > first:
                self._emit(key, self._messages[first:end], now)
                cursor.index, room = end, room - (end - first)
            if end < last or end == size:
                break  # the rest is not due yet, or the timeline is done
            if room <= 0 or time.monotonic() > budget:
                self._due.set(key, now)  # more is due: the next batch goes on
                return
        if cursor.index < size:
            self._due.set(key, cursor.start + offsets[cursor.index])
            return
        if self.options.loop and size and speed > 0:
            cursor.start += self._span
            cursor.index = 0
            self._due.set(key, cursor.start + self._offset(0))
        elif self.options.loop and size:
            cursor.index = 0
            self._due.set(key, now)
        else:
            self._finished(key)

    def _room(self, key: str) -> int:
        """At speed 0: what the client (shared clock: the one furthest behind) can take. Over
        WebSocket, a chunk a batch at most: a push of 10,000 messages could take its unsent
        bytes past the limit at which a client counts as not reading. Over long-polling, all
        its queue has room for: the fewer, bigger replies, the faster it gets them."""
        if key.startswith("orphan:"):
            return 0  # a faulted client's timeline waits for the client to come back
        keys = list(self.clients) if key == SHARED else [key]
        room = WINDOW - max(map(self.server.backlog, keys), default=0)
        if any(map(self.server.pushes_to_socket, keys)):
            room = min(room, CHUNK)
        return room

    def _emit(self, key: str, messages: list[dict[str, Any]], now: float) -> None:
        if key == SHARED:  # both through replay/resume.py: replayIds for clients asking
            self.emitted += self._resume.publish(messages, now)
            return
        sent = self._resume.deliver(key, messages, now, self._channels)
        self.emitted += sent
        seen = self.clients.get(key)
        if seen is not None:
            seen.emitted += sent

    def _finished(self, key: str) -> None:
        self._cursors.pop(key, None)
        targets = list(self.clients.values()) if key == SHARED else [self.clients.get(key)]
        for seen in targets:
            if seen is not None:
                seen.finished = True
                self._log(
                    f"client {seen.client_id}: timeline done, {seen.emitted} messages emitted"
                )

    # --- control --------------------------------------------------------------------------------

    async def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._timer = self._armed_at = None
        self._cursors.clear()

    def sizes(self) -> dict[str, int]:
        """What the player holds, for logs and for tests that it is freed."""
        return {
            "clients": len(self.clients),
            "timelines": len(self._cursors),
            "due": len(self._due),
        }

    async def wait_emitted(self, count: int | None = None, timeout: float = 30.0) -> int:
        """Wait until `count` messages went out (default: one whole timeline per client)."""
        deadline = time.monotonic() + timeout
        while not self._done(count) and time.monotonic() < deadline:
            self._changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), max(0.0, deadline - time.monotonic()))
        if not self._done(count):
            raise TimeoutError(f"emitted {self.emitted} messages, expected {count or 'a timeline'}")
        return self.emitted

    def _done(self, count: int | None) -> bool:
        if count is not None:
            return self.emitted >= count
        seen = [*self.clients.values(), *self.departed]
        return bool(seen) and all(c.finished for c in seen if c.subscriptions)
