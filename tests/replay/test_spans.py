"""Byte spans: every message and its `data` slice back out exactly as recorded."""

from __future__ import annotations

from typing import Any

import orjson
from hypothesis import given
from hypothesis import strategies as st

from replay.spans import elements, member

_json = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**63 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3)
    ),
    max_leaves=10,
)
_message = st.fixed_dictionaries(
    {"channel": st.text(min_size=1)}, optional={"data": _json, "id": st.text()}
)


@given(st.lists(_message, max_size=5), st.sampled_from([b"", b" ", b"\n  "]))
def test_elements_and_data_slice_exactly(messages: list[dict[str, Any]], pad: bytes) -> None:
    raw = pad + orjson.dumps(messages, option=orjson.OPT_INDENT_2 if pad else 0) + pad
    spans = elements(raw)
    assert [orjson.loads(raw[a:b]) for a, b in spans] == messages
    for span, message in zip(spans, messages, strict=True):
        found = member(raw, span, b"data")
        if "data" in message:
            assert found is not None
            assert orjson.loads(raw[found[0] : found[1]]) == message["data"]
        else:
            assert found is None


def test_numbers_keep_their_recorded_form() -> None:
    raw = b'[{"channel":"/a","data":{"x":1.50,"y":1e3}} , {"data":"a\\"]}","channel":"/b"}]'
    spans = elements(raw)
    assert raw[slice(*member(raw, spans[0], b"data") or (0, 0))] == b'{"x":1.50,"y":1e3}'
    assert raw[slice(*member(raw, spans[1], b"data") or (0, 0))] == b'"a\\"]}"'


def test_a_single_object_frame() -> None:
    raw = b'{"channel":"/a","data":[1, 2]}'
    (span,) = elements(raw)
    assert raw[slice(*member(raw, span, b"data") or (0, 0))] == b"[1, 2]"
