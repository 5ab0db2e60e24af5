"""What the sans-I/O Bayeux server hands back: replies to a batch, later batches to send, and
events (past-tense facts) for the server and CLI to log."""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass
from typing import Any, Literal

Transport = Literal["long-polling", "websocket"]
Wire = dict[str, Any]


@dataclass(frozen=True, slots=True)
class HeldConnect:
    """A /meta/connect whose answer waits: the long-polling HTTP response must wait with it."""

    client_id: str
    connection: Hashable  # the token the transport passed to handle(): HTTP request or socket
    deadline: float  # in the clock of `now`; tick() at or after it completes the connect


@dataclass(frozen=True, slots=True)
class Reply:
    """The answer to one incoming batch.

    `messages` go back at once. When `hold` is set over long-polling, `messages` is empty and
    the whole HTTP response waits for an Outbound that `completes` this hold. `bad_request`
    marks a batch that could not be decoded: an HTTP layer may answer 400 with `messages`.
    """

    messages: list[Wire]
    hold: HeldConnect | None = None
    bad_request: bool = False
    status: int = 0  # an HTTP status to answer with instead (an injected fault)

    @property
    def held(self) -> bool:
        return self.hold is not None


@dataclass(frozen=True, slots=True)
class Outbound:
    """A batch to send later on `connection`, as one JSON array.

    With `completes` set it is the answer to that held connect (over long-polling: the body of
    the waiting HTTP response). Without, it is a WebSocket push of queued messages.
    """

    connection: Hashable
    client_id: str
    messages: list[Wire]
    completes: HeldConnect | None = None


@dataclass(frozen=True, slots=True)
class ClientHandshaken:
    client_id: str


@dataclass(frozen=True, slots=True)
class ClientSubscribed:
    client_id: str
    channels: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class ClientUnsubscribed:
    client_id: str
    channels: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class ClientDisconnected:
    client_id: str


@dataclass(frozen=True, slots=True)
class ClientExpired:
    """The client stopped connecting for longer than maxInterval; its session is gone."""

    client_id: str


@dataclass(frozen=True, slots=True)
class ClientFellBehind:
    """The client's queue reached `limit` messages: from now on its oldest are dropped."""

    client_id: str
    limit: int


@dataclass(frozen=True, slots=True)
class MessagePublished:
    """A client published `data` on `channel` (a REST-like request the replayer may answer)."""

    client_id: str
    channel: str
    data: Any


@dataclass(frozen=True, slots=True)
class FaultInjected:
    """A session fault was injected; with `ends_session` the session is gone (the client must
    handshake again, and its timeline goes on without it until it does)."""

    client_id: str
    kind: str
    ends_session: bool = False


@dataclass(frozen=True, slots=True)
class TransportFaultDue:
    """A transport fault (close, reset, http-5xx, slow, stall) is due for the server to apply."""

    client_id: str
    fault: Any  # replay.faults.Fault


Event = (
    ClientHandshaken
    | ClientSubscribed
    | ClientUnsubscribed
    | ClientDisconnected
    | ClientExpired
    | ClientFellBehind
    | MessagePublished
    | FaultInjected
    | TransportFaultDue
)
