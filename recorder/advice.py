"""The server's advice as a client keeps it, and the retry delays it sets with the backoff."""

from __future__ import annotations

from collections.abc import Callable, Iterator

from recorder.backoff import backoff
from tape.bayeux import Advice, Message, Reconnect


def merge(old: Advice, new: Advice | None) -> Advice:
    """Bayeux 1.0 "advice": a reply's advice updates only the fields it carries."""
    if new is None:
        return old
    return Advice(
        reconnect=new.reconnect or old.reconnect,
        interval=old.interval if new.interval is None else new.interval,
        timeout=old.timeout if new.timeout is None else new.timeout,
        max_interval=old.max_interval if new.max_interval is None else new.max_interval,
    )


def reconnect_of(reply: Message) -> Reconnect | None:
    """The reply's `reconnect`: an instruction for this reply, not a standing setting (a stored
    "handshake" would otherwise re-handshake forever after a handshake reply that omits it)."""
    advice = reply.advice
    return None if advice is None else advice.reconnect


class Pacing:
    """The advice in force and the backoff: how long before a retry, and how long a connect
    may be held."""

    def __init__(self, backoff_factory: Callable[[], Iterator[float]] = backoff) -> None:
        self.advice = Advice(reconnect=Reconnect.RETRY, interval=0)
        self._backoff_factory = backoff_factory
        self._backoff = backoff_factory()

    def update(self, advice: Advice | None) -> None:
        self.advice = merge(self.advice, advice)

    def reset_backoff(self) -> None:
        """The server is reachable again: the next failure retries at once."""
        self._backoff = self._backoff_factory()

    def retry_delay(self) -> float:
        """Seconds before the next retry: advice.interval, then the next step of the backoff."""
        return self.interval_s() + next(self._backoff)

    def interval_s(self) -> float:
        return (self.advice.interval or 0) / 1000

    def timeout_s(self) -> float:
        return (self.advice.timeout or 0) / 1000
