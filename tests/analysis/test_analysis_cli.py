"""The analyze commands as users run them: malformed tapes, filters, several tapes as one,
exports read back, views queried from a plain DuckDB client, gaps, clock offsets, the cache."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import duckdb
import orjson
import pytest

from analysis.generate import generate
from tape.frame import Frame, Kind, Session
from tape.jsonl import JsonlReader
from tape.tapeio import import_items
from tape.writer import TapeWriter
from tests.cli import cometd_tape
from tests.constants import SAMPLE

T0 = 1_767_225_600_000_000_000  # 2026-01-01T00:00:00Z


def analyze(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return cometd_tape("analyze", *args, stdin=stdin)


def analyze_json(*args: str) -> Any:
    done = analyze(*args, "--format", "json")
    assert done.returncode == 0, done.stderr
    return orjson.loads(done.stdout)


def assert_same(got: list[dict[str, Any]], want: list[dict[str, Any]]) -> None:
    """Equal rows; floats equal to rounding (sums may be added up in another order)."""
    assert len(got) == len(want)
    for a, b in zip(got, want, strict=True):
        assert a.keys() == b.keys()
        for key in a:
            if isinstance(b[key], float):
                assert a[key] == pytest.approx(b[key], rel=1e-12), key
            else:
                assert a[key] == b[key], key


class Tape:
    """Build a small tape by hand: requests, responses and acks at given milliseconds."""

    def __init__(self) -> None:
        self.frames: list[Frame] = []
        self.seq: dict[str, int] = {}
        self.exchange = 0

    def _add(self, session: str, ms: float, **fields: Any) -> None:
        self.seq[session] = self.seq.get(session, 0) + 1
        t = T0 + int(ms * 1_000_000)
        self.frames.append(Frame(session, self.seq[session], t, t, **fields))

    def request(
        self, session: str, ms: float, ref: str | None, *, campaign: str = "C1", code: int = 0
    ) -> None:
        self.exchange += 1
        body: dict[str, Any] = {"operationName": "DoNotCallRecord", "campaignName": campaign}
        if ref is not None:
            body["referenceId"] = ref
        x = f"x{self.exchange}"
        self._add(
            session,
            ms,
            direction="out",
            transport="http",
            kind=Kind.HTTP_REQUEST,
            raw=orjson.dumps(body),
            exchange_id=x,
            http_method="POST",
            http_path="/api/v2/me/outbound-records/7",
        )
        self._add(
            session,
            ms + 2,
            direction="in",
            transport="http",
            kind=Kind.HTTP_RESPONSE,
            raw=orjson.dumps({"statusCode": code}),
            exchange_id=x,
            http_status=200,
        )

    def ack(self, session: str, ms: float, ref: str) -> None:
        batch = [
            {
                "channel": "/v2/me/outbound",
                "data": {
                    "notificationType": "DoNotCallAcknowledge",
                    "referenceId": ref,
                    "record": {"recordHandle": 7},
                },
            },
            {
                "channel": "/me/internal",
                "data": {
                    "metrics": {
                        "eventProcessing": {
                            "serverGenerationTimestamp": 1,
                            "nodeProcessingTimeNanos": 1,
                            "serverProcessingTimeTotalMs": 3,
                        }
                    },
                    "userData": {"GSW_RECORD_HANDLE": 7, "GSW_USER_EVENT": "DoNotCallAcknowledge"},
                },
            },
        ]
        self._add(
            session,
            ms,
            direction="in",
            transport="long-polling",
            kind=Kind.BAYEUX,
            raw=orjson.dumps(batch),
        )

    def write(self, path: Path, sessions: set[str] | None = None) -> Path:
        with TapeWriter(path) as writer:
            for name in sorted(self.seq):
                if sessions is None or name in sessions:
                    writer.put_session(Session(session_id=name, started_ns=T0))
            for frame in sorted(self.frames, key=lambda f: (f.session_id, f.seq)):
                if sessions is None or frame.session_id in sessions:
                    writer.write(frame)
        return path


def test_malformed_tapes_get_readable_answers(tmp_path: Path) -> None:
    tape = Tape()
    tape.request("a", 0, None)  # a request without a referenceId
    tape.request("a", 100, "dup")
    tape.ack("a", 110, "dup")
    tape.ack("a", 130, "dup")  # a duplicate ack
    tape.ack("a", 200, "nobody-asked")  # an ack with no request
    tape.request("a", 300, "again")  # a referenceId reused within the session...
    tape.ack("a", 305, "again")
    tape.request("a", 400, "again")
    tape.ack("a", 420, "again")
    tape.request("b", 0, "dup")  # ...and across sessions
    tape.ack("b", 50, "dup")
    path = tape.write(tmp_path / "m.duckdb")

    matched = analyze_json(
        "sql",
        str(path),
        "SELECT session_id, seq, reference_id, ack_ms "
        "FROM request_latency ORDER BY session_id, seq",
    )
    assert [(r["session_id"], r["reference_id"], r["ack_ms"]) for r in matched] == [
        ("a", None, None),
        ("a", "dup", 10.0),  # the first ack counts; the duplicate does not move it
        ("a", "again", 5.0),
        ("a", "again", 20.0),  # each use of a reused referenceId gets its own ack
        ("b", "dup", 50.0),  # sessions never match across each other
    ]
    summary = analyze_json("summary", str(path))
    assert summary["requests"] == [
        {
            "requests": 5,
            "acked": 4,
            "match_pct": 80.0,
            "as_expected": 4,
            "unexpected_ack_type": 0,
            "without_reference_id": 1,
        }
    ]
    (acks,) = summary["acks"]
    assert acks["acks"] == 6
    assert acks["duplicates"] == 1
    assert acks["without_request"] == 1
    assert summary["unmatched"] == [{"reason": "no referenceId", "requests": 1}]

    text = analyze("summary", str(path))
    assert text.returncode == 0
    assert "without_request" in text.stdout
    assert "Traceback" not in text.stderr


def test_a_tape_with_no_requests_at_all(tmp_path: Path) -> None:
    path = tmp_path / "empty.duckdb"
    with TapeWriter(path) as writer:
        writer.put_session(Session(session_id="e"))
    for command in ("summary", "latency", "unmatched"):
        done = analyze(command, str(path))
        assert done.returncode == 0, done.stderr
    report = tmp_path / "r.html"
    assert analyze("report", str(path), "-o", str(report)).returncode == 0
    text = report.read_text()
    assert "This tape holds no REST requests, no acks and no server-stamped messages" in text
    assert "no request was acknowledged" not in text


def test_the_views_live_in_the_tape_for_any_duckdb_client(tmp_path: Path) -> None:
    path = tmp_path / "s.duckdb"
    import_items(JsonlReader(SAMPLE).items(), path)
    conn = duckdb.connect(str(path), read_only=True)
    rows = conn.execute("SELECT operation_name, server_ms, node_ms FROM request_latency").fetchall()
    assert rows == [("DoNotCallRecord", 5.0, 4.352048)]
    names = {r[0] for r in conn.execute("SELECT view_name FROM duckdb_views()").fetchall()}
    want = {
        "requests",
        "acks",
        "request_latency",
        "unmatched_requests",
        "delivery_latency",
        "clock_offsets",
        "channel_rates",
        "gaps",
    }
    assert want <= names


def test_filters_several_tapes_and_parquet_exports_agree(tmp_path: Path) -> None:
    whole = tmp_path / "whole.duckdb"
    generate(whole, 4000, seed=3, sessions=2)
    halves = []
    for name in ("gen-0", "gen-1"):  # the same sessions split over two tapes
        half = tmp_path / f"{name}.duckdb"
        src = duckdb.connect(str(whole), read_only=True)
        with TapeWriter(half) as writer:
            writer.put_session(Session(session_id=name))
            for row in src.execute(
                "SELECT session_id, seq, t_wall_ns, t_mono_ns, direction, transport, kind, raw, "
                "exchange_id, http_method, http_path, http_status, headers, parse_error "
                "FROM frames WHERE session_id = ? ORDER BY seq",
                [name],
            ).fetchall():
                writer.write(Frame(*row))
        src.close()
        halves.append(str(half))

    by_campaign = analyze_json("latency", str(whole), "--by", "campaign")
    assert_same(analyze_json("latency", *halves, "--by", "campaign"), by_campaign)

    out = tmp_path / "export"
    done = analyze("export", str(whole), "-o", str(out))
    assert done.returncode == 0, done.stderr
    assert sorted(p.name for p in (out / "frames").iterdir()) == ["date=2026-01-01"]
    assert_same(analyze_json("latency", str(out), "--by", "campaign"), by_campaign)

    only = analyze_json("latency", str(whole), "--session", "gen-1", "--by", "campaign")
    assert_same(only, analyze_json("latency", halves[1], "--by", "campaign"))

    window = analyze_json(
        "sql",
        str(whole),
        "SELECT count(*) AS n FROM request_latency",
        "--since",
        "2026-01-01T00:00:01",
        "--until",
        "2026-01-01T00:00:02",
    )
    assert window == [{"n": 1000}]  # one request per millisecond
    (camp,) = analyze_json(
        "sql",
        str(whole),
        "SELECT count(DISTINCT campaign_name) AS n FROM acks",
        "--campaign",
        "Campaign2",
    )
    assert camp == {"n": 1}

    again = analyze("export", str(whole), "-o", str(out))
    assert again.returncode == 1
    assert "not empty" in again.stderr
    assert "--overwrite" in again.stderr
    for fmt in ("csv", "json"):
        folder = tmp_path / fmt
        assert analyze("export", str(whole), "--format", fmt, "-o", str(folder)).returncode == 0
        assert (folder / f"request_latency.{fmt}").stat().st_size > 0
    frames_json = (tmp_path / "json" / "frames.json").read_text().splitlines()
    for line in frames_json:  # every frame's raw, as the JSON text it is (any order)
        frame = orjson.loads(line)
        assert frame["raw_base64"] is False
        orjson.loads(frame["raw"])


def test_bad_input_is_one_line_and_a_usage_exit(tmp_path: Path) -> None:
    bad = analyze("latency", str(SAMPLE), "--since", "yesterday")
    assert bad.returncode == 2
    assert "is not an ISO 8601 time" in bad.stderr
    folder = tmp_path / "plain"
    folder.mkdir()
    done = analyze("summary", str(folder))
    assert done.returncode == 1
    assert "not a Parquet export" in done.stderr
    assert "Traceback" not in done.stderr
    done = analyze("sql", str(SAMPLE), "SELECT count(*) AS n FROM frames", "--format", "json")
    assert done.returncode == 0, done.stderr  # a JSONL tape is read as a tape
    assert orjson.loads(done.stdout) == [{"n": 10}]
    tape = tmp_path / "s.duckdb"
    import_items(JsonlReader(SAMPLE).items(), tape)
    done = analyze("sql", str(tape), "SELECT * FROM nosuchtable")
    assert done.returncode == 1
    assert done.stderr.startswith("Error: the query failed: Catalog Error")
    assert len(done.stderr.strip().splitlines()) == 1
    for query, code, text in (
        ("SELECT 'a'::INT", 1, "Error: the query failed: Conversion Error"),
        ("   ", 2, "the query is empty"),
    ):
        done = analyze("sql", str(tape), query)
        assert done.returncode == code, done.stderr
        assert text in done.stderr
        assert "Traceback" not in done.stderr
    done = analyze("summary", str(tape), "--session", "nosuch")
    assert done.returncode == 2
    assert "no session nosuch in these tapes; they hold: gws-dnc-0001" in done.stderr


def test_sql_reads_stdin(tmp_path: Path) -> None:
    path = tmp_path / "s.duckdb"
    import_items(JsonlReader(SAMPLE).items(), path)
    done = analyze("sql", str(path), "-", "--format", "csv", stdin="SELECT count(*) AS n FROM acks")
    assert done.stdout.splitlines() == ["n", "1"]


def test_gaps_from_lifecycle_frames(tmp_path: Path) -> None:
    path = tmp_path / "gaps.duckdb"
    events: list[dict[str, Any]] = [
        {"event": "connected", "client_id": "c1"},
        {"event": "disconnected", "reason": "connection refused"},
        {"event": "reconnecting", "reason": "connection refused", "attempt": 1},
        {"event": "gap", "gap_ms": 2000.0, "action": "retry"},
        {"event": "reconnecting", "reason": "402::Unknown client", "action": "handshake"},
        {"event": "rehandshake", "client_id": "c2", "gap_ms": 1000.0},
        {"event": "disconnected", "reason": "server went away"},
        {"event": "stopped", "reason": "interrupted"},
    ]
    with TapeWriter(path) as writer:  # one event a second, as SessionLog.lifecycle writes them
        for n, event in enumerate(events):
            t = T0 + n * 1_000_000_000
            writer.write(
                Frame("r", n + 1, t, t, "in", "long-polling", Kind.LIFECYCLE, orjson.dumps(event))
            )
        writer.put_session(Session(session_id="r", started_ns=T0, ended_ns=T0 + 8 * 10**9))
    rows = analyze_json(
        "sql",
        str(path),
        "SELECT (start_ns - " + str(T0) + ") // 1000000000 "
        "AS start_s, duration_ms, resolved_by, reason FROM gaps ORDER BY start_ns",
    )
    assert rows[:2] == [
        {"start_s": 1, "duration_ms": 2000.0, "resolved_by": "gap", "reason": "connection refused"},
        {
            "start_s": 4,
            "duration_ms": 1000.0,
            "resolved_by": "rehandshake",
            "reason": "402::Unknown client",
        },
    ]
    assert rows[2]["start_s"] == 6
    assert rows[2]["resolved_by"] is None  # still down when the recording ended
    assert rows[2]["reason"] == "server went away"


def test_clock_offset_is_bracketed_and_stated_apart(tmp_path: Path) -> None:
    """A server clock 750 ms ahead of the recorder's: the offset is found within the bracket
    its requests and acks allow, and delivery_ms removes it."""
    path = tmp_path / "skew.duckdb"
    tape = Tape()
    for n in range(20):
        tape.request("s", n * 100, f"r{n}")
        tape.ack("s", n * 100 + 8, f"r{n}")
    frames = []
    for frame in tape.frames:  # server stamped each event 5 ms after the request, +750 ms skew
        if frame.kind == Kind.BAYEUX:
            batch = orjson.loads(frame.raw)
            stamp = (frame.t_wall_ns - 3_000_000) // 1_000_000 + 750
            batch[1]["data"]["metrics"]["eventProcessing"]["serverGenerationTimestamp"] = stamp
            frame = frame.with_changes(raw=orjson.dumps(batch))
        frames.append(frame)
    tape.frames = frames
    tape.write(path)
    (offset,) = analyze_json("sql", str(path), "SELECT * FROM clock_offsets")
    assert offset["method"] == "request-bracket"
    assert offset["low_ms"] <= 750 <= offset["high_ms"]
    assert abs(offset["offset_ms"] - 750) <= offset["uncertainty_ms"]
    rows = analyze_json(
        "sql", str(path), "SELECT raw_ms, delivery_ms, offset_ms FROM delivery_latency"
    )
    assert len(rows) == 20
    for row in rows:
        assert row["delivery_ms"] == pytest.approx(row["raw_ms"] + row["offset_ms"])
        assert row["raw_ms"] == pytest.approx(3 - 750)


def test_the_cache_follows_the_tape(tmp_path: Path) -> None:
    path = tmp_path / "c.duckdb"
    tape = Tape()
    tape.request("a", 0, "r1")
    tape.ack("a", 10, "r1")
    tape.write(path)
    count = "SELECT count(*) AS n FROM request_latency"
    assert analyze_json("sql", str(path), count) == [{"n": 1}]
    with TapeWriter(path) as writer:  # the tape grows: the cached views must not be reused
        writer.write(
            Frame(
                "a",
                3,
                T0 + 10**9,
                0,
                "out",
                "http",
                Kind.HTTP_REQUEST,
                b"{}",
                exchange_id="late",
                http_method="POST",
                http_path="/x",
            )
        )
    assert analyze_json("sql", str(path), count) == [{"n": 2}]
    assert analyze_json("sql", str(path), count, "--no-cache") == [{"n": 2}]


def _downgrade_to_v1(path: Path) -> None:
    """Make `path` what cometd-tape 0.x schema v1 wrote: no http_fields table."""
    conn = duckdb.connect(str(path))
    conn.execute("DROP TABLE http_fields")
    conn.execute("UPDATE tape_meta SET value = '1' WHERE key = 'schema_version'")
    conn.close()


def test_a_schema_v1_tape_is_analysed_as_it_is_and_migrated_when_rebuilt(tmp_path: Path) -> None:
    v2 = tmp_path / "v2.duckdb"
    generate(v2, 3000, seed=5, sessions=2)
    want = analyze_json("latency", str(v2), "--by", "campaign", "--no-cache")
    conn = duckdb.connect(str(v2), read_only=True)
    http_rows = conn.execute("SELECT * FROM http_fields ORDER BY ALL").fetchall()
    conn.close()

    v1 = tmp_path / "v1.duckdb"
    v1.write_bytes(v2.read_bytes())
    _downgrade_to_v1(v1)
    # Read-only analysis derives the projection from the frames, cached or not.
    assert_same(analyze_json("latency", str(v1), "--by", "campaign", "--no-cache"), want)
    assert_same(analyze_json("latency", str(v1), "--by", "campaign"), want)
    assert "schema v1" in cometd_tape("info", str(v1)).stdout

    # Opening it for writing migrates it: the projection is filled from the frames.
    done = cometd_tape("rebuild", str(v1))
    assert done.returncode == 0, done.stderr
    assert "schema v2" in cometd_tape("info", str(v1)).stdout
    conn = duckdb.connect(str(v1), read_only=True)
    assert conn.execute("SELECT * FROM http_fields ORDER BY ALL").fetchall() == http_rows
    conn.close()
    assert_same(analyze_json("latency", str(v1), "--by", "campaign"), want)

    # An export made from a v1 tape has no http_fields folder; it is analysed all the same.
    out = tmp_path / "export"
    assert analyze("export", str(v2), "-o", str(out)).returncode == 0
    assert (out / "http_fields").is_dir()
    shutil.rmtree(out / "http_fields")
    assert_same(analyze_json("latency", str(out), "--by", "campaign"), want)


def test_only_the_views_a_command_reads_are_cached(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = tmp_path / "cache"
    monkeypatch.setenv("COMETD_TAPE_CACHE", str(folder))
    path = tmp_path / "g.duckdb"
    # Not finished, as a tape whose writer was killed: no latency stored in it, so computed.
    generate(path, 500, seed=2, sessions=1, finish=False)

    def cached() -> list[str]:
        return sorted(p.name.split(".")[1] for p in folder.glob("*.duckdb"))

    want = analyze_json("latency", str(path), "--no-cache")
    assert not folder.exists()
    assert_same(analyze_json("latency", str(path)), want)
    assert cached() == ["latency_parts"]
    assert_same(analyze_json("latency", str(path)), want)  # read back from the cache
    counts = "SELECT (SELECT count(*) FROM acks) AS a, (SELECT count(*) FROM gaps) AS g"
    assert analyze_json("sql", str(path), "--no-cache", counts) == analyze_json(
        "sql", str(path), counts
    )
    assert cached() == ["acks", "gaps", "latency_parts"]
    assert not list(folder.glob("*.building*"))

    # A cache folder that cannot be made: the answer comes all the same, uncached.
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    monkeypatch.setenv("COMETD_TAPE_CACHE", str(blocker / "cache"))
    assert_same(analyze_json("latency", str(path)), want)


def test_an_export_of_a_tape_with_no_rest_traffic_is_analysed(tmp_path: Path) -> None:
    path = tmp_path / "bayeux-only.duckdb"
    tape = Tape()
    tape.ack("a", 10, "r1")  # a recording with no REST side: http_fields stays empty
    tape.write(path)
    out = tmp_path / "export"
    assert analyze("export", str(path), "-o", str(out)).returncode == 0
    for command in ("summary", "latency", "unmatched"):
        done = analyze(command, str(out), "--format", "json")
        assert done.returncode == 0, (command, done.stderr)
    rows = analyze_json("sql", str(out), "SELECT count(*) AS n FROM acks")
    assert rows == [{"n": 1}]


def test_the_time_window_narrows_http_fields_like_the_frames(tmp_path: Path) -> None:
    path = tmp_path / "w.duckdb"
    tape = Tape()
    for n in range(10):
        tape.request("a", n * 1000, f"r{n}")  # one request (and response) a second
    tape.write(path)
    since, until = "2026-01-01T00:00:03Z", "2026-01-01T00:00:06Z"
    counts = (
        "SELECT (SELECT count(*) FROM http_fields) AS h, "
        "(SELECT count(*) FROM frames WHERE kind LIKE 'http-%') AS f"
    )
    rows = analyze_json("sql", str(path), counts, "--since", since, "--until", until)
    assert rows == [{"h": 6, "f": 6}]


def test_a_tape_given_twice_is_warned_about_and_segments_are_not(tmp_path: Path) -> None:
    whole = tmp_path / "whole.duckdb"
    generate(whole, 400, seed=4, sessions=1)
    copy = tmp_path / "copy.duckdb"
    copy.write_bytes(whole.read_bytes())
    count = "SELECT count(*) AS n FROM requests"
    (want,) = analyze_json("sql", str(whole), count)
    twice = analyze("sql", str(whole), str(copy), count, "--format", "json")
    assert twice.returncode == 0, twice.stderr
    assert orjson.loads(twice.stdout) == [want]
    assert f"warning: {copy} repeats frames of {whole} (session gen-0" in twice.stderr

    # Two segments of one recording: the same session, disjoint frames. No warning.
    src = duckdb.connect(str(whole), read_only=True)
    rows = src.execute(
        "SELECT session_id, seq, t_wall_ns, t_mono_ns, direction, transport, kind, raw, "
        "exchange_id, http_method, http_path, http_status, headers, parse_error "
        "FROM frames ORDER BY seq"
    ).fetchall()
    src.close()
    half = len(rows) // 2
    segments = []
    # Seq ranges that overlap without sharing a seq (a frame appended out of time order).
    first, second = [*rows[:half], rows[half + 1]], [rows[half], *rows[half + 2 :]]
    for n, part in enumerate((first, second)):
        segment = tmp_path / f"segment{n}.duckdb"
        with TapeWriter(segment) as writer:
            for row in part:
                writer.write(Frame(*row))
        segments.append(str(segment))
    done = analyze("sql", *segments, "SELECT count(*) AS n FROM frames", "--format", "json")
    assert done.returncode == 0, done.stderr
    assert orjson.loads(done.stdout) == [{"n": len(rows)}]
    assert "warning" not in done.stderr


def test_message_data_is_not_multiplied_by_a_repeated_tape(tmp_path: Path) -> None:
    path = tmp_path / "s.duckdb"
    import_items(JsonlReader(SAMPLE).items(), path)
    copy = tmp_path / "copy.duckdb"
    copy.write_bytes(path.read_bytes())
    counts = "SELECT (SELECT count(*) FROM messages) AS m, (SELECT count(*) FROM message_data) AS d"
    (one,) = analyze_json("sql", str(path), counts)
    assert one["m"] == one["d"] > 0
    assert analyze_json("sql", str(path), str(copy), counts) == [one]  # read once


def test_message_data_is_queryable_through_analyze_sql(tmp_path: Path) -> None:
    path = tmp_path / "s.duckdb"
    import_items(JsonlReader(SAMPLE).items(), path)
    rows = analyze_json(
        "sql",
        str(path),
        "SELECT channel, data->>'$.referenceId' AS ref FROM message_data "
        "WHERE channel = '/v2/me/outbound'",
    )
    assert rows == [{"channel": "/v2/me/outbound", "ref": "123456789"}]


def test_session_filter_gives_the_same_rows_with_and_without_the_cache(tmp_path: Path) -> None:
    path = tmp_path / "s.duckdb"
    generate(path, 300, seed=5, sessions=2)
    sql = "SELECT count(*) AS n, count(ack_ms) AS a FROM request_latency"
    cached = analyze_json("sql", str(path), sql, "--session", "gen-1")
    fresh = analyze_json("sql", str(path), sql, "--session", "gen-1", "--no-cache")
    assert cached == fresh
    assert 0 < cached[0]["n"] < 300
    out = tmp_path / "export"
    done = analyze("export", str(path), "-o", str(out), "--session", "gen-1")
    assert done.returncode == 0, done.stderr
