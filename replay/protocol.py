"""The Bayeux 1.0 server as a sans-I/O state machine: batches and `now` go in; replies, batches
for held connects and WebSocket pushes, events and the time to be woken up come out."""

from __future__ import annotations

import itertools
import os
from collections.abc import Callable, Hashable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from replay import session as wire
from replay.events import (
    ClientDisconnected,
    ClientExpired,
    ClientHandshaken,
    ClientSubscribed,
    ClientUnsubscribed,
    Event,
    HeldConnect,
    MessagePublished,
    Outbound,
    Reply,
    Transport,
    Wire,
)
from replay.session import Batch, Held, Session, decode, subscribed, subscription_error
from tape.bayeux import Message
from tape.channel import ChannelError, ChannelPattern, is_deliverable, is_meta, is_pattern

_SESSION_METAS = ("/meta/connect", "/meta/subscribe", "/meta/unsubscribe", "/meta/disconnect")


@dataclass(slots=True)
class _Context:
    """The batch being handled: where replies go, and the connect it holds, if any."""

    transport: Transport
    connection: Hashable
    now: float
    replies: list[Wire] = field(default_factory=list)
    hold: Held | None = None


@dataclass(frozen=True, slots=True)
class _Due:
    """A held connect whose answer is ready; its queued messages are taken at drain time, so
    everything queued until the transport drains goes in the same batch."""

    session: Session
    held: Held
    with_queue: bool


class BayeuxServer:
    """Bayeux 1.0 server sessions for any number of clients. No I/O, no clock.

    Feed it handle(), publish(), deliver_to(), tick() and connection_closed(); after each, send
    what data_to_send() returns, log events_received(), and call tick() at next_wakeup().
    `connection` names where an answer goes: over long-polling one token per HTTP request,
    over WebSocket the socket. Over WebSocket queued messages are pushed as they are queued
    (one batch per drain); over long-polling they wait for, and complete, a held connect.
    """

    def __init__(
        self,
        *,
        timeout_ms: int = 30000,
        interval_ms: int = 0,
        max_interval_ms: int = 10000,
        unknown_client_error: str = "402::Unknown client",
        connection_types: Iterable[str] = ("websocket", "long-polling"),
        random_bytes: Callable[[int], bytes] = os.urandom,
    ) -> None:
        self._timeout_ms, self._max_interval = timeout_ms, max_interval_ms / 1000
        self._advice = {"reconnect": "retry", "interval": interval_ms, "timeout": timeout_ms}
        self._unknown_client = unknown_client_error
        self._types = tuple(connection_types)
        self._random_bytes = random_bytes
        self._sessions: dict[str, Session] = {}
        self._due: list[_Due] = []
        self._push: dict[str, None] = {}  # clients with messages to push, as an ordered set
        self._events: list[Event] = []
        self._event_ids = itertools.count(1)
        self._batch: _Context | None = None

    # --- state -----------------------------------------------------------------------------

    @property
    def client_ids(self) -> tuple[str, ...]:
        """The live sessions."""
        return tuple(self._sessions)

    def subscriptions(self, client_id: str) -> tuple[str, ...]:
        """The channels and patterns a client is subscribed to; () when it is unknown."""
        found = self._sessions.get(client_id)
        return () if found is None else tuple(found.patterns)

    def is_subscribed(self, client_id: str, channel: str) -> bool:
        """Whether a live client's subscriptions match `channel`."""
        found = self._sessions.get(client_id)
        return found is not None and subscribed(found, channel)

    # --- outputs ---------------------------------------------------------------------------

    def data_to_send(self) -> list[Outbound]:
        """Answers to held connects that became due, then WebSocket pushes."""
        due, self._due = self._due, []
        out = [self._completion(item) for item in due]
        for client_id in self._push:
            found = self._sessions.get(client_id)
            if found is not None and found.push is not None and found.queue:
                out.append(Outbound(found.push, client_id, self._take(found)))
        self._push.clear()
        return out

    def events_received(self) -> list[Event]:
        events, self._events = self._events, []
        return events

    def next_wakeup(self) -> float | None:
        """The earliest held-connect deadline or session expiry; None with no sessions."""
        # A scan, not a heap: sessions number in the tens, and the caller asks once per wake.
        return min(map(self._deadline, self._sessions.values()), default=None)

    # --- inputs ----------------------------------------------------------------------------

    def handle(
        self, batch: Batch, now: float, *, transport: Transport, connection: Hashable
    ) -> Reply:
        """One incoming batch: an HTTP POST body or a WebSocket frame. Never raises."""
        messages = decode(batch)
        if isinstance(messages, Reply):
            return messages
        context = _Context(transport, connection, now)
        self._batch = context
        try:
            for message in messages:
                self._dispatch(message, context)
        finally:
            self._batch = None
        return self._reply(context)

    def publish(self, channel: str, data: Any, now: float) -> int:
        """Queue `{channel, data}` for every subscribed client; returns how many got it.

        `data` is passed through as given (an `orjson.Fragment` is sent as its raw bytes)."""
        if is_pattern(channel) or not is_deliverable(channel):
            raise ValueError(f"cannot broadcast on {channel!r}")
        ChannelPattern.parse(channel)  # raises ChannelError for a malformed name
        targets = [s for s in self._sessions.values() if subscribed(s, channel)]
        for target in targets:
            self._enqueue(target, {"channel": channel, "data": data}, now)
        return len(targets)

    def deliver_to(self, client_id: str, message: Mapping[str, Any] | Message, now: float) -> bool:
        """Queue one message for one client, subscribed or not; False when it is unknown.

        The message is copied (one level deep) and given a server id; its data is untouched."""
        fields = dict(message.fields if isinstance(message, Message) else message)
        if not isinstance(fields.get("channel"), str):
            raise ValueError("a delivered message needs a string 'channel'")
        target = self._sessions.get(client_id)
        if target is not None:
            self._enqueue(target, fields, now)
        return target is not None

    def tick(self, now: float) -> None:
        """Answer held connects whose timeout passed; expire clients that stopped connecting."""
        for found in list(self._sessions.values()):
            if found.held is not None and now >= found.held.info.deadline:
                self._complete(found, now, with_queue=True)
            elif found.held is None and now >= found.last_seen + self._max_interval:
                self._end(found, ClientExpired(found.client_id))

    def connection_closed(self, connection: Hashable, now: float) -> None:
        """The transport lost `connection`: its held connects and pushes go nowhere now."""
        self._due = [item for item in self._due if item.held.info.connection != connection]
        for found in self._sessions.values():
            if found.held is not None and found.held.info.connection == connection:
                found.held, found.last_seen = None, now
            if found.push == connection:
                found.push = None

    # --- dispatch --------------------------------------------------------------------------

    def _dispatch(self, message: Message, context: _Context) -> None:
        channel = message.channel
        if channel == "/meta/handshake":
            self._handshake(message, context)
            return
        known = channel in _SESSION_METAS or not is_meta(channel)
        found = self._session(message, context) if known else None
        if not known:
            reason = wire.error(404, (channel,), "Unknown channel")
            context.replies.append(wire.answer(message, successful=False, error=reason))
        elif found is None:
            context.replies.append(wire.unknown_client(message, self._unknown_client))
        elif channel == "/meta/connect":
            self._connect(found, message, context)
        elif channel == "/meta/disconnect":
            self._disconnect(found, message, context)
        elif channel in ("/meta/subscribe", "/meta/unsubscribe"):
            self._subscription(found, message, context)
        else:
            self._client_publish(found, message, context)

    def _session(self, message: Message, context: _Context) -> Session | None:
        found = self._sessions.get(message.client_id or "")
        if found is not None and context.transport == "websocket":
            found.push = context.connection
        return found

    def _handshake(self, message: Message, context: _Context) -> None:
        failure = self._handshake_error(message)
        if failure is not None:
            # Bayeux 1.0 "unsuccessful handshake response": the server's types and advice
            # go with the error; retrying the same offer would fail again, hence none.
            context.replies.append(
                wire.answer(message, successful=False, error=failure, **self._offer("none"))
            )
            return
        client_id = self._new_client_id()
        created = Session(client_id, last_seen=context.now)
        if context.transport == "websocket":
            created.push = context.connection
        self._sessions[client_id] = created
        self._events.append(ClientHandshaken(client_id))
        reply = wire.answer(message, successful=True, clientId=client_id, **self._offer())
        context.replies.append(reply | {"supportedConnectionTypes": self._common(message)})

    def _handshake_error(self, message: Message) -> str | None:
        offered = message.supported_connection_types
        if not wire.version_acceptable(message):
            return wire.error(300, (str(message.version),), "Version mismatch")
        if not offered:
            return wire.error(402, ("supportedConnectionTypes",), "Missing required parameter")
        if not self._common(message):
            # Bayeux 1.0 "handshake response": no connection type in common fails the handshake.
            return wire.error(301, offered, "Connection types not supported")
        return None

    def _common(self, message: Message) -> list[str]:
        offered = message.supported_connection_types or ()
        return [kind for kind in self._types if kind in offered]

    def _offer(self, reconnect: str = "retry") -> dict[str, Any]:
        types = list(self._types)
        advice = self._advice | {"reconnect": reconnect}
        return {"version": wire.SERVER_VERSION, "supportedConnectionTypes": types, "advice": advice}

    def _new_client_id(self) -> str:
        while (client_id := wire.new_client_id(self._random_bytes)) in self._sessions:
            pass  # 160 random bits: never in practice, but an id must not be shared
        return client_id

    # --- /meta/connect ---------------------------------------------------------------------

    def _connect(self, found: Session, message: Message, context: _Context) -> None:
        if found.held is not None:
            # Bayeux 1.0 "connect request": one /meta/connect outstanding per client. CometD
            # (AbstractHttpTransport.processMetaConnect) "cancel[s] the previous scheduler to
            # cancel any prior waiting long poll": the old one is answered, empty; this one waits.
            self._complete(found, context.now, with_queue=False)
        if context.transport == "long-polling":
            found.push = None
        reply = wire.answer(message, successful=True, clientId=found.client_id)
        reply["advice"] = dict(self._advice)
        timeout = self._connect_timeout(message)
        if not found.connected or timeout == 0 or found.queue:
            # CometD answers the first connect at once: some clients wait for it (PEERS.md).
            found.connected, found.last_seen = True, context.now
            context.replies += [reply, *self._take(found)]
            return
        deadline = context.now + timeout / 1000
        found.held = Held(HeldConnect(found.client_id, context.connection, deadline), reply)
        context.hold = found.held

    def _connect_timeout(self, message: Message) -> int:
        # Bayeux 1.0 "timeout advice field": a client's advice on its connect overrides ours.
        advice = message.advice
        timeout = self._timeout_ms if advice is None or advice.timeout is None else advice.timeout
        return max(timeout, 0)

    def _complete(self, found: Session, now: float, *, with_queue: bool) -> None:
        held, found.held, found.last_seen = found.held, None, now
        if held is None:
            return
        batch = self._batch
        if batch is not None and batch.hold is held:
            # Held and completed in one batch: its answer joins the batch's own reply.
            batch.hold = None
            batch.replies += [held.reply, *(self._take(found) if with_queue else [])]
        else:
            self._due.append(_Due(found, held, with_queue))

    def _completion(self, item: _Due) -> Outbound:
        messages = [*item.held.pending, item.held.reply]
        if item.with_queue and self._sessions.get(item.session.client_id) is item.session:
            messages += self._take(item.session)
        info = item.held.info
        return Outbound(info.connection, info.client_id, messages, info)

    def _reply(self, context: _Context) -> Reply:
        held = context.hold
        if held is None:
            return Reply(context.replies)
        if context.transport == "websocket":
            return Reply(context.replies, held.info)
        held.pending = context.replies  # long-polling: one HTTP response for the whole batch
        return Reply([], held.info)

    # --- other meta channels ---------------------------------------------------------------

    def _disconnect(self, found: Session, message: Message, context: _Context) -> None:
        if found.held is not None:
            # Bayeux 1.0 "reconnect advice field": none, the session is over (as CometD does).
            found.held.reply["advice"] = {"reconnect": "none"}
            self._complete(found, context.now, with_queue=False)
        self._end(found, ClientDisconnected(found.client_id))
        context.replies.append(wire.answer(message, successful=True, clientId=found.client_id))

    def _end(self, found: Session, event: ClientDisconnected | ClientExpired) -> None:
        del self._sessions[found.client_id]
        self._push.pop(found.client_id, None)
        self._events.append(event)

    def _subscription(self, found: Session, message: Message, context: _Context) -> None:
        subscription = message.subscription
        names = (subscription,) if isinstance(subscription, str) else subscription or ()
        failure = subscription_error(names)
        fields: dict[str, Any] = {"clientId": found.client_id}
        if "subscription" in message.fields:
            fields["subscription"] = message.fields["subscription"]  # echoed as sent
        if failure is not None:
            context.replies.append(wire.answer(message, successful=False, error=failure, **fields))
            return
        if message.channel == "/meta/subscribe":
            found.patterns.update((name, ChannelPattern.parse(name)) for name in names)
            self._events.append(ClientSubscribed(found.client_id, names))
        else:
            for name in names:
                found.patterns.pop(name, None)
            self._events.append(ClientUnsubscribed(found.client_id, names))
        context.replies.append(wire.answer(message, successful=True, **fields))

    def _client_publish(self, found: Session, message: Message, context: _Context) -> None:
        channel = message.channel
        try:
            ChannelPattern.parse(channel)
            valid = not is_pattern(channel)
        except ChannelError:
            valid = False
        if not valid:
            reason = wire.error(405, (channel,), "Invalid channel")
            context.replies.append(wire.answer(message, successful=False, error=reason))
            return
        self._events.append(MessagePublished(found.client_id, channel, message.data))
        context.replies.append(wire.answer(message, successful=True))
        if is_deliverable(channel):
            self.publish(channel, message.data, context.now)

    # --- queues ----------------------------------------------------------------------------

    def _enqueue(self, found: Session, message: Wire, now: float) -> None:
        # Delivered ids get a "-", which no decimal or base-36 request id has: aiocometd-ng
        # takes an event whose id equals a pending request id for that request's reply.
        message["id"] = f"ev-{next(self._event_ids)}"
        found.queue.append(message)
        if found.push is not None:
            self._push[found.client_id] = None
        elif found.held is not None:
            self._complete(found, now, with_queue=True)

    @staticmethod
    def _take(found: Session) -> list[Wire]:
        queue, found.queue = found.queue, []
        return queue

    def _deadline(self, found: Session) -> float:
        if found.held is not None:
            return found.held.info.deadline
        return found.last_seen + self._max_interval
