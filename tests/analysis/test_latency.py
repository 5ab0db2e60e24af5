"""The latency views and `analyze latency`: the sample's one DoNotCallRecord, exact figures;
percentiles equal numpy's; metrics in a separate frame still join."""

from __future__ import annotations

import random
import subprocess
import sys
from pathlib import Path

import numpy as np
import orjson

from analysis.latency import latency
from analysis.views import open_tapes
from tape.frame import Frame, Session
from tape.jsonl import JsonlReader
from tape.tapeio import import_items
from tape.writer import TapeWriter
from tests.constants import ROOT, SAMPLE, TIMEOUT


def test_the_sample_has_one_matched_do_not_call_record(tmp_path: Path) -> None:
    tape = tmp_path / "s.duckdb"
    import_items(JsonlReader(SAMPLE).items(), tape)
    conn = open_tapes([tape])
    rows = conn.execute(
        "SELECT operation_name, reference_id, ack_as_expected, ack_ms, server_ms, node_ms, "
        "http_ms, rest_ms FROM request_latency"
    ).fetchall()
    frames = {
        f["seq"]: f
        for f in (orjson.loads(line) for line in SAMPLE.read_bytes().splitlines())
        if "seq" in f
    }
    request_ns, response_ns, ack_ns = (frames[n]["t_wall_ns"] for n in (8, 9, 10))
    assert rows == [
        (
            "DoNotCallRecord",
            "123456789",
            True,
            (ack_ns - request_ns) / 1e6,
            5.0,
            4.352048,
            (response_ns - request_ns) / 1e6,
            (ack_ns - request_ns) / 1e6 - 5,
        )
    ]
    result = subprocess.run(
        [sys.executable, "-m", "tape", "analyze", "latency", str(tape)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        check=True,
    )
    assert "DoNotCallRecord  ack_ms         1" in result.stdout


def _generated(path: Path, count: int, seed: int) -> list[float]:
    """Requests with known ack latencies; every third ack's metrics come in a later frame."""
    rng = random.Random(seed)
    latencies, seq, frames = [], 0, []
    for i in range(count):
        t = 1_700_000_000_000_000_000 + i * 10_000_000
        ms = round(rng.lognormvariate(2.5, 0.6), 3)
        latencies.append(ms)
        body = orjson.dumps(
            {"operationName": "DoNotCallRecord", "referenceId": f"r{i}", "campaignName": "C1"}
        )
        ack = {
            "channel": "/v2/me/outbound",
            "data": {
                "notificationType": "DoNotCallAcknowledge",
                "referenceId": f"r{i}",
                "record": {"recordHandle": i},
            },
        }
        metrics = {
            "channel": "/me/internal",
            "data": {
                "metrics": {
                    "eventProcessing": {
                        "serverGenerationTimestamp": 1,
                        "nodeProcessingTimeNanos": 7,
                        "serverProcessingTimeTotalMs": 2,
                    }
                },
                "userData": {"GSW_RECORD_HANDLE": i, "GSW_USER_EVENT": "DoNotCallAcknowledge"},
            },
        }
        ack_ns = t + int(ms * 1e6)
        batches = [[ack], [metrics]] if i % 3 == 0 else [[ack, metrics]]
        seq += 1
        frames.append(
            Frame(
                "g",
                seq,
                t,
                t,
                "out",
                "http",
                "http-request",
                body,
                exchange_id=f"x{i}",
                http_method="POST",
                http_path=f"/api/v2/me/outbound-records/{i}",
            )
        )
        for n, batch in enumerate(batches):
            seq += 1
            frames.append(
                Frame(
                    "g",
                    seq,
                    ack_ns + n * 1000,
                    ack_ns + n * 1000,
                    "in",
                    "long-polling",
                    "bayeux",
                    orjson.dumps(batch),
                )
            )
    frames.sort(key=lambda f: f.t_wall_ns)
    with TapeWriter(path) as writer:
        writer.put_session(Session(session_id="g"))
        for n, frame in enumerate(frames, start=1):
            writer.write(frame.with_changes(seq=n))
    return latencies


def test_percentiles_equal_numpys_and_split_metrics_join(tmp_path: Path) -> None:
    tape = tmp_path / "g.duckdb"
    latencies = _generated(tape, 3000, seed=7)
    conn = open_tapes([tape])
    (ack,) = [r for r in latency(conn, ("operation",)) if r.part == "ack_ms"]
    expected = np.percentile(latencies, [50, 90, 99, 99.9])  # numpy's default: linear
    assert ack.values[0] == len(latencies)
    assert np.allclose(ack.values[1:5], expected, atol=1e-6)
    (server,) = [r for r in latency(conn, ("operation",)) if r.part == "server_ms"]
    assert server.values[0] == len(latencies)  # every ack found its metrics, split or not
