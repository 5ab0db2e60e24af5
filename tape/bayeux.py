"""The Bayeux 1.0 message model and its JSON codec: frames in, typed messages out, and back.
Each message keeps its wire object untouched, so recorded traffic re-encodes as it was seen."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from enum import StrEnum
from typing import Annotated, Any, Generic, Literal, Self, TypeVar, cast, overload

import msgspec
import orjson

from tape.channel import is_meta, is_pattern, validate_channel

T = TypeVar("T")


class BayeuxDecodeError(ValueError):
    """A frame that is not a valid batch of Bayeux messages."""

    kind = "invalid frame"


class InvalidJson(BayeuxDecodeError):  # noqa: N818 (the kind reads better bare)
    kind = "invalid JSON"


class InvalidShape(BayeuxDecodeError):  # noqa: N818 (the kind reads better bare)
    kind = "invalid shape"


class MissingChannel(BayeuxDecodeError):  # noqa: N818 (the kind reads better bare)
    kind = "missing channel"


class InvalidField(BayeuxDecodeError):  # noqa: N818 (the kind reads better bare)
    kind = "invalid field"


_JSON_TYPES: dict[type, str] = {bool: "boolean", int: "number", float: "number", str: "string"}
_JSON_TYPES |= {list: "array", dict: "object", type(None): "null"}


def _json_type(value: Any) -> str:
    return _JSON_TYPES.get(type(value), type(value).__name__)


def _field_error(index: int, name: str, expected: str, got: Any) -> InvalidField:
    return InvalidField(
        f"message {index}: field '{name}' must be {expected}, got {_json_type(got)}"
    )


# --- advice (Bayeux 1.0 "Common Message Field Definitions", `advice`) -----------------------


class Reconnect(StrEnum):
    RETRY = "retry"
    HANDSHAKE = "handshake"
    NONE = "none"


_RECONNECT_VALUES = frozenset(r.value for r in Reconnect)
_ADVICE_INTS = {"interval": "interval", "timeout": "timeout", "maxInterval": "max_interval"}
_ADVICE_FIELDS = {"reconnect": "reconnect", **_ADVICE_INTS}


def _check_advice(advice: Any, index: int) -> None:
    if not isinstance(advice, dict):
        raise _field_error(index, "advice", "an object", advice)
    for wire in _ADVICE_INTS:
        value = advice.get(wire)
        # `type() is int`: bool is an int subclass in Python but a different JSON type.
        if value is not None and type(value) is not int:
            raise _field_error(index, f"advice.{wire}", "an integer", value)
    reconnect = advice.get("reconnect")
    if reconnect is not None and reconnect not in _RECONNECT_VALUES:
        allowed = ", ".join(repr(r.value) for r in Reconnect)
        got = repr(reconnect) if isinstance(reconnect, str) else _json_type(reconnect)
        raise InvalidField(
            f"message {index}: field 'advice.reconnect' must be one of {allowed}, got {got}"
        )


@dataclass(frozen=True, slots=True)
class Advice:
    """Server (or client) advice; times are milliseconds. Unknown advice keys are ignored here."""

    reconnect: Reconnect | None = None
    interval: int | None = None
    timeout: int | None = None
    max_interval: int | None = None

    @classmethod
    def from_wire(cls, obj: Any, index: int = 0) -> Advice:
        """Validate a wire `advice` object; raises InvalidField naming the offending key."""
        _check_advice(obj, index)
        reconnect = obj.get("reconnect")
        ints = {attr: obj.get(wire) for wire, attr in _ADVICE_INTS.items()}
        return cls(reconnect=None if reconnect is None else Reconnect(reconnect), **ints)

    def to_wire(self) -> dict[str, Any]:
        """The wire object, omitting unset keys."""
        wire = {name: getattr(self, attr) for name, attr in _ADVICE_FIELDS.items()}
        return {name: value for name, value in wire.items() if value is not None}


# --- error strings (Bayeux 1.0 "Common Message Field Definitions", `error`) ------------------


@dataclass(frozen=True, slots=True)
class BayeuxErrorString:
    """`error_code ":" error_args ":" error_message`, e.g. `403:abc,/foo:Subscription denied`."""

    code: int
    args: tuple[str, ...]
    message: str

    def format(self) -> str:
        """The wire string; `parse_error_string(s).format() == s` for every well-formed `s`."""
        return f"{self.code:03d}:{','.join(self.args)}:{self.message}"


def parse_error_string(text: str) -> BayeuxErrorString:
    """Parse a Bayeux error string; raises ValueError with the reason when it is malformed."""
    # Split on the first two colons only: messages ("Unknown client: abc") may contain more.
    parts = text.split(":", 2)
    if len(parts) != 3:
        raise ValueError(f"error string {text!r} is not 'code:args:message'")
    code, args, message = parts
    # The grammar says error_code = digit digit digit; isdecimal alone would admit non-ASCII.
    if len(code) != 3 or not (code.isascii() and code.isdecimal()):
        raise ValueError(f"error string {text!r} does not start with a 3-digit code")
    return BayeuxErrorString(int(code), tuple(args.split(",")) if args else (), message)


def try_parse_error_string(text: str) -> BayeuxErrorString | None:
    """Like parse_error_string, but None for a malformed string."""
    try:
        return parse_error_string(text)
    except ValueError:
        return None


_UNKNOWN_CLIENT_CODES = frozenset({401, 402, 403})
_UNKNOWN_CLIENT = ("unknown client", "session_unknown")


def is_unknown_client(err: BayeuxErrorString) -> bool:
    """True for every server's spelling of "re-handshake, I don't know you"."""
    # CometD 3: 402::Unknown client; CometD >= 4.0.4: 402::session_unknown;
    # Faye: 401:<id>:Unknown client; Salesforce: 403::Unknown client.
    text = err.message.lower()
    return err.code in _UNKNOWN_CLIENT_CODES and any(word in text for word in _UNKNOWN_CLIENT)


def _only_str(value: Any) -> bool:
    return type(value) is not list or all(isinstance(item, str) for item in value)


# key -> (accepted types, error wording, extra check). isinstance with a tuple is one C call.
# Null passes for optional fields: it says nothing, and rejecting it would flag usable frames.
_Rule = tuple[tuple[type, ...], str, Callable[[Any], bool] | None]
_NULL = type(None)
_Names = tuple[str, ...]
_STRING: _Rule = ((str, _NULL), "a string", None)
_FIELD_RULES: dict[str, _Rule] = {
    "channel": ((str,), "a string", None),
    # Ids are opaque strings; some clients send counters as numbers (see PEERS.md).
    "id": ((str, int, _NULL), "a string or an integer", lambda v: type(v) is not bool),
    "clientId": _STRING,
    "successful": ((bool, _NULL), "a boolean", None),
    "error": _STRING,
    "subscription": ((str, list, _NULL), "a string or an array of strings", _only_str),
    "ext": ((dict, _NULL), "an object", None),
    "supportedConnectionTypes": ((list, _NULL), "an array of strings", _only_str),
    "connectionType": _STRING,
    "version": _STRING,
    "minimumVersion": _STRING,
    "timestamp": _STRING,
}


def _check_message(obj: Any, index: int) -> None:
    if not isinstance(obj, dict):
        raise InvalidShape(f"message {index} must be a JSON object, got {_json_type(obj)}")
    if "channel" not in obj:
        raise MissingChannel(f"message {index} has no 'channel' field")
    # Walk the message's own keys (typically 3-7) rather than every rule.
    for key, value in obj.items():
        rule = _FIELD_RULES.get(key)
        if rule is not None:
            types, expected, extra = rule
            if not isinstance(value, types) or (extra is not None and not extra(value)):
                raise _field_error(index, key, expected, value)
    advice = obj.get("advice")
    if advice is not None:
        _check_advice(advice, index)


class _WireField(Generic[T]):
    """A read-only Message attribute: one wire key, converted on access, None when absent."""

    __slots__ = ("_convert", "_key")

    def __init__(self, key: str, convert: Callable[[Any], T] | None = None) -> None:
        self._key, self._convert = key, convert

    @overload
    def __get__(self, message: None, owner: object = None) -> Self: ...
    @overload
    def __get__(self, message: Message, owner: object = None) -> T: ...
    def __get__(self, message: Message | None, owner: object = None) -> T | Self:
        if message is None:
            return self
        value = message.fields.get(self._key)
        return cast(T, value if value is None or self._convert is None else self._convert(value))


def _tuple_if_list(value: Any) -> Any:
    return tuple(value) if isinstance(value, list) else value


@dataclass(frozen=True, slots=True)
class Message:
    """One Bayeux message: `fields` is the wire object as received, the single source of truth;
    the snake_case attributes are typed views of it. Build with `from_wire`, not directly."""

    # Views rather than stored copies: decoding then costs one small object per message,
    # and a Message can never disagree with the bytes it re-encodes to.
    fields: dict[str, Any]
    channel = _WireField[str]("channel")
    id = _WireField[str | None]("id", str)  # ids are opaque; numeric ones become strings
    client_id = _WireField[str | None]("clientId")
    successful = _WireField[bool | None]("successful")
    error = _WireField[str | None]("error")
    subscription = _WireField[str | _Names | None]("subscription", _tuple_if_list)
    advice = _WireField[Advice | None]("advice", Advice.from_wire)
    ext = _WireField[dict[str, Any] | None]("ext")
    connection_type = _WireField[str | None]("connectionType")
    version = _WireField[str | None]("version")
    minimum_version = _WireField[str | None]("minimumVersion")
    supported_connection_types = _WireField[_Names | None]("supportedConnectionTypes", tuple)
    timestamp = _WireField[str | None]("timestamp")
    data = _WireField[Any]("data")

    @classmethod
    def from_wire(cls, obj: Any, index: int = 0) -> Message:
        """Validate one wire object; errors name the message `index` within its frame."""
        _check_message(obj, index)
        return cls(obj)

    def to_wire(self) -> dict[str, Any]:
        """A copy of the wire object exactly as received: recordings re-encode faithfully."""
        return dict(self.fields)

    @property
    def has_data(self) -> bool:
        """Tells an absent `data` from a JSON null one; `data` is None for both."""
        return "data" in self.fields

    @property
    def is_meta(self) -> bool:
        return is_meta(self.channel)

    @property
    def is_reply(self) -> bool:
        """A response to a meta request: those MUST carry `successful` (Bayeux 1.0)."""
        return self.is_meta and self.successful is not None

    @property
    def is_event(self) -> bool:
        """An application message: a non-meta channel with a `data` field."""
        return not self.is_meta and self.has_data

    @property
    def error_info(self) -> BayeuxErrorString | None:
        """The parsed `error` field, or None when absent or not in `code:args:message` form."""
        return None if self.error is None else try_parse_error_string(self.error)


def _compact(**fields: Any) -> dict[str, Any]:
    # For the request constructors below (Bayeux 1.0 "Meta Message Field Definitions"):
    # unset arguments are left off the wire rather than sent as null.
    return {key: value for key, value in fields.items() if value is not None}


def handshake(
    *,
    id: str | None = None,
    supported_connection_types: Iterable[str] = ("websocket", "long-polling"),
    version: str = "1.0",
    minimum_version: str | None = None,
    advice: Advice | None = None,
    ext: dict[str, Any] | None = None,
) -> Message:
    """A `/meta/handshake` request."""
    wire = _compact(
        channel="/meta/handshake",
        id=id,
        version=version,
        minimumVersion=minimum_version,
        supportedConnectionTypes=list(supported_connection_types),
        advice=advice.to_wire() if advice else None,
        ext=ext,
    )
    return Message.from_wire(wire)


def connect(
    client_id: str, connection_type: str, *, id: str | None = None, advice: Advice | None = None
) -> Message:
    """A `/meta/connect` request; `advice=Advice(timeout=0)` asks for an immediate answer."""
    wire = _compact(
        channel="/meta/connect",
        id=id,
        clientId=client_id,
        connectionType=connection_type,
        advice=advice.to_wire() if advice else None,
    )
    return Message.from_wire(wire)


def _subscription(meta: str, client_id: str, names: str | Iterable[str], id: str | None) -> Message:
    listed = [names] if isinstance(names, str) else list(names)
    for name in listed:
        validate_channel(name)
    subscription = names if isinstance(names, str) else listed
    wire = _compact(channel=meta, id=id, clientId=client_id, subscription=subscription)
    return Message.from_wire(wire)


def subscribe(client_id: str, names: str | Iterable[str], *, id: str | None = None) -> Message:
    """A `/meta/subscribe` request for a channel, a pattern, or several of either."""
    return _subscription("/meta/subscribe", client_id, names, id)


def unsubscribe(client_id: str, names: str | Iterable[str], *, id: str | None = None) -> Message:
    """A `/meta/unsubscribe` request."""
    return _subscription("/meta/unsubscribe", client_id, names, id)


def disconnect(client_id: str, *, id: str | None = None) -> Message:
    """A `/meta/disconnect` request."""
    return Message.from_wire(_compact(channel="/meta/disconnect", id=id, clientId=client_id))


def publish(
    channel: str, data: Any, *, client_id: str | None = None, id: str | None = None
) -> Message:
    """A publish to a concrete channel; `data` is sent even when it is None (JSON null)."""
    validate_channel(channel)
    if is_pattern(channel):
        raise ValueError(f"cannot publish to the pattern {channel!r}; name a single channel")
    wire = _compact(channel=channel, id=id, clientId=client_id)
    return Message.from_wire(wire | {"data": data})


def _json_reason(exc: ValueError) -> str:
    if not isinstance(exc, orjson.JSONDecodeError) or exc.msg.startswith("str is not valid UTF"):
        # orjson checks UTF-8 before parsing and calls every failure "surrogates not allowed".
        return "input is not valid UTF-8"
    return f"{exc.msg} at line {exc.lineno} column {exc.colno}"


def _loads(raw: bytes | str) -> Any:
    """orjson.loads, except that a number beyond a double's range is read (as an infinity)
    rather than refused: RFC 8259 allows it, DuckDB's JSON reader takes it, and the fast check
    below (which does not read numbers it skips) accepts it, so both paths agree."""
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        if not exc.msg.startswith("number is infinity"):
            raise
        try:  # the stdlib reads it; what orjson refuses besides is refused here too
            loaded = json.loads(raw, parse_int=_orjson_int, parse_constant=_no_constant)
            json.dumps(loaded, ensure_ascii=False).encode()  # a lone surrogate: refused
        except (ValueError, RecursionError):  # UnicodeError is a ValueError
            raise exc from None
        return loaded


def load_json(raw: bytes | str) -> Any:
    """JSON as the codec reads it (numbers beyond a double included); raises InvalidJson."""
    try:
        return _loads(raw)
    except ValueError as exc:
        raise InvalidJson(_json_reason(exc)) from None


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _orjson_int(literal: str) -> int | float:
    """An integer literal as orjson reads it: an int within int64/uint64, else a float."""
    if len(literal) <= 20:
        value = int(literal)
        if -(2**63) <= value < 2**64:
            return value
    return float(literal)  # never int() of thousands of digits: Python refuses those


def _validated(raw: bytes | str) -> list[dict[str, Any]]:
    loaded = load_json(raw)
    # Bayeux 1.0 "Messages": peers MUST accept an array and MAY accept a single message.
    objects = [loaded] if isinstance(loaded, dict) else loaded
    if not isinstance(objects, list):
        raise InvalidShape(f"frame must be a JSON array or object, got {_json_type(loaded)}")
    for index, obj in enumerate(objects):
        # The bulk of any recording is deliveries of only these keys: one set test and two
        # type tests pass them (0.37 against 0.6 us a message); the rest take every rule.
        if not (
            type(obj) is dict
            and obj.keys() <= _DELIVERY_KEYS
            and type(obj.get("channel")) is str
            and type(obj.get("id")) in _ID_TYPES
        ):
            _check_message(obj, index)
    return objects


# What `_FIELD_RULES` accepts for these keys, exactly (`data` has no rule; `id` is a string, an
# integer that is not a boolean, null, or absent).
_DELIVERY_KEYS = frozenset({"channel", "id", "data"})
_ID_TYPES = frozenset({str, int, _NULL})


# --- the fast check: _FIELD_RULES and _check_advice as a msgspec schema ----------------------
# msgspec checks a frame against it in C without building the values it does not keep: `data`
# and `ext` are only checked to be well-formed JSON. 1.0-1.5 us for a 761-byte two-message GWS
# frame, against 5-7 us for orjson.loads and the rules. It may refuse what the rules accept
# (integers beyond int64, 512 brackets or more, anything not `bytes`): such frames take the
# exact path. It must never accept what the rules refuse; tests/tape/test_bayeux.py checks that
# on generated and damaged frames.
_Int64 = Annotated[int, msgspec.Meta(ge=-(2**63), le=2**63 - 1)]  # orjson reads these as int
_ABSENT = msgspec.Raw()  # `data` left out (a present value is at least one byte: `null`)


class _WireAdvice(msgspec.Struct):
    reconnect: Literal["retry", "handshake", "none"] | None = None
    interval: _Int64 | None = None
    timeout: _Int64 | None = None
    maxInterval: _Int64 | None = None  # noqa: N815 (the wire's name)


class _Envelope(msgspec.Struct):
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
    data: msgspec.Raw = _ABSENT


_ENVELOPES: msgspec.json.Decoder[list[_Envelope] | _Envelope] = msgspec.json.Decoder(
    list[_Envelope] | _Envelope
)
# How deep msgspec may nest depends on Python's recursion limit and the stack it is called on;
# orjson stops at 1,024. Frames with this many brackets or more (so perhaps nested as deep) take
# the exact path, so the fast check's answer never depends on either.
_MAX_BRACKETS = 512


def _envelopes(raw: bytes | str) -> list[_Envelope] | None:
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
    # building list[_Envelope] on every frame cost a quarter as much as the decode itself.
    return [decoded] if type(decoded) is _Envelope else cast("list[_Envelope]", decoded)


def decode_frame(raw: bytes | str) -> list[Message]:
    """Decode one transport frame; raises only BayeuxDecodeError subclasses."""
    return [_message(obj) for obj in _validated(raw)]


def decode_frame_lazily(raw: bytes | str) -> list[Message]:
    """decode_frame, but each delivery (a message with `data` on a channel outside /meta) is a
    LazyDelivery: its channel and id are read by the fast check and its wire object is parsed
    only if `fields` is read. A recorder needs only the channel of what it records."""
    envelopes = _envelopes(raw)
    if envelopes is None:
        return decode_frame(raw)
    frame: _Frame = [raw, None]  # a list, not a class: its construction is ~0.3 us cheaper
    out: list[Message] = []
    for index, envelope in enumerate(envelopes):
        channel = envelope.channel
        if envelope.data is not _ABSENT and not channel.startswith("/meta/"):
            delivery = _new_message(LazyDelivery)
            _set_wire(delivery, (frame, index, channel, envelope.id))
            out.append(delivery)
        else:  # meta replies and the rest: parsed now, as decode_frame does
            out.append(_message(_objects(frame)[index]))
    return out


# A frame's raw bytes and, once the first of its messages needs them, its wire objects.
_Frame = list[Any]


def _objects(frame: _Frame) -> list[dict[str, Any]]:
    objects: list[dict[str, Any]] | None = frame[1]
    if objects is None:
        loaded = _loads(frame[0])
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


def _message(fields: dict[str, Any]) -> Message:
    """Message(fields) without the frozen dataclass's __init__ (its object.__setattr__ call):
    half the cost, for the one constructor that runs per message recorded."""
    message = _new_message(Message)
    _set_fields(message, fields)
    return message


_new_message = object.__new__
_set_fields = cast(Any, Message).fields.__set__  # the slot's descriptor


def frame_error(raw: bytes | str) -> str | None:
    """None when `raw` decodes, else a stable one-line reason for the tape's parse_error column."""
    # Runs on every frame a writer checks (import), so it builds no Message, and the fast check
    # comes first: it accepts nearly every valid frame, and only what the rules accept.
    if _envelopes(raw) is not None:
        return None
    try:
        _validated(raw)
    except BayeuxDecodeError as exc:
        return f"{exc.kind}: {exc}"
    return None


def encode_batch(messages: Iterable[Message]) -> bytes:
    """A JSON array of the messages' wire objects, as sent on every Bayeux transport."""
    return orjson.dumps([message.fields for message in messages])
