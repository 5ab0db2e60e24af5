"""One contract suite for every tape form (DuckDB file, JSONL): what goes in comes out."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import pytest

from tape.frame import Frame, Session
from tape.jsonl import JsonlReader, JsonlWriter
from tape.reader import TapeReader
from tape.session import SessionLog
from tape.sink import FrameSink
from tape.writer import TapeWriter
from tests.conftest import gws_frame_raw


class Source(Protocol):
    def sessions(self) -> list[Session]: ...
    def frames(self, session_id: str | None = None) -> Iterator[Frame]: ...


@dataclass
class Form:
    name: str
    path: Path

    def writer(self) -> FrameSink:
        return TapeWriter(self.path) if self.name == "duckdb" else JsonlWriter(self.path)

    def reader(self) -> Source:
        return TapeReader(self.path) if self.name == "duckdb" else JsonlReader(self.path)


@pytest.fixture(params=["duckdb", "jsonl"])
def form(request: pytest.FixtureRequest, tmp_path: Path) -> Form:
    return Form(request.param, tmp_path / f"tape.{request.param}")


def _write_two_sessions(sink: FrameSink, raws: list[bytes]) -> None:
    logs = [SessionLog(sink, Session(session_id=f"s{n}", transport="websocket")) for n in (1, 2)]
    for i, raw in enumerate(raws):
        logs[i % 2].append("in", raw)  # interleaved, as a proxy sees two clients
    for log in logs:
        log.close("stopped")


RAWS = [
    gws_frame_raw(1),
    b'[{"channel":"/meta/connect","successful":true,"id":"7"}]',
    b"\xff\xfe not utf-8 at all",
    b'{"channel":"/v2/me/outbound","data":{"caf\xc3\xa9":"\xe2\x82\xac"}}',
    b"",
    b'[{"channel":"/a","data":1.50}]',
]


def test_frames_read_back_in_order_gapless_and_byte_identical(form: Form) -> None:
    sink = form.writer()
    _write_two_sessions(sink, RAWS * 50)
    sink.close()
    source = form.reader()
    for n in (1, 2):
        frames = list(source.frames(f"s{n}"))
        assert [f.seq for f in frames] == list(range(1, 151))
        assert [f.raw for f in frames] == RAWS[n - 1 :: 2] * 50
        assert all(b.t_mono_ns >= a.t_mono_ns for a, b in itertools.pairwise(frames))


def test_sessions_are_closed_with_their_reason(form: Form) -> None:
    sink = form.writer()
    _write_two_sessions(sink, RAWS)
    sink.close()
    sessions = {s.session_id: s for s in form.reader().sessions()}
    assert set(sessions) == {"s1", "s2"}
    assert all(s.end_reason == "stopped" and s.ended_ns for s in sessions.values())


def test_bad_frames_are_kept_with_a_parse_error(form: Form) -> None:
    sink = form.writer()
    _write_two_sessions(sink, RAWS)
    sink.close()
    frames = list(form.reader().frames())
    errors = {f.raw: f.parse_error for f in frames}
    assert errors[gws_frame_raw(1)] is None
    assert errors[b"\xff\xfe not utf-8 at all"].startswith("invalid JSON")
    assert errors[b""].startswith("invalid JSON")


def test_secrets_never_reach_either_form(form: Form) -> None:
    sink = form.writer()
    log = SessionLog(sink, Session(session_id="s", transport="long-polling"))
    headers = '[["Authorization","Basic dXNlcjpodW50ZXIy"],["Cookie","JSESSIONID=abc123"]]'
    log.append(
        "out",
        b'{"username":"u","password":"hunter2"}',
        kind="http-request",
        headers=headers,
        http_path="/login?password=hunter2",
    )
    sink.close()
    (frame,) = form.reader().frames()
    stored = repr(frame).encode() + frame.raw + form.path.read_bytes()
    for secret in (b"hunter2", b"dXNlcjpodW50ZXIy", b"abc123"):
        assert secret not in stored
    assert b'"password":"[REDACTED]"' in frame.raw
    assert frame.http_path == "/login?password=[REDACTED]"
