"""Segments (tape/segments.py) and reading them back as one set (tape/tapeset.py), in process:
every frame once and in order across segments, session rows in every segment, the set read
as one by `info`, `export` and `analyze`."""

from __future__ import annotations

import time
from pathlib import Path

import click
import duckdb
import orjson
import pytest

from tape.cli import claim_set
from tape.frame import Frame, Session
from tape.process_writer import ProcessTapeWriter, Segments
from tape.segments import (
    Rotation,
    SegmentedWriter,
    next_number,
    parse_rotation,
    segment_name,
    set_folder,
)
from tape.tapeset import expand
from tape.writer import TapeWriter
from tests.cli import cometd_tape
from tests.constants import TIMEOUT


def frame(seq: int, session: str = "s1", size: int = 600) -> Frame:
    body = orjson.dumps(
        [
            {
                "channel": "/v2/me/outbound",
                "data": {"n": seq, "pad": "%x" % (seq * 7919) * (size // 8)},
            }
        ]
    )
    return Frame(session, seq, time.time_ns(), seq * 1000, "in", "websocket", "bayeux", body)


def rows(folder: Path, sql: str) -> list[tuple[object, ...]]:
    out = []
    for segment in sorted(folder.glob("*.duckdb")):
        conn = duckdb.connect(str(segment), read_only=True)
        out.extend((segment.name, *r) for r in conn.execute(sql).fetchall())
        conn.close()
    return out


def test_rotation_values_parse_and_bad_ones_say_what_to_write() -> None:
    assert parse_rotation(()) is None
    assert parse_rotation(("500MB",)) == Rotation(500_000_000, None)
    assert parse_rotation(("1h",)) == Rotation(None, 3600.0)
    assert parse_rotation(("2GiB,30m",)) == Rotation(2 * 2**30, 1800.0)
    assert parse_rotation(("10s", "5MB")) == Rotation(5_000_000, 10.0)
    with pytest.raises(ValueError, match=r"write e\.g\. 500MB"):
        parse_rotation(("big",))
    with pytest.raises(ValueError, match="1MB or more"):
        parse_rotation(("10kb",))
    assert set_folder(Path("shift.duckdb")) == Path("shift")
    assert set_folder(Path("runs/shift")) == Path("runs/shift")


def test_every_frame_once_in_order_across_segments_with_session_rows(tmp_path: Path) -> None:
    folder = tmp_path / "shift"
    writer = SegmentedWriter(folder, Rotation(max_bytes=300_000))
    writer.put_session(Session("s1", mode="record", started_ns=1))
    writer.put_session(Session("s2", mode="record", started_ns=2))
    total = 6_000
    deadline = time.monotonic() + TIMEOUT * 6
    for seq in range(1, total + 1):
        writer.write(frame(seq))
        if seq == 10:
            writer.put_session(
                Session("s2", mode="record", started_ns=2, ended_ns=3, end_reason="done")
            )
        if seq % 500 == 0:
            writer.flush()  # commit, so the file grows and the watcher sees it
            time.sleep(0.15)
        assert time.monotonic() < deadline
    writer.put_session(Session("s1", mode="record", started_ns=1, ended_ns=9, end_reason="stopped"))
    writer.close()
    segments = sorted(p.name for p in folder.glob("*.duckdb"))
    assert len(segments) >= 3, segments
    assert segments[0] == "0001.duckdb"
    assert writer.committed_frames == total
    seqs = [r[1] for r in rows(folder, "SELECT seq FROM frames ORDER BY seq")]
    assert sorted(seqs) == list(range(1, total + 1))  # once each
    by_segment = rows(folder, "SELECT min(seq), max(seq) FROM frames")
    assert [r[1] for r in by_segment][1:] == [r[2] + 1 for r in by_segment][:-1]  # in order
    s1 = rows(folder, "SELECT session_id, ended_ns FROM sessions WHERE session_id = 's1'")
    assert [r[0] for r in s1] == segments  # its row in every segment, the last one final
    assert s1[-1][2] == 9
    s2 = rows(folder, "SELECT session_id FROM sessions WHERE session_id = 's2'")
    assert [r[0] for r in s2] == segments[: len(s2)]
    assert len(s2) < len(segments)
    assert all(seconds < TIMEOUT for _, seconds in writer.rotations)


def test_a_set_is_read_as_one_by_info_export_and_analyze(tmp_path: Path) -> None:
    folder = tmp_path / "shift"
    writer = SegmentedWriter(folder, Rotation(max_bytes=200_000))
    writer.put_session(Session("s1", mode="record", started_ns=1))
    for seq in range(1, 3_001):
        writer.write(frame(seq))
        if seq % 400 == 0:
            writer.flush()
            time.sleep(0.15)
    writer.close()
    segments = sorted(folder.glob("*.duckdb"))
    assert len(segments) >= 2

    info = cometd_tape("info", str(folder))
    assert info.returncode == 0, info.stderr
    assert "3000 frames" in info.stdout

    out = tmp_path / "all.jsonl"
    done = cometd_tape("export", str(folder), "-o", str(out))
    assert done.returncode == 0, done.stderr
    lines = [orjson.loads(line) for line in out.read_bytes().splitlines()]
    assert [x["seq"] for x in lines if "seq" in x] == list(range(1, 3_001))

    sql = "SELECT count(*) AS n, count(DISTINCT seq) AS d FROM frames"
    for given in ([str(folder)], [str(folder / "*.duckdb")], list(map(str, segments))):
        done = cometd_tape("analyze", "sql", *given, sql, "--format", "json")
        assert done.returncode == 0, done.stderr
        assert orjson.loads(done.stdout) == [{"n": 3000, "d": 3000}], given
    spans = cometd_tape(
        "analyze", "sql", str(folder), "SELECT segments FROM sessions", "--format", "json"
    )
    assert orjson.loads(spans.stdout) == [{"segments": [p.name for p in segments]}]


def test_numbering_goes_on_after_the_last_segment(tmp_path: Path) -> None:
    folder = tmp_path / "s"
    folder.mkdir()
    (folder / "0007.duckdb").touch()
    (folder / "w2-0003.duckdb").touch()
    assert next_number(folder) == 8
    assert next_number(folder, "w2-") == 4
    assert next_number(folder, "w1-") == 1


def test_nothing_to_read_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(Exception, match="no tapes"):
        expand([tmp_path / "empty"])
    with pytest.raises(Exception, match="no tape matches"):
        expand([str(tmp_path / "*.duckdb")])
    done = cometd_tape("analyze", "summary", str(tmp_path / "empty"))
    assert done.returncode == 1
    assert "Traceback" not in done.stderr
    assert "no tapes" in done.stderr


def test_a_writer_process_writes_segments_by_time(tmp_path: Path) -> None:
    folder = tmp_path / "proc"
    writer = ProcessTapeWriter(folder, segments=Segments(Rotation(max_seconds=1.0), "w1-"))
    writer.put_session(Session("s1", mode="proxy", started_ns=1))
    deadline = time.monotonic() + 2.6
    seq = 0
    while time.monotonic() < deadline:
        seq += 1
        writer.write(frame(seq, size=100))
        if seq % 100 == 0:
            time.sleep(0.01)
    writer.close()
    names = sorted(p.name for p in folder.glob("*.duckdb"))
    assert names[:3] == ["w1-0001.duckdb", "w1-0002.duckdb", "w1-0003.duckdb"]
    seqs = sorted(r[1] for r in rows(folder, "SELECT seq FROM frames"))
    assert seqs == list(range(1, seq + 1))


def test_segments_in_number_order_and_globs_skip_side_files(tmp_path: Path) -> None:
    folder = tmp_path / "set"
    folder.mkdir()
    for n in (9999, 10000, 2):
        with TapeWriter(folder / segment_name("", n)):
            pass
    (folder / "0002.duckdb.wal").write_bytes(b"")
    assert [p.name for p in expand([folder]).tapes] == [
        "0002.duckdb",
        "9999.duckdb",
        "10000.duckdb",
    ]
    assert [p.name for p in expand([str(folder / "*")]).tapes] == [
        "0002.duckdb",
        "9999.duckdb",
        "10000.duckdb",
    ]


def test_overwrite_replaces_only_a_folder_of_segments(tmp_path: Path) -> None:
    folder = tmp_path / "mixed"
    folder.mkdir()
    with TapeWriter(folder / "0001.duckdb"):
        pass
    (folder / "notes.txt").write_text("mine")
    with pytest.raises(click.ClickException, match="holds more than a tape set"):
        claim_set(folder, append=False, overwrite=True)
    assert (folder / "notes.txt").read_text() == "mine"
