"""The server's table of client sessions: lookups, deliveries (publish, deliver_to, and the
player's shared paths), each client's bounded queue, and which connection each client is held
or pushed on. BayeuxServer (replay/protocol.py) adds the protocol on top of it."""

from __future__ import annotations

import itertools
from collections.abc import Hashable, Iterable, Mapping
from typing import Any

from replay.events import ClientFellBehind, Event, Wire
from replay.fault_core import FaultInjector
from replay.routing import SubscriberIndex, Wakeups
from replay.session import Session, subscribed
from tape.bayeux import Message
from tape.channel import ChannelPattern, is_deliverable, is_pattern


class SessionTable:
    """Sessions by clientId, with the indexes that keep every operation's cost to the clients
    it concerns. Everything kept per client is bounded and freed when the session ends."""

    def __init__(self, *, max_queue: int, max_interval_ms: int) -> None:
        self._max_queue, self._max_interval = max_queue, max_interval_ms / 1000
        self.dropped = 0  # messages dropped from the queues of clients that fell behind
        self._sessions: dict[str, Session] = {}
        self._index = SubscriberIndex()
        self._wakeups = Wakeups()
        self._attached: dict[Hashable, set[str]] = {}  # connection -> clients holding or pushed
        self._push: dict[str, None] = {}  # clients with messages to push, as an ordered set
        self._events: list[Event] = []
        self._event_ids = itertools.count(1)
        self.faults: FaultInjector | None = None  # set by SessionFaults when faults are asked
        self._frozen: dict[str, float | None] = {}  # clients whose held connect deliveries
        # must not complete (a hold-connect fault) -> until when (None: its own timeout)

    def _complete(self, found: Session, now: float, *, with_queue: bool) -> None:
        """Answer the session's held connect (the protocol's part)."""
        raise NotImplementedError

    # --- lookups -----------------------------------------------------------------------------

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

    # --- deliveries -------------------------------------------------------------------------

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

    # --- queues -----------------------------------------------------------------------------

    def _enqueue(self, found: Session, message: Wire, now: float) -> None:
        # Delivered ids get a "-", which no decimal or base-36 request id has: aiocometd-ng
        # takes an event whose id equals a pending request id for that request's reply.
        message["id"] = f"ev-{next(self._event_ids)}"
        self._add(found, [message], now)

    def _add(self, found: Session, messages: list[Wire], now: float) -> None:
        if self.faults is not None:  # dropped, delayed, repeated... (replay/fault_core.py)
            self._add_faulted(found, messages, now)
            return
        self._queue(found, messages, now)

    def _add_faulted(self, found: Session, messages: list[Wire], now: float) -> None:
        """Through the message faults; a fault that falls due on a delivery (after=N) is
        applied right after it, before the rest is delivered."""
        assert self.faults is not None
        sent, rest = self.faults.deliver(found.client_id, messages, now)
        if sent:
            self._queue(found, sent, now)
        if self.faults.due_now:
            self._fault_tick(now)
        if rest and self._sessions.get(found.client_id) is found:
            self._add_faulted(found, rest, now)

    def _fault_tick(self, now: float) -> None:
        """Release delayed deliveries and apply the faults due (SessionFaults)."""
        raise NotImplementedError

    def _queue(self, found: Session, messages: list[Wire], now: float) -> None:
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
        elif found.held is not None and not (self._frozen and found.client_id in self._frozen):
            self._complete(found, now, with_queue=True)

    @staticmethod
    def _take(found: Session) -> list[Wire]:
        taken = list(found.queue)
        found.queue.clear()
        return taken

    # --- bookkeeping ------------------------------------------------------------------------

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
