"""Tapes read as one recording, on traffic from the GWS simulator: a request in one segment
meets its ack in the next; a proxy's tape of REST requests meets a recorder's tape of the acks
(by referenceId); the numbers are checked against the raw frames."""

from __future__ import annotations

from pathlib import Path

import duckdb
import orjson
import pytest

from demo.desktop import drive
from recorder.proxy import CaptureProxy, ProxyOptions
from replay.simulator import Simulator
from tape.segments import Rotation, SegmentedWriter
from tests.analysis.captures import OPTIONS, proxy_and_record
from tests.cli import cometd_tape


def analyze_json(*args: str) -> list[dict[str, object]]:
    done = cometd_tape("analyze", *args, "--format", "json")
    assert done.returncode == 0, done.stderr
    return list(orjson.loads(done.stdout))


async def test_a_request_and_its_ack_in_different_segments_are_matched(tmp_path: Path) -> None:
    folder = tmp_path / "shift"
    simulator = Simulator(OPTIONS)
    await simulator.start()
    writer = SegmentedWriter(folder, Rotation(max_seconds=1.0))
    proxy = CaptureProxy(ProxyOptions(upstream=simulator.origin), writer)
    await proxy.start()
    try:
        await drive(proxy.origin, 500, 200.0, "long-polling", seed=1)
    finally:
        await proxy.stop()
        await simulator.stop()
        writer.close()
    segments = sorted(folder.glob("*.duckdb"))
    assert len(segments) >= 3
    count = "SELECT count(*) AS n, count(ack_ms) AS acked FROM request_latency"
    assert analyze_json("sql", str(folder), count) == [{"n": 500, "acked": 500}]
    alone = [analyze_json("sql", str(s), count)[0] for s in segments]
    assert sum(int(str(x["n"])) for x in alone) == 500
    # Each segment alone misses the acks that came in the next one.
    assert sum(int(str(x["acked"])) for x in alone) < 500
    # The set's numbers are the raw frames' own.
    got = analyze_json(
        "sql", str(folder), "SELECT reference_id, ack_ms FROM request_latency ORDER BY 1"
    )
    assert got == raw_latency(segments, segments)


async def test_a_proxy_tape_and_a_record_tape_are_matched_by_reference_id(
    tmp_path: Path,
) -> None:
    """REST through the proxy, Bayeux straight to the server, recorded by the desktop's own
    client as `record` does: two tapes, two sessions, one recording."""
    rest, acks = await proxy_and_record(tmp_path, 300, seed=2)
    # Alone, neither tape pairs anything.
    alone = "SELECT count(ack_ms) AS acked FROM request_latency"
    assert analyze_json("sql", str(rest), alone) == [{"acked": 0}]
    latency = cometd_tape("analyze", "latency", str(acks))
    assert "needs the REST requests" in latency.stdout
    both = analyze_json(
        "sql", str(rest), str(acks), "SELECT reference_id, ack_ms FROM request_latency ORDER BY 1"
    )
    assert len(both) == 300
    assert both == raw_latency([rest], [acks])
    sessions = analyze_json(
        "sql", str(rest), str(acks),
        "SELECT count(DISTINCT session_id) AS a, count(DISTINCT request_session_id) AS r "
        "FROM acks WHERE request_seq IS NOT NULL",
    )  # fmt: skip
    assert sessions == [{"a": 1, "r": 1}]
    table = cometd_tape("analyze", "latency", str(rest), str(acks))
    assert table.returncode == 0, table.stderr
    assert "DoNotCallRecord" in table.stdout
    assert "ack_ms" in table.stdout
    assert "clock of capture point" not in table.stdout  # one host: one clock

    # The record tape as another host would have made it, its clock 2 s ahead: still matched
    # (up to 5 s of skew), and the difference is estimated and reported.
    ahead = tmp_path / "elsewhere.duckdb"
    ahead.write_bytes(acks.read_bytes())
    conn = duckdb.connect(str(ahead))
    for table_name in ("frames", "messages", "http_fields"):
        conn.execute(f"UPDATE {table_name} SET t_wall_ns = t_wall_ns + 2000000000")
    conn.execute(
        "UPDATE tape_meta SET value = 'cometd-tape (tester@elsewhere)' WHERE key = 'created_by'"
    )
    conn.close()
    shifted = analyze_json(
        "sql", str(rest), str(ahead), "SELECT reference_id, ack_ms FROM request_latency ORDER BY 1"
    )
    want = [float(str(r["ack_ms"])) + 2000 for r in both]
    assert [r["ack_ms"] for r in shifted] == pytest.approx(want)
    table = cometd_tape("analyze", "latency", str(rest), str(ahead))
    note = next(line for line in table.stdout.splitlines() if "clock of capture point" in line)
    assert "elsewhere is at most" in note
    drift = float(note.split("at most ")[1].split(" ms")[0])
    # An upper bound: the fastest request -> ack and delivery are taken as 0 ms.
    assert 2000 <= drift <= 2500, note


def raw_latency(rest: list[Path], acks: list[Path]) -> list[dict[str, object]]:
    """request -> ack in ms per referenceId, from the raw frames: the POST's time, and the
    first /v2/me/outbound message carrying its referenceId."""
    sent: dict[str, int] = {}
    for tape in rest:
        conn = duckdb.connect(str(tape), read_only=True)
        for t, raw in conn.execute(
            "SELECT t_wall_ns, raw FROM frames WHERE kind = 'http-request' "
            "AND http_method = 'POST' AND direction = 'out'"
        ).fetchall():
            sent[orjson.loads(raw)["referenceId"]] = t
        conn.close()
    acked: dict[str, int] = {}
    for tape in acks:
        conn = duckdb.connect(str(tape), read_only=True)
        for t, raw in conn.execute(
            "SELECT t_wall_ns, raw FROM frames WHERE kind = 'bayeux' AND direction = 'in' "
            "ORDER BY t_wall_ns"
        ).fetchall():
            for message in orjson.loads(raw):
                if message.get("channel") == "/v2/me/outbound":
                    acked.setdefault(message["data"]["referenceId"], t)
        conn.close()
    return [
        {"reference_id": ref, "ack_ms": (acked[ref] - sent[ref]) / 1e6 if ref in acked else None}
        for ref in sorted(sent)
    ]
