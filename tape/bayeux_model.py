"""The Bayeux message model: Message, Advice, error strings and the request constructors.
Each message keeps its wire object untouched, so recorded traffic re-encodes as it was seen."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Generic, Self, TypeVar, cast, overload

import orjson

from tape.bayeux_check import ADVICE_INTS, Reconnect, check_advice, check_message, validated
from tape.channel import is_meta, is_pattern, validate_channel

T = TypeVar("T")
_Names = tuple[str, ...]
_ADVICE_FIELDS = {"reconnect": "reconnect", **ADVICE_INTS}


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
        check_advice(obj, index)
        reconnect = obj.get("reconnect")
        ints = {attr: obj.get(wire) for wire, attr in ADVICE_INTS.items()}
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
        check_message(obj, index)
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


def message_of(fields: dict[str, Any]) -> Message:
    """Message(fields) without the frozen dataclass's __init__ (its object.__setattr__ call):
    half the cost, for the one constructor that runs per message recorded."""
    new = new_message(Message)
    _set_fields(new, fields)
    return new


new_message = object.__new__
_set_fields = cast(Any, Message).fields.__set__  # the slot's descriptor


def decode_frame(raw: bytes | str) -> list[Message]:
    """Decode one transport frame; raises only BayeuxDecodeError subclasses."""
    return [message_of(obj) for obj in validated(raw)]


def encode_batch(messages: Iterable[Message]) -> bytes:
    """A JSON array of the messages' wire objects, as sent on every Bayeux transport."""
    return orjson.dumps([message.fields for message in messages])
