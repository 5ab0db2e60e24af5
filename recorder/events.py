"""What the Bayeux client state machine emits: batches to send, and events (past-tense facts)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from tape.bayeux import Advice, Message

RequestKind = Literal["handshake", "connect", "subscribe", "unsubscribe", "disconnect"]


@dataclass(frozen=True, slots=True)
class Outgoing:
    """One batch to send as a single JSON array. `kind` lets a long-polling transport put
    /meta/connect on its own HTTP request while the other kinds go in parallel."""

    kind: RequestKind
    messages: tuple[dict[str, Any], ...]


@dataclass(frozen=True, slots=True)
class HandshakeSucceeded:
    client_id: str
    advice: Advice


@dataclass(frozen=True, slots=True)
class HandshakeFailed:
    """The server refused a handshake; the client retries (with backoff) unless told not to."""

    error: str


@dataclass(frozen=True, slots=True)
class Subscribed:
    channels: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class SubscribeFailed:
    channel: str
    error: str


@dataclass(frozen=True, slots=True)
class Unsubscribed:
    channels: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class UnsubscribeFailed:
    channel: str
    error: str


@dataclass(frozen=True, slots=True)
class MessagesDelivered:
    """Events delivered on subscribed channels: a run of them in the order received, one
    event per run rather than per message (it is the hot path of a recording)."""

    messages: tuple[Message, ...]


@dataclass(frozen=True, slots=True)
class ConnectionLost:
    reason: str
    timed_out: bool = False  # no reply in time, rather than an error: the socket may be stuck


@dataclass(frozen=True, slots=True)
class Rehandshaking:
    reason: str


@dataclass(frozen=True, slots=True)
class Stopped:
    """Terminal: the client sends nothing more."""

    reason: str


@dataclass(frozen=True, slots=True)
class ReplyUnmatched:
    """A meta reply whose id matches no pending request (or a non-meta message without data)."""

    message: Message


Event = (
    HandshakeSucceeded
    | HandshakeFailed
    | Subscribed
    | SubscribeFailed
    | Unsubscribed
    | UnsubscribeFailed
    | MessagesDelivered
    | ConnectionLost
    | Rehandshaking
    | Stopped
    | ReplyUnmatched
)
