"""Latency from a recorder alone: `analyze latency` and `analyze summary` on a real `record`
tape of the simulator (acks and their metrics, no REST requests), checked against values
computed here from the raw frames: delivery = receipt - serverGenerationTimestamp, less the
session's fastest (the clock offset as `clock_offsets` estimates it with no requests:
min-one-way-delay), and the metrics' serverProcessingTimeTotalMs and nodeProcessingTimeNanos."""

from __future__ import annotations

import asyncio
import math
from collections import defaultdict
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import orjson
import pytest

from tests.analysis.test_report import _record_from_the_simulator
from tests.cli import cometd_tape

REQUESTS = 120
QUANTILES = {"p50": 50, "p90": 90, "p99": 99, "p99.9": 99.9}


@pytest.fixture(scope="module")
def tape(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("recorder") / "recorded.duckdb"
    asyncio.run(_record_from_the_simulator(path, REQUESTS))
    return path


def _from_frames(tape: Path) -> dict[tuple[str, str], list[float]]:
    """(notification, part) -> values, from frames.raw alone."""
    conn = duckdb.connect(str(tape), read_only=True)
    frames = conn.execute(
        "SELECT session_id, t_wall_ns, raw FROM frames "
        "WHERE kind = 'bayeux' AND direction = 'in' ORDER BY session_id, seq"
    ).fetchall()
    conn.close()
    raw: dict[str, list[tuple[str, int]]] = defaultdict(list)  # session -> (event, ns)
    values: dict[tuple[str, str], list[float]] = defaultdict(list)
    for session, received_ns, body in frames:
        for message in orjson.loads(body):
            data = message.get("data") or {}
            timing = (data.get("metrics") or {}).get("eventProcessing")
            if not timing:
                continue
            event = data["userData"]["GSW_USER_EVENT"]
            delay_ns = received_ns - timing["serverGenerationTimestamp"] * 1_000_000
            raw[session].append((event, delay_ns))
            values[(event, "server_ms")].append(float(timing["serverProcessingTimeTotalMs"]))
            values[(event, "node_ms")].append(timing["nodeProcessingTimeNanos"] / 1e6)
    for delays in raw.values():
        # offset (server - recorder) = max(S - R): the fastest delivery taken as 0 ms
        offset_ns = max(-d for _, d in delays)
        for event, delay_ns in delays:
            values[(event, "delivery_ms")].append((delay_ns + offset_ns) / 1e6)
    return values


def _check(row: dict[str, Any], expected: list[float]) -> None:
    want = np.array(expected)
    assert row["count"] == len(want)
    for name, q in QUANTILES.items():
        assert math.isclose(row[name], float(np.percentile(want, q)), abs_tol=1e-6), (row, name)
    assert math.isclose(row["max"], float(want.max()), abs_tol=1e-6)
    assert math.isclose(row["mean"], float(want.mean()), abs_tol=1e-6)


def test_latency_of_a_record_tape_is_delivery_and_server_processing(tape: Path) -> None:
    expected = _from_frames(tape)
    assert len(expected[("DoNotCallAcknowledge", "delivery_ms")]) == REQUESTS
    done = cometd_tape("analyze", "latency", str(tape), "--format", "json")
    assert done.returncode == 0, done.stderr
    rows = orjson.loads(done.stdout)
    assert [(r["notification"], r["part"]) for r in rows] == [
        ("DoNotCallAcknowledge", part) for part in ("delivery_ms", "server_ms", "node_ms")
    ]
    for row in rows:
        _check(row, expected[(row["notification"], row["part"])])
    assert min(expected[("DoNotCallAcknowledge", "delivery_ms")]) == 0  # the fastest
    notes = done.stderr.splitlines()
    assert any("min-one-way-delay" in n and "clock offset" in n for n in notes), notes
    assert any("request → ack latency needs the REST requests" in n for n in notes), notes
    assert any("cometd-tape proxy" in n for n in notes), notes

    table = cometd_tape("analyze", "latency", str(tape))
    assert table.returncode == 0, table.stderr
    lines = table.stdout.splitlines()
    assert lines[0].split() == [
        "notification",
        "part",
        "count",
        "p50",
        "p90",
        "p99",
        "p99.9",
        "max",
        "mean",
    ]
    delivery = lines[1].split()
    want = np.array(expected[("DoNotCallAcknowledge", "delivery_ms")])
    assert delivery[:3] == ["DoNotCallAcknowledge", "delivery_ms", str(REQUESTS)]
    assert delivery[3] == f"{np.percentile(want, 50):.3f}"
    assert delivery[5] == f"{np.percentile(want, 99):.3f}"
    assert any(line.startswith("note: request → ack latency needs") for line in lines)

    csv = cometd_tape("analyze", "latency", str(tape), "--format", "csv", "--by", "minute")
    assert csv.returncode == 0, csv.stderr
    head, *body = csv.stdout.splitlines()
    assert head == "minute,part,count,p50,p90,p99,p99.9,max,mean"
    counts: dict[str, int] = defaultdict(int)
    for line in body:
        fields = line.split(",")
        counts[fields[1]] += int(fields[2])
    assert counts == {"delivery_ms": REQUESTS, "server_ms": REQUESTS, "node_ms": REQUESTS}
    assert "needs the REST requests" in csv.stderr


def test_summary_of_a_record_tape_has_the_same_numbers(tape: Path) -> None:
    latency = cometd_tape("analyze", "latency", str(tape), "--format", "json")
    done = cometd_tape("analyze", "summary", str(tape), "--format", "json")
    assert done.returncode == 0, done.stderr
    data = orjson.loads(done.stdout)
    assert data["delivery"] == orjson.loads(latency.stdout)
    assert any("needs the REST requests" in n for n in data["delivery_notes"])
    (clock,) = data["clock"]
    assert clock["method"] == "min-one-way-delay"
    text = cometd_tape("analyze", "summary", str(tape))
    assert "Delivery and server processing by notification (ms)" in text.stdout
    assert "note: request → ack latency needs the REST requests" in text.stdout


def test_a_proxy_tape_gets_no_recorder_section(tmp_path: Path) -> None:
    path = tmp_path / "g.duckdb"
    done = cometd_tape("analyze", "generate", "-o", str(path), "--requests", "50", "--seed", "2")
    assert done.returncode == 0, done.stderr
    summary = orjson.loads(cometd_tape("analyze", "summary", str(path), "--format", "json").stdout)
    assert "delivery" not in summary
    latency = cometd_tape("analyze", "latency", str(path))
    assert latency.stdout.split()[:2] == ["operation", "part"]
    assert "needs the REST requests" not in latency.stdout + latency.stderr
