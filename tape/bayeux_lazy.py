"""Lazy deliveries: decode_frame_lazily parses a delivery's wire object only once it is read."""

from __future__ import annotations

from typing import Any, cast

import msgspec

from tape.bayeux_check import loads
from tape.bayeux_fast import ABSENT, envelopes, split_envelopes
from tape.bayeux_model import Message, decode_frame, message_of, new_message

# A frame this big is split into its messages first (tape.bayeux_fast.split_envelopes), and is
# never parsed whole to read some of them: a long-poll reply that carries a server's backlog
# holds its /meta/connect reply beside 100k deliveries or more, and parsing them all for the
# reply took ~240 ms and ~2x the frame's size in Python objects for a 70 MB reply. Each message
# read is parsed alone, from its own bytes.
WHOLE_FRAME_BYTES = 1 << 16


def decode_frame_lazily(raw: bytes | str) -> list[Message]:
    """decode_frame, but each delivery (a message with `data` on a channel outside /meta) is a
    LazyDelivery: its channel and id are read by the fast check and its wire object is parsed
    only if `fields` is read. A recorder needs only the channel of what it records."""
    decoded = split = None
    if len(raw) >= WHOLE_FRAME_BYTES and type(raw) is bytes:
        split = split_envelopes(raw)
    if split is not None:
        decoded, spans = split
    else:
        decoded, spans = envelopes(raw), None
    if decoded is None:
        return decode_frame(raw)
    # a list, not a class: its construction is ~0.3 us cheaper
    frame: _Frame = [raw, None] if spans is None else [raw, None, spans]
    out: list[Message] = []
    for index, envelope in enumerate(decoded):
        channel = envelope.channel
        if envelope.data is not ABSENT and not channel.startswith("/meta/"):
            delivery = new_message(LazyDelivery)
            _set_wire(delivery, (frame, index, channel, envelope.id))
            out.append(delivery)
        else:  # meta replies and the rest: parsed now, as decode_frame does
            out.append(message_of(_object(frame, index)))
    return out


# A frame's raw bytes and, once the first of its messages needs them, its wire objects: all of
# them (a list), or for a frame split into its messages' bytes (a third item), those read so
# far (a _Spans).
_Frame = list[Any]


def _object(frame: _Frame, index: int) -> dict[str, Any]:
    objects: list[dict[str, Any]] | _Spans | None = frame[1]
    if objects is None:
        if len(frame) > 2:
            objects = frame[1] = _Spans(frame[2])
        else:
            loaded = loads(frame[0])
            objects = frame[1] = [loaded] if isinstance(loaded, dict) else loaded
    return objects[index]


class _Spans:
    """A split frame's messages, each parsed on first read from its own bytes (the frame passed
    the fast check, so each is an object, and parses alone as it does in the whole frame)."""

    __slots__ = ("_parsed", "_spans")

    def __init__(self, spans: list[msgspec.Raw]) -> None:
        self._spans = spans
        self._parsed: dict[int, dict[str, Any]] = {}

    def __getitem__(self, index: int) -> dict[str, Any]:
        parsed = self._parsed.get(index)
        if parsed is None:
            parsed = self._parsed[index] = loads(bytes(memoryview(self._spans[index])))
        return parsed


class LazyDelivery(Message):
    """A delivery from decode_frame_lazily: equal to, and read like, the Message decode_frame
    gives; `fields` is parsed from the frame on first use (a frame under WHOLE_FRAME_BYTES all
    at once: at decode time already if it holds a meta message; a bigger one message by
    message). `channel` and `id` are those received: an ext hook that changes a message
    returns a new one rather than editing `fields`."""

    # (frame, index in it, channel, id as on the wire): one slot, set once, in C
    __slots__ = ("_wire",)
    _wire: tuple[_Frame, int, str, str | int | None]

    @property
    def fields(self) -> dict[str, Any]:
        frame, index, _, _ = self._wire
        return _object(frame, index)

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
