"""Playback: re-emits a timeline to the clients of a ReplayServer, at the recorded offsets
divided by the speed, against an absolute clock so no drift accumulates.

With a per-client clock each client's timeline starts once it has subscribed (after a short
settle, since clients often subscribe channel by channel); with a shared clock every client
sees one broadcast stream, like a live server.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from replay import events as ev
from replay.server import ReplayServer
from replay.timeline import Emission
from tape.channel import matches

SETTLE_S = 0.2  # wait this long after a client's last subscribe before its timeline starts
YIELD_EVERY = 500  # at speed 0, let the server send between chunks


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


class Player:
    def __init__(
        self,
        server: ReplayServer,
        timeline: list[Emission],
        options: PlayOptions,
        log: Callable[[str], None] | None = None,
    ) -> None:
        self.server, self.timeline, self.options = server, timeline, options
        self.clients: dict[str, ClientSeen] = {}
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._started: set[str] = set()
        self._log = log or (lambda _line: None)
        self._changed = asyncio.Event()
        self.emitted = 0

    def on_event(self, event: ev.Event) -> None:
        if isinstance(event, ev.ClientHandshaken):
            self.clients[event.client_id] = ClientSeen(event.client_id)
            self._log(f"client {event.client_id} handshook")
        elif isinstance(event, ev.ClientSubscribed):
            self._subscribed(event)
        elif isinstance(event, ev.ClientDisconnected | ev.ClientExpired):
            self._gone(event.client_id, type(event).__name__[len("Client") :].lower())
        self._changed.set()

    def _subscribed(self, event: ev.ClientSubscribed) -> None:
        seen = self.clients.setdefault(event.client_id, ClientSeen(event.client_id))
        seen.subscriptions.extend(event.channels)
        self._log(f"client {event.client_id} subscribed to {', '.join(event.channels)}")
        key = "shared" if self.options.clock == "shared" else event.client_id
        if key in self._started:
            return  # already playing: later emissions see the new subscription
        task = self._tasks.get(key)
        if task is not None:
            task.cancel()  # still settling: wait again from this subscription
        self._tasks[key] = asyncio.get_running_loop().create_task(self._play(key))

    def _gone(self, client_id: str, how: str) -> None:
        task = self._tasks.pop(client_id, None)
        if task is not None:
            task.cancel()
        seen = self.clients.get(client_id)
        if seen is not None:  # nothing more will go to it: wait_emitted() must not wait for it
            seen.finished = True
        self._log(f"client {client_id} {how}")

    async def close(self) -> None:
        for task in self._tasks.values():
            task.cancel()
        await asyncio.gather(*self._tasks.values(), return_exceptions=True)

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
        return bool(self.clients) and all(
            c.finished for c in self.clients.values() if c.subscriptions
        )

    async def _play(self, key: str) -> None:
        await asyncio.sleep(self.options.settle)
        self._started.add(key)
        start = time.monotonic()
        while True:
            span = await self._play_once(key, start)
            if not self.options.loop or span is None:
                break
            start += span
        for seen in self._targets(key):
            seen.finished = True
            self._log(f"client {seen.client_id}: timeline done, {seen.emitted} messages emitted")
        self._changed.set()

    async def _play_once(self, key: str, start: float) -> float | None:
        speed = self.options.speed
        for n, emission in enumerate(self.timeline):
            if speed > 0:
                delay = start + emission.offset / speed - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
            elif n % YIELD_EVERY == 0:  # as fast as possible: send in chunks, let I/O run
                self.server.pump()
                await asyncio.sleep(0)
            self._emit(key, emission, pump=speed > 0)
        self.server.pump()
        if not self.timeline or speed == 0:
            return None
        return (self.timeline[-1].offset + 0.001) / speed

    def _emit(self, key: str, emission: Emission, *, pump: bool = True) -> None:
        now = time.monotonic()
        protocol = self.server.protocol
        for seen in self._targets(key):
            wanted = any(matches(p, emission.channel) for p in seen.subscriptions)
            if wanted and protocol.deliver_to(seen.client_id, emission.message, now):
                seen.emitted += 1
                self.emitted += 1
        if pump:
            self.server.pump()
        self._changed.set()

    def _targets(self, key: str) -> list[ClientSeen]:
        if key == "shared":
            return [
                c for c in self.clients.values() if c.client_id in self.server.protocol.client_ids
            ]
        seen = self.clients.get(key)
        return [seen] if seen is not None else []
