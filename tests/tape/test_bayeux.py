"""Tests for tape.bayeux: frame decoding, user-facing errors, error strings and round trips."""

from __future__ import annotations

import copy
import dataclasses
import pickle
import re
from typing import Any

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from tape import bayeux
from tape.bayeux import (
    Advice,
    BayeuxDecodeError,
    BayeuxErrorString,
    InvalidField,
    InvalidJson,
    InvalidShape,
    LazyDelivery,
    Message,
    MissingChannel,
    Reconnect,
    decode_frame,
    decode_frame_lazily,
    encode_batch,
    frame_error,
    is_unknown_client,
    parse_error_string,
    try_parse_error_string,
)
from tape.bayeux_check import check_message
from tape.bayeux_fast import envelopes
from tape.channel import ChannelError

HANDSHAKE_REPLY = b"""[{"minimumVersion":"1.0","clientId":"1xb9s0ed7pq1v2w3ixk4",
"supportedConnectionTypes":["long-polling","callback-polling"],"advice":{"interval":0,"timeout":60000,"reconnect":"retry"},
"channel":"/meta/handshake","id":"1","version":"1.0","successful":true}]"""

CONNECT_REPLY = b"""[{"id":"2","successful":true,"advice":{"interval":0,"timeout":60000,
"reconnect":"retry"},"channel":"/meta/connect"}]"""

GWS_ACK_BATCH = b"""[
 {"data":{"messageType":"OutboundRecordMessage","notificationType":"DoNotCallAcknowledge",
   "referenceId":17,"record":{"handle":42,"campaignName":"Spring_Sale"}},
  "channel":"/v2/me/outbound","id":"4821"},
 {"data":{"messageType":"DeviceUserEventMessage","metrics":{"eventProcessing":
   {"serverGenerationTimestamp":1717171717171,"nodeProcessingTimeNanos":812345,
    "serverProcessingTimeTotalMs":3}},"userData":{"GSW_RECORD_HANDLE":"42",
    "GSW_USER_EVENT":"DoNotCallAcknowledge","GSW_PHONE":"5551234567"}},
  "channel":"/me/internal","id":"4822"},
 {"id":"3","successful":true,"channel":"/meta/connect"}]"""


def test_handshake_reply() -> None:
    [reply] = decode_frame(HANDSHAKE_REPLY)
    assert reply.channel == "/meta/handshake"
    assert reply.successful is True
    assert reply.client_id == "1xb9s0ed7pq1v2w3ixk4"
    assert reply.supported_connection_types == ("long-polling", "callback-polling")
    assert reply.version == reply.minimum_version == "1.0"
    assert reply.advice == Advice(reconnect=Reconnect.RETRY, interval=0, timeout=60000)
    assert reply.is_meta
    assert reply.is_reply
    assert not reply.is_event
    assert frame_error(HANDSHAKE_REPLY) is None


def test_connect_reply() -> None:
    [reply] = decode_frame(CONNECT_REPLY)
    assert (reply.channel, reply.id, reply.successful) == ("/meta/connect", "2", True)
    assert reply.client_id is None
    assert reply.error_info is None


def test_gws_ack_batch() -> None:
    ack, device_event, connect = decode_frame(GWS_ACK_BATCH)
    assert ack.is_event
    assert not ack.is_reply
    assert ack.data["notificationType"] == "DoNotCallAcknowledge"
    assert ack.data["referenceId"] == 17
    metrics = device_event.data["metrics"]["eventProcessing"]
    assert metrics["serverGenerationTimestamp"] == 1717171717171
    assert device_event.data["userData"]["GSW_RECORD_HANDLE"] == "42"
    assert connect.is_reply
    assert not connect.has_data


def test_single_object_frame_is_one_message() -> None:
    [message] = decode_frame(b'{"channel":"/meta/connect","successful":false}')
    assert message.successful is False
    assert encode_batch([message]) == b'[{"channel":"/meta/connect","successful":false}]'


def test_empty_array_and_str_input() -> None:
    assert decode_frame(b"[]") == []
    assert decode_frame('[{"channel":"/a"}]')[0].channel == "/a"


def test_numeric_id_is_an_opaque_string_but_re_encodes_as_sent() -> None:
    [message] = decode_frame(b'[{"channel":"/meta/connect","id":7}]')
    assert message.id == "7"
    assert encode_batch([message]) == b'[{"channel":"/meta/connect","id":7}]'


def test_null_optional_fields_read_as_absent() -> None:
    [message] = decode_frame(b'[{"channel":"/a","clientId":null,"advice":null,"data":null}]')
    assert message.client_id is None
    assert message.advice is None
    assert message.data is None
    assert message.has_data


def test_message_is_frozen_and_views_are_class_introspectable() -> None:
    [message] = decode_frame(CONNECT_REPLY)
    with pytest.raises(dataclasses.FrozenInstanceError):
        message.fields = {}  # type: ignore[misc]
    # CPython 3.11's frozen+slots __setattr__ raises TypeError for non-field names (its super()
    # points at the pre-slots class); either way the view cannot be assigned.
    with pytest.raises((dataclasses.FrozenInstanceError, TypeError)):
        message.client_id = "x"  # type: ignore[misc]
    assert [f.name for f in dataclasses.fields(Message)] == ["fields"]
    assert Message.client_id is not None  # the descriptor itself, not a crash


def test_to_wire_is_an_equal_copy() -> None:
    [message] = decode_frame(CONNECT_REPLY)
    wire = message.to_wire()
    assert wire == orjson.loads(CONNECT_REPLY)[0]
    wire["id"] = "changed"
    assert message.id == "2"


@pytest.mark.parametrize(
    ("raw", "kind", "reason"),
    [
        (b"", InvalidJson, "Input is a zero-length, empty document at line 1 column 1"),
        (
            b'[{"channel": }]',
            InvalidJson,
            "unexpected character, expected a JSON value at line 1 column 14",
        ),
        (b'["\xff"]', InvalidJson, "input is not valid UTF-8"),
        (b'"hello"', InvalidShape, "frame must be a JSON array or object, got string"),
        (b'[{"channel":"/a"},[]]', InvalidShape, "message 1 must be a JSON object, got array"),
        (b'[{"id":"1"}]', MissingChannel, "message 0 has no 'channel' field"),
        (
            b'[{"channel":5}]',
            InvalidField,
            "message 0: field 'channel' must be a string, got number",
        ),
        (
            b'[{"channel":"/a"},{"channel":"/b"},{"channel":"/meta/connect","successful":"yes"}]',
            InvalidField,
            "message 2: field 'successful' must be a boolean, got string",
        ),
        (
            b'[{"channel":"/a","id":true}]',
            InvalidField,
            "message 0: field 'id' must be a string or an integer, got boolean",
        ),
        (
            b'[{"channel":"/a","subscription":["/b",1]}]',
            InvalidField,
            "message 0: field 'subscription' must be a string or an array of strings, got array",
        ),
        (
            b'[{"channel":"/a","supportedConnectionTypes":"long-polling"}]',
            InvalidField,
            "message 0: field 'supportedConnectionTypes' must be an array of strings, got string",
        ),
        (
            b'[{"channel":"/a","ext":[]}]',
            InvalidField,
            "message 0: field 'ext' must be an object, got array",
        ),
        (
            b'[{"channel":"/a","advice":"retry"}]',
            InvalidField,
            "message 0: field 'advice' must be an object, got string",
        ),
        (
            b'[{"channel":"/a","advice":{"interval":"5"}}]',
            InvalidField,
            "message 0: field 'advice.interval' must be an integer, got string",
        ),
        (
            b'[{"channel":"/a","advice":{"timeout":true}}]',
            InvalidField,
            "message 0: field 'advice.timeout' must be an integer, got boolean",
        ),
        (
            b'[{"channel":"/a","advice":{"reconnect":"later"}}]',
            InvalidField,
            "message 0: field 'advice.reconnect' must be one of 'retry', 'handshake', 'none', "
            "got 'later'",
        ),
    ],
)
def test_decode_errors_read_well(raw: bytes, kind: type[BayeuxDecodeError], reason: str) -> None:
    with pytest.raises(kind) as caught:
        decode_frame(raw)
    assert str(caught.value) == reason
    assert frame_error(raw) == f"{kind.kind}: {reason}"


def test_error_kinds_prefix_the_parse_error_column() -> None:
    assert frame_error(b"[1,]") == "invalid JSON: trailing comma is not allowed at line 1 column 3"
    assert frame_error(b"[{}]") == "missing channel: message 0 has no 'channel' field"


def test_advice_wire_round_trip_and_unknown_keys() -> None:
    wire = {"reconnect": "handshake", "interval": 500, "maxInterval": 10000, "hosts": ["x"]}
    advice = Advice.from_wire(wire)
    assert advice == Advice(reconnect=Reconnect.HANDSHAKE, interval=500, max_interval=10000)
    assert advice.to_wire() == {"reconnect": "handshake", "interval": 500, "maxInterval": 10000}
    assert Advice().to_wire() == {}
    with pytest.raises(InvalidField, match=r"message 3: field 'advice\.maxInterval'"):
        Advice.from_wire({"maxInterval": 1.5}, index=3)


# --- constructors for outgoing messages ------------------------------------------------------


def test_handshake_constructor() -> None:
    message = bayeux.handshake(id="1", advice=Advice(timeout=60000, interval=0))
    assert message.to_wire() == {
        "channel": "/meta/handshake",
        "id": "1",
        "version": "1.0",
        "supportedConnectionTypes": ["websocket", "long-polling"],
        "advice": {"interval": 0, "timeout": 60000},
    }


def test_connect_subscribe_unsubscribe_disconnect_constructors() -> None:
    connect = bayeux.connect("c1", "long-polling", id="2", advice=Advice(timeout=0))
    assert connect.to_wire() == {
        "channel": "/meta/connect",
        "id": "2",
        "clientId": "c1",
        "connectionType": "long-polling",
        "advice": {"timeout": 0},
    }
    subscribe = bayeux.subscribe("c1", ["/v2/me/outbound", "/me/*"], id="3")
    assert subscribe.subscription == ("/v2/me/outbound", "/me/*")
    assert bayeux.unsubscribe("c1", "/me/*").to_wire() == {
        "channel": "/meta/unsubscribe",
        "clientId": "c1",
        "subscription": "/me/*",
    }
    assert bayeux.disconnect("c1", id="9").to_wire() == {
        "channel": "/meta/disconnect",
        "id": "9",
        "clientId": "c1",
    }


def test_publish_constructor_keeps_null_data() -> None:
    message = bayeux.publish("/service/echo", None, id="5")
    assert message.to_wire() == {"channel": "/service/echo", "id": "5", "data": None}
    assert message.has_data


def test_constructors_reject_bad_channels() -> None:
    with pytest.raises(ChannelError):
        bayeux.subscribe("c1", "/foo/**/bar")
    with pytest.raises(ValueError, match="cannot publish to the pattern '/foo/\\*'"):
        bayeux.publish("/foo/*", {})


# --- error strings ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "parsed", "unknown_client"),
    [
        ("402::Unknown client", BayeuxErrorString(402, (), "Unknown client"), True),
        ("402::session_unknown", BayeuxErrorString(402, (), "session_unknown"), True),
        ("401:abc:Unknown client", BayeuxErrorString(401, ("abc",), "Unknown client"), True),
        ("403::Unknown client", BayeuxErrorString(403, (), "Unknown client"), True),
        (
            "402:xj3s:Unknown Client ID",
            BayeuxErrorString(402, ("xj3s",), "Unknown Client ID"),
            True,
        ),
        (
            "403:abc,/foo:Subscription denied",
            BayeuxErrorString(403, ("abc", "/foo"), "Subscription denied"),
            False,
        ),
        ("402:clientId:Missing required parameter", None, False),
        ("500::Unknown client", BayeuxErrorString(500, (), "Unknown client"), False),
        ("400::bad: very bad", BayeuxErrorString(400, (), "bad: very bad"), False),
    ],
)
def test_error_string_zoo(
    text: str, parsed: BayeuxErrorString | None, unknown_client: bool
) -> None:
    err = parse_error_string(text)
    if parsed is not None:
        assert err == parsed
    assert err.format() == text
    assert is_unknown_client(err) is unknown_client


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("Unknown client", "error string 'Unknown client' is not 'code:args:message'"),
        ("402:Unknown client", "error string '402:Unknown client' is not 'code:args:message'"),
        (
            "abc::Unknown client",
            "error string 'abc::Unknown client' does not start with a 3-digit code",
        ),
        ("4021::x", "error string '4021::x' does not start with a 3-digit code"),
        (
            "\uff14\uff10\uff12::x",
            "error string '\uff14\uff10\uff12::x' does not start with a 3-digit code",
        ),
    ],
)
def test_malformed_error_strings(text: str, reason: str) -> None:
    with pytest.raises(ValueError, match=re.escape(reason)) as caught:
        parse_error_string(text)
    assert str(caught.value) == reason
    assert try_parse_error_string(text) is None


def test_message_error_info() -> None:
    [reply] = decode_frame(b'[{"channel":"/meta/connect","successful":false,"error":"402::x"}]')
    assert reply.error_info == BayeuxErrorString(402, (), "x")
    [odd] = decode_frame(b'[{"channel":"/meta/connect","successful":false,"error":"oops"}]')
    assert odd.error == "oops"
    assert odd.error_info is None


no_colon_comma = st.text(st.characters(blacklist_characters=":,"), max_size=8)
codes = st.integers(min_value=0, max_value=999)


@given(codes, st.lists(no_colon_comma, max_size=3), st.text())
def test_error_string_text_round_trip(code: int, args: list[str], message: str) -> None:
    text = f"{code:03d}:{','.join(args)}:{message}"
    assert parse_error_string(text).format() == text


@given(codes, st.lists(no_colon_comma, max_size=3), st.text())
def test_error_string_object_round_trip(code: int, args: list[str], message: str) -> None:
    # A single empty arg formats as "" which reads back as no args: the grammar can't tell.
    err = BayeuxErrorString(code, tuple(args) if args != [""] else (), message)
    assert parse_error_string(err.format()) == err


# --- round trip of generated valid frames ----------------------------------------------------

text = st.text(st.characters(blacklist_categories=["Cs"]), max_size=10)
json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**63 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | text,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(text, inner, max_size=3),
    max_leaves=8,
)
channel_names = st.lists(st.sampled_from(["meta", "a", "v2", "me"]), min_size=1, max_size=3).map(
    lambda parts: "/" + "/".join(parts)
)
advice_dicts = st.fixed_dictionaries(
    {},
    optional={
        "reconnect": st.sampled_from(["retry", "handshake", "none"]),
        "interval": st.integers(-1, 10**6),
        "timeout": st.integers(0, 10**6),
        "maxInterval": st.integers(0, 10**6),
        "multiple-clients": st.booleans(),
    },
)
message_dicts = st.fixed_dictionaries(
    {"channel": channel_names},
    optional={
        "id": text | st.integers(0, 10**9),
        "clientId": text,
        "successful": st.booleans(),
        "error": text,
        "subscription": channel_names | st.lists(channel_names, max_size=3),
        "advice": advice_dicts,
        "ext": st.dictionaries(text, json_values, max_size=3),
        "supportedConnectionTypes": st.lists(st.sampled_from(["websocket", "long-polling"])),
        "connectionType": text,
        "version": text,
        "minimumVersion": text,
        "timestamp": text,
        "data": json_values,
        "vendorField": json_values,
    },
)

VIEWS = {
    "clientId": "client_id",
    "successful": "successful",
    "error": "error",
    "ext": "ext",
    "connectionType": "connection_type",
    "version": "version",
    "minimumVersion": "minimum_version",
    "timestamp": "timestamp",
    "data": "data",
}


def assert_views(message: Message, wire: dict[str, Any]) -> None:
    assert message.channel == wire["channel"]
    for key, attr in VIEWS.items():
        assert getattr(message, attr) == wire.get(key)
    assert message.id == (None if "id" not in wire else str(wire["id"]))
    sub = wire.get("subscription")
    assert message.subscription == (tuple(sub) if isinstance(sub, list) else sub)
    types = wire.get("supportedConnectionTypes")
    assert message.supported_connection_types == (None if types is None else tuple(types))
    assert (message.advice is None) is ("advice" not in wire)


@given(st.lists(message_dicts, max_size=4))
def test_round_trip_preserves_every_field(wires: list[dict[str, Any]]) -> None:
    raw = orjson.dumps(wires)
    decoded = decode_frame(raw)
    assert fast_check_accepts(raw)  # every valid frame within orjson's integers takes it
    assert_lazily_equal(raw, decoded)
    assert encode_batch(decoded) == raw
    assert frame_error(raw) is None
    again = decode_frame(encode_batch(decode_frame(raw)))
    assert [m.to_wire() for m in again] == wires
    for message, wire in zip(again, wires, strict=True):
        assert_views(message, wire)
        assert Message.from_wire(wire) == message


# --- garbage in: only BayeuxDecodeError comes out ------------------------------------------


def check_garbage(raw: bytes | str) -> None:
    """frame_error (whose fast check comes first) and both decoders agree on every input."""
    reason = frame_error(raw)
    if reason is None:
        assert_lazily_equal(raw, decode_frame(raw))
        return
    for decode in (decode_frame, decode_frame_lazily):
        with pytest.raises(BayeuxDecodeError) as caught:
            decode(raw)
        assert reason == f"{caught.value.kind}: {caught.value}"


def assert_lazily_equal(raw: bytes | str, eager: list[Message]) -> None:
    """decode_frame_lazily gives what decode_frame gives, read through every view."""
    lazy = decode_frame_lazily(raw)
    assert [type(m) is LazyDelivery for m in lazy] == [
        m.is_event and type(raw) is bytes and fast_check_accepts(raw) for m in eager
    ]
    for message, expected in zip(lazy, eager, strict=True):
        assert (message.channel, message.id, message.has_data, message.is_event) == (
            expected.channel,
            expected.id,
            expected.has_data,
            expected.is_event,
        )
        assert message == expected
        assert expected == message
        assert_views(message, expected.fields)
    assert lazy == eager
    assert encode_batch(lazy) == encode_batch(eager)


def fast_check_accepts(raw: bytes) -> bool:
    return envelopes(raw) is not None


@given(st.binary())
def test_binary_garbage(raw: bytes) -> None:
    check_garbage(raw)


@given(st.text())
def test_text_garbage(raw: str) -> None:
    check_garbage(raw)


@given(json_values | st.lists(json_values | message_dicts.map(lambda m: {**m, "id": 1.5})))
def test_json_garbage(value: Any) -> None:
    check_garbage(orjson.dumps(value))


# Deliveries (channel, id, data) pass a fast check; it must accept and refuse exactly what the
# full field rules do, for every JSON type in each of those keys.
_int64 = st.integers(min_value=-(2**63), max_value=2**63 - 1)
_any_json = st.one_of(
    st.none(),
    st.booleans(),
    _int64,
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=5),
    st.lists(_int64, max_size=2),
    st.dictionaries(st.text(max_size=3), _int64, max_size=2),
)


@given(
    st.dictionaries(st.sampled_from(["channel", "id", "data", "ext", "advice"]), _any_json),
    st.booleans(),
)
def test_the_fast_delivery_check_agrees_with_the_field_rules(
    obj: dict[str, Any], many: bool
) -> None:
    raw = orjson.dumps([{"channel": "/ok", "data": 1}, obj] if many else [obj])
    index = 1 if many else 0
    try:
        check_message(obj, index)
        expected = None
    except BayeuxDecodeError as exc:
        expected = f"{exc.kind}: {exc}"
    assert frame_error(raw) == expected
    if expected is None:
        assert decode_frame(raw)[index] == Message.from_wire(obj)


# Mutated valid frames: the fast check (msgspec, which skips `data` unread) must refuse
# whatever orjson and the rules refuse, for every kind of damage a byte can do.
_DAMAGE = st.sampled_from([*b'[]{}",:0123456789eE+-.\\u tfnrl/', 0x00, 0x1F, 0xFF, 0xC3, 0xED])


@given(
    st.lists(message_dicts, min_size=1, max_size=3),
    st.lists(st.tuples(st.integers(0, 10**6), st.integers(0, 2), _DAMAGE), min_size=1, max_size=3),
)
def test_damaged_frames_are_refused_alike(
    wires: list[dict[str, Any]], edits: list[tuple[int, int, int]]
) -> None:
    raw = bytearray(orjson.dumps(wires))
    for position, op, byte in edits:
        at = position % (len(raw) + 1)
        if op == 0:
            raw[at:at] = bytes([byte])
        elif op == 1:
            del raw[at : at + 1]
        else:
            raw[at : at + 1] = bytes([byte])
    check_garbage(bytes(raw))


@pytest.mark.parametrize(
    ("raw", "fast", "valid"),
    [
        # RFC 8259 allows numbers beyond a double; orjson alone refused them
        (b'[{"channel":"/a","data":{"n":1e400}}]', True, True),
        (b'[{"channel":"/a","data":-1E+999}]', True, True),
        (b'[{"channel":"/a","data":"caf\xc3\xa9"}]', True, True),  # UTF-8
        (b'[{"channel":"/a","data":"\xff"}]', False, False),  # not UTF-8, in what is skipped
        (b'[{"channel":"/a","data":"\xed\xa0\x80"}]', False, False),  # an encoded surrogate
        (b'[{"channel":"/a","data":"\\ud800"}]', False, False),  # a lone escaped surrogate
        (b'[{"channel":"/a","data":NaN}]', False, False),
        (b'[{"channel":"/a","id":9223372036854775808,"data":1}]', False, True),  # beyond int64
        (b'[{"channel":"/a","id":18446744073709551616,"data":1}]', False, False),  # a float
        (b'[{"channel":"/meta/connect","advice":{"timeout":18446744073709551616}}]', False, False),
        (b'[{"channel":"/a","id":true,"data":1}]', False, False),
        (b'[{"channel":"/meta/connect","advice":{"interval":1.0}}]', False, False),
        (b'[{"channel":"/meta/connect","advice":{"reconnect":"later"}}]', False, False),
        (b'[{"channel":"/meta/x","channel":"/a","data":1}]', True, True),  # the last key wins
        (b'[{"channel":"/a","data":' + b"1" * 4301 + b"}]", True, True),  # a float, as orjson's
        (b'[{"channel":"/a","data":[1e400,123456789012345678901234567890]}]', True, True),
        (b"[" + b",".join([b'{"channel":"/a","data":1}'] * 600) + b"]", False, True),  # brackets
        (b'[{"channel":"/a","data":' + b"[" * 1020 + b"]" * 1020 + b"}]", False, True),
        (b'[{"channel":"/a","data":' + b"[" * 1100 + b"]" * 1100 + b"}]", False, False),
    ],
)
def test_fast_check_edges(raw: bytes, fast: bool, valid: bool) -> None:
    assert fast_check_accepts(raw) is fast
    assert (frame_error(raw) is None) is valid
    if b"[[[" not in raw:  # comparing 1,000-deep lists would exhaust Python's recursion limit
        check_garbage(raw)


def test_numbers_beyond_a_double_read_as_orjson_reads_the_rest() -> None:
    raw = b'[{"channel":"/a","data":[1e400,123456789012345678901234567890,18446744073709551615]}]'
    (message,) = decode_frame(raw)
    assert message.data == [float("inf"), 1.2345678901234568e29, 2**64 - 1]
    assert encode_batch([message]) == (
        b'[{"channel":"/a","data":[null,1.2345678901234568e+29,18446744073709551615]}]'
    )
    # what orjson refuses besides (nesting past its limit, NaN, a lone surrogate) is refused
    for rest in (b"[" * 1100 + b"]" * 1100, b"NaN", b'"\\udc00"', b'"\xed\xa0\x80"'):
        with pytest.raises(InvalidJson):
            decode_frame(b'[{"channel":"/a","data":[1e400,' + rest + b"]}]")


def test_a_lazy_delivery_copies_as_the_message_it_equals() -> None:
    (delivery,) = decode_frame_lazily(b'[{"channel":"/a","id":1,"data":{"k":[1]}}]')
    pickled = pickle.loads(pickle.dumps(delivery))
    for copied in (copy.copy(delivery), copy.deepcopy(delivery), pickled):
        assert type(copied) is Message
        assert copied == delivery


def test_a_lazy_delivery_is_parsed_only_when_read() -> None:
    (alone,) = decode_frame_lazily(b'[{"channel":"/a","data":{"k":1}}]')
    frame = alone._wire[0]
    assert frame[1] is None  # nothing parsed yet: the recorder reads no more than the channel
    assert (alone.channel, alone.is_event) == ("/a", True)
    assert frame[1] is None
    assert alone.data == {"k": 1}
    assert frame[1] == [{"channel": "/a", "data": {"k": 1}}]

    raw = b'[{"channel":"/meta/connect","successful":true},{"channel":"/a","id":7,"data":[1]}]'
    reply, delivery = decode_frame_lazily(raw)
    assert type(reply) is Message
    assert type(delivery) is LazyDelivery
    assert (delivery.channel, delivery.id, delivery.is_event) == ("/a", "7", True)
    assert delivery.data == [1]
    assert delivery.fields == {"channel": "/a", "id": 7, "data": [1]}
    assert decode_frame_lazily(b'[{"channel":"/a","data":1e400}]')[0].data == float("inf")
