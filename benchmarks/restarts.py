"""Re-handshake after the server forgets the session: the recorder against cometd-nodejs-server.

For each scenario, one `cometd-tape record --transport long-polling` process and one server
(a Node child process, tests/peers/cometd_server.js) go through N repetitions:

- restart-2s / restart-10s: the server is killed, stays down 2 s / 10 s, and starts again on
  the same port; the recorder's next connect gets `402::session_unknown`.
- expire: the recorder is SIGSTOPped until the server has expired its session (maxInterval 1 s,
  connects held 1 s), then SIGCONTed; its next connect gets `402::session_unknown`.

From the tape: the time from the frame carrying the 402 to the first outgoing /meta/handshake
(p50/p99/max, nearest rank), and whether every message the server published after the new
subscription (a stream of sequence-numbered messages at 200/s) is in the tape.

    python benchmarks/restarts.py [--repetitions 20] [--scenario restart-2s restart-10s expire]

Exits 1 if any repetition took over 100 ms or lost a message. The 10 s scenario takes about
20 x 16 s: the recorder's backoff while the server is down (0, 0.5, 1, 2, 4, 8 s) sets when it
finds the new server, the re-handshake after that is what is measured.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.recorder import cometd_scenarios as scenarios  # noqa: E402  (shared with the tests)

LIMIT_MS = 100.0
SCENARIOS: dict[str, tuple[scenarios.Kind, float]] = {
    "restart-2s": ("restart", 2.0),
    "restart-10s": ("restart", 10.0),
    "expire": ("expire", 0.0),
}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repetitions", type=int, default=20)
    parser.add_argument("--scenario", nargs="+", choices=list(SCENARIOS), default=list(SCENARIOS))
    args = parser.parse_args()
    failed = False
    rows: list[str] = []
    with tempfile.TemporaryDirectory(prefix="cometd-restarts-") as folder:
        for name in args.scenario:
            kind, outage = SCENARIOS[name]
            started = time.monotonic()
            result = scenarios.run(
                kind,
                args.repetitions,
                Path(folder) / f"{name}.duckdb",
                outage_s=outage,
                progress=True,
            )
            seconds = time.monotonic() - started
            ok, row = report(name, result, args.repetitions, seconds)
            rows.append(row)
            failed |= not ok
    print()
    print(
        f"{'scenario':<12} {'n':>3} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8} "
        f"{'checked':>8} {'lost':>5}  recorder gap p50"
    )
    for row in rows:
        print(row)
    return 1 if failed else 0


def report(
    name: str, result: scenarios.Result, repetitions: int, seconds: float
) -> tuple[bool, str]:
    times = result.rehandshake_ms
    checked = sum(len(r.expected) for r in result.repetitions)
    lost = sum(len(r.missing) for r in result.repetitions)
    gaps = [r.gap_ms for r in result.repetitions if r.gap_ms is not None]
    print(
        f"\n{name}: {len(result.repetitions)} repetitions in {seconds:.0f} s, recorder exit "
        f"{result.recorder_exit}, {result.unknown_client_replies} unknown-session replies"
    )
    for rep in result.repetitions:
        shown = "-" if rep.rehandshake_ms is None else f"{rep.rehandshake_ms:.3f}"
        gap = "-" if rep.gap_ms is None else f"{rep.gap_ms:.0f}"
        print(
            f"  #{rep.index + 1:<2} {rep.error}  402 -> handshake {shown} ms  recorder gap "
            f"{gap} ms  after re-subscribe {len(rep.expected)} published, "
            f"{len(rep.missing)} lost"
        )
    ok = (
        result.recorder_exit == 0
        and len(times) == repetitions
        and result.unknown_client_replies == repetitions
        and all(t <= LIMIT_MS for t in times)
        and lost == 0
    )
    if result.recorder_exit != 0:
        print(result.recorder_stderr[-2000:])
    if not times:
        return False, f"{name:<12} {0:>3} (no measurement)"
    gap_p50 = f"{statistics.median(gaps):.0f} ms" if gaps else "-"
    row = (
        f"{name:<12} {len(times):>3} {scenarios.percentile(times, 50):>8.3f} "
        f"{scenarios.percentile(times, 99):>8.3f} {max(times):>8.3f} {checked:>8} {lost:>5}  "
        f"{gap_p50}{'' if ok else '  FAILED'}"
    )
    return ok, row


if __name__ == "__main__":
    sys.exit(main())
