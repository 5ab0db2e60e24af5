"""The latency views and `analyze latency`: the sample's one DoNotCallRecord, exact figures;
percentiles equal numpy's; metrics in a separate frame still join."""

from __future__ import annotations

import random
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pyarrow as pa

from analysis.generate import OPERATIONS, generate
from analysis.views import open_tapes
from tape.jsonl import JsonlReader
from tape.schema import open_for_writing
from tape.tapeio import import_items
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


def _cli_json(*args: str) -> list[dict[str, object]]:
    done = subprocess.run(
        [sys.executable, "-m", "tape", "analyze", *args, "--format", "json"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=TIMEOUT * 12,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return list(orjson.loads(done.stdout))


def test_100k_requests_percentiles_equal_numpys_unmatched_exact(tmp_path: Path) -> None:
    """The committed generator (seeded) draws known latencies; `analyze latency` must give
    numpy's percentiles of exactly those numbers (linear interpolation on both sides)."""
    tape = tmp_path / "g.duckdb"
    drawn = generate(tape, 100_000, seed=2026)
    acked = drawn.acked
    parts = {
        "http_ms": (np.ones_like(acked), drawn.http_us / 1e3),
        "ack_ms": (acked, drawn.ack_us / 1e3),
        "server_ms": (acked, drawn.server_ms.astype(float)),
        "rest_ms": (acked, drawn.ack_us / 1e3 - drawn.server_ms),
    }

    def check(record: dict[str, object], chosen: np.ndarray) -> None:
        having, values = parts[str(record["part"])]
        mine = values[chosen & having]
        assert record["count"] == len(mine)
        got = [record[k] for k in ("p50", "p90", "p99", "p99.9", "max", "mean")]
        want = [*np.percentile(mine, [50, 90, 99, 99.9]), mine.max(), mine.mean()]
        assert np.allclose(got, want, rtol=0, atol=1e-9), (record, want)

    records = _cli_json("latency", str(tape), "--by", "operation")
    names = [name for name, _ in OPERATIONS]
    for record in (r for r in records if r["part"] in parts):
        check(record, drawn.operation == names.index(str(record["operation"])))

    records = _cli_json("latency", str(tape), "--by", "campaign", "--campaign", "Campaign3")
    assert {r["campaign"] for r in records} == {"Campaign3"}
    for record in (r for r in records if r["part"] in parts):
        check(record, drawn.campaign == 3)

    unmatched = _cli_json("unmatched", str(tape))
    assert len(unmatched) == drawn.unmatched
    assert {r["reason"] for r in unmatched} == {"statusCode 1", "no ack"}
    assert sum(r["reason"] == "statusCode 1" for r in unmatched) == int(drawn.refused.sum())

    # every third ack's metrics came in a separate frame, and every ack still found them
    conn = open_tapes([tape])
    split, joined = conn.execute(
        "SELECT count(*) FILTER (WHERE NOT metrics_in_same_frame), count(server_generation_ts) "
        "FROM acks"
    ).fetchall()[0]
    assert split > 30_000
    assert joined == int(acked.sum())


def _random_tape(path: Path, rng: random.Random) -> tuple[list[tuple[Any, ...]], list[Any]]:
    """Requests (http_fields) and acks (messages) at distinct times, in up to two sessions,
    with referenceIds that are sometimes reused, and acks that are sometimes duplicated or
    orphaned; returns (requests, acks) as inserted."""
    conn = open_for_writing(path)
    refs = [f"r{i}" for i in range(rng.choice([3, 12, 400]))]
    times = iter(rng.sample(range(10**6), 200))
    requests, acks = [], []
    for session in ("s1", "s2")[: rng.randint(1, 2)]:
        for seq in range(1, rng.randint(2, 60)):
            t = next(times) * 1_000_000
            ref = rng.choice([*refs, None])
            if rng.random() < 0.45:
                method = rng.choice(["POST", "PUT", "GET"])
                requests.append((session, seq, t, ref, method))
                conn.execute(
                    "INSERT INTO http_fields (session_id, seq, t_wall_ns, direction, kind, "
                    "exchange_id, http_method, http_path, reference_id) "
                    "VALUES (?, ?, ?, 'out', 'http-request', ?, ?, "
                    "'/api/v2/me/outbound-records/1', ?)",
                    [session, seq, t, f"x{seq}", method, ref],
                )
            else:
                acks.append((session, seq, t, ref))
                conn.execute(
                    "INSERT INTO messages (session_id, seq, idx, t_wall_ns, t_mono_ns, direction, "
                    "channel, notification_type, reference_id, record_handle) "
                    "VALUES (?, ?, 0, ?, 0, 'in', '/v2/me/outbound', 'DoNotCallAcknowledge', "
                    "?, '1')",
                    [session, seq, t, ref],
                )
    conn.close()
    return requests, acks


def test_acks_answer_the_latest_request_and_duplicates_follow_the_first(tmp_path: Path) -> None:
    """The documented rule, computed naively here, against the acks view on random tapes: with
    every referenceId sent once the view pairs by a hash join, otherwise by an ASOF join and a
    ranking; both kinds of tape must come out as the rule says."""
    rng = random.Random(5)
    kinds = set()
    for n in range(25):
        tape = tmp_path / f"r{n}.duckdb"
        requests, acks = _random_tape(tape, rng)
        acting = [r for r in requests if r[4] != "GET" and r[3] is not None]
        expected: dict[tuple[str, int], tuple[tuple[str, int] | None, int]] = {}
        for session, seq, t, ref in acks:
            earlier = [r for r in acting if r[0] == session and r[3] == ref and r[2] <= t]
            latest = max(earlier, key=lambda r: r[2], default=None)
            expected[(session, seq)] = ((session, latest[1]) if latest else None, t)
        # Across sessions (one tape: one capture point): an orphan takes the latest request
        # not answered in its own session, sent at or before it and at most 60 s before.
        own = {request for request, _ in expected.values() if request is not None}
        open_requests = [r for r in acting if (r[0], r[1]) not in own]
        for (_session, _seq, t, ref), key in zip(acks, list(expected), strict=True):
            if expected[key][0] is not None or ref is None:
                continue
            earlier = [r for r in open_requests if r[3] == ref and r[2] <= t]
            latest = max(earlier, key=lambda r: r[2], default=None)
            if latest is not None and t - 60 * 10**9 <= latest[2]:
                expected[key] = ((latest[0], latest[1]), t)
        answered: dict[tuple[str, int], list[tuple[int, str, int]]] = {}
        for (session, seq), (request, t) in expected.items():
            if request is not None:
                answered.setdefault(request, []).append((t, session, seq))
        firsts = {min(v)[1:] for v in answered.values()}
        unique = len({(r[0], r[3]) for r in acting}) == len(acting)
        kinds.add(unique and all(len(v) == 1 for v in answered.values()))
        rows = (
            open_tapes([tape], cache=False)
            .execute("SELECT session_id, seq, request_session_id, request_seq, duplicate FROM acks")
            .fetchall()
        )
        got = {(s, q): ((rs, r) if r is not None else None, d) for s, q, rs, r, d in rows}
        want = {
            key: (request, request is not None and key not in firsts)
            for key, (request, _) in expected.items()
        }
        assert got == want, n
    assert kinds == {True, False}  # both ways of pairing were exercised


def _random_metrics_tape(
    path: Path, rng: random.Random, unique_keys: bool
) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]:
    """Acks and metrics messages in frames at times on a coarse grid (so ties in time, and
    distances of exactly 5 s, happen), frames out of time order, several messages a frame;
    with `unique_keys`, each metrics message has a record handle of its own. Returns (acks,
    metrics) as (session, seq, idx, t, handle, event[, server_generation_ts])."""
    events = ["DoNotCallAcknowledge", "RecordProcessedAcknowledge"]
    acks: list[tuple[Any, ...]] = []
    metrics: list[tuple[Any, ...]] = []
    fresh = iter(range(100, 10**6))
    for session in ("s1", "s2"):
        for seq in range(1, rng.randint(2, 40)):
            t = rng.randrange(0, 40) * 500_000_000
            for idx in range(rng.randint(1, 3)):
                event = rng.choice(events)
                if rng.random() < 0.5:
                    handle = str(next(fresh)) if unique_keys else str(rng.randint(1, 3))
                    metrics.append((session, seq, idx, t, handle, event, len(metrics) + 1))
                    continue
                known = [m[4] for m in metrics if m[0] == session]
                if unique_keys:
                    handle = rng.choice([*known, str(next(fresh))])
                else:
                    handle = str(rng.randint(1, 3))
                acks.append((session, seq, idx, t, handle, event))
    rows = [(*m[:4], "/me/internal", m[4], None, m[5], m[6]) for m in metrics]
    rows += [(*a[:4], "/v2/me/outbound", a[4], a[5], None, None) for a in acks]
    names = ["session_id", "seq", "idx", "t_wall_ns", "channel", "record_handle"]
    names += ["notification_type", "user_event", "server_generation_ts"]
    table = pa.Table.from_pylist([dict(zip(names, row, strict=True)) for row in rows])
    conn = open_for_writing(path)
    conn.register("rows", table)
    conn.execute(
        "INSERT INTO messages BY NAME SELECT *, 0 AS t_mono_ns, 'in' AS direction FROM rows"
    )
    conn.close()
    return acks, metrics


def test_acks_take_the_metrics_the_documented_rule_names(tmp_path: Path) -> None:
    """The rule (same frame first, else the nearest within 5 s either side, ties to the lowest
    seq and idx), computed naively, against the acks view on random tapes: tapes with one
    metrics message per record handle and event (paired by one hash join) and tapes that
    repeat them (same-frame join, then ASOF joins)."""
    rng = random.Random(11)
    for n in range(20):
        tape = tmp_path / f"m{n}.duckdb"
        acks, metrics = _random_metrics_tape(tape, rng, unique_keys=n % 2 == 0)
        want = {}
        for session, seq, idx, t, handle, event in acks:
            candidates = [
                m
                for m in metrics
                if m[0] == session
                and m[4] == handle
                and m[5] == event
                and abs(m[3] - t) <= 5_000_000_000
            ]
            best = min(
                candidates,
                key=lambda m: (m[1] != seq, abs(m[3] - t), m[1], m[2]),
                default=None,
            )
            want[(session, seq, idx)] = (best[6], best[1]) if best else (None, None)
        rows = (
            open_tapes([tape], cache=False)
            .execute(
                "SELECT session_id, seq, idx, server_generation_ts, metrics_in_same_frame FROM acks"
            )
            .fetchall()
        )
        got = {(s, q, i): (g, same) for s, q, i, g, same in rows}
        assert got == {
            key: (sgts, None if metric_seq is None else metric_seq == key[1])
            for key, (sgts, metric_seq) in want.items()
        }, n
