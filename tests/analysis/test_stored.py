"""Request -> ack latency stored in the tape when its writer closes (analysis/stored.py): the
rows equal the view's, analysis reads them, and it computes the view instead whenever they no
longer describe the tape."""

from __future__ import annotations

import time
from pathlib import Path

import duckdb
import pytest

import analysis.stored
import tape.writer
from analysis.generate import generate
from tape.frame import Frame, Kind
from tape.projection import rebuild
from tape.reader import TapeReader
from tape.schema import open_for_writing
from tape.writer import TapeWriter
from tests.analysis.test_analysis_cli import T0, Tape, analyze_json, assert_same
from tests.cli import cometd_tape


def _sql(path: Path, query: str) -> list[tuple[object, ...]]:
    conn = duckdb.connect(str(path), read_only=True)
    try:
        return conn.execute(query).fetchall()
    finally:
        conn.close()


def _tamper(path: Path) -> None:
    """Change the stored rows, not their stamp: only a reader of the stored rows sees it."""
    conn = duckdb.connect(str(path))
    conn.execute("UPDATE stored_latency_parts SET ack_ms = 12345")
    conn.close()


def _tampered_tape(path: Path) -> Path:
    """One request acked 10 ms later, stored as the writer closed, then tampered with."""
    tape = Tape()
    tape.request("a", 0, "r1")
    tape.ack("a", 10, "r1")
    tape.write(path)
    _tamper(path)
    return path


def _max_ack_ms(*args: str) -> float:
    rows = analyze_json("latency", *args)
    return max(r["max"] for r in rows if r["part"] == "ack_ms")


def test_a_closed_tape_holds_the_latency_rows_the_view_computes(tmp_path: Path) -> None:
    path = tmp_path / "g.duckdb"
    generate(path, 3000, seed=11, sessions=2)
    stored = "SELECT * FROM stored_latency_parts"
    computed = "SELECT * FROM latency_parts"  # the view installed in the tape
    assert _sql(path, "SELECT count(*) FROM stored_latency_parts") == [(3000,)]
    assert _sql(path, f"{stored} EXCEPT ALL {computed}") == []
    assert _sql(path, f"{computed} EXCEPT ALL {stored}") == []


def test_analysis_reads_the_stored_rows_and_no_cache_computes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = tmp_path / "cache"
    monkeypatch.setenv("COMETD_TAPE_CACHE", str(folder))
    path = tmp_path / "t.duckdb"
    tape = Tape()
    tape.request("a", 0, "r1")
    tape.ack("a", 10, "r1")
    tape.request("b", 0, "r2")
    tape.ack("b", 30, "r2")
    tape.write(path)  # the writer's close stores the latency
    want = analyze_json("latency", str(path), "--no-cache")
    assert_same(analyze_json("latency", str(path)), want)
    assert not list(folder.glob("*latency_parts*"))  # read from the tape, not cached

    _tamper(path)
    assert _max_ack_ms(str(path)) == 12345
    assert _max_ack_ms(str(path), "--session", "b") == 12345  # filters apply to stored rows
    assert _max_ack_ms(str(path), "--no-cache") == 30


def test_stored_rows_of_an_older_tape_or_older_sql_are_not_used(tmp_path: Path) -> None:
    path = _tampered_tape(tmp_path / "t.duckdb")
    # A writer killed after more frames: they are committed, but nothing was stored again.
    conn = duckdb.connect(str(path))
    conn.execute(
        "INSERT INTO frames (session_id, seq, t_wall_ns, t_mono_ns, direction, transport, kind,"
        " raw) VALUES ('a', 99, ?, 0, 'in', 'long-polling', 'bayeux', '[]'::BLOB)",
        [T0 + 10**9],
    )
    conn.close()
    assert _max_ack_ms(str(path)) == 10

    path2 = _tampered_tape(tmp_path / "t2.duckdb")
    conn = duckdb.connect(str(path2))  # as stored by a cometd-tape whose view SQL differs
    conn.execute("UPDATE tape_meta SET value = 'other' || value WHERE key = 'stored_latency'")
    conn.close()
    assert _max_ack_ms(str(path2)) == 10

    # rebuild stores them again, for the frames the tape has now
    assert cometd_tape("rebuild", str(path)).returncode == 0
    assert _sql(path, "SELECT max(ack_ms) FROM stored_latency_parts") == [(10.0,)]
    _tamper(path)
    assert _max_ack_ms(str(path)) == 12345


def test_a_tape_without_requests_stores_no_rows(tmp_path: Path) -> None:
    path = tmp_path / "bayeux.duckdb"
    tape = Tape()
    tape.ack("a", 10, "r1")  # a recording with no REST side
    tape.write(path)
    assert _sql(path, "SELECT count(*) FROM stored_latency_parts") == [(0,)]
    assert analyze_json("sql", str(path), "SELECT count(*) AS n FROM acks") == [{"n": 1}]


def test_a_failure_to_store_loses_no_frame(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def broken(conn: duckdb.DuckDBPyConnection) -> None:
        raise duckdb.OutOfMemoryException("out of memory (as a test)")

    monkeypatch.setattr(analysis.stored, "store", broken)
    _write_three(tmp_path / "t.duckdb")
    assert "latency was not stored for analysis" in capsys.readouterr().err
    with TapeReader(tmp_path / "t.duckdb") as reader:
        assert [f.seq for f in reader.frames("a")] == [1, 2, 3]


def _write_three(path: Path) -> None:
    with TapeWriter(path) as writer:
        for seq in range(1, 4):
            writer.write(Frame("a", seq, T0 + seq, 0, "in", "long-polling", Kind.BAYEUX, b"[]"))


def test_a_close_that_stores_too_long_is_cut_short(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def endless(conn: duckdb.DuckDBPyConnection) -> None:
        conn.execute("SELECT sum(i) FROM range(10000000000000) t(i)").fetchall()

    monkeypatch.setattr(analysis.stored, "store", endless)
    monkeypatch.setattr(tape.writer, "FINALIZE_BUDGET_S", 0.5)
    started = time.monotonic()
    _write_three(tmp_path / "t.duckdb")
    assert time.monotonic() - started < 30
    assert "it took over 0.5 s" in capsys.readouterr().err
    with TapeReader(tmp_path / "t.duckdb") as reader:
        assert [f.seq for f in reader.frames("a")] == [1, 2, 3]


def test_rebuilt_projections_void_the_stored_rows(tmp_path: Path) -> None:
    path = _tampered_tape(tmp_path / "t.duckdb")
    assert _max_ack_ms(str(path)) == 12345
    conn = open_for_writing(path)  # rebuild's first step, as if its store then failed
    rebuild(conn)
    conn.close()
    assert _max_ack_ms(str(path)) == 10
