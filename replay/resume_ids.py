"""The replayIds of a timeline's deliveries, for the Salesforce-style replay extension
(replay/resume.py).

Salesforce puts an event's replayId in `data.event.replayId`, and that is where its clients
read it (EMP Connector's ReplayExtension.getReplayId, cometdReplayExtension.js `incoming`). A
channel whose recorded deliveries all carry an integer there keeps those ids, and its messages
go out as recorded. Any other channel is numbered 1, 2, 3... in timeline order, and the number
is spliced into the recorded bytes as `data.event.replayId` (every other byte kept); a
delivery whose `data` (or its `event`) is not a JSON object, or whose event already holds a
replayId that is not an integer, carries it as `ext.replayId` instead.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson

from replay.spans import member

Wire = dict[str, Any]


@dataclass(frozen=True, slots=True)
class Entry:
    """One delivery of the timeline, as a client using the extension is sent it."""

    index: int  # its place in the timeline
    replay_id: int
    message: Wire  # the timeline's own dict when it carried its replayId, else a stamped copy


class ReplayIds:
    """Every delivery's replayId, by channel and by message. Built once, on first use: the
    messages are the player's, never changed, and live as long as it (they are found by id())."""

    def __init__(self, messages: list[Wire]) -> None:
        self._at = {id(m): i for i, m in enumerate(messages)}
        by_channel: dict[str, list[int]] = {}
        for i, message in enumerate(messages):
            by_channel.setdefault(message["channel"], []).append(i)
        self.channels: dict[str, list[Entry]] = {}
        entries: list[Entry | None] = [None] * len(messages)
        for channel, indexes in by_channel.items():
            recorded = [recorded_id(messages[i].get("data")) for i in indexes]
            kept = all(r is not None for r in recorded)
            mine = self.channels[channel] = []
            for n, (i, found) in enumerate(zip(indexes, recorded, strict=True), 1):
                if kept and found is not None:
                    entry = Entry(i, found, messages[i])
                else:
                    entry = Entry(i, n, stamped(messages[i], n))
                mine.append(entry)
                entries[i] = entry
        self._entries = entries

    def entry(self, message: Wire) -> Entry:
        """The entry of one of the timeline's messages."""
        found = self._entries[self._at[id(message)]]
        assert found is not None  # every index was filled
        return found

    def last(self, channel: str) -> int | None:
        """The highest replayId on `channel`; None when the timeline has none of it."""
        entries = self.channels.get(channel)
        return max(e.replay_id for e in entries) if entries else None

    def first_after(self, channel: str, replay_id: int) -> int:
        """The timeline index of the first delivery on `channel` after `replay_id` (-2: its
        first delivery); the timeline's length when there is none."""
        for entry in self.channels.get(channel, ()):
            if replay_id == -2 or entry.replay_id > replay_id:
                return entry.index
        return len(self._entries)

    def retained(self, channel: str, replay_id: int, before: int) -> list[Entry]:
        """The deliveries on `channel` before timeline index `before` and after `replay_id`
        (-2: all of them)."""
        return [
            e
            for e in self.channels.get(channel, ())
            if e.index < before and (replay_id == -2 or e.replay_id > replay_id)
        ]


def recorded_id(data: Any) -> int | None:
    """`data.event.replayId` when it is an integer; `data` is the recorded bytes (an
    orjson.Fragment) or a value."""
    if data is None:
        return None
    raw = orjson.dumps(data)
    event = _object_member(raw, (0, len(raw)), b"event")
    found = None if event is None else _object_member(raw, event, b"replayId")
    if found is None:
        return None
    text = raw[found[0] : found[1]]
    return int(text) if text.lstrip(b"-").isdigit() else None


def stamped(message: Wire, replay_id: int) -> Wire:
    """A copy of `message` carrying `replay_id` (see the module's docstring for where)."""
    spliced = _stamp(orjson.dumps(message.get("data")), replay_id)
    if spliced is not None:
        return message | {"data": orjson.Fragment(spliced)}
    ext = message.get("ext")
    if ext is None:
        return message | {"ext": {"replayId": replay_id}}
    raw = orjson.dumps(ext)
    if raw[:1] == b"{" and member(raw, (0, len(raw)), b"replayId") is None:
        return message | {"ext": orjson.Fragment(_insert(raw, 0, b'"replayId":%d' % replay_id))}
    return message  # nowhere to put it: its id still counts for resuming


def _stamp(raw: bytes, replay_id: int) -> bytes | None:
    if raw[:1] != b"{":
        return None
    event = member(raw, (0, len(raw)), b"event")
    if event is None:
        return _insert(raw, 0, b'"event":{"replayId":%d}' % replay_id)
    if raw[event[0] : event[0] + 1] != b"{" or member(raw, event, b"replayId") is not None:
        return None
    return _insert(raw, event[0], b'"replayId":%d' % replay_id)


def _object_member(raw: bytes, span: tuple[int, int], key: bytes) -> tuple[int, int] | None:
    if raw[span[0] : span[0] + 1] != b"{":
        return None
    return member(raw, span, key)


def _insert(raw: bytes, brace: int, item: bytes) -> bytes:
    """`item` ("key":value) as the first member of the object whose `{` is at `brace`."""
    rest = raw[brace + 1 :]
    comma = b"" if rest.lstrip()[:1] == b"}" else b","
    return raw[: brace + 1] + item + comma + rest
