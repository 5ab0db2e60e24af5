"""Round-trip timing benchmark: record Faye into tape A, replay A at --speed 1 and record the
replay into tape B (as tests/replay/test_round_trip.py does), then print how closely B's
inter-arrival gaps follow A's: the median and p99 of |B - A| per gap, over each transport.

The test holds order, completeness and pacing within generous bounds; these figures are the
precise part, kept out of the test suite because they depend on the machine's load.

    python benchmarks/round_trip.py [--rounds 3]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.peers.faye import FayeServer  # noqa: E402
from tests.replay.test_round_trip import gap_differences_ms, round_trip  # noqa: E402

TRANSPORTS = ("websocket", "long-polling")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=1, help="repeat each transport this often")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        for n in range(args.rounds):
            for transport in TRANSPORTS:
                with FayeServer() as faye:
                    a_path = Path(tmp) / f"a-{transport}-{n}.duckdb"
                    b_path = Path(tmp) / f"b-{transport}-{n}.duckdb"
                    a, b = asyncio.run(round_trip(faye, transport, a_path, b_path))
                diff = gap_differences_ms(a, b)
                median, p99 = statistics.median(diff), diff[int(len(diff) * 0.99) - 1]
                print(
                    f"{transport}: {len(a)} deliveries, inter-arrival |B - A| "
                    f"median {median:.2f} ms, p99 {p99:.2f} ms",
                    flush=True,
                )


if __name__ == "__main__":
    main()
