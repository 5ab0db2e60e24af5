"""The recorder's live status: counters, and the one-line rendering shown on stderr."""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field


@dataclass(slots=True)
class Status:
    session_id: str
    transport: str
    started: float = field(default_factory=time.monotonic)
    frames: int = 0
    messages: Counter[str] = field(default_factory=Counter)
    delivered: int = 0  # the sum of `messages`, kept as it goes (read per batch)
    bytes_in: int = 0
    reconnects: int = 0
    last_event_wall: float | None = None
    state: str = "connecting"

    def line(self, now: float | None = None) -> str:
        elapsed = max((now or time.monotonic()) - self.started, 1e-9)
        channels = " ".join(f"{ch}={n}" for ch, n in self.messages.most_common(4)) or "-"
        last = (
            time.strftime("%H:%M:%S", time.localtime(self.last_event_wall))
            if self.last_event_wall
            else "-"
        )
        return (
            f"[{self.session_id[:8]} {self.transport} {self.state}] frames {self.frames} "
            f"msgs {self.delivered} ({self.delivered / elapsed:,.0f}/s) {channels} "
            f"{self.bytes_in / 1e6:.1f} MB reconnects {self.reconnects} last {last}"
        )

    def summary(self, reason: str, now: float | None = None) -> str:
        elapsed = (now or time.monotonic()) - self.started
        per_channel = ", ".join(f"{ch}: {n}" for ch, n in self.messages.most_common()) or "none"
        return (
            f"recorded {self.frames} frames, {self.delivered} messages in {elapsed:.1f} s "
            f"({per_channel}); reconnects {self.reconnects}; stopped: {reason}"
        )
