"""The Parquet lake as capture points feed it (`analyze export TAPE... --to LAKE`): read back it
gives what the tapes give, across capture points and dates; a tape exported again replaces its
rows; exports of different tapes at once both land; files no manifest names are never read."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import duckdb
import orjson

from tests.analysis.captures import proxy_and_record
from tests.cli import cometd_tape
from tests.constants import ROOT, SAMPLE, TIMEOUT

MIDNIGHT_NS = 1_767_225_600 * 10**9  # 2026-01-01T00:00:00Z
LATENCY_SQL = "SELECT reference_id, session_id, ack_ms, http_ms FROM request_latency ORDER BY 1"


def run_ok(*args: str) -> str:
    done = cometd_tape(*args)
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr
    return done.stdout


def rows(*args: str) -> list[dict[str, object]]:
    return list(orjson.loads(run_ok("analyze", "sql", *args, "--format", "json")))


def move(tape: Path, *, to_ns: int, host: str | None = None) -> None:
    """Shift a tape's times so that it starts at `to_ns`; optionally say another host made it."""
    conn = duckdb.connect(str(tape))
    (start,) = conn.execute("SELECT min(t_wall_ns) FROM frames").fetchone() or (0,)
    shift = to_ns - int(start)
    for table in ("frames", "messages", "http_fields"):
        conn.execute(f"UPDATE {table} SET t_wall_ns = t_wall_ns + {shift}")
    conn.execute(f"UPDATE sessions SET started_ns = started_ns + {shift}")
    if host is not None:
        made = f"cometd-tape (tester@{host})"
        conn.execute("UPDATE tape_meta SET value = ? WHERE key = 'created_by'", [made])
    conn.close()


async def two_captures(tmp_path: Path) -> tuple[Path, Path]:
    """REST through a proxy on one host, the acks recorded on another whose clock is 1 s ahead,
    straddling midnight: requests in one capture's tape, their acks in the other's."""
    rest, acks = await proxy_and_record(tmp_path, 200, seed=3)
    move(rest, to_ns=MIDNIGHT_NS - 10**9)
    move(acks, to_ns=MIDNIGHT_NS - 10**9 + 10**9, host="elsewhere")
    return rest, acks


async def test_a_lake_of_two_captures_gives_what_their_tapes_give(tmp_path: Path) -> None:
    rest, acks = await two_captures(tmp_path)
    lake = tmp_path / "lake"
    out = run_ok("analyze", "export", str(rest), str(acks), "--to", str(lake))
    assert "added 2 tape(s)" in out
    dates = {p.name for p in (lake / "frames").iterdir()}
    assert dates == {"date=2025-12-31", "date=2026-01-01"}
    captures = {p.name for p in (lake / "messages").glob("*/*")}
    assert captures == {"capture=elsewhere", f"capture={_host()}"}
    from_tapes = rows(str(rest), str(acks), LATENCY_SQL)
    assert len(from_tapes) == 200
    assert sum(r["ack_ms"] is not None for r in from_tapes) >= 190
    assert rows(str(lake), LATENCY_SQL) == from_tapes
    table = run_ok("analyze", "latency", str(rest), str(acks))
    assert run_ok("analyze", "latency", str(lake)) == table
    assert "elsewhere is at most" in table  # the capture points' clocks, from the lake too


def test_exporting_again_replaces_and_counts_stay(tmp_path: Path) -> None:
    tape = tmp_path / "g.duckdb"
    run_ok("analyze", "generate", "-o", str(tape), "-n", "500")
    sample = tmp_path / "s.duckdb"
    run_ok("import", str(SAMPLE), "-o", str(sample))
    lake = tmp_path / "lake"
    run_ok("analyze", "export", str(tape), str(sample), "--to", str(lake))
    count = "SELECT (SELECT count(*) FROM frames) AS f, (SELECT count(*) FROM requests) AS r"
    before = rows(str(lake), count)
    files = sorted(p for p in lake.rglob("*.parquet"))
    again = run_ok("analyze", "export", str(tape), "--to", str(lake))
    assert "replacing its earlier export (4 files)" in again
    assert rows(str(lake), count) == before == rows(str(tape), str(sample), count)
    after = sorted(p for p in lake.rglob("*.parquet"))
    assert len(after) == len(files)
    assert after != files  # new files, the old ones gone
    assert len(list((lake / "_manifests").glob("*.json"))) == 2


def test_two_exports_at_once_both_land_and_stray_files_are_not_read(tmp_path: Path) -> None:
    tapes = []
    for n in range(2):
        tape = tmp_path / f"g{n}.duckdb"
        run_ok("analyze", "generate", "-o", str(tape), "-n", "3000", "--seed", str(n))
        tapes.append(tape)
    lake = tmp_path / "lake"
    lake.mkdir()
    (lake / "_manifests").mkdir()
    command = [sys.executable, "-m", "tape", "analyze", "export"]
    running = [
        subprocess.Popen([*command, str(t), "--to", str(lake)], cwd=ROOT, text=True) for t in tapes
    ]
    assert [p.wait(timeout=TIMEOUT * 6) for p in running] == [0, 0]
    manifests = [json.loads(p.read_text()) for p in (lake / "_manifests").glob("*.json")]
    assert len(manifests) == 2
    frames = "SELECT count(*) AS n FROM frames"
    # The generator names its sessions alike: read together the tapes repeat each other, so
    # compare one manifest (one tape of the lake) at a time.
    for manifest in (lake / "_manifests").glob("*.json"):
        tape = tmp_path / json.loads(manifest.read_text())["tape"]
        assert rows(str(manifest), frames) == rows(str(tape), frames)
    # An export that died before its manifest: its files are there, and never read.
    stray = next((lake / "frames").rglob("*.parquet"))
    (stray.parent / "dead-export.parquet").write_bytes(stray.read_bytes())
    for manifest in (lake / "_manifests").glob("*.json"):
        tape = tmp_path / json.loads(manifest.read_text())["tape"]
        assert rows(str(manifest), frames) == rows(str(tape), frames)


def test_what_a_lake_refuses(tmp_path: Path) -> None:
    tape = tmp_path / "s.duckdb"
    run_ok("import", str(SAMPLE), "-o", str(tape))
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "notes.txt").write_text("mine")
    refused = cometd_tape("analyze", "export", str(tape), "--to", str(tmp_path / "busy"))
    assert refused.returncode == 1
    assert "is not a Parquet lake" in refused.stderr
    both = cometd_tape(
        "analyze", "export", str(tape), "--to", str(tmp_path / "l"), "-o", str(tmp_path / "o")
    )
    assert both.returncode == 2
    assert "give -o FOLDER for an export, or --to LAKE" in both.stderr
    csv = cometd_tape(
        "analyze", "export", str(tape), "--to", str(tmp_path / "l"), "--format", "csv"
    )
    assert csv.returncode == 2
    assert "a lake is Parquet" in csv.stderr
    window = cometd_tape(
        "analyze", "export", str(tape), "--to", str(tmp_path / "l"), "--since", "2026-01-01"
    )
    assert window.returncode == 2
    assert "--to adds whole tapes" in window.stderr
    assert not (tmp_path / "l").exists()


def _host() -> str:
    import os

    return os.uname().nodename
