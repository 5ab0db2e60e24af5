"""The analyze commands' rough edges, as a newcomer meets them: a JSONL tape everywhere, what is
missing from `analyze sql`, `analyze generate`, the British spelling, one overwrite rule."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import orjson
import pytest

from tests.cli import cometd_tape
from tests.constants import ROOT, SAMPLE, TIMEOUT


def one_line_error(done: subprocess.CompletedProcess[str], code: int) -> str:
    assert done.returncode == code, (done.stdout, done.stderr)
    assert "Traceback" not in done.stderr
    errors = [line for line in done.stderr.splitlines() if line.startswith("Error: ")]
    assert len(errors) == 1, done.stderr
    return errors[0]


def test_every_read_command_takes_a_jsonl_tape(tmp_path: Path) -> None:
    info = cometd_tape("info", str(SAMPLE))
    assert info.returncode == 0, info.stderr
    assert info.stdout.startswith(f"tape {SAMPLE}  (schema v2")
    assert "gws-dnc-0001" in info.stdout
    assert "frames     10" in info.stdout

    latency = cometd_tape("analyze", "latency", str(SAMPLE), "--format", "json")
    assert latency.returncode == 0, latency.stderr
    ack = [r for r in orjson.loads(latency.stdout) if r["part"] == "ack_ms"]
    assert ack[0]["operation"] == "DoNotCallRecord"
    assert ack[0]["count"] == 1
    summary = cometd_tape("analyze", "summary", str(SAMPLE), "--format", "json")
    assert summary.returncode == 0, summary.stderr
    assert orjson.loads(summary.stdout)["sessions"][0]["session_id"] == "gws-dnc-0001"
    unmatched = cometd_tape("analyze", "unmatched", str(SAMPLE), "--format", "json")
    assert unmatched.returncode == 0, unmatched.stderr
    assert orjson.loads(unmatched.stdout) == []
    sql = cometd_tape(
        "analyze", "sql", str(SAMPLE), "select count(*) as n from messages", "--format", "json"
    )
    assert sql.returncode == 0, sql.stderr
    assert orjson.loads(sql.stdout) == [{"n": 12}]
    folder = tmp_path / "export"
    export = cometd_tape("analyze", "export", str(SAMPLE), "--format", "csv", "-o", str(folder))
    assert export.returncode == 0, export.stderr
    assert (folder / "frames.csv").read_text().count("\n") == 11  # a header and 10 frames
    report = tmp_path / "r.html"
    done = cometd_tape("analyze", "report", str(SAMPLE), "-o", str(report))
    assert done.returncode == 0, done.stderr
    assert "gws-dnc.jsonl" in report.read_text()
    out = tmp_path / "back.jsonl"
    assert cometd_tape("export", str(SAMPLE), "-o", str(out)).returncode == 0
    assert out.read_bytes() == SAMPLE.read_bytes()


def test_a_jsonl_tape_and_a_duckdb_tape_analysed_as_one(tmp_path: Path) -> None:
    tape = tmp_path / "t.duckdb"
    generated = cometd_tape("analyze", "generate", "-o", str(tape), "-n", "200", "--sessions", "2")
    assert generated.returncode == 0, generated.stderr
    count = "select count(*) as n from sessions"
    done = cometd_tape("analyze", "sql", str(tape), str(SAMPLE), count, "--format", "json")
    assert done.returncode == 0, done.stderr
    assert orjson.loads(done.stdout) == [{"n": 3}]


def test_a_bad_jsonl_line_is_named(tmp_path: Path) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_bytes(SAMPLE.read_bytes() + b'{"seq": 1}\n')
    for args in (("info", str(bad)), ("analyze", "summary", str(bad))):
        error = one_line_error(cometd_tape(*args), 1)
        assert error == f"Error: {bad}, line 12: frame is missing " + (
            "session_id, t_wall_ns, direction, transport, kind, raw"
        )


def test_sql_says_what_is_missing() -> None:
    example = 'e.g. cometd-tape analyze sql shift.duckdb "select count(*) from requests"'
    error = one_line_error(cometd_tape("analyze", "sql", str(SAMPLE)), 2)
    assert error == f"Error: the SQL query is missing after the tape {SAMPLE}; {example}"
    error = one_line_error(cometd_tape("analyze", "sql", "select 1"), 2)
    assert error == f"Error: give a tape before the SQL query; {example}"
    error = one_line_error(cometd_tape("analyze", "sql"), 2)
    assert error == f"Error: give the tapes, then the SQL query; {example}"
    usage = cometd_tape("analyze", "sql", "--help")
    assert "cometd-tape analyze sql [OPTIONS] TAPES... QUERY" in usage.stdout


def test_generate_is_a_subcommand_with_the_overwrite_rule(tmp_path: Path) -> None:
    tape = tmp_path / "g.duckdb"
    done = cometd_tape("analyze", "generate", "-o", str(tape), "--requests", "300", "--seed", "3")
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(f"{tape}: 300 requests, ")
    latency = cometd_tape("analyze", "latency", str(tape), "--format", "json")
    assert latency.returncode == 0, latency.stderr
    assert sum(r["count"] for r in orjson.loads(latency.stdout) if r["part"] == "http_ms") == 300
    error = one_line_error(cometd_tape("analyze", "generate", "-o", str(tape), "-n", "5"), 1)
    assert error == f"Error: {tape} exists; add --overwrite to replace it, or choose another -o"
    done = cometd_tape("analyze", "generate", "-o", str(tape), "-n", "5", "--overwrite")
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(f"{tape}: 5 requests, ")
    old = subprocess.run(
        [sys.executable, "-m", "analysis.generate", str(tmp_path / "x.duckdb")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=TIMEOUT * 3,
        check=False,
    )
    assert not (tmp_path / "x.duckdb").exists()  # the old entry is gone, not half there
    assert "Traceback" not in old.stderr


def test_analyse_is_analyze() -> None:
    done = cometd_tape("analyse", "latency", str(SAMPLE), "--format", "csv")
    assert done.returncode == 0, done.stderr
    assert done.stdout == cometd_tape("analyze", "latency", str(SAMPLE), "--format", "csv").stdout
    listed = cometd_tape("--help").stdout
    assert "  analyze " in listed
    assert "  analyse " not in listed  # one spelling listed


@pytest.mark.parametrize("command", ["report", "csv", "parquet"])
def test_one_overwrite_rule_for_the_files_analyze_writes(tmp_path: Path, command: str) -> None:
    if command == "report":
        target = tmp_path / "r.html"
        args = ("analyze", "report", str(SAMPLE), "-o", str(target))
        wording = f"Error: {target} exists; add --overwrite to replace it, or choose another -o"
    else:
        target = tmp_path / "out"
        args = ("analyze", "export", str(SAMPLE), "--format", command, "-o", str(target))
        wording = (
            f"Error: {target} exists and is not empty; add --overwrite to replace what it "
            "holds, or choose another -o"
        )
    assert cometd_tape(*args).returncode == 0
    first = sorted(p.relative_to(target) for p in target.rglob("*")) if target.is_dir() else []
    assert one_line_error(cometd_tape(*args), 1) == wording
    done = cometd_tape(*args, "--overwrite")
    assert done.returncode == 0, done.stderr
    if target.is_dir():  # the same files again, none left over from the first
        assert sorted(p.relative_to(target) for p in target.rglob("*")) == first
        mine = target / "notes.txt"
        mine.write_text("mine")
        error = one_line_error(cometd_tape(*args, "--overwrite"), 1)
        assert "holds files an export does not write (notes.txt)" in error
        assert mine.read_text() == "mine"
        assert (target / "frames").exists() or (target / "frames.csv").exists()


def test_export_and_demo_follow_the_same_rule(tmp_path: Path) -> None:
    out = tmp_path / "x.jsonl"
    assert cometd_tape("export", str(SAMPLE), "-o", str(out)).returncode == 0
    error = one_line_error(cometd_tape("export", str(SAMPLE), "-o", str(out)), 1)
    assert error == f"Error: {out} exists; add --overwrite to replace it, or choose another -o"
    done = cometd_tape("export", str(SAMPLE), "-o", str(out), "--overwrite")
    assert done.returncode == 0, done.stderr
    assert out.read_bytes() == SAMPLE.read_bytes()

    tape, report = tmp_path / "d.duckdb", tmp_path / "d.html"
    report.write_text("kept")
    error = one_line_error(cometd_tape("demo", "-o", str(tape)), 1)
    assert error == (
        f"Error: {report} exists; add --overwrite to replace it, or choose another --report"
    )
    assert not tape.exists()  # nothing was run
    assert report.read_text() == "kept"


def test_a_har_file_is_read_as_a_tape(tmp_path: Path) -> None:
    from tests.tape.test_har import har

    path = har(tmp_path)
    info = cometd_tape("info", str(path))
    assert info.returncode == 0, info.stderr
    assert "har-desk" in info.stdout
    latency = cometd_tape("analyze", "latency", str(path), "--format", "json")
    assert latency.returncode == 0, latency.stderr
    ack = [r for r in orjson.loads(latency.stdout) if r["part"] == "ack_ms"]
    assert (ack[0]["operation"], ack[0]["count"], ack[0]["max"]) == ("DoNotCallRecord", 1, 25.5)
