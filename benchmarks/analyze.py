"""Analysis benchmark: `cometd-tape analyze latency TAPE --by campaign`, timed as a whole
process, against the same computation done the way a user would in pandas, in the same run.

The tape: 5,000,000 requests (with their HTTP responses) and their acks, each ack with its
/me/internal metrics message: 10,000,000 Bayeux messages; every third ack's metrics come in a
later frame. Built by the committed, seeded generator (analysis/generate.py).

Like every tape writer, the generator stores the request -> ack latency in the tape as it
closes (analysis/stored.py); we time that step on its own. We time, each a fresh process:
  * ours, first analysis of the closed tape (reads the latency the tape stored);
  * ours, again: the same command, median of --repeats;
  * ours, on the tape before the store step (as a killed writer leaves it): the first analysis
    computes the view and caches it;
  * ours, --no-cache: the view computed from the frames, nothing stored or cached read;
  * pandas: read the tape's frames and messages into DataFrames, parse the REST bodies,
    merge requests with responses, acks with their metrics and with their requests, and take
    per-campaign quantiles (linear, as ours) of the same five parts.
The two results are compared (p50 and p99 of ack_ms per campaign must agree).

    pip install -e '.[bench]'
    python benchmarks/analyze.py [--requests 5000000] [--repeats 3]
"""

from __future__ import annotations

import argparse
import io
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def run_pandas(tape: Path) -> str:
    """The pandas way: the result as CSV text (campaign, part, count, p50, p90, p99, p99.9)."""
    import duckdb
    import numpy as np
    import pandas as pd

    conn = duckdb.connect(str(tape), read_only=True)
    frames = conn.execute(
        "SELECT session_id, seq, t_wall_ns, kind, exchange_id, http_path, raw FROM frames "
        "WHERE kind IN ('http-request', 'http-response')"
    ).df()
    messages = conn.execute(
        "SELECT session_id, seq, idx, t_wall_ns, channel, notification_type, reference_id, "
        "record_handle, user_event, node_processing_ns, server_processing_ms FROM messages "
        "WHERE channel IN ('/v2/me/outbound', '/me/internal') AND direction = 'in'"
    ).df()
    conn.close()

    bodies = pd.json_normalize([json.loads(raw) for raw in frames["raw"]])
    frames = pd.concat([frames.drop(columns="raw").reset_index(drop=True), bodies], axis=1)
    req = frames[frames.kind == "http-request"]
    resp = frames[frames.kind == "http-response"][["session_id", "exchange_id", "t_wall_ns"]]
    req = req.merge(resp, on=["session_id", "exchange_id"], how="left", suffixes=("", "_resp"))
    req["t_wall_ns_resp"] = req.t_wall_ns_resp.astype("Int64")

    acks = messages[messages.channel == "/v2/me/outbound"]
    metrics = messages[messages.channel == "/me/internal"][
        [
            "session_id",
            "seq",
            "t_wall_ns",
            "record_handle",
            "user_event",
            "node_processing_ns",
            "server_processing_ms",
        ]
    ]
    acks = acks.drop(columns=["node_processing_ns", "server_processing_ms"]).merge(
        metrics,
        left_on=["session_id", "record_handle", "notification_type"],
        right_on=["session_id", "record_handle", "user_event"],
        how="left",
        suffixes=("", "_m"),
    )
    acks["distance"] = (acks.t_wall_ns_m - acks.t_wall_ns).abs()
    acks["other_frame"] = acks.seq_m != acks.seq
    acks = acks.sort_values(["other_frame", "distance"]).drop_duplicates(
        ["session_id", "seq", "idx"]
    )
    acks = acks[
        ["session_id", "reference_id", "t_wall_ns", "node_processing_ns", "server_processing_ms"]
    ].rename(columns={"t_wall_ns": "ack_ns"})
    acks["ack_ns"] = acks.ack_ns.astype("Int64")  # NaN-able but exact: float64 would round ns

    both = req.merge(
        acks,
        left_on=["session_id", "referenceId"],
        right_on=["session_id", "reference_id"],
        how="left",
    )
    both = both[both.ack_ns.isna() | (both.ack_ns >= both.t_wall_ns)]
    both = both.sort_values("ack_ns").drop_duplicates(["session_id", "seq"])
    both = req[["session_id", "seq"]].merge(both, on=["session_id", "seq"], how="left")
    both["http_ms"] = (both.t_wall_ns_resp - both.t_wall_ns) / 1e6
    both["ack_ms"] = (both.ack_ns - both.t_wall_ns) / 1e6
    both["server_ms"] = both.server_processing_ms
    both["node_ms"] = both.node_processing_ns / 1e6
    both["rest_ms"] = both.ack_ms - both.server_ms

    out = io.StringIO()
    out.write("campaign,part,count,p50,p90,p99,p99.9\n")
    for campaign, group in both.groupby("campaignName"):
        for part in ("http_ms", "ack_ms", "server_ms", "node_ms", "rest_ms"):
            values = group[part].dropna().to_numpy(dtype=float)
            q = np.percentile(values, [50, 90, 99, 99.9]) if len(values) else [np.nan] * 4
            out.write(f"{campaign},{part},{len(values)},{q[0]},{q[1]},{q[2]},{q[3]}\n")
    return out.getvalue()


def timed(cmd: list[str], env: dict[str, str]) -> tuple[float, str, int]:
    """Wall seconds, stdout and peak RSS (KB) of a fresh process."""
    start = time.perf_counter()
    done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, check=True)
    seconds = time.perf_counter() - start
    return seconds, done.stdout, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss


def table(text: str) -> dict[tuple[str, str], list[float]]:
    rows = [line.split(",") for line in text.strip().splitlines()[1:]]
    return {(r[0], r[1]): [float(x) if x else float("nan") for x in r[2:7]] for r in rows}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=5_000_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--pandas-only", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.pandas_only:
        sys.stdout.write(run_pandas(args.pandas_only))
        return

    from analysis.generate import generate
    from tape.schema import finalize, open_for_writing
    from tape.writer import ROW_GROUP_ROWS

    with tempfile.TemporaryDirectory(prefix="bench-analysis-") as tmp:
        tape = Path(tmp) / "bench.duckdb"
        start = time.perf_counter()
        drawn = generate(tape, args.requests, args.seed, sessions=8, finish=False)
        acked = int(drawn.acked.sum())
        print(
            f"tape: {args.requests:,} requests, {acked:,} acks + {acked:,} metrics messages, "
            f"{tape.stat().st_size / 1e6:.0f} MB, built in {time.perf_counter() - start:.0f} s"
        )
        cache = Path(tmp) / "cache"
        env = {**os.environ, "COMETD_TAPE_CACHE": str(cache)}
        ours = [
            sys.executable,
            "-m",
            "tape",
            "analyze",
            "latency",
            str(tape),
            "--by",
            "campaign",
            "--format",
            "csv",
        ]
        unstored, _, _ = timed(ours, env)
        shutil.rmtree(cache)
        size = tape.stat().st_size
        start = time.perf_counter()
        conn = open_for_writing(tape, row_group_size=ROW_GROUP_ROWS)  # as the writer has it
        finalize(conn)  # what a writer does as it closes the tape
        conn.close()
        store = time.perf_counter() - start
        grown = tape.stat().st_size - size
        cold, ours_out, _ = timed(ours, env)
        warm_runs = [timed(ours, env)[0] for _ in range(args.repeats)]
        warm = statistics.median(warm_runs)
        nocache, _, _ = timed([*ours, "--no-cache"], env)
        theirs, pandas_out, rss = timed([sys.executable, __file__, "--pandas-only", str(tape)], env)

    mine, other = table(ours_out), table(pandas_out)
    agree = all(
        abs(mine[key][i] - other[key][i]) < 1e-6
        for key in other
        if key[1] == "ack_ms"
        for i in (0, 1, 3)
    )
    print(
        f"storing the latency as the writer closes the tape:  {store:8.2f} s "
        f"(tape +{grown / 1e6:.0f} MB)"
    )
    print(f"ours, first analysis of the closed tape:            {cold:8.2f} s")
    print(
        f"ours, again (median of {args.repeats}: {', '.join(f'{w:.2f}' for w in warm_runs)}):"
        f"        {warm:8.2f} s"
    )
    print(f"ours, first analysis of an unclosed tape (caches):  {unstored:8.2f} s")
    print(f"ours, --no-cache (computed from the frames):        {nocache:8.2f} s")
    print(f"pandas (read tape, parse, merge, quantiles):        {theirs:8.2f} s")
    print(
        f"ratio pandas / ours: first {theirs / cold:.1f}x, again {theirs / warm:.1f}x, "
        f"unclosed {theirs / unstored:.1f}x, no-cache {theirs / nocache:.1f}x"
    )
    print(f"results agree (ack_ms count, p50, p99 per campaign): {agree}")
    print(f"peak RSS of the largest child process: {rss / 1024:.0f} MB")


if __name__ == "__main__":
    main()
