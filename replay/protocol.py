"""The Bayeux 1.0 server as a sans-I/O state machine: batches and `now` go in; replies, batches
for held connects and WebSocket pushes, events and the time to be woken up come out."""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Callable, Hashable, Iterable
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
from replay.fault_core import FaultInjector
from replay.resume import ReplayExtension
from replay.session import Batch, Held, Session, decode, subscribed, subscription_error
from replay.session_faults import SessionFaults
from tape.bayeux import Message
from tape.channel import ChannelError, ChannelPattern, is_deliverable, is_meta, is_pattern, matches

_SESSION_METAS = ("/meta/connect", "/meta/subscribe", "/meta/unsubscribe", "/meta/disconnect")
MAX_QUEUE = 10_000  # messages queued per client before the oldest are dropped (CometD: maxQueue)
MAX_BATCH = 1_000  # messages in one incoming batch; a longer batch is refused whole
MAX_TIMEOUT_MS = 120_000  # the most a client's own advice.timeout may hold a connect
MAX_SUBSCRIPTIONS = 1_000  # channels and patterns one client may be subscribed to
PUBLISH_DENIED = "403::Publish denied"


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


class BayeuxServer(SessionFaults):
    """Bayeux 1.0 server sessions for any number of clients. No I/O, no clock.

    Feed it handle(), publish(), deliver_to(), tick() and connection_closed(); after each, send
    what data_to_send() returns, log events_received(), and call tick() at next_wakeup().
    `connection` names where an answer goes: over long-polling one token per HTTP request,
    over WebSocket the socket. Over WebSocket queued messages are pushed as they are queued
    (one batch per drain); over long-polling they wait for, and complete, a held connect.

    Everything it keeps per client is bounded and freed when the session ends: a client that
    falls `max_queue` messages behind loses the oldest (counted in `dropped`), and a session
    that stops connecting expires after `max_interval_ms`.
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
        max_queue: int = MAX_QUEUE,
        max_batch: int = MAX_BATCH,
        max_timeout_ms: int = MAX_TIMEOUT_MS,
        max_subscriptions: int = MAX_SUBSCRIPTIONS,
        publish_denied: tuple[str, ...] = (),
        faults: FaultInjector | None = None,
    ) -> None:
        super().__init__(max_queue=max_queue, max_interval_ms=max_interval_ms, faults=faults)
        self._timeout_ms = timeout_ms
        self._advice = {"reconnect": "retry", "interval": interval_ms, "timeout": timeout_ms}
        self._unknown_client = unknown_client_error
        self._types = tuple(connection_types)
        self._random_bytes = random_bytes
        self._max_batch = max_batch
        self._max_timeout_ms = max_timeout_ms
        self._max_subs = max_subscriptions
        self._publish_denied = publish_denied  # channel patterns clients may not publish on
        self._due: list[_Due] = []
        self._batch: _Context | None = None
        self.replay = ReplayExtension()  # Salesforce-style ext.replay (replay/resume.py)

    # --- outputs ---------------------------------------------------------------------------

    def data_to_send(self) -> list[Outbound]:
        """Answers to held connects that became due, then WebSocket pushes."""
        due, self._due = self._due, []
        out = [self._completion(item) for item in due]
        if self._out:  # a fault's pushes (a server-side /meta/disconnect)
            out += self._take_fault_pushes()
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
        """The earliest held-connect deadline, session expiry or fault; None with none."""
        earliest = self._wakeups.earliest()
        if self.faults is None:
            return earliest
        fault = self._fault_wakeup()
        return fault if earliest is None else earliest if fault is None else min(earliest, fault)

    # --- inputs ----------------------------------------------------------------------------

    def handle(
        self, batch: Batch, now: float, *, transport: Transport, connection: Hashable
    ) -> Reply:
        """One incoming batch: an HTTP POST body or a WebSocket frame. Never raises."""
        messages = decode(batch)
        if isinstance(messages, Reply):
            return messages
        if len(messages) > self._max_batch:
            reason = f"a batch of {len(messages)} messages is over the limit of {self._max_batch}"
            return Reply([wire.rejection(None, reason)], bad_request=True)
        context = _Context(transport, connection, now)
        self._batch = context
        try:
            for message in messages:
                self._dispatch(message, context)
        finally:
            self._batch = None
        return self._reply(context)

    def tick(self, now: float) -> None:
        """Answer held connects whose timeout passed; expire clients that stopped connecting."""
        for client_id in self._wakeups.pop_due(now):
            found = self._sessions.get(client_id)
            if found is None:
                continue
            if found.held is not None:
                self._fault_unfreeze(found)
                self._complete(found, now, with_queue=True)
            else:
                self._end(found, ClientExpired(found.client_id))
        if self.faults is not None:
            self._fault_tick(now)

    def connection_closed(self, connection: Hashable, now: float) -> None:
        """The transport lost `connection`: its held connects and pushes go nowhere now."""
        clients = self._attached.pop(connection, None)
        if clients is None:
            return
        self._due = [item for item in self._due if item.held.info.connection != connection]
        for client_id in clients:
            found = self._sessions.get(client_id)
            if found is None:
                continue
            if found.held is not None and found.held.info.connection == connection:
                found.held, found.last_seen = None, now
                self._reschedule(found)
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
            context.replies += self.unknown_reply(message, context.now)
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
            self._set_push(found, context.connection)
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
        created = Session(client_id, last_seen=context.now, queue=deque(maxlen=self._max_queue))
        self._sessions[client_id] = created
        if context.transport == "websocket":
            self._set_push(created, context.connection)
        self._reschedule(created)
        self._events.append(ClientHandshaken(client_id))
        self._fault_handshake(client_id, context.now)
        reply = wire.answer(message, successful=True, clientId=client_id, **self._offer())
        reply = self.replay.handshake(message, client_id, reply)  # ext.replay acknowledged
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
            self._fault_unfreeze(found)  # a hold-connect fault holds one connect
        if context.transport == "long-polling":
            self._set_push(found, None)
        reply = wire.answer(message, successful=True, clientId=found.client_id)
        reply["advice"] = dict(self._advice)
        timeout = self._connect_timeout(message)
        deadline = context.now + timeout / 1000
        frozen = False
        if self.faults is not None:  # advice a fault left; a hold-connect fault's deadline
            deadline = self._fault_connect(found, reply, deadline)
            frozen = self._fault_frozen(found)
        if not frozen and (not found.connected or timeout == 0 or found.queue):
            # CometD answers the first connect at once: some clients wait for it (PEERS.md).
            found.connected, found.last_seen = True, context.now
            self._reschedule(found)
            context.replies += [reply, *self._take(found)]
            return
        found.held = Held(HeldConnect(found.client_id, context.connection, deadline), reply)
        self._attach(context.connection, found.client_id)
        self._reschedule(found)
        context.hold = found.held

    def _connect_timeout(self, message: Message) -> int:
        # Bayeux 1.0 "timeout advice field": a client's advice on its connect overrides ours.
        advice = message.advice
        timeout = self._timeout_ms if advice is None or advice.timeout is None else advice.timeout
        # Capped: a client's 10**19 would otherwise hold its connect, and its session, for ever.
        return min(max(timeout, 0), self._max_timeout_ms)

    def _complete(self, found: Session, now: float, *, with_queue: bool) -> None:
        held, found.held, found.last_seen = found.held, None, now
        if held is None:
            return
        self._reschedule(found)
        if found.push != held.info.connection:
            self._detach(held.info.connection, found.client_id)
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
        client_id = found.client_id
        del self._sessions[client_id]
        self._push.pop(client_id, None)
        self._index.remove(client_id, found.patterns)
        self._wakeups.discard(client_id)
        for connection in (found.push, found.held.info.connection if found.held else None):
            if connection is not None:
                self._detach(connection, client_id)
        found.queue.clear()
        self._fault_end(client_id)
        self.replay.forget(client_id)
        self._events.append(event)

    def _subscription(self, found: Session, message: Message, context: _Context) -> None:
        subscription = message.subscription
        names = (subscription,) if isinstance(subscription, str) else subscription or ()
        failure = subscription_error(names) or self.replay.check(message, names)
        fields: dict[str, Any] = {"clientId": found.client_id}
        if "subscription" in message.fields:
            fields["subscription"] = message.fields["subscription"]  # echoed as sent
        if failure is not None:
            context.replies.append(wire.answer(message, successful=False, error=failure, **fields))
            return
        if (
            message.channel == "/meta/subscribe"
            and len(found.patterns.keys() | names) > self._max_subs
        ):
            reason = wire.error(403, (names[0],), "Too many subscriptions")
            context.replies.append(wire.answer(message, successful=False, error=reason, **fields))
            return
        if message.channel == "/meta/subscribe":
            found.patterns.update((name, ChannelPattern.parse(name)) for name in names)
            found.matched.clear()
            self._index.add(found.client_id, names)
            self.replay.subscribed(found.client_id, message, names)  # the replayIds it asked
            self._events.append(ClientSubscribed(found.client_id, names))
        else:
            self._unsubscribe(found, names)
        context.replies.append(wire.answer(message, successful=True, **fields))

    def _unsubscribe(self, found: Session, names: tuple[str, ...]) -> None:
        for name in names:
            found.patterns.pop(name, None)
        found.matched.clear()
        self._index.remove(found.client_id, [n for n in names if n not in found.patterns])
        # Deliveries stop from the reply on: what is queued on those channels is not sent.
        kept = [m for m in found.queue if subscribed(found, m["channel"])]
        if len(kept) < len(found.queue):
            found.queue.clear()
            found.queue.extend(kept)
        self._events.append(ClientUnsubscribed(found.client_id, names))

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
        if any(matches(pattern, channel) for pattern in self._publish_denied):
            context.replies.append(wire.answer(message, successful=False, error=PUBLISH_DENIED))
            return
        if not wire.sendable(message.data):
            reason = wire.error(400, (channel,), "data nested too deep to deliver")
            context.replies.append(wire.answer(message, successful=False, error=reason))
            return
        self._events.append(MessagePublished(found.client_id, channel, message.data))
        context.replies.append(wire.answer(message, successful=True))
        if is_deliverable(channel):
            self.publish(channel, message.data, context.now)
