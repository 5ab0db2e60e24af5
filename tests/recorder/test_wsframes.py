"""The proxy's WebSocket frame reader, sans I/O: frames built here byte by byte, fed in every
possible split; masked, fragmented, long, compressed and control frames."""

from __future__ import annotations

import os
import zlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from recorder.wsframes import BINARY, TEXT, FrameError, WsReader, unmask


def frame(
    payload: bytes,
    opcode: int = TEXT,
    *,
    fin: bool = True,
    mask: bytes | None = None,
    rsv1: bool = False,
) -> bytes:
    head = bytes([(0x80 if fin else 0) | (0x40 if rsv1 else 0) | opcode])
    n = len(payload)
    bit = 0x80 if mask else 0
    if n < 126:
        head += bytes([bit | n])
    elif n < 65536:
        head += bytes([bit | 126]) + n.to_bytes(2, "big")
    else:
        head += bytes([bit | 127]) + n.to_bytes(8, "big")
    if mask:
        return head + mask + unmask(payload, mask)
    return head + payload


def read(data: bytes, cuts: list[int] = ()) -> tuple[list[tuple[int, bytes]], int]:  # type: ignore[assignment]
    got: list[tuple[int, bytes]] = []
    closes: list[int] = []
    reader = WsReader(lambda op, raw: got.append((op, raw)), lambda: closes.append(1))
    last = 0
    for cut in sorted(cuts):
        reader.feed(data[last:cut])
        last = cut
    reader.feed(data[last:])
    return got, len(closes)


@given(
    st.lists(st.binary(max_size=300), min_size=1, max_size=5),
    st.lists(st.integers(min_value=0, max_value=2000), max_size=6),
    st.booleans(),
)
def test_messages_survive_any_split(payloads: list[bytes], cuts: list[int], masked: bool) -> None:
    mask = b"\x12\x34\x56\x78" if masked else None
    data = b"".join(frame(p, BINARY, mask=mask) for p in payloads)
    got, _ = read(data, [c for c in cuts if c <= len(data)])
    assert got == [(BINARY, p) for p in payloads]


def test_fragments_long_frames_compression_and_close() -> None:
    big = os.urandom(70_000)
    compressor = zlib.compressobj(wbits=-15)
    text = b'[{"channel":"/meta/connect","successful":true}]'
    deflated = compressor.compress(text) + compressor.flush(zlib.Z_SYNC_FLUSH)
    data = (
        frame(b"hel", TEXT, fin=False, mask=b"abcd")
        + frame(b"", 0x9)  # a ping between fragments is not a message
        + frame(b"lo", 0, mask=b"wxyz")
        + frame(big, BINARY)
        + frame(b"x" * 300, TEXT)
        + frame(deflated[:-4], TEXT, rsv1=True)
        + frame(b"\x03\xe8", 0x8)
    )
    got, closes = read(data, [1, 5, 200, 70_100])
    assert got == [(TEXT, b"hello"), (BINARY, big), (TEXT, b"x" * 300), (TEXT, text)]
    assert closes == 1


def test_an_absurd_length_is_an_error_not_a_wait() -> None:
    reader = WsReader(lambda op, raw: None)
    with pytest.raises(FrameError, match="over the"):
        reader.feed(bytes([0x81, 127]) + (2**40).to_bytes(8, "big"))


@pytest.mark.parametrize(
    ("data", "why"),
    [
        (frame(b"[]", TEXT, rsv1=True), "reserved bits"),
        (frame(b"[]", TEXT, mask=b"\x01\x02\x03\x04"), "masked frame"),
        (frame(b"x", 0x3), "reserved opcode"),
        (frame(b"x", 0xB), "reserved opcode"),
        (frame(b"p" * 126, 0x9), "over 125 bytes"),
        (frame(b"p", 0x9, fin=False), "fragmented"),
        (frame(b"\x03", 0x8), "1-byte payload"),
        (frame(b"tail", 0x0), "continuation frame out of place"),
        (frame(b"[", TEXT, fin=False) + frame(b"]", TEXT), "continuation frame out of place"),
        (frame(b"a" * 110, TEXT, fin=False) + frame(b"b" * 110, 0x0), "over the 200-byte limit"),
    ],
)
def test_a_strict_reader_refuses_what_rfc_6455_forbids(data: bytes, why: str) -> None:
    """The recorder's client reads strictly; the proxy reads leniently (records what passed)."""
    strict = WsReader(lambda op, raw: None, max_size=200, strict=True)
    with pytest.raises(FrameError, match=why) as info:
        strict.feed(data)
    assert info.value.code == (1009 if "limit" in why else 1002)


def test_a_compressed_message_that_does_not_inflate_is_a_frame_error() -> None:
    with pytest.raises(FrameError, match="does not inflate"):
        WsReader(lambda op, raw: None).feed(frame(b"\xff\xff\xff\xff", TEXT, rsv1=True))


# Every kind of frame, so the fast path for whole unmasked text frames and the general reader
# take turns: (opcode, payload, fin, mask, 64-bit length).
_frames = st.one_of(
    st.tuples(st.just(TEXT), st.binary(max_size=300), st.just(True), st.none()),
    st.tuples(st.just(TEXT), st.binary(min_size=126, max_size=70_000), st.just(True), st.none()),
    st.tuples(
        st.sampled_from([TEXT, BINARY]), st.binary(max_size=50), st.just(True), st.just(b"abcd")
    ),
    st.tuples(st.just(BINARY), st.binary(max_size=50), st.just(True), st.none()),
    st.tuples(st.just(0x9), st.binary(max_size=20), st.just(True), st.none()),  # ping
)


@given(
    st.lists(_frames, min_size=1, max_size=8),
    st.lists(st.integers(min_value=0, max_value=80_000), max_size=6),
    st.booleans(),
)
def test_fast_and_general_paths_read_the_same_messages(
    frames: list[tuple[int, bytes, bool, bytes | None]], cuts: list[int], fragment: bool
) -> None:
    data = b""
    expected: list[tuple[int, bytes]] = []
    for opcode, payload, _, mask in frames:
        if opcode >= 0x8:
            data += frame(payload, opcode)
            continue
        if fragment and len(payload) > 1:  # the same message in two fragments
            data += frame(payload[:1], opcode, fin=False, mask=mask)
            data += frame(payload[1:], 0, mask=mask)
        else:
            data += frame(payload, opcode, mask=mask)
        expected.append((opcode, payload))
    got, _ = read(data, [c for c in cuts if c <= len(data)])
    assert got == expected


def test_fast_path_leaves_a_64_bit_length_and_an_oversized_frame_to_the_checks() -> None:
    got: list[tuple[int, bytes]] = []
    reader = WsReader(lambda op, raw: got.append((op, raw)), strict=True, max_size=1000)
    reader.feed(frame(b"a" * 10, TEXT) + bytes([0x81, 127]) + (5).to_bytes(8, "big") + b"hello")
    assert got == [(TEXT, b"a" * 10), (TEXT, b"hello")]
    with pytest.raises(FrameError, match="over the 1000-byte limit"):
        reader.feed(frame(b"b" * 1001, TEXT))


def test_a_callback_that_raises_leaves_the_frames_after_it_buffered() -> None:
    got: list[bytes] = []

    def on_message(opcode: int, raw: bytes) -> None:
        got.append(raw)
        if raw == b"a":
            raise RuntimeError("the sink is full")

    reader = WsReader(on_message)
    data = frame(b"a") + frame(b"b") + frame(b"cdefg")
    with pytest.raises(RuntimeError):
        reader.feed(data[:-2])  # the last frame cut short
    reader.feed(data[-2:] + frame(b"h"))
    assert got == [b"a", b"b", b"cdefg", b"h"]


def test_a_stray_continuation_after_fast_read_text_is_read_as_text_lenient() -> None:
    """The proxy reads leniently: a final continuation with nothing to continue takes the
    last message's opcode, and a fast-read text frame is that last message."""
    compressor = zlib.compressobj(wbits=-15)
    deflated = compressor.compress(b"zip") + compressor.flush(zlib.Z_SYNC_FLUSH)
    first, second = frame(deflated[:-4], TEXT, rsv1=True), frame(b"hi")
    data = first + second + frame(b"abc", 0)
    got, _ = read(data, [len(first), len(first) + len(second)])  # "hi" alone: the fast path
    assert got == [(TEXT, b"zip"), (TEXT, b"hi"), (TEXT, b"abc")]
