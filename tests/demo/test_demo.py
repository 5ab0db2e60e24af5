"""`cometd-tape demo`, the README's first command, as a user runs it: it finishes quickly,
prints the latency table and summary, and leaves a tape and an HTML report that agree."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import duckdb

from tests.cli import cometd_tape
from tests.constants import TIMEOUT


def demo(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return cometd_tape("demo", *args, cwd=cwd, timeout=TIMEOUT * 12)


def test_the_demo_captures_analyses_and_reports(tmp_path: Path) -> None:
    start = time.monotonic()
    done = demo("-n", "300", "--rate", "200", cwd=tmp_path)
    took = time.monotonic() - start
    assert done.returncode == 0, done.stderr
    assert took < 60
    assert "sent 300/300" in done.stderr  # the progress line
    assert "Request -> ack latency by operation (ms)" in done.stdout
    assert "DoNotCallRecord" in done.stdout
    tape, report = tmp_path / "demo.duckdb", tmp_path / "demo.html"
    assert report.read_text().startswith("<!DOCTYPE html>")
    conn = duckdb.connect(str(tape), read_only=True)
    requests, acked, refused = conn.execute(
        "SELECT count(*), count(ack_ms), count(*) FILTER (WHERE status_code <> 0) "
        "FROM request_latency"
    ).fetchall()[0]
    assert requests == 300
    assert acked + refused == 300  # every request not refused was acked, and matched
    assert "\nRequests\n" in done.stdout
    # The same traffic as a recorder alone sees it: the same acks, no requests.
    assert "What a recorder alone sees of it (demo-record.duckdb)" in done.stdout
    record = duckdb.connect(str(tmp_path / "demo-record.duckdb"), read_only=True)
    (mode,) = record.execute("SELECT DISTINCT mode FROM sessions").fetchall()
    assert mode == ("record",)
    assert record.execute("SELECT count(*) FROM requests").fetchall() == [(0,)]
    record_acks = record.execute(
        "SELECT reference_id FROM messages WHERE channel = '/v2/me/outbound' ORDER BY 1"
    ).fetchall()
    proxy_acks = conn.execute(
        "SELECT reference_id FROM messages WHERE channel = '/v2/me/outbound' ORDER BY 1"
    ).fetchall()
    assert record_acks == proxy_acks
    assert len(record_acks) == acked
    assert f"report: {report.name}" in done.stdout
    leaked = conn.execute(
        "SELECT count(*) FROM frames WHERE headers LIKE '%Basic %' "
        "OR regexp_matches(headers, 'JSESSIONID=[0-9a-f]')"
    ).fetchall()[0][0]
    assert leaked == 0

    again = demo(cwd=tmp_path)
    assert again.returncode == 1
    assert "demo.duckdb exists" in again.stderr
    assert "--overwrite" in again.stderr
    assert "Traceback" not in again.stderr
