"""Hypothesis strategies for the bodies of the fuzz test's hostile requests (fuzz_requests.py):
Bayeux messages with wrong types, huge numbers, deep nesting, invalid channels; oversized batches,
bodies of several MB, bytes that are not JSON or not UTF-8; and malformed REST bodies. Each body
is bytes, ready to send."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson
from hypothesis import strategies as st

from replay.simulator import ACKS
from tests.replay.tapes import CHANNELS

SESSIONS = 4  # live hostile sessions whose clientIds stand in for the CID placeholders
CID = "@@cid{}@@"
METAS = ("handshake", "connect", "subscribe", "unsubscribe", "disconnect")
VALID_CHANNELS = (*(f"/meta/{m}" for m in METAS), *CHANNELS, "/service/echo", "/a/b")
INVALID_CHANNELS = (
    *("/a/*/b", "meta", "/meta/foo", "//", "", "/**/x", "/*", "/**", "/v2/me/*", "/v2/**"),
    *("/meta/*", "/meta/**", "/meta/", "/a//b", "/a/", " /a", "/a b", "/\x00", "/é/ü", "*"),
    *("**", "/a/**/b", "/meta/connect/x", "/META/CONNECT", "\\a", "/a\nb", "/x" * 2000),
    "/" + "y" * 10_000,
)
HUGE = (
    *(b"1e999", b"-1e999", b"1e-999", b"1" + b"0" * 400, b"-" + b"9" * 400, b"2e308"),
    *(b"18446744073709551616", b"-9223372036854775809", b"9223372036854775808", b"4e-400"),
    *(b"1.7976931348623159e308", b"0." + b"0" * 400 + b"1", b"1E+99999999999", b"-0"),
)
NOT_JSON = (
    *(b"", b" ", b"NaN", b"Infinity", b"-Infinity", b"[1,]", b"{'a':1}", b"[", b"]", b"{"),
    *(b"[{}", b"01", b"1.", b".5", b"+1", b"0x10", b"\x00", b'"\\ud800"', b"nul", b"tru"),
    *(b'[{"channel":"/meta/handshake"}]x', b'[{"channel":"/a"}][{"channel":"/a"}]'),
    *(b'\xef\xbb\xbf[{"channel":"/meta/handshake","version":"1.0"}]', b"\xff\xfe[\x00]\x00"),
    '[{"channel":"/meta/handshake"}]'.encode("utf-16"),
    b'[{"channel":"/meta/connect","clientId":"\\ud800\\udc00\\ud800"}]',
)
BAD_UTF8 = (b"\xff", b"\xfe\xff", b"\xc3\x28", b"\xc0\xaf", b"\xed\xa0\x80", b"\xf4\x90\x80\x80")


@dataclass(frozen=True, slots=True)
class Raw:
    """A JSON token written as is: numbers no double holds, and tokens JSON does not allow."""

    text: bytes


def dumps(value: Any) -> bytes:
    """JSON text of values that may hold `Raw` tokens and integers of any size."""
    if isinstance(value, Raw):
        return value.text
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value).encode()
    if isinstance(value, list):
        return b"[" + b",".join(map(dumps, value)) + b"]"
    if isinstance(value, dict):
        items = (orjson.dumps(str(k)) + b":" + dumps(v) for k, v in value.items())
        return b"{" + b",".join(items) + b"}"
    return orjson.dumps(value)


# --- JSON values ---------------------------------------------------------------------------

huge_numbers = st.one_of(
    st.sampled_from(HUGE),
    st.integers(10**19, 10**500).map(lambda n: str(n).encode()),
    st.integers(-(10**500), -(2**63) - 1).map(lambda n: str(n).encode()),
).map(Raw)
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**63), 2**64 - 1),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=12),
)


def _containers(inner: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3)


any_json = st.recursive(scalars, _containers, max_leaves=5)
client_ids = st.one_of(
    st.sampled_from([CID.format(i) for i in range(SESSIONS)]), st.text(max_size=40)
)
subscribable = st.sampled_from((*CHANNELS, "/**", "/v2/**", "/me/*", "/a/b"))
versions = st.sampled_from(("1.0", "1.0beta", "0.9", "2.0", "", "1"))
PLAUSIBLE: dict[str, st.SearchStrategy[Any]] = {
    "id": st.one_of(st.sampled_from(("1", "2", "x-1")), st.integers(0, 2**31)),
    "clientId": client_ids,
    "subscription": subscribable | st.lists(subscribable, max_size=3),
    "advice": st.fixed_dictionaries(
        {},
        optional={
            "timeout": st.integers(0, 500),
            "interval": st.integers(0, 100),
            "maxInterval": st.integers(0, 10**6),
            "reconnect": st.sampled_from(("retry", "handshake", "none")),
        },
    ),
    "data": any_json,
    "ext": st.dictionaries(st.text(max_size=5), scalars, max_size=2),
    "supportedConnectionTypes": st.lists(
        st.sampled_from(("long-polling", "websocket", "callback-polling", "x")), max_size=3
    ),
    "version": versions,
    "minimumVersion": versions,
    "connectionType": st.sampled_from(("long-polling", "websocket", "x")),
    "successful": st.booleans(),
}
valid_channels = st.sampled_from(VALID_CHANNELS)


def messages(
    channel: st.SearchStrategy[Any], field: Callable[[str], st.SearchStrategy[Any]]
) -> st.SearchStrategy[dict[str, Any]]:
    return st.fixed_dictionaries({"channel": channel}, optional={k: field(k) for k in PLAUSIBLE})


plausible = messages(valid_channels, PLAUSIBLE.__getitem__)
wrong = messages(valid_channels | any_json, lambda k: PLAUSIBLE[k] | any_json)


def batches(message: st.SearchStrategy[dict[str, Any]]) -> st.SearchStrategy[bytes]:
    return st.one_of(st.lists(message, min_size=1, max_size=4), message).map(dumps)


# --- what is wrong with a body -------------------------------------------------------------


def _with_huge(message: dict[str, Any], where: str, number: Raw) -> Any:
    if where == "top":
        return number
    if where == "advice.timeout":
        return {**message, "advice": {"timeout": number}}
    if where == "data.nested":
        return {**message, "data": {"a": [1, {"b": number}]}}
    return {**message, where: number}


def _invalid_channel(message: dict[str, Any], channel: str, how: str, cid: str) -> Any:
    if how == "channel":
        return {**message, "channel": channel, "clientId": cid}
    if how == "publish":
        return {"channel": channel, "clientId": cid, "data": message.get("data", 1)}
    subscription: Any = channel if how == "subscribe" else [CHANNELS[0], channel]
    return {"channel": "/meta/subscribe", "clientId": cid, "subscription": subscription, "id": "s"}


def _deep(depth: int, shape: str, where: str, closed: bool) -> bytes:
    opening, closing = {"array": (b"[", b"]"), "object": (b'{"a":', b"}")}.get(
        shape, (b'[{"a":', b"}]")
    )
    count = depth if shape != "mixed" else depth // 2
    nested = opening * count + b"1" + closing * count * closed
    if where == "top":
        return nested
    cid = CID.format(0).encode()
    channel = CHANNELS[0].encode() if where == "data" else b"/meta/subscribe"
    head = b'[{"channel":"' + channel + b'","clientId":"' + cid + b'","' + where.encode() + b'":'
    return head + nested + b"}]" * closed


# Short messages for the biggest batches: each is little to send and more to do.
SMALL = (
    {"channel": "/meta/handshake", "version": "1.0", "supportedConnectionTypes": ["long-polling"]},
    {"channel": "/meta/handshake", "version": "1.0", "supportedConnectionTypes": ["websocket"]},
    {"channel": "/meta/connect", "clientId": "nobody", "connectionType": "long-polling"},
    {"channel": "/meta/subscribe", "clientId": CID.format(0), "subscription": "/a/b"},
)


def batch_of(message: dict[str, Any], count: int) -> bytes:
    """`count` copies of `message` in one batch."""
    return b"[" + b",".join([dumps(message)] * count) + b"]"


def _megabytes(size: int, how: str) -> bytes:
    cid = CID.format(1).encode()
    if how == "string":  # one delivery, to the well-behaved clients' channel
        head = b'[{"channel":"' + CHANNELS[1].encode() + b'","clientId":"' + cid + b'","data":"'
        return head + b"x" * (size << 20) + b'"}]'
    if how == "array":
        return b'[{"channel":"/a/b","data":[' + b"1," * (size << 19) + b"1]}]"
    one = b'{"channel":"/meta/connect","clientId":"nobody","connectionType":"long-polling"}'
    return b"[" + b",".join([one] * ((size << 20) // len(one))) + b"]"


def _corrupt(body: bytes, bad: bytes, where: float) -> bytes:
    quote_at = [i for i, c in enumerate(body) if c == 0x22] or [0]  # inside a string, mostly
    at = quote_at[int(where * (len(quote_at) - 1))] + 1
    return body[:at] + bad + body[at:]


bodies: dict[str, st.SearchStrategy[bytes]] = {
    "wrong types": st.one_of(batches(wrong), any_json.map(dumps)),
    "huge numbers": st.builds(
        _with_huge,
        plausible,
        st.sampled_from(("top", "advice.timeout", "data.nested", "channel", *PLAUSIBLE)),
        huge_numbers,
    ).map(lambda m: dumps([m])),
    "invalid channels": st.lists(
        st.builds(
            _invalid_channel,
            plausible,
            st.sampled_from(INVALID_CHANNELS),
            st.sampled_from(("channel", "publish", "subscribe", "subscribe-list")),
            st.sampled_from([CID.format(i) for i in range(SESSIONS)]),
        ),
        min_size=1,
        max_size=3,
    ).map(dumps),
    # Depths from what a serializer refuses (orjson: 255) to what a parser refuses (1024),
    # mostly in published data, which is delivered to the well-behaved clients.
    "deep nesting": st.builds(
        _deep,
        st.sampled_from((200, 255, 256, 300, 500, 1000, 1023, 1024, 1025, 10_000, 100_000)),
        st.sampled_from(("array", "object", "mixed")),
        st.sampled_from(("top", *("data",) * 3, "subscription", "ext", "advice", "id", "clientId")),
        st.booleans(),
    ),
    "oversized batch": st.one_of(
        st.builds(batch_of, plausible | wrong, st.integers(1_000, 10_000)),
        st.builds(batch_of, st.sampled_from(SMALL), st.integers(10_000, 40_000)),
    ),
    "several MB": st.builds(
        _megabytes, st.integers(2, 6), st.sampled_from(("string", "array", "batch"))
    ),
    "not JSON": st.one_of(
        st.binary(max_size=64),
        st.sampled_from(NOT_JSON),
        st.builds(_corrupt, batches(plausible), st.sampled_from(BAD_UTF8), st.floats(0, 1)),
    ),
}


def _echoed_deep(depth: int, operation: str) -> bytes:
    reference = _deep(depth, "array", "top", closed=True)
    return b'{"operationName":"' + operation.encode() + b'","referenceId":' + reference + b"}"


rest_bodies = st.one_of(
    st.fixed_dictionaries(
        {"operationName": st.sampled_from((*ACKS, "GetPreviewRecord")) | any_json},
        optional={
            "referenceId": st.one_of(st.text(max_size=10), any_json, huge_numbers),
            "campaignName": any_json,
            "callingList": any_json,
            "applicationId": any_json | huge_numbers,
            "phoneNumber": any_json,
        },
    ).map(dumps),
    # a referenceId the simulator echoes in the ack it delivers
    st.builds(
        _echoed_deep, st.sampled_from((200, 254, 255, 256, 300, 1000)), st.sampled_from(tuple(ACKS))
    ),
    bodies["not JSON"],
    any_json.map(dumps),
)
