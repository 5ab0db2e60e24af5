"""Recorder benchmark: messages/s recorded end to end (tape committed) and peak RSS.

1. From a real Faye server publishing as fast as it can: our recorder (a `cometd-tape record`
   process) and an aiocometd-ng client that only counts, against the same server in the same
   run, with the ratio. Each rate runs from Faye's first publish (as Faye reports it, on the
   monotonic clock every process shares) to the client's last message: for ours, to the
   recorder's exit, everything committed and the tape closed. Over WebSocket, Faye writes each
   message to the socket as it publishes, so the rate of its publish loop is printed too: a
   recorder that keeps up records at most that.
2. From a fast local Bayeux source (a small aiohttp server in a child process) that pushes
   messages over WebSocket as fast as it can, to find our own ceiling; RSS over 1M messages.

    python benchmarks/record.py [--faye-messages 200000] [--fast-messages 1000000]
                                [--transport websocket|long-polling|both] [--per-frame 1 10]
                                [--rounds 1]

`--faye-messages 0` or `--fast-messages 0` skips that part. `--rounds N` runs N pairs against Faye
per transport (the pair's order turning each round) and ends with the ratio's median and range.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import duckdb
import orjson

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.peers.faye import FayeServer  # noqa: E402  (the real peer, as the tests use it)

VIA = os.environ.get("FAYE_VIA", "engine")
PAD = "x" * 400  # ~500-byte messages, as PEERS.md measured Faye


def record_process(url: str, out: Path, count: int, transport: str) -> subprocess.Popen[bytes]:
    cmd = [
        sys.executable,
        "-m",
        "tape",
        "record",
        url,
        "-o",
        str(out),
        "-c",
        "/bench",
        "--transport",
        transport,
        "--max-messages",
        str(count),
    ]
    return subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def wait_rss(proc: subprocess.Popen[bytes], timeout: float) -> tuple[float, int]:
    """Wait for the child; return (seconds waited, its peak RSS in MB).

    The peak is the child's VmHWM, read while it runs, not wait4's ru_maxrss: that one survives
    exec, so it counted the pages of this (forked) benchmark process, ~400 MB once aiocometd-ng
    had held 200k messages here, rather than the recorder's own."""
    start = time.monotonic()
    peak_kb = 0
    while time.monotonic() < start + timeout:
        peak_kb = max(peak_kb, _hwm_kb(proc.pid))
        pid, status, usage = os.wait4(proc.pid, os.WNOHANG)  # not poll(): it would reap the child
        if pid:
            proc.returncode = os.waitstatus_to_exitcode(status)
            return time.monotonic() - start, (peak_kb or usage.ru_maxrss) // 1024
        time.sleep(0.005)
    proc.kill()
    raise SystemExit(
        f"recorder did not finish: {proc.stderr.read().decode() if proc.stderr else ''}"
    )


def _hwm_kb(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except OSError:  # gone, or no /proc
        pass
    return 0


def check_tape(tape: Path, count: int, proc: subprocess.Popen[bytes]) -> float:
    """The figure counts only if the tape holds every message (exactly once is the interop
    tests' job). If not, say what the recorder said, and how its session ended. Returns the
    largest frame's MB: over long-polling, the peak RSS goes with the biggest reply."""
    with duckdb.connect(str(tape), read_only=True) as conn:
        row = conn.execute("SELECT count(*) FROM messages WHERE channel = '/bench'").fetchone()
        if row is not None and row[0] == count:
            largest = conn.execute("SELECT max(octet_length(raw)) FROM frames").fetchone()
            return (largest[0] if largest else 0) / 2**20
        ends = conn.execute("SELECT end_reason FROM sessions").fetchall()
        lifecycle = conn.execute(
            "SELECT seq, decode(raw) FROM frames WHERE kind = 'lifecycle' ORDER BY seq"
        ).fetchall()
    said = proc.stderr.read().decode(errors="replace")[-2000:] if proc.stderr else ""
    raise SystemExit(
        f"{tape.name}: {row} /bench messages recorded, not {count} (recorder exit "
        f"{proc.returncode}; sessions ended {ends}; lifecycle {lifecycle[-10:]}):\n{said}"
    )


def ours_from_faye(
    faye: FayeServer, count: int, transport: str, tmp: Path
) -> tuple[float, int, float, float]:
    """(msg/s recorded, peak RSS in MB, msg/s Faye published at meanwhile, largest frame MB)."""
    tape = tmp / f"faye-{transport}.duckdb"
    for earlier in (tape, tape.with_name(tape.name + ".wal")):  # an earlier round's
        earlier.unlink(missing_ok=True)
    proc = record_process(faye.url, tape, count, transport)
    faye.wait_subscribed(["/bench"], timeout=30)
    published = faye.blast("/bench", count, 500, timeout=120, via=VIA)
    _, rss = wait_rss(proc, 120)
    rate = count / (time.monotonic() - _started(published))
    largest = check_tape(tape, count, proc)
    return rate, rss, count * 1000 / published["elapsed_ms"], largest


def _started(published: dict[str, Any]) -> float:
    """When Faye began publishing, on our monotonic clock: both clients' rates run from there
    (as from the fast source's first send), not from the blast command, which first spent
    ~0.3-0.4 s building 200k messages in Node before publishing the first."""
    return float(published["started_monotonic_ns"]) / 1e9


async def aiocometd_from_faye(faye: FayeServer, count: int, transport: str) -> tuple[float, float]:
    """(msg/s aiocometd-ng counted, msg/s Faye published at meanwhile)."""
    from aiocometd_ng import Client, ConnectionType
    from aiocometd_ng.extensions import Extension

    class FirstConnectAtOnce(Extension):  # PEERS.md: Faye holds the first connect otherwise
        def __init__(self) -> None:
            self.done = False

        async def outgoing(self, payload: list[dict[str, Any]], headers: Any) -> None:
            for message in payload:
                if message.get("channel") == "/meta/connect" and not self.done:
                    message["advice"] = {"timeout": 0}
                    self.done = True

        async def incoming(self, payload: list[dict[str, Any]], headers: Any = None) -> None:
            pass

    kind = ConnectionType.WEBSOCKET if transport == "websocket" else ConnectionType.LONG_POLLING
    loop = asyncio.get_running_loop()

    def quiet_cancel(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        # aiocometd-ng's transports log their own tasks' cancellation when the client closes
        if not isinstance(context.get("exception"), asyncio.CancelledError):
            loop.default_exception_handler(context)

    loop.set_exception_handler(quiet_cancel)
    client = Client(
        faye.url,
        kind,
        extensions=[FirstConnectAtOnce()],
        max_pending_count=10**7,
        json_loads=orjson.loads,
    )
    async with client:
        await client.subscribe("/bench")
        await faye.await_subscribed(["/bench"])
        blast = asyncio.get_running_loop().create_task(
            faye.ablast("/bench", count, 500, timeout=120, via=VIA)
        )
        received = 0
        async for _ in client:
            received += 1
            if received >= count:
                break
        end = time.monotonic()
        published = await blast
    return count / (end - _started(published)), count * 1000 / published["elapsed_ms"]


def faye_pair(
    faye: FayeServer, count: int, transport: str, tmp: Path, *, ours_first: bool
) -> float:
    """Ours and aiocometd-ng from the same Faye, one after the other: prints, returns the ratio."""
    if ours_first:
        ours, rss, ours_pub, largest = ours_from_faye(faye, count, transport, tmp)
        peer, peer_pub = asyncio.run(aiocometd_from_faye(faye, count, transport))
    else:
        peer, peer_pub = asyncio.run(aiocometd_from_faye(faye, count, transport))
        ours, rss, ours_pub, largest = ours_from_faye(faye, count, transport, tmp)
    # over long-polling Faye answers a slow poll with its whole backlog: the peak goes with it
    reply = f"; largest reply {largest:.0f} MB" if transport == "long-polling" else ""
    print(
        f"Faye -> {transport}: ours {ours:,.0f} msg/s recorded (peak RSS {rss} MB{reply}), "
        f"aiocometd-ng {peer:,.0f} msg/s counted; ratio {ours / peer:.2f}x",
        flush=True,
    )
    if transport == "websocket":  # long-polling: the engine queues for the next poll
        print(
            f"  Faye's publish loop ran at {ours_pub:,.0f} msg/s with ours subscribed "
            f"(ours recorded {ours / ours_pub:.0%} of that, committed), "
            f"{peer_pub:,.0f} msg/s with aiocometd-ng",
            flush=True,
        )
    return ours / peer


FAST_SOURCE = Path(__file__).resolve().parent / "fast_source.py"


def ours_from_fast_source(count: int, batch: int, tmp: Path) -> tuple[float, int]:
    source = subprocess.Popen(
        [sys.executable, str(FAST_SOURCE), str(count), str(batch)],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert source.stdout is not None
        port = int(source.stdout.readline())
        tape = tmp / f"fast-{batch}.duckdb"
        proc = record_process(f"http://127.0.0.1:{port}/cometd", tape, count, "websocket")
        _, rss = wait_rss(proc, 600)
        end = time.monotonic()
        # From when the source starts sending (as for Faye; not from the recorder's start-up)
        # to the recorder's exit, with everything committed and the tape closed.
        source.kill()  # its output ends here: reading it cannot wait for a line never sent
        started = source.stdout.read().split()
        if proc.returncode != 0 or started[:1] != ["started"]:
            raise SystemExit(f"fast source run failed (recorder exit {proc.returncode})")
        check_tape(tape, count, proc)
        return count / (end - float(started[1])), rss
    finally:
        source.kill()
        source.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    # 200k: at ~25k msg/s the recorder's fixed cost of stopping (the last commit, DuckDB's
    # checkpoint on close) is ~0.5 s, a fifth of a 50k-message run
    parser.add_argument("--faye-messages", type=int, default=200_000)
    parser.add_argument("--fast-messages", type=int, default=1_000_000, help="0 skips it")
    parser.add_argument(
        "--transport", choices=["websocket", "long-polling", "both"], default="both"
    )
    parser.add_argument(
        "--per-frame",
        type=int,
        nargs="+",
        default=[1, 10],
        help="messages per frame from the fast source (default: 1 and 10)",
    )
    parser.add_argument(
        "--rounds", type=int, default=1, help="pairs of Faye runs per transport, ends with medians"
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp_dir:
        tmp = Path(tmp_dir)
        faye = FayeServer()
        if args.faye_messages:
            faye.start()
        try:
            both = ("websocket", "long-polling")
            transports = both if args.transport == "both" else (args.transport,)
            ratios: dict[str, list[float]] = {t: [] for t in transports}
            for round_ in range(args.rounds if args.faye_messages else 0):
                for transport in transports:
                    # the pair's order turns each round: neither client always runs first
                    ratios[transport].append(
                        faye_pair(
                            faye, args.faye_messages, transport, tmp, ours_first=round_ % 2 == 0
                        )
                    )
            for transport, values in ratios.items():
                if len(values) > 1:
                    print(
                        f"Faye -> {transport} over {len(values)} rounds: ratio median "
                        f"{statistics.median(values):.2f}x, {min(values):.2f}-{max(values):.2f}x"
                    )
        finally:
            faye.stop()
        for batch in args.per_frame if args.fast_messages else ():
            rate, rss = ours_from_fast_source(args.fast_messages, batch, tmp)
            print(
                f"fast source, websocket, {batch} msg/frame: ours {rate:,.0f} msg/s recorded "
                f"over {args.fast_messages:,} messages, peak RSS {rss} MB"
            )


if __name__ == "__main__":
    main()
