"""Reconnect delays as a pure generator: the client takes the next delay after each failure
and starts a fresh generator once the connection is back."""

from __future__ import annotations

from collections.abc import Callable, Iterator


def backoff(
    *,
    initial: float = 0.5,
    maximum: float = 30.0,
    factor: float = 2.0,
    random: Callable[[], float] | None = None,
) -> Iterator[float]:
    """Yield 0, then `initial`, growing by `factor` up to `maximum` seconds, forever.

    With `random` (returning [0, 1)), each delay d becomes d * (0.5 + random() / 2), "equal
    jitter": recorders that lost the same server do not all come back in the same instant,
    yet none retries much sooner than planned.
    """
    # The first retry is immediate: most drops are a single closed socket, not a dead server.
    yield 0.0
    delay = initial
    while True:
        yield delay if random is None else delay * (0.5 + random() / 2)
        delay = min(delay * factor, maximum)
