"""Resuming from a position: the Salesforce-style `replay` extension (Streaming API durable
replay), honoured by the replayer.

A client that sends `ext: {"replay": true}` on /meta/handshake is answered with the same in
the reply; its deliveries carry their replayId (replay/resume_ids.py says where); and a
/meta/subscribe carrying `ext: {"replay": {"<channel>": <replayId>}}` resumes that channel:

- the timeline is the event bus, and a client's position in it is where its timeline is (its
  own with the per-client clock, the one shared timeline with the shared clock); deliveries
  before the position are the retained events;
- -1 (or no entry): new events only, from the position on;
- -2: every retained event of the channel at once, then on from the position;
- any other id: the retained events after it at once; from the position on, the channel's
  deliveries up to that id are skipped (an id ahead of the position);
- a per-client timeline that has not started yet (the subscriptions within its settle) is at
  its beginning, but starts at the earliest delivery a resume asks for: it is played from
  there as recorded, that delivery at the end of the settle, the next ones at their recorded
  gaps at --speed. So a client that re-handshakes and re-subscribes with the last replayId
  it saw gets the rest of the recording, each event once.

`ReplayExtension` is the protocol's part (replay/protocol.py calls it): it acknowledges the
handshake, checks and remembers what each client asked, and forgets a client when its session
ends. `Resume` is the player's part (replay/player.py calls it).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from replay.events import ClientSubscribed, Wire
from replay.resume_ids import ReplayIds
from tape.bayeux import Message
from tape.channel import is_pattern

NEW_ONLY, ALL = -1, -2
MAX_ASKED = 1_000  # channels whose replayId a client's state remembers (its subscriptions' limit)
INVALID = (
    "400::The replayId {{{}}} you provided was invalid.  Please provide a valid ID, -2 to "
    "replay all events, or -1 to replay only new events."
)  # Salesforce's words, which its clients look for


@dataclass(slots=True)
class _Client:
    asked: dict[str, int] = field(default_factory=dict)  # channel -> replayId it subscribed with
    skip: dict[str, int] = field(default_factory=dict)  # channel -> skip deliveries up to this id


def wants_replay(message: Message) -> bool:
    """Whether a handshake asks for the extension (Salesforce's clients send `true`)."""
    ext = message.ext
    return isinstance(ext, dict) and bool(ext.get("replay"))


class ReplayExtension:
    """The server's side of the extension, per client; bounded, and freed by forget()."""

    def __init__(self) -> None:
        self._clients: dict[str, _Client] = {}
        # channel -> its highest replayId in the timeline (the player sets it): a subscribe
        # asking to resume after a later one is refused, as Salesforce refuses an unknown id.
        self.last_id: Callable[[str], int | None] = lambda _channel: None

    @property
    def active(self) -> bool:
        """Whether any live client uses the extension."""
        return bool(self._clients)

    def uses(self, client_id: str) -> bool:
        return client_id in self._clients

    def handshake(self, message: Message, client_id: str, reply: Wire) -> Wire:
        """The handshake reply, acknowledging the extension when the client asked for it."""
        if not wants_replay(message):
            return reply
        self._clients[client_id] = _Client()
        return reply | {"ext": {**reply.get("ext", {}), "replay": True}}

    def check(self, message: Message, names: Iterable[str]) -> str | None:
        """The error for a subscribe whose ext.replay cannot be honoured; None when it can."""
        asked = _asked(message)
        if asked is None:
            return None
        if not isinstance(asked, dict):
            return INVALID.format(asked)
        for name in names:
            if name not in asked:
                continue
            value = asked[name]
            if is_pattern(name) or not isinstance(value, int) or isinstance(value, bool):
                return INVALID.format(value)
            last = self.last_id(name) if value >= 0 else None
            if value < ALL or (last is not None and value > last):
                return INVALID.format(value)
        return None

    def subscribed(self, client_id: str, message: Message, names: Iterable[str]) -> None:
        """Remember the replayIds an accepted subscribe asked for (checked by check())."""
        asked = _asked(message)
        if not isinstance(asked, dict):
            return
        client = self._clients.setdefault(client_id, _Client())  # asked without a handshake
        for name in names:
            value = asked.get(name)
            if isinstance(value, int):
                client.asked.pop(name, None)
                client.asked[name] = value
                if len(client.asked) > MAX_ASKED:
                    del client.asked[next(iter(client.asked))]

    def asked(self, client_id: str) -> dict[str, int]:
        found = self._clients.get(client_id)
        return {} if found is None else found.asked

    def skips(self, client_id: str) -> dict[str, int]:
        found = self._clients.get(client_id)
        return {} if found is None else found.skip

    def forget(self, client_id: str) -> None:
        self._clients.pop(client_id, None)


def _asked(message: Message) -> Any:
    ext = message.ext
    if message.channel != "/meta/subscribe" or not isinstance(ext, dict):
        return None
    return ext.get("replay")


class _Server(Protocol):
    """What Resume needs of the protocol (replay/protocol.py's BayeuxServer)."""

    @property
    def replay(self) -> ReplayExtension: ...
    @property
    def client_ids(self) -> tuple[str, ...]: ...
    def deliver_shared(
        self, client_id: str, messages: list[Wire], now: float, channels: Iterable[str] | None
    ) -> int: ...
    def publish_shared(self, messages: list[Wire], now: float) -> int: ...


class _Cursor(Protocol):
    index: int  # the timeline index of its next emission


class Resume:
    """The player's side: where a timeline starts, the retained events a subscriber gets at
    once, and the replayIds on what clients using the extension are sent. Clients that do not
    use it go through untouched."""

    def __init__(self, server: _Server, messages: list[Wire], offsets: Sequence[float]) -> None:
        self._server, self._ext = server, server.replay
        self._messages, self._offsets = messages, offsets
        self._table: ReplayIds | None = None
        self._ext.last_id = lambda channel: self._ids().last(channel)

    def _ids(self) -> ReplayIds:
        if self._table is None:
            self._table = ReplayIds(self._messages)
        return self._table

    def begin(self, client_id: str, shared: bool, start: float) -> tuple[float, int]:
        """A timeline not started yet (re)starts its settle at `start`: when its offset 0 is,
        and its first index. A per-client one starts at the earliest delivery resumed."""
        asked = self._ext.asked(client_id)
        if not asked:
            return start, 0
        table = self._ids()
        for channel, value in asked.items():
            self._skip(client_id, channel, value)
        firsts = [table.first_after(c, v) for c, v in asked.items() if v != NEW_ONLY]
        if shared or not firsts:
            return start, 0  # the shared timeline is everyone's: skips alone, set above
        index = min(firsts)
        if index >= len(self._offsets):
            return start, index  # nothing after those ids: the timeline is done
        return start - self._offsets[index], index

    def joined(self, event: ClientSubscribed, cursor: _Cursor | None, now: float) -> int:
        """A client subscribed while its timeline plays (or after it ended): what it asked
        for of the retained events goes to it now; returns how many were queued."""
        asked = self._ext.asked(event.client_id)
        if not asked:
            return 0
        position = len(self._messages) if cursor is None else cursor.index
        table, retained = self._ids(), []
        for channel in event.channels:
            value = asked.get(channel, NEW_ONLY)
            self._skip(event.client_id, channel, value)
            if value != NEW_ONLY:
                retained += table.retained(channel, value, position)
        retained.sort(key=lambda e: e.index)
        messages = [e.message for e in retained]
        return self._server.deliver_shared(event.client_id, messages, now, None) if messages else 0

    def _skip(self, client_id: str, channel: str, value: int) -> None:
        skip = self._ext.skips(client_id)
        if value >= 0:
            skip[channel] = value
        else:
            skip.pop(channel, None)

    def deliver(self, client_id: str, messages: list[Wire], now: float, channels: Any) -> int:
        """The player's per-client delivery (BayeuxServer.deliver_shared), with replayIds."""
        if self._ext.active and self._ext.uses(client_id):
            messages = self._mine(client_id, messages)
        return self._server.deliver_shared(client_id, messages, now, channels)

    def publish(self, messages: list[Wire], now: float) -> int:
        """The shared clock's broadcast (BayeuxServer.publish_shared); client by client while
        any client uses the extension."""
        if not self._ext.active:
            return self._server.publish_shared(messages, now)
        return sum(self.deliver(c, messages, now, None) for c in self._server.client_ids)

    def _mine(self, client_id: str, messages: list[Wire]) -> list[Wire]:
        table, skip = self._ids(), self._ext.skips(client_id)
        out = []
        for message in messages:
            entry = table.entry(message)
            if skip:
                limit = skip.get(message["channel"])
                if limit is not None:
                    if entry.replay_id <= limit:
                        continue  # seen already: the client resumed after it
                    del skip[message["channel"]]
            out.append(entry.message)
        return out
