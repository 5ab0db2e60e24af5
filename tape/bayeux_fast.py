"""The fast check: the field rules as a msgspec schema, checking a frame in C without its data.

msgspec checks a frame against it without building the values it does not keep: `data` and
`ext` are only checked to be well-formed JSON. 1.0-1.5 us for a 761-byte two-message GWS frame,
against 5-7 us for orjson.loads and the rules (tape.bayeux_check). It may refuse what the rules
accept (integers beyond int64, 512 brackets or more, anything not `bytes`): such frames take the
exact path. It must never accept what the rules refuse; tests/tape/test_bayeux.py checks that on
generated and damaged frames. A frame of many messages (a long-poll reply carrying a backlog) is
split into its messages first (split_envelopes), so its brackets are counted per message.
"""

from __future__ import annotations

import codecs
from typing import Annotated, Literal, cast

import msgspec

_Int64 = Annotated[int, msgspec.Meta(ge=-(2**63), le=2**63 - 1)]  # orjson reads these as int
ABSENT = msgspec.Raw()  # `data` left out (a present value is at least one byte: `null`)


class _WireAdvice(msgspec.Struct):
    reconnect: Literal["retry", "handshake", "none"] | None = None
    interval: _Int64 | None = None
    timeout: _Int64 | None = None
    maxInterval: _Int64 | None = None  # noqa: N815 (the wire's name)


class Envelope(msgspec.Struct):
    channel: str
    id: str | _Int64 | None = None
    clientId: str | None = None  # noqa: N815
    successful: bool | None = None
    error: str | None = None
    subscription: str | list[str] | None = None
    ext: dict[str, msgspec.Raw] | None = None
    advice: _WireAdvice | None = None
    supportedConnectionTypes: list[str] | None = None  # noqa: N815
    connectionType: str | None = None  # noqa: N815
    version: str | None = None
    minimumVersion: str | None = None  # noqa: N815
    timestamp: str | None = None
    data: msgspec.Raw = ABSENT


_ENVELOPES: msgspec.json.Decoder[list[Envelope] | Envelope] = msgspec.json.Decoder(
    list[Envelope] | Envelope
)
# How deep msgspec may nest depends on Python's recursion limit and the stack it is called on;
# orjson stops at 1,024. Frames with this many brackets or more (so perhaps nested as deep) take
# the exact path, so the fast check's answer never depends on either.
_MAX_BRACKETS = 512


def envelopes(raw: bytes | str) -> list[Envelope] | None:
    """The frame's messages if the codec certainly accepts it, else None: the exact path
    (orjson and the rules) then decides, and words the reason."""
    if type(raw) is not bytes:
        return None
    # Each level of nesting takes two bytes, so a short frame needs no counting (~1 ns a byte)
    if len(raw) >= 2 * _MAX_BRACKETS and raw.count(b"[") + raw.count(b"{") >= _MAX_BRACKETS:
        return None
    if not raw.isascii():
        # orjson refuses invalid UTF-8 anywhere; msgspec does not check what it skips.
        try:
            raw.decode()
        except UnicodeDecodeError:
            return None
    try:
        decoded = _ENVELOPES.decode(raw)
    except (msgspec.MsgspecError, RecursionError):  # DecodeError, ValidationError; deep nesting
        return None
    # `type() is`, not isinstance (~170 ns on a Struct class), and the cast's type as a string:
    # building list[Envelope] on every frame cost a quarter as much as the decode itself.
    return [decoded] if type(decoded) is Envelope else cast("list[Envelope]", decoded)


_SPANS = msgspec.json.Decoder(list[msgspec.Raw])


def split_envelopes(raw: bytes) -> tuple[list[Envelope], list[msgspec.Raw]] | None:
    """envelopes() for a JSON array of messages, and each message's bytes in `raw` (zero-copy),
    or None (not an array, or not certainly accepted: envelopes() or the exact path decides).

    The nesting guard is taken per message: a frame of 100k messages holds 100k brackets but
    is nested two deep, and envelopes() sent it to the exact path (orjson and a Message per
    message: ~0.4 s and ~13x its size in Python objects for a 70 MB long-poll reply). msgspec
    splits the array first (~0.5 ms a MB; past Python's recursion limit it raises, and the
    exact path decides); a message of 511 brackets or more sends the frame to the exact path."""
    try:
        spans = _SPANS.decode(raw)
    except (msgspec.MsgspecError, RecursionError):
        return None
    if spans and max(map(len, spans)) >= 2 * _MAX_BRACKETS - 2:
        for span in spans:
            if len(span) >= 2 * _MAX_BRACKETS - 2:
                message = bytes(memoryview(span))
                if message.count(b"[") + message.count(b"{") >= _MAX_BRACKETS - 1:
                    return None
    if not (raw.isascii() or _utf8(raw)):
        return None
    try:
        decoded = _ENVELOPES.decode(raw)
    except (msgspec.MsgspecError, RecursionError):
        return None
    return cast("list[Envelope]", decoded), spans


_UTF8_CHUNK = 1 << 20


def _utf8(raw: bytes) -> bool:
    """raw.decode() succeeds, found without decoding a big frame into one str (up to 4x its
    size): a MB at a time."""
    decoder = codecs.getincrementaldecoder("utf-8")()
    view = memoryview(raw)
    try:
        for start in range(0, len(view), _UTF8_CHUNK):
            decoder.decode(view[start : start + _UTF8_CHUNK])
        decoder.decode(b"", final=True)
    except UnicodeDecodeError:
        return False
    return True
