"""The Bayeux 1.0 client as a sans-I/O state machine: replies, failures and `now` go in;
batches to send, events and the time to be woken up come out. Transports do all the I/O."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Collection, Iterable, Iterator
from dataclasses import dataclass
from enum import Enum
from typing import Any, Literal

from recorder.advice import Pacing, reconnect_of
from recorder.backoff import backoff
from recorder.events import (
    ConnectionLost,
    Event,
    HandshakeFailed,
    HandshakeSucceeded,
    MessagesDelivered,
    Outgoing,
    Rehandshaking,
    ReplyUnmatched,
    RequestKind,
    Stopped,
    Subscribed,
    SubscribeFailed,
    Unsubscribed,
    UnsubscribeFailed,
)
from tape import bayeux
from tape.bayeux import Advice, LazyDelivery, Message, Reconnect
from tape.channel import META_PREFIX, validate_channel

ConnectionType = Literal["long-polling", "websocket"]
WireHook = Callable[[dict[str, Any]], dict[str, Any]]
MessageHook = Callable[[Message], Message]
_Action = Literal["handshake", "connect"]


class State(Enum):
    IDLE = "idle"
    HANDSHAKING = "handshaking"
    CONNECTED = "connected"  # handshaken: a clientId is held
    DISCONNECTING = "disconnecting"
    STOPPED = "stopped"


@dataclass(frozen=True, slots=True)
class _Pending:
    kind: RequestKind
    session: int  # the handshake generation the request belongs to
    channels: tuple[str, ...]


def is_unknown_client_reply(reply: Message) -> bool:
    """True when the reply's error is any server's "unknown client" (401/402/403 forms)."""
    error = reply.error_info
    return error is not None and bayeux.is_unknown_client(error)


def _names(subscription: str | tuple[str, ...] | None) -> tuple[str, ...]:
    if subscription is None:
        return ()
    return (subscription,) if isinstance(subscription, str) else subscription


def _listed(channels: str | Iterable[str]) -> list[str]:
    listed = [channels] if isinstance(channels, str) else list(dict.fromkeys(channels))
    for name in listed:
        validate_channel(name)
    return listed


# How long past the advised timeout a /meta/connect may go unanswered before it counts as lost.
# Longer than the long-polling transport's own HTTP timeout (timeout + 10 s), so over
# long-polling that one fires first; over WebSocket this is the only guard, as a live socket
# answers pings while the server behind it may have stopped answering connects.
CONNECT_GRACE_S = 15.0


class BayeuxClient:
    """A Bayeux 1.0 client session: feed it inputs, then drain data_to_send(),
    events_received() and next_wakeup(). No I/O, no clock: every input carries `now`.

    After request_failed() every outstanding request counts as lost; the transport should
    abandon them (a late reply to one is reported as ReplyUnmatched).
    """

    def __init__(
        self,
        channels: Iterable[str] = (),
        *,
        connection_type: ConnectionType = "long-polling",
        supported_connection_types: Iterable[str] = ("websocket", "long-polling"),
        ext_out: WireHook | None = None,
        ext_in: MessageHook | None = None,
        backoff_factory: Callable[[], Iterator[float]] = backoff,
        unknown_client: Callable[[Message], bool] = is_unknown_client_reply,
        connect_grace_s: float | None = None,
    ) -> None:
        self._grace = CONNECT_GRACE_S if connect_grace_s is None else connect_grace_s
        self._channels = dict.fromkeys(_listed(channels))  # wanted, as an ordered set
        self._subscribed: set[str] = set()
        self._connection_type = connection_type
        self._supported = tuple(supported_connection_types)
        self._ext_out, self._ext_in = ext_out, ext_in
        self._unknown_client = unknown_client
        self._pacing = Pacing(backoff_factory)
        self._state = State.IDLE
        self._client_id: str | None = None
        # Ids never restart, so a late reply from an old session cannot pass for a new one.
        self._ids = itertools.count()
        self._pending: dict[str, _Pending] = {}
        self._session = 0
        self._connect_id: str | None = None
        self._first_connect = True
        self._connected_once = False  # a connect of this session succeeded
        self._timer: tuple[float, _Action] | None = None
        self._now = 0.0  # the latest `now` given: connects are sent from inside inputs
        self._connect_deadline: float | None = None
        self._connect_sent_at = 0.0
        self._out: list[Outgoing] = []
        self._events: list[Event] = []

    # --- state, for transports and status lines --------------------------------------------

    @property
    def state(self) -> State:
        return self._state

    @property
    def client_id(self) -> str | None:
        return self._client_id

    @property
    def advice(self) -> Advice:
        """The current advice; a long-polling transport sizes its HTTP timeout from `timeout`."""
        return self._pacing.advice

    @property
    def connection_type(self) -> ConnectionType:
        """The `connectionType` of the next connects; the recorder switches it when transport
        negotiation moves a session from long-polling to WebSocket after its handshake."""
        return self._connection_type

    @connection_type.setter
    def connection_type(self, value: ConnectionType) -> None:
        self._connection_type = value

    @property
    def subscriptions(self) -> tuple[str, ...]:
        """The channels the client wants, confirmed or not."""
        return tuple(self._channels)

    @property
    def confirmed(self) -> tuple[str, ...]:
        """The channels the server has confirmed the subscription of (in this session)."""
        return tuple(c for c in self._channels if c in self._subscribed)

    # --- outputs ---------------------------------------------------------------------------

    def data_to_send(self) -> list[Outgoing]:
        out, self._out = self._out, []
        return out

    def events_received(self) -> list[Event]:
        events, self._events = self._events, []
        return events

    def next_wakeup(self) -> float | None:
        """When tick() should be called next, in the clock of `now`; None when not needed."""
        times = [self._connect_deadline, self._timer[0] if self._timer is not None else None]
        present = [t for t in times if t is not None]
        return min(present) if present else None

    # --- inputs ----------------------------------------------------------------------------

    def start(self, now: float) -> None:
        self._now = now
        if self._state is not State.IDLE:
            raise RuntimeError(f"start() on a client that is {self._state.value}")
        self._handshake()

    def receive(self, messages: Iterable[Message], now: float) -> None:
        """A batch that arrived: any mix of meta replies and events, handled in order."""
        self._now = now
        ext_in, events = self._ext_in, self._events
        run: list[Message] = []  # deliveries since the last other message
        try:
            for message in messages:
                if ext_in is not None:
                    message = ext_in(message)
                # Delivered events are matched by channel, never by id: a server may reuse ids
                # that collide with ours (PEERS.md, aiocometd-ng). A LazyDelivery is one by
                # construction, and reading its fields would parse it.
                if type(message) is LazyDelivery:
                    run.append(message)
                    continue
                fields = message.fields  # read directly: this runs for every message recorded
                if "data" in fields and not fields["channel"].startswith(META_PREFIX):
                    run.append(message)
                    continue
                if run:
                    events.append(MessagesDelivered(tuple(run)))
                    run = []
                self._receive_one(message, now)
        finally:  # an ext hook that raises still leaves what came before it delivered
            if run:
                events.append(MessagesDelivered(tuple(run)))
        if self._connect_deadline is not None:
            # Traffic shows the server alive; and new advice may have lengthened the timeout.
            self._connect_deadline = max(
                self._connect_deadline,
                now + self._grace,
                self._connect_sent_at + self._pacing.timeout_s() + self._grace,
            )

    def request_failed(
        self,
        now: float,
        reason: str,
        *,
        timed_out: bool = False,
        ids: Collection[str] | None = None,
    ) -> None:
        """The transport could not deliver a request, got an HTTP error or lost its socket.

        `ids`: the message ids of the one request that failed, when the transport knows them
        (long-polling: one POST each). A request none of whose messages is pending in this
        session (the held connect of a session given up) takes nothing else down with it.
        """
        self._now = now
        if self._state in (State.IDLE, State.STOPPED):
            return
        if ids is not None and not any(self._current(i) for i in ids):
            for i in ids:
                self._pending.pop(i, None)
            return
        if self._state is State.DISCONNECTING:
            self._stop("disconnected")
            return
        if not self._pending and self._timer is not None:
            return  # a parallel request of the same outage: already waiting to retry
        self._pending.clear()
        self._connect_id = self._connect_deadline = None
        self._events.append(ConnectionLost(reason, timed_out=timed_out))
        action: _Action = "connect" if self._state is State.CONNECTED else "handshake"
        delay = self._pacing.retry_delay()
        if timed_out:  # let the transport drop the stuck socket before the retry goes out
            delay = max(delay, 0.05)
        self._schedule(action, delay, now)

    def _current(self, message_id: str) -> bool:
        pending = self._pending.get(message_id)
        return pending is not None and pending.session == self._session

    def tick(self, now: float) -> None:
        self._now = now
        deadline = self._connect_deadline
        if deadline is not None and now >= deadline and self._connect_id is not None:
            waited = now - self._connect_sent_at
            self.request_failed(
                now, f"no /meta/connect reply within {waited:.3g} s", timed_out=True
            )
            return
        if self._timer is None or now < self._timer[0]:
            return
        action, self._timer = self._timer[1], None
        self._run(action)

    def subscribe(self, channels: str | Iterable[str], now: float) -> None:
        new = [name for name in _listed(channels) if name not in self._channels]
        self._channels.update(dict.fromkeys(new))
        if self._state is State.CONNECTED and new:
            self._send_subscriptions("subscribe", new)

    def unsubscribe(self, channels: str | Iterable[str], now: float) -> None:
        gone = [name for name in _listed(channels) if name in self._channels]
        for name in gone:
            del self._channels[name]
        if self._state is State.CONNECTED and gone:
            self._send_subscriptions("unsubscribe", gone)

    def disconnect(self, now: float) -> None:
        if self._state in (State.DISCONNECTING, State.STOPPED):
            return
        if self._state is not State.CONNECTED or self._client_id is None:
            self._stop("disconnected")
            return
        self._state, self._timer = State.DISCONNECTING, None
        self._send("disconnect", [bayeux.disconnect(self._client_id, id=self._new_id())])

    # --- sending ---------------------------------------------------------------------------

    def _new_id(self) -> str:
        return str(next(self._ids))

    def _send(self, kind: RequestKind, messages: list[Message]) -> None:
        for message in messages:
            pending = _Pending(kind, self._session, _names(message.subscription))
            self._pending[str(message.id)] = pending
        wire = [message.to_wire() for message in messages]
        if self._ext_out is not None:
            wire = [self._ext_out(obj) for obj in wire]
        self._out.append(Outgoing(kind, tuple(wire)))

    def _forget_session(self) -> None:
        # A new session starts: replies to the old one's requests are no longer acted on. Its
        # connect may still be out (held by the server), but Bayeux allows one outstanding
        # connect per *client*: the new client connects at once. Waiting for the old one (up to
        # its timeout + grace) would outlast a CometD server's maxInterval (10 s by default),
        # and the server would drop the new session before its first connect.
        self._state, self._client_id, self._timer = State.HANDSHAKING, None, None
        self._connect_id = self._connect_deadline = None
        self._session += 1
        self._subscribed.clear()

    def _handshake(self) -> None:
        # Bayeux 1.0 "handshake request": version and supportedConnectionTypes are required.
        self._forget_session()
        message = bayeux.handshake(
            id=self._new_id(), supported_connection_types=self._supported, minimum_version="1.0"
        )
        self._send("handshake", [message])

    def _connect(self) -> None:
        # Bayeux 1.0 "connect request": only one /meta/connect may be outstanding per client.
        if self._connect_id is not None:
            return
        assert self._client_id is not None  # only called while CONNECTED
        # The first connect of a session asks for an immediate answer: Faye holds every
        # connect, the first included, unless told timeout 0 (PEERS.md).
        advice = Advice(timeout=0) if self._first_connect else None
        self._first_connect = False
        message = bayeux.connect(
            self._client_id, self._connection_type, id=self._new_id(), advice=advice
        )
        self._connect_id = message.id
        self._connect_sent_at = self._now
        self._connect_deadline = self._now + self._pacing.timeout_s() + self._grace
        self._send("connect", [message])

    def _send_subscriptions(self, kind: RequestKind, channels: list[str]) -> None:
        # One message per channel, in one batch: every server accepts a string `subscription`,
        # and a refusal then names exactly one channel.
        assert self._client_id is not None
        build = bayeux.subscribe if kind == "subscribe" else bayeux.unsubscribe
        messages = [build(self._client_id, name, id=self._new_id()) for name in channels]
        self._send(kind, messages)

    def _resume(self) -> None:
        # After a lost request the server may still know us: re-send only what is unconfirmed.
        in_flight = {
            name
            for pending in self._pending.values()
            if pending.kind == "subscribe" and pending.session == self._session
            for name in pending.channels
        }
        missing = [c for c in self._channels if c not in self._subscribed and c not in in_flight]
        if missing:
            self._send_subscriptions("subscribe", missing)
        self._connect()

    # --- timing ----------------------------------------------------------------------------

    def _schedule(self, action: _Action, delay: float, now: float) -> None:
        if delay > 0:
            self._timer = (now + delay, action)
        else:
            self._run(action)

    def _run(self, action: _Action) -> None:
        if action == "handshake":
            self._handshake()
        elif self._state is State.CONNECTED:
            self._resume()

    def _stop(self, reason: str) -> None:
        self._state, self._timer, self._connect_deadline = State.STOPPED, None, None
        self._events.append(Stopped(reason))

    # --- receiving -------------------------------------------------------------------------

    def _receive_one(self, message: Message, now: float) -> None:
        if not message.channel.startswith(META_PREFIX):  # an event without data
            self._events.append(ReplyUnmatched(message))
            return
        pending = None if message.id is None else self._pending.get(message.id)
        if pending is None or message.channel != f"/meta/{pending.kind}":
            self._events.append(ReplyUnmatched(message))
            return
        del self._pending[str(message.id)]
        if str(message.id) == self._connect_id:
            self._connect_id = self._connect_deadline = None
        if pending.session != self._session or self._state is State.STOPPED:
            return  # a reply to a session given up, or after the end: nothing to act on
        if self._state is not State.DISCONNECTING or pending.kind == "disconnect":
            self._dispatch(message, pending, now)

    def _dispatch(self, reply: Message, pending: _Pending, now: float) -> None:
        self._pacing.update(reply.advice)
        if pending.kind == "handshake":
            self._on_handshake(reply, now)
        elif pending.kind == "disconnect":
            self._stop("disconnected")
        elif not self._obey(reply, now):
            if pending.kind == "connect":
                self._on_connect(reply, now)
            else:
                self._on_subscription(reply, pending)

    def _obey(self, reply: Message, now: float) -> bool:
        """Follow advice that ends this session; True when it did."""
        # Bayeux 1.0 "reconnect advice field": none = stop, handshake = new session. Servers
        # also end sessions with an unknown-client error,, advice or not.
        reconnect = reconnect_of(reply)
        if reconnect is Reconnect.NONE:
            error = f": {reply.error}" if reply.error else ""
            self._stop(f"server advised reconnect none on {reply.channel}{error}")
        elif reconnect is Reconnect.HANDSHAKE or (
            not reply.successful and self._unknown_client(reply)
        ):
            reason = reply.error or "server advised reconnect handshake"
            self._events.append(Rehandshaking(f"{reply.channel}: {reason}"))
            if self._connected_once:
                # The server is reachable and says how to go on: as CometD's own client does
                # (Client.js, _handleFailure: delay 0 and the backoff reset for "handshake"),
                # re-handshake after advice.interval alone, not after the backoff that grew
                # while it was unreachable. A session that never connected backs off still,
                # so a server that refuses every new session is not handshaken in a loop.
                self._pacing.reset_backoff()
            self._forget_session()
            self._schedule("handshake", self._pacing.retry_delay(), now)
        else:
            return False
        return True

    def _on_handshake(self, reply: Message, now: float) -> None:
        if reply.successful and reply.client_id and reconnect_of(reply) is Reconnect.NONE:
            # As CometD's Client.js does (_handshakeResponse): a session the server opens with
            # "none" is not to be connected; no subscription or connect goes out.
            self._stop(f"server advised reconnect none on {reply.channel}")
            return
        if reply.successful and reply.client_id:
            self._state, self._client_id = State.CONNECTED, reply.client_id
            # The old session's requests will never be acted on: a late reply to one is
            # ReplyUnmatched, a late failure of one is ignored (request_failed's `ids`).
            for key in [k for k, p in self._pending.items() if p.session != self._session]:
                del self._pending[key]
            self._first_connect, self._connected_once = True, False
            self._events.append(HandshakeSucceeded(reply.client_id, self._pacing.advice))
            if self._channels:
                self._send_subscriptions("subscribe", list(self._channels))
            self._connect()
            return
        error = reply.error or "handshake unsuccessful"
        self._events.append(HandshakeFailed(error))
        if reconnect_of(reply) is Reconnect.NONE:
            self._stop(f"handshake refused: {error} (advice reconnect: none)")
        else:
            self._schedule("handshake", self._pacing.retry_delay(), now)

    def _on_connect(self, reply: Message, now: float) -> None:
        # Bayeux 1.0 "connect response": the next connect follows the reply, after
        # advice.interval; a failure without advice backs off.
        if reply.successful:
            self._pacing.reset_backoff()  # the connection is back
            self._connected_once = True
            self._schedule("connect", self._pacing.interval_s(), now)
        else:
            self._schedule("connect", self._pacing.retry_delay(), now)

    def _on_subscription(self, reply: Message, pending: _Pending) -> None:
        error = reply.error or f"{pending.kind} unsuccessful"
        if pending.kind == "subscribe" and reply.successful:
            self._subscribed.update(pending.channels)
            self._events.append(Subscribed(pending.channels))
        elif pending.kind == "subscribe":
            for name in pending.channels:
                self._channels.pop(name, None)  # refused: not asked again after a re-handshake
                self._events.append(SubscribeFailed(name, error))
        elif reply.successful:
            self._subscribed.difference_update(pending.channels)
            self._events.append(Unsubscribed(pending.channels))
        else:
            self._events.extend(UnsubscribeFailed(name, error) for name in pending.channels)
