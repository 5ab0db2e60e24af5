"""Exact validation of Bayeux frames: JSON read as the codec reads it, then every field rule."""

from __future__ import annotations

import json
from collections.abc import Callable
from enum import StrEnum
from typing import Any

import orjson


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


def json_type(value: Any) -> str:
    return _JSON_TYPES.get(type(value), type(value).__name__)


def _field_error(index: int, name: str, expected: str, got: Any) -> InvalidField:
    return InvalidField(f"message {index}: field '{name}' must be {expected}, got {json_type(got)}")


# --- advice (Bayeux 1.0 "Common Message Field Definitions", `advice`) -----------------------


class Reconnect(StrEnum):
    RETRY = "retry"
    HANDSHAKE = "handshake"
    NONE = "none"


_RECONNECT_VALUES = frozenset(r.value for r in Reconnect)
ADVICE_INTS = {"interval": "interval", "timeout": "timeout", "maxInterval": "max_interval"}


def check_advice(advice: Any, index: int) -> None:
    if not isinstance(advice, dict):
        raise _field_error(index, "advice", "an object", advice)
    for wire in ADVICE_INTS:
        value = advice.get(wire)
        # `type() is int`: bool is an int subclass in Python but a different JSON type.
        if value is not None and type(value) is not int:
            raise _field_error(index, f"advice.{wire}", "an integer", value)
    reconnect = advice.get("reconnect")
    if reconnect is not None and reconnect not in _RECONNECT_VALUES:
        allowed = ", ".join(repr(r.value) for r in Reconnect)
        got = repr(reconnect) if isinstance(reconnect, str) else json_type(reconnect)
        raise InvalidField(
            f"message {index}: field 'advice.reconnect' must be one of {allowed}, got {got}"
        )


# --- messages ----------------------------------------------------------------------------------


def _only_str(value: Any) -> bool:
    return type(value) is not list or all(isinstance(item, str) for item in value)


# key -> (accepted types, error wording, extra check). isinstance with a tuple is one C call.
# Null passes for optional fields: it says nothing, and rejecting it would flag usable frames.
_Rule = tuple[tuple[type, ...], str, Callable[[Any], bool] | None]
_NULL = type(None)
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


def check_message(obj: Any, index: int) -> None:
    if not isinstance(obj, dict):
        raise InvalidShape(f"message {index} must be a JSON object, got {json_type(obj)}")
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
        check_advice(advice, index)


# --- JSON and frames ---------------------------------------------------------------------------


def _json_reason(exc: ValueError) -> str:
    if not isinstance(exc, orjson.JSONDecodeError) or exc.msg.startswith("str is not valid UTF"):
        # orjson checks UTF-8 before parsing and calls every failure "surrogates not allowed".
        return "input is not valid UTF-8"
    return f"{exc.msg} at line {exc.lineno} column {exc.colno}"


def loads(raw: bytes | str) -> Any:
    """orjson.loads, except that a number beyond a double's range is read (as an infinity)
    rather than refused: RFC 8259 allows it, DuckDB's JSON reader takes it, and the fast check
    (tape.bayeux_fast, which does not read numbers it skips) accepts it, so both paths agree."""
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
        return loads(raw)
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


def validated(raw: bytes | str) -> list[dict[str, Any]]:
    """The frame's wire objects, every rule checked; raises only BayeuxDecodeError subclasses."""
    loaded = load_json(raw)
    # Bayeux 1.0 "Messages": peers MUST accept an array and MAY accept a single message.
    objects = [loaded] if isinstance(loaded, dict) else loaded
    if not isinstance(objects, list):
        raise InvalidShape(f"frame must be a JSON array or object, got {json_type(loaded)}")
    for index, obj in enumerate(objects):
        # The bulk of any recording is deliveries of only these keys: one set test and two
        # type tests pass them (0.37 against 0.6 us a message); the rest take every rule.
        if not (
            type(obj) is dict
            and obj.keys() <= _DELIVERY_KEYS
            and type(obj.get("channel")) is str
            and type(obj.get("id")) in _ID_TYPES
        ):
            check_message(obj, index)
    return objects


# What `_FIELD_RULES` accepts for these keys, exactly (`data` has no rule; `id` is a string, an
# integer that is not a boolean, null, or absent).
_DELIVERY_KEYS = frozenset({"channel", "id", "data"})
_ID_TYPES = frozenset({str, int, _NULL})
