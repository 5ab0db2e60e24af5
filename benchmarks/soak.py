"""Soak benchmark (issue 23, item 6): long recordings into a rotated tape set, checked end to end.

Each run starts the real CLI, `python -m tape record URL -o OUT.duckdb --rotate SIZE
--max-messages N`, samples the recorder's RSS (VmRSS of it and any child processes) every
second, and once it has stopped reads the tape set it wrote (OUT/0001.duckdb, 0002.duckdb, ...):

1. the fast source (benchmarks/fast_source.py: pre-built messages pushed over WebSocket as fast
   as it can, data.seq = 0, 1, ...), 5,000,000 messages, segments of 100MB;
2. a real Faye over long-polling, GWS pairs (/v2/me/outbound then /me/internal, recordHandle
   = 0, 1, ...) paced by Faye at --faye-rate pairs a second, 300,000 messages, segments of
   10MB (at 100MB so short a run would not rotate at all).

Printed per run: messages recorded, msg/s, segments, peak RSS, the RSS slope over the last half
of the run (MB per million messages, by least squares against the messages recorded by each
sample's time: target under 1), the gap between the last frame of each segment and the first of
the next (by t_mono_ns) beside the gaps anywhere else in the stream (max, p99.9), and PASS/FAIL
for: the recorder's exit, every message exactly once and in order across segments, the frames'
seq running on gapless across segments with the session's row in each, the RSS slope, and
`analyze latency --format json` over the set equal (floats to a relative 1e-9) to the same over
ONE tape holding the same rows (made by the writer, filled by DuckDB from the segments), and
`analyze summary` likewise; a slope a short run leaves unmeasured is a SKIP. Exits 1 if any
check fails. The load average is printed: other work on the two cores lowers rates, adds gaps.

    python benchmarks/soak.py [--fast-messages 5000000] [--faye-messages 300000] [--keep DIR]

`--fast-messages 0` or `--faye-messages 0` skips that run; --help lists the other options. The
tapes go to a temporary folder, removed at the end, unless `--keep DIR` (new or empty) keeps them.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import math
import os
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import duckdb
import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.record import FAST_SOURCE, _hwm_kb  # noqa: E402  (the source, VmHWM reader)
from tape.writer import TapeWriter  # noqa: E402
from tests.peers.faye import GWS_CHANNELS, FayeServer  # noqa: E402

STOP_GRACE_S = 60.0  # after SIGTERM, how long the recorder may take to close its segment
SLOPE_TARGET = 1.0  # MB of RSS per million messages, over the last half of a run
REL_TOL = 1e-9
# The payload's own sequence number of each message (m: messages, f: its frame)
FAST_KEY = "CAST(json_extract_string(decode(f.raw), '$[' || m.idx || '].data.seq') AS BIGINT)"
GWS_KEY = "CAST(m.record_handle AS BIGINT)"


@dataclass
class Run:
    """One recording: what was asked, and what the recorder and the sampler saw."""

    name: str
    folder: Path  # the tape set
    expected: int
    channels: tuple[str, ...]
    key_sql: str
    command: list[str] = field(default_factory=list)
    started: float = math.nan  # when the source began sending (time.monotonic())
    ended: float = math.nan  # when the recorder had exited
    returncode: int | None = None
    timed_out: bool = False
    samples: list[tuple[int, float]] = field(default_factory=list)  # (time.time_ns(), RSS MB)
    hwm_mb: float = 0.0
    log: Path = Path()


class RssSampler(threading.Thread):
    """VmRSS of a process and its descendants every `interval` s, as (time_ns, MB)."""

    def __init__(self, pid: int, interval: float) -> None:
        super().__init__(name="rss-sampler", daemon=True)
        self.pid, self.interval = pid, interval
        self.samples: list[tuple[int, float]] = []
        self.hwm_kb = 0
        self._done = threading.Event()

    def run(self) -> None:
        while not self._done.is_set():
            kb = sum(_vm_rss_kb(pid) for pid in _family(self.pid))
            if kb:
                self.samples.append((time.time_ns(), kb / 1024))
            self.hwm_kb = max(self.hwm_kb, _hwm_kb(self.pid))
            self._done.wait(self.interval)

    def stop(self) -> None:
        self._done.set()
        self.join()


def _vm_rss_kb(pid: int) -> int:
    with contextlib.suppress(OSError), open(f"/proc/{pid}/status") as status:  # OSError: gone
        return next((int(x.split()[1]) for x in status if x.startswith("VmRSS:")), 0)
    return 0


def _family(root: int) -> list[int]:
    """`root` and every process descending from it (/proc/PID/task/TID/children)."""
    family, todo = [], [root]
    while todo:
        family.append(pid := todo.pop())
        for children in Path(f"/proc/{pid}/task").glob("*/children"):
            with contextlib.suppress(OSError, ValueError):
                todo.extend(int(child) for child in children.read_text().split())
    return family


def start_recorder(run: Run, url: str, transport: str, rotate: str) -> subprocess.Popen[bytes]:
    out = run.folder.with_suffix(".duckdb")
    cmd = [sys.executable, "-m", "tape", "record", url, "-o", str(out), "--rotate", rotate]
    cmd += ["--transport", transport, "--max-messages", str(run.expected)]
    for channel in run.channels:
        cmd += ["-c", channel]
    run.command = cmd
    run.log = run.folder.with_suffix(".log")
    with open(run.log, "wb") as log:
        return subprocess.Popen(cmd, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)


def finish(run: Run, proc: subprocess.Popen[bytes], sampler: RssSampler, deadline: float) -> None:
    """Wait for the recorder until `deadline`; past it, SIGTERM (it closes its segment), then
    SIGKILL. Only this process, by its pid."""
    try:
        proc.wait(timeout=max(0.0, deadline - time.monotonic()))
    except subprocess.TimeoutExpired:
        run.timed_out = True
        proc.terminate()
        try:
            proc.wait(timeout=STOP_GRACE_S)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    run.ended = time.monotonic()
    run.returncode = proc.returncode
    sampler.stop()
    run.samples, run.hwm_mb = sampler.samples, sampler.hwm_kb / 1024


def fast_run(args: argparse.Namespace, work: Path) -> Run:
    name = f"fast source -> websocket, {args.per_frame} msg/frame, --rotate {args.fast_rotate}"
    run = Run(name, work / "fast", args.fast_messages, ("/bench",), FAST_KEY)
    blast = [sys.executable, str(FAST_SOURCE), str(run.expected), str(args.per_frame)]
    source = subprocess.Popen(blast, stdout=subprocess.PIPE, text=True)
    try:
        assert source.stdout is not None
        port = int(source.stdout.readline())
        url = f"http://127.0.0.1:{port}/cometd"
        proc = start_recorder(run, url, "websocket", args.fast_rotate)
        sampler = RssSampler(proc.pid, args.sample_interval)
        sampler.start()
        finish(run, proc, sampler, time.monotonic() + args.timeout)
    finally:
        source.kill()  # it never ends by itself; its "started T" line is in the pipe
        source.wait()
    said = source.stdout.read().split() if source.stdout else []
    run.started = float(said[1]) if said[:1] == ["started"] else math.nan
    return run


def faye_run(args: argparse.Namespace, work: Path) -> Run:
    name = f"Faye -> long-polling, GWS pairs at {args.faye_rate:g}/s, --rotate {args.faye_rotate}"
    run = Run(name, work / "faye", args.faye_messages, GWS_CHANNELS, GWS_KEY)
    pairs = (run.expected + 1) // 2
    with FayeServer() as faye:
        proc = start_recorder(run, faye.url, "long-polling", args.faye_rotate)
        sampler = RssSampler(proc.pid, args.sample_interval)
        sampler.start()
        deadline = 0.0  # unless Faye publishes: then stop the recorder at once
        try:
            faye.wait_subscribed(GWS_CHANNELS, timeout=60)
            # a whole number of ms: Faye then publishes at least `pairs` (the recorder stops at N)
            paced = faye.pace(args.faye_rate, math.ceil(pairs * 1000 / args.faye_rate) / 1000)
            run.started = float(paced["started_monotonic_ns"]) / 1e9
            deadline = time.monotonic() + args.timeout
        finally:
            finish(run, proc, sampler, deadline)
    return run


def attach(conn: duckdb.DuckDBPyConnection, segs: list[Path]) -> None:
    for i, seg in enumerate(segs, 1):
        conn.execute(f"ATTACH '{seg}' AS s{i} (READ_ONLY)")


def union(segs: list[Path], select: str) -> str:
    """`select` (with {i}: the segment's number and schema s{i}) over every segment."""
    return " UNION ALL ".join(select.format(i=i) for i in range(1, len(segs) + 1))


def load(run: Run, segs: list[Path]) -> duckdb.DuckDBPyConnection:
    """An in-memory DuckDB with every segment attached read-only, and temp tables `f` (every
    frame: seg, seq, t_mono_ns) and `msgs` (the source's messages with their payload key)."""
    conn = duckdb.connect()
    attach(conn, segs)
    conn.execute(
        "CREATE TEMP TABLE f AS "
        + union(segs, "SELECT {i} AS seg, session_id, seq, t_mono_ns, t_wall_ns FROM s{i}.frames")
    )
    channels = ", ".join(f"'{c}'" for c in run.channels)
    conn.execute(
        "CREATE TEMP TABLE msgs AS "
        + union(
            segs,
            "SELECT {i} AS seg, m.seq, m.idx, m.channel, m.t_mono_ns, m.t_wall_ns, "
            + run.key_sql
            + " AS key FROM s{i}.messages m JOIN s{i}.frames f USING (session_id, seq) "
            + f"WHERE m.channel IN ({channels})",
        )
    )
    return conn


def one(conn: duckdb.DuckDBPyConnection, sql: str) -> tuple[Any, ...]:
    return tuple(conn.execute(sql).fetchall()[0])


def check_order(conn: duckdb.DuckDBPyConnection) -> tuple[bool, str]:
    """Per channel, the payload keys in (seq, idx) order across segments are 0, 1, ..., n-1."""
    rows = conn.execute(
        """WITH k AS (SELECT channel, key,
                             row_number() OVER (PARTITION BY channel ORDER BY seq, idx) - 1 AS want
                      FROM msgs)
           SELECT channel, count(*), count(DISTINCT key), max(key),
                  count(*) FILTER (WHERE key IS DISTINCT FROM want),
                  min(want) FILTER (WHERE key IS DISTINCT FROM want)
           FROM k GROUP BY channel ORDER BY channel"""
    ).fetchall()
    parts, ok = [], bool(rows)
    for channel, n, distinct, top, wrong, first in rows:
        ok = ok and wrong == 0
        missing = (top + 1 - distinct) if top is not None else 0
        what = f"{channel}: {n:,}, {n - distinct:,} repeated, {missing:,} missing"
        parts.append(what + (f", out of place from #{first}" if wrong else ""))
    return ok, "; ".join(parts) or "no messages"


def check_seq(conn: duckdb.DuckDBPyConnection, segs: list[Path]) -> tuple[bool, str]:
    """seq gapless and unique over the set, each segment after the one before, and each
    segment's sessions table holding the row of every session it has frames of."""
    n, distinct, lo, hi = one(
        conn, "SELECT count(*), count(DISTINCT seq), min(seq), max(seq) FROM f"
    )
    bounds = conn.execute(
        "SELECT seg, min(seq), max(seq) FROM f GROUP BY seg ORDER BY seg"
    ).fetchall()
    ordered = all(a[2] < b[1] for a, b in itertools.pairwise(bounds))
    rows = union(
        segs,
        "SELECT count(*) FROM (SELECT DISTINCT session_id FROM s{i}.frames) "
        "WHERE session_id NOT IN (SELECT session_id FROM s{i}.sessions)",
    )
    lacking = sum(r[0] for r in conn.execute(rows).fetchall())
    ok = n == distinct == hi - lo + 1 and ordered and lacking == 0
    said = f"{n:,} frames, seq {lo}..{hi}, {n - distinct} repeated, segments in order: {ordered}"
    return ok, f"{said}, segments lacking their session's row: {lacking}"


def gaps(conn: duckdb.DuckDBPyConnection) -> tuple[list[tuple[int, float]], tuple[Any, ...]]:
    """([(segment, ms from the last frame of the one before to its first)], (max, p99.9, p99,
    p50 ms, the longest's seq, segment and s into the session) of the other gaps between
    consecutive frames while the messages flowed)."""
    conn.execute(
        """CREATE TEMP TABLE g AS
           SELECT seg, seq, t_mono_ns, (t_mono_ns - lag(t_mono_ns) OVER w) / 1e6 AS gap_ms,
                  seg <> lag(seg) OVER w AS boundary
           FROM f WINDOW w AS (ORDER BY seq)"""
    )
    at = conn.execute("SELECT seg, gap_ms FROM g WHERE boundary ORDER BY seg").fetchall()
    other = one(
        conn,
        """SELECT max(gap_ms), quantile_cont(gap_ms, 0.999), quantile_cont(gap_ms, 0.99),
                  median(gap_ms), arg_max(seq, gap_ms), arg_max(seg, gap_ms),
                  arg_max(t_mono_ns, gap_ms) / 1e9
           FROM g WHERE NOT boundary
             AND seq > (SELECT min(seq) FROM msgs) AND seq <= (SELECT max(seq) FROM msgs)""",
    )
    return [(int(s), float(ms)) for s, ms in at], other


def rss_slope(run: Run, conn: duckdb.DuckDBPyConnection) -> tuple[float, int, str]:
    """Least-squares slope of RSS (MB) against messages recorded (millions) over the samples
    of the last half of the time the messages flowed; (slope, samples, range)."""
    # t_mono_ns counts from the session's start: the samples meet the messages by wall clock
    times = conn.execute("SELECT t_wall_ns FROM msgs ORDER BY t_wall_ns").fetchnumpy()["t_wall_ns"]
    if len(times) < 2 or not run.samples:
        return math.nan, 0, "no messages or samples"
    first, last = int(times[0]), int(times[-1])
    half = [(t, mb) for t, mb in run.samples if (first + last) / 2 <= t <= last]
    counts = np.searchsorted(times, [t for t, _ in half], side="right") / 1e6
    if len(half) < 3 or counts[-1] <= counts[0]:
        return math.nan, len(half), "too few samples"
    mbs = [mb for _, mb in half]
    span = f"{counts[0]:.2f}M -> {counts[-1]:.2f}M msgs, {mbs[0]:.0f} -> {mbs[-1]:.0f} MB"
    return float(np.polyfit(counts, mbs, 1)[0]), len(half), span


def per_segment(run: Run, conn: duckdb.DuckDBPyConnection) -> str:
    """The RSS samples' range while each segment was written (by its frames' wall clock)."""
    spans = conn.execute(
        "SELECT seg, min(t_wall_ns), max(t_wall_ns) FROM f GROUP BY seg ORDER BY seg"
    )
    said = []
    for seg, lo, hi in spans.fetchall():
        mbs = [mb for t, mb in run.samples if lo <= t <= hi]
        said.append(f"{seg:04d} " + (f"{min(mbs):.0f}-{max(mbs):.0f}" if mbs else "no sample"))
    return ", ".join(said)


def build_one_tape(segs: list[Path], out: Path) -> None:
    """One tape made by the writer (its schema, views, meta), filled with every segment's
    frames, messages and http_fields, and each session's row from the last segment holding it."""
    TapeWriter(out).close(finalize=False)
    conn = duckdb.connect(str(out))
    try:
        attach(conn, segs)
        conn.execute("BEGIN")
        for table in ("frames", "messages", "http_fields"):
            conn.execute(f"INSERT INTO {table} " + union(segs, f"SELECT * FROM s{{i}}.{table}"))
        conn.execute(
            "INSERT INTO sessions SELECT * EXCLUDE (seg) FROM ("
            + union(segs, "SELECT {i} AS seg, * FROM s{i}.sessions")
            + ") QUALIFY row_number() OVER (PARTITION BY session_id ORDER BY seg DESC) = 1"
        )
        conn.execute("COMMIT")
        conn.execute("CHECKPOINT")
    finally:
        conn.close()


def analyze_json(command: str, tapes: str, work: Path, timeout: float) -> Any:
    env = {**os.environ, "COMETD_TAPE_CACHE": str(work / "cache")}  # not the user's cache
    cmd = [sys.executable, "-m", "tape", "analyze", command, tapes, "--format", "json"]
    done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, timeout=timeout, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd[2:])}: exit {done.returncode}: {done.stderr.decode()}")
    return json.loads(done.stdout)


def same(a: Any, b: Any) -> bool:
    """Equal, floats to a relative REL_TOL (sums in another order differ in the last digits)."""
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, float | int) and isinstance(b, float | int) and not isinstance(a, bool):
        return math.isclose(a, b, rel_tol=REL_TOL, abs_tol=1e-12)
    return bool(a == b)


def check_latency(folder: Path, work: Path, timeout: float) -> tuple[bool, str]:
    """`analyze latency` (and `analyze summary`, which has something to compare even when the
    messages carry no timing fields) over the set and over one tape of the same rows."""
    single = folder.with_name(folder.name + "-one.duckdb")
    started = time.monotonic()
    build_one_tape(sorted(folder.glob("*.duckdb")), single)
    built, said, ok = time.monotonic() - started, [], True
    for command in ("latency", "summary"):
        of_set = analyze_json(command, f"{folder}/", work, timeout)
        of_one = analyze_json(command, str(single), work, timeout)
        ok = ok and same(of_set, of_one)
        said.append(f"{command} {'equal' if same(of_set, of_one) else 'DIFFERENT'}")
        if command == "latency":
            said[-1] += f" ({len(of_set)} rows over the set, {len(of_one)} over one tape)"
    took = time.monotonic() - started - built
    return ok, f"{', '.join(said)}; one tape built in {built:.1f} s, analysed in {took:.1f} s"


def report(run: Run, work: Path, timeout: float) -> list[bool]:
    """Print what the run measured and its checks; returns the checks' results."""
    print(f"\n== {run.name}: {run.expected:,} messages ==", flush=True)
    print("command:  " + " ".join(run.command[1:]).replace(str(work), "$TMP"))
    print(f"load avg: {' '.join(f'{x:.2f}' for x in os.getloadavg())} (after the run)")
    said = [line for line in run.log.read_text(errors="replace").splitlines() if line.strip()]
    print("recorder: " + next((x for x in reversed(said) if x.startswith("recorded ")), "-"))
    segs = sorted(run.folder.glob("*.duckdb"))
    if not segs:
        print("\n".join(said[-20:]))
        print(f"FAIL  recorder exit {run.returncode}, timed out: {run.timed_out}, no segments")
        return [False]
    with load(run, segs) as conn:
        n, t0, t1 = one(conn, "SELECT count(*), min(t_mono_ns), max(t_mono_ns) FROM msgs")
        slope = measured(run, conn, segs, n, (t1 - t0) / 1e9)
        exit_ok = run.returncode == 0 and not run.timed_out and n == run.expected
        exited = f"recorder exit {run.returncode}, {n:,} of {run.expected:,} messages"
        target = f"{slope:+.2f} MB per million messages (target < {SLOPE_TARGET:g})"
        checks = {
            "recorded": (exit_ok, exited + (", timed out" if run.timed_out else "")),
            "once, in order": check_order(conn),
            "seq, sessions": check_seq(conn, segs),
            "RSS slope": (slope < SLOPE_TARGET, target),
        }
    if math.isnan(slope):  # too short a run to tell
        checks.pop("RSS slope")
        print("SKIP  RSS slope: not measured, too few samples over the last half of the run")
    for name, (ok, text) in checks.items():
        print(f"{'PASS' if ok else 'FAIL'}  {name}: {text}", flush=True)
    try:
        checks["latency"] = check_latency(run.folder, work, timeout)
    except (RuntimeError, subprocess.TimeoutExpired, duckdb.Error) as exc:
        checks["latency"] = (False, str(exc))
    ok, text = checks["latency"]
    print(f"{'PASS' if ok else 'FAIL'}  analyze, set == one tape: {text}")
    return [ok for ok, _ in checks.values()]


def measured(
    run: Run, conn: duckdb.DuckDBPyConnection, segs: list[Path], n: int, flowed_s: float
) -> float:
    """Print the rates, segments, RSS and gaps; returns the RSS slope."""
    sizes = ", ".join(f"{p.stat().st_size / 1e6:.1f}" for p in segs)
    peak = max((mb for _, mb in run.samples), default=math.nan)
    slope, used, span = rss_slope(run, conn)
    at, (o_max, o_999, o_99, o_50, o_seq, o_seg, o_s) = gaps(conn)
    flowing = n / flowed_s if flowed_s > 0 else math.nan
    print(f"messages recorded   {n:,} (asked for {run.expected:,})")
    print(f"rate                {n / (run.ended - run.started):,.0f} msg/s from the source's first")
    print(f"                    send to the recorder's exit (set closed); {flowing:,.0f} msg/s")
    print("                    from the first message received to the last")
    print(f"segments            {len(segs)} ({sizes} MB)")
    print(f"peak RSS            {peak:.0f} MB ({len(run.samples)} samples of VmRSS, recorder and")
    print(f"                    children); the recorder's VmHWM as last read {run.hwm_mb:.0f} MB")
    print(f"RSS per segment     {per_segment(run, conn)} MB (lowest-highest sample)")
    print(f"RSS slope           {slope:+.2f} MB per million messages over the last half")
    print(f"                    ({used} samples, {span})")
    for seg, ms in at:
        print(f"gap at rotation     {seg - 1:04d} -> {seg:04d}: {ms:.1f} ms")
    print(f"longest at rotation {max((ms for _, ms in at), default=math.nan):.1f} ms")
    print(f"gaps elsewhere      max {o_max:.1f} ms (before seq {o_seq} in {o_seg:04d}, {o_s:.1f} s")
    print(f"                    in), p99.9 {o_999:.2f} ms, p99 {o_99:.2f} ms, median {o_50:.3f}")
    print("                    ms (between consecutive frames while messages flowed)")
    return slope


OPTIONS: list[tuple[str, str, type, Any, str]] = [  # flag, metavar, type, default, help
    ("--fast-messages", "N", int, 5_000_000, "from the fast source (0 skips)"),
    ("--faye-messages", "N", int, 300_000, "from Faye over long-polling (0 skips)"),
    ("--per-frame", "N", int, 1, "messages per frame from the fast source"),
    ("--faye-rate", "PAIRS", float, 10_000, "GWS pairs a second Faye publishes"),
    ("--fast-rotate", "SIZE", str, "100MB", "--rotate of the fast source run"),
    ("--faye-rotate", "SIZE", str, "10MB", "--rotate of the Faye run"),
    ("--timeout", "S", float, 1800, "seconds per recording (and per analysis)"),
    ("--sample-interval", "S", float, 1.0, "seconds between RSS samples"),
    ("--keep", "DIR", Path, None, "write the tapes here (a new or empty folder) and keep them"),
]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=_Help)
    parser.epilog = __doc__.split("\n\n", 1)[1]
    for flag, metavar, kind, default, text in OPTIONS:
        parser.add_argument(flag, metavar=metavar, type=kind, default=default, help=text)
    args = parser.parse_args()
    with _workdir(args.keep) as work:
        results: list[bool] = []
        for count, run_it in ((args.fast_messages, fast_run), (args.faye_messages, faye_run)):
            if count > 0:
                results += report(run_it(args, work), work, args.timeout)
    failed = results.count(False)
    print(f"\n{len(results) - failed} checks passed, {failed} failed")
    return 1 if failed else 0


class _Help(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
    pass


@contextlib.contextmanager
def _workdir(keep: Path | None) -> Iterator[Path]:
    """A temporary folder removed at the end, or `keep` (which must be new or empty)."""
    if keep is None:
        with tempfile.TemporaryDirectory(prefix="soak-") as tmp:
            yield Path(tmp)
        return
    keep.mkdir(parents=True, exist_ok=True)
    if any(keep.iterdir()):
        raise SystemExit(f"{keep} is not empty: give --keep a new or empty folder")
    yield keep.resolve()


if __name__ == "__main__":
    sys.exit(main())
