"""Replay benchmark: messages/s delivered from our replayer (at --speed 0) to 1 and 10 WebSocket
clients and to 10 long-polling clients, against a Faye server fanning the same messages out to
the same clients in the same run; and our p99 lateness at --speed 1.

Faye publishes one stream that every client gets; ours is measured as the same fan-out
(`--clock shared`: one timeline, published to every subscriber) and, on a second line, with a
timeline per client (the default, which starts each client's copy when it subscribes).

    python benchmarks/replay.py [--messages 20000] [--processes 2] [--rounds 1]
"""

from __future__ import annotations

import argparse
import asyncio
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import orjson

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tape.frame import Frame, Session  # noqa: E402
from tape.writer import TapeWriter  # noqa: E402
from tests.peers.faye import FayeServer  # noqa: E402

COUNTER = ROOT / "benchmarks" / "count_clients.py"
PROCESSES = 1
PAD = "x" * 400


def write_tape(path: Path, count: int, spacing_s: float) -> None:
    with TapeWriter(path) as writer:
        writer.put_session(Session(session_id="bench", transport="websocket", started_ns=0))
        for i in range(count):
            raw = orjson.dumps([{"channel": "/bench", "data": {"seq": i, "pad": PAD}}])
            offset = int(i * spacing_s * 1e9)
            writer.write(Frame("bench", i + 1, offset, offset, "in", "websocket", "bayeux", raw))


def start_counters(
    url: str, transport: str, clients: int, per_client: int
) -> list[subprocess.Popen[str]]:
    """The clients, split over PROCESSES processes: one Python process parsing every message
    of 10 clients was the limit of both servers (see the README's benchmark notes)."""
    procs = []
    for part in range(PROCESSES):
        share = clients // PROCESSES + (part < clients % PROCESSES)
        if share:
            command = [sys.executable, str(COUNTER), url, transport, str(share), str(per_client)]
            procs.append(subprocess.Popen(command, stdout=subprocess.PIPE, text=True))
    for proc in procs:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        if line.strip() != "ready":
            raise SystemExit(f"counting clients failed to start: {line}")
    return procs


def finish(procs: list[subprocess.Popen[str]]) -> float:
    """Messages a second over all clients, from the first delivery any of them saw to the last
    (time.monotonic is one clock for every process)."""
    results = []
    for proc in procs:
        out, _ = proc.communicate(timeout=300)
        results.append(orjson.loads(out.strip().splitlines()[-1]))
    count = sum(r["count"] for r in results)
    first, last = min(r["first"] for r in results), max(r["last"] for r in results)
    return float(count / max(last - first, 1e-9))


def ours(tape: Path, transport: str, clients: int, count: int, clock: str = "shared") -> float:
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tape",
            "replay",
            str(tape),
            "--listen",
            "127.0.0.1:0",
            "--speed",
            "0",
            "--clock",
            clock,
        ],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert server.stdout is not None
        url = re.search(r"on (http://\S+)", server.stdout.readline())
        assert url, "the replayer did not print its URL"
        return finish(start_counters(url.group(1), transport, clients, count))
    finally:
        server.terminate()
        server.wait()


def faye(transport: str, clients: int, count: int) -> float:
    """A fresh Faye per case, as ours is: the counting clients leave without a disconnect,
    and a Faye still holding the last case's sessions slowed down round after round."""
    server = FayeServer()
    server.start()
    try:
        counters = start_counters(server.url, transport, clients, count)
        server.wait_subscribed(["/bench"], clients, timeout=60)
        server.blast("/bench", count, 500, timeout=300)
        return finish(counters)
    finally:
        server.stop()


def lateness(tmp: Path) -> tuple[float, float]:
    from replay.app import Replayer, ReplayOptions
    from replay.player import PlayOptions
    from tests.replay.test_timing import COUNT, SPACING, lateness_ms, receive_ws

    tape = tmp / "timing.duckdb"
    from tests.replay.tapes import write_tape as write_timed

    write_timed(tape, COUNT, SPACING)

    async def run() -> list[float]:
        replayer = await Replayer.start(tape, ReplayOptions(play=PlayOptions(speed=1)))
        try:
            return await receive_ws(replayer.ws_url, COUNT)
        finally:
            await replayer.stop()

    late = sorted(lateness_ms(asyncio.run(run())))
    return statistics.median(late), late[int(0.99 * len(late)) - 1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=20_000)
    parser.add_argument(
        "--processes", type=int, default=2, help="client processes the clients are split over"
    )
    parser.add_argument("--rounds", type=int, default=1, help="repeat every case this often")
    args = parser.parse_args()
    global PROCESSES
    PROCESSES = args.processes
    with tempfile.TemporaryDirectory() as tmp_dir:
        tmp = Path(tmp_dir)
        tape = tmp / "bench.duckdb"
        write_tape(tape, args.messages, 0.0)
        cases = (("websocket", 1), ("websocket", 10), ("long-polling", 10))
        ratios: dict[str, list[float]] = {}
        for _ in range(args.rounds):
            for transport, clients in cases:
                mine = ours(tape, transport, clients, args.messages)
                theirs = faye(transport, clients, args.messages)
                apart = ours(tape, transport, clients, args.messages, "per-client")
                name = f"{transport}, {clients} client(s)"
                ratios.setdefault(name, []).append(mine / theirs)
                print(
                    f"{name}, {args.messages:,} messages each: "
                    f"ours {mine:,.0f} msg/s, Faye {theirs:,.0f} msg/s; ratio "
                    f"{mine / theirs:.2f}x (ours with a timeline per client {apart:,.0f})",
                    flush=True,
                )
        if args.rounds > 1:
            for name, values in ratios.items():
                print(
                    f"{name}: ratio median {statistics.median(values):.2f}x, "
                    f"{min(values):.2f}-{max(values):.2f}x over {len(values)} rounds"
                )
        median, p99 = lateness(tmp)
        print(
            f"lateness at --speed 1 over WebSocket (2,000 events over 10 s): "
            f"median {median:.2f} ms, p99 {p99:.2f} ms"
        )
    _ = time


if __name__ == "__main__":
    main()
