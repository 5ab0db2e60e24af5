"""Lazy deliveries: decode_frame_lazily parses a delivery's wire object only once it is read."""

from __future__ import annotations

from typing import Any, cast

from tape.bayeux_check import loads
from tape.bayeux_fast import ABSENT, envelopes
from tape.bayeux_model import Message, decode_frame, message_of, new_message


def decode_frame_lazily(raw: bytes | str) -> list[Message]:
    """decode_frame, but each delivery (a message with `data` on a channel outside /meta) is a
    LazyDelivery: its channel and id are read by the fast check and its wire object is parsed
    only if `fields` is read. A recorder needs only the channel of what it records."""
    decoded = envelopes(raw)
    if decoded is None:
        return decode_frame(raw)
    frame: _Frame = [raw, None]  # a list, not a class: its construction is ~0.3 us cheaper
    out: list[Message] = []
    for index, envelope in enumerate(decoded):
        channel = envelope.channel
        if envelope.data is not ABSENT and not channel.startswith("/meta/"):
            delivery = new_message(LazyDelivery)
            _set_wire(delivery, (frame, index, channel, envelope.id))
            out.append(delivery)
        else:  # meta replies and the rest: parsed now, as decode_frame does
            out.append(message_of(_objects(frame)[index]))
    return out


# A frame's raw bytes and, once the first of its messages needs them, its wire objects.
_Frame = list[Any]


def _objects(frame: _Frame) -> list[dict[str, Any]]:
    objects: list[dict[str, Any]] | None = frame[1]
    if objects is None:
        loaded = loads(frame[0])
        objects = frame[1] = [loaded] if isinstance(loaded, dict) else loaded
    return objects


class LazyDelivery(Message):
    """A delivery from decode_frame_lazily: equal to, and read like, the Message decode_frame
    gives; `fields` is parsed from the frame on first use (the whole frame at once: at decode
    time already if the frame holds a meta message). `channel` and `id` are those received: an
    ext hook that changes a message returns a new one rather than editing `fields`."""

    # (frame, index in it, channel, id as on the wire): one slot, set once, in C
    __slots__ = ("_wire",)
    _wire: tuple[_Frame, int, str, str | int | None]

    @property
    def fields(self) -> dict[str, Any]:
        frame, index, _, _ = self._wire
        return _objects(frame)[index]

    @property
    def channel(self) -> str:  # type: ignore[override]
        return self._wire[2]

    @property
    def id(self) -> str | None:  # type: ignore[override]
        wire_id = self._wire[3]
        return None if wire_id is None else str(wire_id)

    @property
    def has_data(self) -> bool:
        return True

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Message) and self.fields == other.fields

    def __reduce__(self) -> tuple[type[Message], tuple[dict[str, Any]]]:
        # copy, deepcopy and pickle give the plain Message (Message's own would set `fields`)
        return Message, (self.fields,)

    __hash__ = None  # type: ignore[assignment]  # as Message's: its fields are a dict


_set_wire = cast(Any, LazyDelivery)._wire.__set__  # the slot's descriptor: frozen, as Message
