"""The Bayeux 1.0 server as a sans-I/O state machine: batches and `now` go in; replies, batches
for held connects and WebSocket pushes, events and the time to be woken up come out."""

from __future__ import annotations

import itertools
import os
from collections import deque
from collections.abc import Callable, Hashable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from replay import session as wire
from replay.events import (
    ClientDisconnected,
    ClientExpired,
    ClientFellBehind,
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
from replay.routing import SubscriberIndex, Wakeups
from replay.session import Batch, Held, Session, decode, subscribed, subscription_error
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


class BayeuxServer:
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
    ) -> None:
        self._timeout_ms, self._max_interval = timeout_ms, max_interval_ms / 1000
        self._advice = {"reconnect": "retry", "interval": interval_ms, "timeout": timeout_ms}
        self._unknown_client = unknown_client_error
        self._types = tuple(connection_types)
        self._random_bytes = random_bytes
        self._max_queue, self._max_batch = max_queue, max_batch
        self._max_timeout_ms = max_timeout_ms
        self._max_subs = max_subscriptions
        self._publish_denied = publish_denied  # channel patterns clients may not publish on
        self.dropped = 0  # messages dropped from the queues of clients that fell behind
        self._sessions: dict[str, Session] = {}
        self._index = SubscriberIndex()
        self._wakeups = Wakeups()
        self._attached: dict[Hashable, set[str]] = {}  # connection -> clients holding or pushed
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

    def has_client(self, client_id: str) -> bool:
        return client_id in self._sessions

    def queued(self, client_id: str) -> int:
        """Messages waiting for a live client (0 when it is unknown)."""
        found = self._sessions.get(client_id)
        return 0 if found is None else len(found.queue)

    def push_connection(self, client_id: str) -> Hashable | None:
        """The WebSocket a live client's messages are pushed on, if any."""
        found = self._sessions.get(client_id)
        return None if found is None else found.push

    def sizes(self) -> dict[str, int]:
        """What the server holds, for logs and for tests that it is freed."""
        return {
            "sessions": len(self._sessions),
            "queued": sum(len(s.queue) for s in self._sessions.values()),
            "patterns": len(self._index),
            "wakeups": len(self._wakeups),
            "connections": len(self._attached),
        }

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
        return self._wakeups.earliest()

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

    def publish(self, channel: str, data: Any, now: float) -> int:
        """Queue `{channel, data}` for every subscribed client; returns how many got it.

        `data` is passed through as given (an `orjson.Fragment` is sent as its raw bytes)."""
        return self.publish_message({"channel": channel, "data": data}, now)

    def publish_message(self, message: Mapping[str, Any], now: float) -> int:
        """Queue a copy of `message` (channel, data, ext...) for every client subscribed to its
        channel; returns how many got it. Costs one lookup per pattern that could match."""
        channel = message["channel"]
        if is_pattern(channel) or not is_deliverable(channel):
            raise ValueError(f"cannot broadcast on {channel!r}")
        ChannelPattern.parse(channel)  # raises ChannelError for a malformed name
        targets = self._index.subscribers(channel)
        for client_id in targets:
            self._enqueue(self._sessions[client_id], dict(message), now)
        return len(targets)

    def deliver_to(
        self,
        client_id: str,
        message: Mapping[str, Any] | Message,
        now: float,
        *,
        subscribed_only: bool = False,
    ) -> bool:
        """Queue one message for one client; False when it is unknown, or (`subscribed_only`)
        not subscribed to the message's channel.

        The message is copied (one level deep) and given a server id; its data is untouched."""
        fields = dict(message.fields if isinstance(message, Message) else message)
        channel = fields.get("channel")
        if not isinstance(channel, str):
            raise ValueError("a delivered message needs a string 'channel'")
        target = self._sessions.get(client_id)
        if target is None or (subscribed_only and not subscribed(target, channel)):
            return False
        self._enqueue(target, fields, now)
        return True

    def requeue(self, client_id: str, messages: list[Wire]) -> None:
        """Put back, at the front of its queue, messages a transport could not send."""
        found = self._sessions.get(client_id)
        if found is not None:
            found.queue.extendleft(reversed(messages))

    def deliver_shared(
        self,
        client_id: str,
        messages: list[Wire],
        now: float,
        channels: Iterable[str] | None = None,
    ) -> int:
        """Queue, for one client, those of `messages` on channels it is subscribed to; returns
        how many. The dicts are queued as they are, shared, with no id added (Bayeux 1.0
        makes an event's id optional, and CometD's server sends none), so the caller must
        never change them: this is the player's path, ~0.1 us a message. `channels`, if
        given, holds every channel among `messages`: a client subscribed to all of them is
        not asked again for each message."""
        found = self._sessions.get(client_id)
        if found is None:
            return 0
        if channels is not None and all(subscribed(found, c) for c in channels):
            wanted = messages
        else:
            wanted = [m for m in messages if subscribed(found, m["channel"])]
        if wanted:
            self._add(found, wanted, now)
        return len(wanted)

    def publish_shared(self, messages: list[Wire], now: float) -> int:
        """publish_message() for dicts that are never changed again: each queued as it is,
        shared by every subscriber of its channel, with no id (see deliver_shared); one queue
        append per client. Returns how many deliveries that made."""
        by_channel: dict[str, list[str]] = {}
        by_client: dict[str, list[Wire]] = {}
        for message in messages:
            channel = message["channel"]
            targets = by_channel.get(channel)
            if targets is None:
                targets = by_channel[channel] = self._index.subscribers(channel)
            for client_id in targets:
                by_client.setdefault(client_id, []).append(message)
        for client_id, mine in by_client.items():
            self._add(self._sessions[client_id], mine, now)
        return sum(map(len, by_client.values()))

    def tick(self, now: float) -> None:
        """Answer held connects whose timeout passed; expire clients that stopped connecting."""
        for client_id in self._wakeups.pop_due(now):
            found = self._sessions.get(client_id)
            if found is None:
                continue
            if found.held is not None:
                self._complete(found, now, with_queue=True)
            else:
                self._end(found, ClientExpired(found.client_id))

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
            self._set_push(found, None)
        reply = wire.answer(message, successful=True, clientId=found.client_id)
        reply["advice"] = dict(self._advice)
        timeout = self._connect_timeout(message)
        if not found.connected or timeout == 0 or found.queue:
            # CometD answers the first connect at once: some clients wait for it (PEERS.md).
            found.connected, found.last_seen = True, context.now
            self._reschedule(found)
            context.replies += [reply, *self._take(found)]
            return
        deadline = context.now + timeout / 1000
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

    # --- queues ----------------------------------------------------------------------------

    def _enqueue(self, found: Session, message: Wire, now: float) -> None:
        # Delivered ids get a "-", which no decimal or base-36 request id has: aiocometd-ng
        # takes an event whose id equals a pending request id for that request's reply.
        message["id"] = f"ev-{next(self._event_ids)}"
        self._add(found, [message], now)

    def _add(self, found: Session, messages: list[Wire], now: float) -> None:
        queue = found.queue
        over = len(queue) + len(messages) - self._max_queue
        if over > 0:  # fell behind: the oldest go (the deque's maxlen drops them)
            if not found.dropped:
                self._events.append(ClientFellBehind(found.client_id, self._max_queue))
            found.dropped += over
            self.dropped += over
        queue.extend(messages)
        if found.push is not None:
            self._push[found.client_id] = None
        elif found.held is not None:
            self._complete(found, now, with_queue=True)

    @staticmethod
    def _take(found: Session) -> list[Wire]:
        taken = list(found.queue)
        found.queue.clear()
        return taken

    # --- bookkeeping -------------------------------------------------------------------------

    def _reschedule(self, found: Session) -> None:
        """Its next deadline: the held connect's timeout, else expiry after maxInterval."""
        held = found.held
        deadline = held.info.deadline if held else found.last_seen + self._max_interval
        self._wakeups.set(found.client_id, deadline)

    def _set_push(self, found: Session, connection: Hashable | None) -> None:
        old = found.push
        if old == connection:
            return
        found.push = connection
        if old is not None and (found.held is None or found.held.info.connection != old):
            self._detach(old, found.client_id)
        if connection is not None:
            self._attach(connection, found.client_id)

    def _attach(self, connection: Hashable, client_id: str) -> None:
        self._attached.setdefault(connection, set()).add(client_id)

    def _detach(self, connection: Hashable, client_id: str) -> None:
        clients = self._attached.get(connection)
        if clients is not None:
            clients.discard(client_id)
            if not clients:
                del self._attached[connection]
