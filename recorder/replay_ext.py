"""The Salesforce-style `replay` extension for the recorder (`record --ext replay`): resume
each channel from the last event recorded, so a re-handshake loses and repeats nothing.

As Salesforce's own clients do it (EMP Connector's ReplayExtension, cometdReplayExtension.js):
`ext: {"replay": true}` on every /meta/handshake; when the server's handshake reply says
`ext: {"replay": true}` too, each /meta/subscribe carries `ext: {"replay": {"<channel>": id}}`,
where id is the replayId of the last event recorded on that channel, else the starting
position (`--replay-from`: -1 new events only, the default; -2 all the server retains; or an
id, to resume after it). Each delivered event's replayId is read from `data.event.replayId`.

A sans-I/O pair of hooks for BayeuxClient (`ext_out`, `ext_in`): no I/O, no clock. The
replayIds stay in the recorded frames as they came; nothing else is stored.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from tape.bayeux import Message
from tape.channel import META_PREFIX

NEW_ONLY, ALL = -1, -2


class ReplayExtension:
    """Give `outgoing` as BayeuxClient's ext_out and `incoming` as its ext_in."""

    def __init__(self, start: int = NEW_ONLY, per_channel: Mapping[str, int] | None = None) -> None:
        self.start = start
        self.per_channel = dict(per_channel or {})
        self.supported: bool | None = None  # None until a handshake reply says
        self.last: dict[str, int] = {}  # channel -> replayId of the last event received
        self._told = False

    def position(self, channel: str) -> int:
        """Where a subscribe to `channel` resumes: after the last event seen on it, else from
        where the recording was asked to start."""
        found = self.last.get(channel)
        return found if found is not None else self.per_channel.get(channel, self.start)

    def refusal(self) -> str | None:
        """Once, after a handshake reply that did not acknowledge the extension: what to tell
        the user (the subscribes then go without replayIds)."""
        if self.supported is not False or self._told:
            return None
        self._told = True
        return (
            "the server's handshake reply has no ext.replay: it does not support the replay "
            "extension, so channels are subscribed without replayIds and a re-handshake may "
            "lose or repeat events"
        )

    def outgoing(self, wire: dict[str, Any]) -> dict[str, Any]:
        channel = wire.get("channel")
        if channel == "/meta/handshake":
            return wire | {"ext": {**(wire.get("ext") or {}), "replay": True}}
        if channel == "/meta/subscribe" and self.supported:
            names = wire.get("subscription")
            listed = [names] if isinstance(names, str) else list(names or ())
            replay = {name: self.position(name) for name in listed}
            return wire | {"ext": {**(wire.get("ext") or {}), "replay": replay}}
        return wire

    def incoming(self, message: Message) -> Message:
        channel = message.channel
        if channel.startswith(META_PREFIX):
            if channel == "/meta/handshake" and message.successful:
                ext = message.ext
                self.supported = isinstance(ext, dict) and ext.get("replay") is True
            return message
        found = replay_id(message.fields.get("data"))
        if found is not None:
            self.last[channel] = found
        return message


def replay_id(data: Any) -> int | None:
    """`data.event.replayId`, when it is an integer."""
    event = data.get("event") if isinstance(data, dict) else None
    found = event.get("replayId") if isinstance(event, dict) else None
    return found if isinstance(found, int) and not isinstance(found, bool) else None


def parse_replay_from(values: Iterable[str]) -> tuple[int, dict[str, int]]:
    """`--replay-from` values, ID or CHANNEL=ID: the starting position for every channel (the
    last bare ID given, default -1) and those given per channel. Raises ValueError."""
    start, per_channel = NEW_ONLY, {}
    for value in values:
        channel, found, text = value.rpartition("=")
        try:
            number = int(text)
        except ValueError:
            raise ValueError(f"{value!r} is not ID or CHANNEL=ID (an integer id)") from None
        if number < ALL:
            raise ValueError(f"{value!r}: an id is -1 (new only), -2 (all retained) or >= 0")
        if not found:
            start = number
        elif not channel.startswith("/"):
            raise ValueError(f"{value!r}: the channel must start with /")
        else:
            per_channel[channel] = number
    return start, per_channel
