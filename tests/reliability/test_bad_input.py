"""1,000 garbage frames are stored raw with a parse_error, and nothing crashes."""

from __future__ import annotations

import random
from pathlib import Path

import orjson

from tape.reader import TapeReader
from tape.writer import TapeWriter
from tests.conftest import gws_frame_raw, make_frame


def _garbage(rng: random.Random, i: int) -> bytes:
    good = gws_frame_raw(i)
    kind = i % 8
    if kind == 0:
        return rng.randbytes(rng.randint(0, 300))
    if kind == 1:
        cut = rng.randint(0, len(good) - 1)
        return good[:cut]  # truncated JSON
    if kind == 2:
        return orjson.dumps(rng.choice([5, "text", None, True, 1.5]))  # not an array/object
    if kind == 3:
        return orjson.dumps([{"data": {"x": i}}])  # no channel
    if kind == 4:
        return orjson.dumps([{"channel": i}])  # channel of the wrong type
    if kind == 5:
        return orjson.dumps([{"channel": "/meta/connect", "successful": "yes"}])
    if kind == 6:
        flip = bytearray(good)
        flip[rng.randrange(len(flip))] = rng.randrange(256)
        return bytes(flip) + b"\x00]"
    return orjson.dumps([[1, 2], "x"])  # array elements that are not objects


def test_garbage_frames_are_kept_raw_with_an_error(tmp_path: Path) -> None:
    rng = random.Random(20261126)
    raws = [_garbage(rng, i) for i in range(1000)]
    path = tmp_path / "bad.duckdb"
    with TapeWriter(path) as writer:
        for seq, raw in enumerate(raws, start=1):
            writer.write(make_frame("bad", seq, raw))
        writer.write(make_frame("bad", 1001, gws_frame_raw(7)))  # recording goes on
    with TapeReader(path) as reader:
        frames = list(reader.frames("bad"))
        channels = [m.channel for m in reader.messages("bad")]
    assert [f.raw for f in frames[:1000]] == raws
    assert all(f.parse_error for f in frames[:1000])
    assert frames[1000].parse_error is None
    assert channels[-2:] == ["/v2/me/outbound", "/me/internal"]
    kinds = {f.parse_error.split(":")[0] for f in frames[:1000] if f.parse_error}
    assert {"invalid JSON", "missing channel"} <= {k.split(" (")[0] for k in kinds}, kinds


def test_frames_duckdb_reads_differently_never_fail_a_batch(tmp_path: Path) -> None:
    raws = [
        b'\n[{"channel":"/a"}]',  # whitespace before the array
        b'[{"channel":null,"channel":"/b"}]',  # duplicate keys: orjson keeps the last
        b'[{"channel":"/c"}]',
    ]
    path = tmp_path / "odd.duckdb"
    with TapeWriter(path) as writer:
        for seq, raw in enumerate(raws, start=1):
            writer.write(make_frame("odd", seq, raw))
    with TapeReader(path) as reader:
        assert [f.raw for f in reader.frames("odd")] == raws
        channels = [m.channel for m in reader.messages("odd")]
    assert channels[0] == "/a"
    assert channels[-1] == "/c"
