"""`--engine spark`: the analysis of a Parquet lake on Apache Spark (local mode, a real JVM)
gives what DuckDB gives, row for row: request_latency and every other view, `analyze latency`
output, filters, exports; and a missing Java, pyspark or lake is one line.

One Spark session serves the in-process comparisons (a JVM starts in seconds, and warms up
slowly); the CLI runs start their own, as users do."""

from __future__ import annotations

import os
import random
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import duckdb
import orjson
import pytest

from analysis.generate import generate
from analysis.latency import STATS, latency
from analysis.output import render
from analysis.recorder import recorder_latency
from analysis.summary import summary
from analysis.views import Filters, open_tapes
from tape.frame import Kind
from tape.tapeset import expand
from tests.analysis.test_analysis_cli import T0, Tape
from tests.analysis.test_lake import two_captures
from tests.cli import cometd_tape
from tests.constants import TIMEOUT

# The JVM's cold start and first queries; the CLI runs start one each.
SPARK_TIMEOUT = TIMEOUT * 18
MASTER = "local[2]"
RELATIONS = (
    "frames",
    "messages",
    "http_fields",
    "requests",
    "acks",
    "request_latency",
    "unmatched_requests",
    "capture_offsets",
    "clock_offsets",
    "delivery_latency",
    "channel_rates",
    "gaps",
    "latency_parts",
    "capture_points",
    "sessions",
)


@pytest.fixture(scope="module")
def spark() -> Iterator[Any]:
    from pyspark import SparkContext

    from analysis.spark import session

    started = session(MASTER)
    yield started
    gateway = SparkContext._gateway
    started.stop()
    # The JVM outlives a stopped session (PySpark keeps it for the next): end it, so that it
    # takes neither memory nor CPU from the tests after these.
    gateway.shutdown()
    gateway.proc.kill()
    gateway.proc.wait(timeout=TIMEOUT)
    SparkContext._gateway = None
    SparkContext._jvm = None


def run_ok(*args: str) -> str:
    done = cometd_tape(*args, timeout=SPARK_TIMEOUT)
    assert done.returncode == 0, done.stderr
    assert done.stderr == "", done.stderr  # Spark's own logging stays out of the output
    return done.stdout


def both(lake: Path, spark: Any, filters: Filters | None = None) -> tuple[Any, Any]:
    """The lake opened by DuckDB and by Spark, with the same filters."""
    from analysis.cache import BASE_TABLES
    from analysis.definitions import view_names
    from analysis.spark import open_lake

    filters = filters or Filters()
    tapes = expand([lake]).tapes
    where = {name: filters.where(name) for name in (*BASE_TABLES, *view_names())}
    return open_tapes(tapes, filters, cache=False), open_lake(tapes, where, spark=spark)


def rows(conn: Any, relation: str) -> list[tuple[Any, ...]]:
    """Every row, in one order (a Spark binary column compares as DuckDB's bytes)."""
    found = conn.execute(f"SELECT * FROM {relation}").fetchall()
    return sorted(
        (tuple(bytes(v) if isinstance(v, bytearray) else v for v in r) for r in found), key=repr
    )


def assert_views_agree(duck: Any, spark: Any) -> None:
    for relation in RELATIONS:
        want, got = rows(duck, relation), rows(spark, relation)
        assert got == want, relation


def host(tape: Path, name: str) -> None:
    """Say another capture point (host) made the tape."""
    conn = duckdb.connect(str(tape))
    made = f"cometd-tape (tester@{name})"
    conn.execute("UPDATE tape_meta SET value = ? WHERE key = 'created_by'", [made])
    conn.close()


def lake_of(tmp_path: Path, *tapes: Path) -> Path:
    lake = tmp_path / "lake"
    done = cometd_tape("analyze", "export", *map(str, tapes), "--to", str(lake))
    assert done.returncode == 0, done.stderr
    return lake


async def test_a_lake_of_two_captures_across_midnight_gives_duckdbs_rows_and_output(
    tmp_path: Path, spark: Any
) -> None:
    """The acceptance: requests in a proxy's tape, their acks in a recorder's on another host
    whose clock is 1 s ahead, across midnight, and a generated tape: identical request_latency
    rows, identical `analyze latency` output (the CLI, both engines)."""
    rest, acks = await two_captures(tmp_path)
    generate(tmp_path / "g.duckdb", 2000, seed=25)
    lake = lake_of(tmp_path, rest, acks, tmp_path / "g.duckdb")
    duck, on_spark = both(lake, spark)
    want = rows(duck, "request_latency")
    assert len(want) == 2200
    assert sum(r[17] is not None for r in want) >= 2100  # ack_ns: acks found across the hosts
    assert rows(on_spark, "request_latency") == want
    for by in (("operation",), ("campaign", "minute")):
        mine, theirs = latency(on_spark, by), latency(duck, by)
        assert mine == theirs  # every figure to the last bit
        for fmt in ("json", "csv"):
            columns = [*by, "part", *STATS]
            assert render(columns, _flat(mine), fmt) == render(columns, _flat(theirs), fmt)
    table = run_ok("analyze", "latency", str(lake), "--engine", "spark", "--master", MASTER)
    assert table == run_ok("analyze", "latency", str(lake))
    assert "elsewhere is at most" in table  # the capture points' clocks, from Spark too


def _flat(found: list[Any]) -> list[tuple[Any, ...]]:
    return [(*r.group, r.part, *r.values) for r in found]


def test_every_view_agrees_on_random_lakes(tmp_path: Path, spark: Any) -> None:
    """Where DuckDB uses ASOF joins and Spark windows: referenceIds reused within a session and
    across sessions and hosts, duplicate acks, acks with no request, metrics in the ack's frame
    and in frames around it, outages, a tape given twice. Three random captures (seeds), every
    view, every row."""
    tapes = []
    for seed in (1, 2, 3):
        proxy, recorder = _random_captures(random.Random(seed), f"s{seed}-")
        first, second = tmp_path / f"proxy{seed}.duckdb", tmp_path / f"record{seed}.duckdb"
        proxy.write(first)
        recorder.write(second)
        host(second, f"elsewhere{seed}")
        tapes += [first, second]
    copy = tmp_path / "record1.jsonl"  # the same recording again, as another tape
    done = cometd_tape("export", str(tmp_path / "record1.duckdb"), "-o", str(copy))
    assert done.returncode == 0, done.stderr
    lake = lake_of(tmp_path, *tapes)
    done = cometd_tape("analyze", "export", str(copy), "--to", str(lake))  # another capture point
    assert done.returncode == 0, done.stderr
    duck, on_spark = both(lake, spark)
    assert len(rows(duck, "acks")) > 60
    repeated = duck.execute("SELECT * FROM main.repeated_sources ORDER BY 1, 3").fetchall()
    assert len(repeated) == 2  # record1's two sessions, read once
    assert on_spark.execute("SELECT * FROM main.repeated_sources ORDER BY 1, 3").fetchall() == [
        tuple(r) for r in repeated
    ]
    assert_views_agree(duck, on_spark)
    assert latency(on_spark, ("operation",)) == latency(duck, ("operation",))
    assert recorder_latency(on_spark) == recorder_latency(duck)  # a tape with no REST's
    mine, theirs = summary(on_spark), summary(duck)
    for key, section in theirs.items():
        assert mine[key].columns == section.columns, key
        assert sorted(map(repr, mine[key].rows)) == sorted(map(repr, section.rows)), key


def _random_captures(rng: random.Random, prefix: str) -> tuple[Tape, Tape]:
    """A proxy's requests and a recorder's acks (and requests), at random times within 3
    minutes across midnight, referenceIds drawn from ten."""
    proxy, recorder = Tape(), Tape()
    refs = [f"ref{n}" for n in range(10)]
    used: set[int] = set()

    def moment() -> float:  # distinct times: ties are left to each engine
        while (ms := rng.randrange(-90_000, 90_000)) in used:
            pass
        used.update(range(ms - 3, ms + 4))
        return float(ms)

    def session(*names: str) -> str:
        return prefix + rng.choice(names)

    for _ in range(80):
        kind = rng.random()
        if kind < 0.35:
            proxy.request(session("p0", "p1"), moment(), rng.choice(refs))
        elif kind < 0.45:
            recorder.request(session("r0", "r1"), moment(), rng.choice(refs))
        elif kind < 0.65:
            recorder.ack(session("r0", "r1"), moment(), rng.choice(refs))
        elif kind < 0.8:  # an ack whose metrics come in other frames, nearby or not
            at = moment()
            _ack_alone(recorder, session("r0", "r1"), at, rng.choice(refs))
            _metric_alone(recorder, session("r0", "r1"), at + rng.choice([-4000, 1000, 4000]), 7)
        else:
            _metric_alone(recorder, session("r0", "r1"), moment(), rng.choice([7, 8]))
    _outage(recorder, prefix + "r0", moment())
    return proxy, recorder


def _ack_alone(tape: Tape, session: str, ms: float, ref: str) -> None:
    """An ack with no metrics message in its frame (record handle 7)."""
    data = {
        "notificationType": "DoNotCallAcknowledge",
        "referenceId": ref,
        "record": {"recordHandle": 7},
    }
    raw = orjson.dumps([{"channel": "/v2/me/outbound", "data": data}])
    tape._add(session, ms, direction="in", transport="long-polling", kind=Kind.BAYEUX, raw=raw)


def _metric_alone(tape: Tape, session: str, ms: float, handle: int) -> None:
    """A metrics message in a frame of its own (the ack's nearest, within 5 s, may be it)."""
    data = {
        "metrics": {
            "eventProcessing": {
                "serverGenerationTimestamp": T0 // 1_000_000 + int(ms),
                "nodeProcessingTimeNanos": int(ms) % 977,
                "serverProcessingTimeTotalMs": int(ms) % 13,
            }
        },
        "userData": {"GSW_RECORD_HANDLE": handle, "GSW_USER_EVENT": "DoNotCallAcknowledge"},
    }
    raw = orjson.dumps([{"channel": "/me/internal", "data": data}])
    tape._add(session, ms, direction="in", transport="long-polling", kind=Kind.BAYEUX, raw=raw)


def _outage(tape: Tape, session: str, ms: float) -> None:
    for n, event in enumerate(
        [
            {"event": "disconnected", "reason": "connection refused"},
            {"event": "gap", "gap_ms": 1500.25},
            {"event": "reconnecting", "reason": "402::Unknown client"},
        ]
    ):
        raw = orjson.dumps(event)
        tape._add(
            session, ms + n, direction="in", transport="long-polling", kind=Kind.LIFECYCLE, raw=raw
        )


def test_filters_give_duckdbs_rows(tmp_path: Path, spark: Any) -> None:
    generate(tmp_path / "g.duckdb", 3000, seed=7)
    lake = lake_of(tmp_path, tmp_path / "g.duckdb")
    ((start,),) = duckdb.sql(f"SELECT min(t_wall_ns) FROM '{lake}/frames/**/*.parquet'").fetchall()
    cases = [
        Filters(since_ns=start + 10**9, until_ns=start + 2 * 10**9, campaign="Campaign2"),
        Filters(sessions=("gen-1", "gen-3")),
    ]
    for filters in cases:
        duck, on_spark = both(lake, spark, filters)
        assert rows(on_spark, "request_latency") == rows(duck, "request_latency"), filters
        assert latency(on_spark, ("operation",)) == latency(duck, ("operation",)), filters


def test_export_with_spark_is_read_back_as_duckdbs(tmp_path: Path, spark: Any) -> None:
    """Spark's Parquet export is a folder any analyze command reads (with DuckDB), with
    DuckDB's export's counts; CSV and JSON are one file per relation."""
    from analysis.spark import export_spark

    generate(tmp_path / "g.duckdb", 500, seed=3)
    lake = lake_of(tmp_path, tmp_path / "g.duckdb")
    duck, on_spark = both(lake, spark)
    counts = export_spark(on_spark, tmp_path / "out", "parquet")
    assert counts["request_latency"] == 500
    for relation, count in counts.items():
        ((want,),) = duck.execute(f"SELECT count(*) FROM {relation}").fetchall()
        assert count == want, relation
    exported = open_tapes([tmp_path / "out"], cache=False)
    assert rows(exported, "request_latency") == rows(duck, "request_latency")
    export_spark(on_spark, tmp_path / "csv", "csv")
    lines = (tmp_path / "csv" / "frames.csv").read_text().splitlines()
    assert lines[0].split(",")[-1] == "raw_base64"
    assert len(lines) > counts["frames"]  # a header, and rows (some raw text spans lines)
    assert sorted(p.name for p in (tmp_path / "csv").iterdir()) == sorted(
        f"{name}.csv" for name in counts
    )


def test_what_spark_needs_is_said_in_one_line(tmp_path: Path) -> None:
    generate(tmp_path / "g.duckdb", 50, seed=1)
    not_a_lake = cometd_tape("analyze", "latency", str(tmp_path / "g.duckdb"), "--engine", "spark")
    assert not_a_lake.returncode == 1
    assert "reads a Parquet lake" in not_a_lake.stderr
    assert "analyze export TAPE... --to LAKE" in not_a_lake.stderr
    lake = lake_of(tmp_path, tmp_path / "g.duckdb")
    no_java = {k: v for k, v in os.environ.items() if k != "JAVA_HOME"}
    no_java["PATH"] = str(Path(sys.executable).parent)  # python, and no java
    done = _run(["-m", "tape", "analyze", "summary", str(lake), "--engine", "spark"], no_java)
    assert done.returncode == 1
    assert "needs Java" in done.stderr
    assert "default-jre-headless" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1
    hide = "import sys; sys.modules['pyspark'] = None; from tape.cli import main; main()"
    done = _run(["-c", hide, "analyze", "unmatched", str(lake), "--engine", "spark"], None)
    assert done.returncode == 1
    assert "pip install 'cometd-tape[spark]'" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1
    with_to = cometd_tape(
        "analyze", "export", str(lake), "--to", str(tmp_path / "l2"), "--engine", "spark"
    )
    assert with_to.returncode == 2
    assert "--to adds tapes to a lake with DuckDB" in with_to.stderr
    master_alone = cometd_tape("analyze", "latency", str(lake), "--master", "local[1]")
    assert master_alone.returncode == 2
    assert "give --engine spark with it" in master_alone.stderr


def _run(args: list[str], env: dict[str, str] | None) -> Any:
    import subprocess

    from tests.constants import ROOT

    return subprocess.run(
        [sys.executable, *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=TIMEOUT * 6,
        check=False,
    )
