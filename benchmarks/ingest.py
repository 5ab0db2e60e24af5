"""Ingest benchmark: sustained frames/s into a file tape, peak RSS, bytes on disk per frame.

Runs our writer (Arrow batches, two writer threads, messages projection filled) three ways:
validating every frame itself (as for `import`); fed by a producer that decodes each frame with
the codec first, as the recorder's receive path does (`recorder.wire.log_received`), so the
codec's cost is counted; and fed frames marked decoded without counting the codec. In the same
run, a naive per-row INSERT loop over the same frames, and the ratios.

    python benchmarks/ingest.py [--frames 1000000] [--naive-frames 3000] [--rounds 1]

`--rounds N` runs the three ways N times, interleaved (the order turns each round), and ends
with each way's median and range: on a shared machine one run says little.
"""

from __future__ import annotations

import argparse
import os
import random
import resource
import statistics
import tempfile
import time
from pathlib import Path

import duckdb

from recorder.wire import log_received
from tape.frame import FRAME_COLUMNS, Session
from tape.runtime import keep_pandas_out_of_arrow, settle_gc
from tape.schema import open_for_writing
from tape.session import SessionLog
from tape.writer import TapeWriter

TEMPLATE = (
    b'[{"data":{"record":{"devicePath":"/devices/%s","callingList":"CallingList%d",'
    b'"applicationId":134,"recordHandle":%d,"campaignName":"Campaign%d"},'
    b'"notificationType":"DoNotCallAcknowledge","messageType":"OutboundRecordMessage",'
    b'"referenceId":"%d"},"channel":"/v2/me/outbound","id":"%d"},'
    b'{"data":{"metrics":{"eventProcessing":{"serverGenerationTimestamp":%d,'
    b'"nodeProcessingTimeNanos":%d,"serverProcessingTimeTotalMs":%d}},'
    b'"userData":{"GSW_APPLICATION_ID":134,"GSW_RECORD_HANDLE":%d,'
    b'"GSW_USER_EVENT":"DoNotCallAcknowledge","GSW_CALLING_LIST":"CallingList%d",'
    b'"GSW_CAMPAIGN_NAME":"Campaign%d","GSW_PHONE":"+1555%07d"},"deviceId":"%s",'
    b'"messageType":"DeviceUserEventMessage"},"channel":"/me/internal","id":"%d"}]'
)


def frame_raws(count: int, seed: int = 7) -> list[bytes]:
    """`count` realistic ~800-byte GWS frames (an ack and its metrics event), all different."""
    rng = random.Random(seed)
    devices = [f"{rng.getrandbits(128):032x}".encode() for _ in range(50)]
    out = []
    for i in range(count):
        dev, camp, lst = rng.choice(devices), rng.randrange(40), rng.randrange(9)
        ts = 1_700_000_000_000 + i * 3 + rng.randrange(3)
        out.append(
            TEMPLATE
            % (
                dev,
                lst,
                i,
                camp,
                rng.getrandbits(40),
                2 * i,
                ts,
                rng.randrange(10**6, 10**8),
                rng.randrange(1, 40),
                i,
                lst,
                camp,
                rng.randrange(10**7),
                dev,
                2 * i + 1,
            )
        )
    return out


MODES = {
    "writer": "validated by the writer",
    "producer": "decoded by the codec in the producer, as the recorder does",
    "checked": "pre-validated, the codec's cost not counted",
}


def run_ours(path: Path, raws: list[bytes], repeat: int, mode: str) -> float:
    """Frames/s from first enqueue until everything is committed and closed."""
    writer = TapeWriter(path)
    log = SessionLog(writer, Session(session_id="bench", transport="websocket"))
    start = time.perf_counter()
    for _ in range(repeat):
        if mode == "producer":  # the recorder's receive path: decode, then log as checked
            for raw in raws:
                log_received(log, raw, "websocket")
            continue
        checked = mode == "checked"
        for raw in raws:
            log.append("in", raw, checked=checked)
    log.close("stopped")
    writer.close()
    return len(raws) * repeat / (time.perf_counter() - start)


def reset_peak_rss() -> None:
    """Start VmHWM again from the current RSS (Linux), so each mode reports its own peak."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:  # not Linux: the process-wide peak stands
        pass


def peak_rss_mb() -> float:
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_naive(path: Path, raws: list[bytes]) -> float:
    """What one writes first: one INSERT per frame, autocommit."""
    conn = open_for_writing(path)
    placeholders = ", ".join("?" * len(FRAME_COLUMNS))
    start = time.perf_counter()
    for seq, raw in enumerate(raws, start=1):
        row = ["naive", seq, time.time_ns(), seq, "in", "websocket", "bayeux"]
        conn.execute(f"INSERT INTO frames VALUES ({placeholders})", [*row, *[None] * 5, raw, None])
    rate = len(raws) / (time.perf_counter() - start)
    conn.close()
    return rate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=1_000_000)
    parser.add_argument("--naive-frames", type=int, default=3_000)
    parser.add_argument("--distinct", type=int, default=20_000, help="distinct frames, cycled")
    parser.add_argument("--rounds", type=int, default=1, help="runs of each way, interleaved")
    args = parser.parse_args()
    keep_pandas_out_of_arrow()  # as `cometd-tape record` does for its in-process writer
    distinct = min(args.distinct, args.frames)
    raws = frame_raws(distinct)
    base_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    settle_gc()  # as the recorder does once started
    repeat = max(1, args.frames // distinct)
    total = distinct * repeat
    print(f"frames: {total:,} ({distinct:,} distinct), mean {sum(map(len, raws)) / distinct:.0f} B")
    with tempfile.TemporaryDirectory() as tmp:
        results: dict[str, list[float]] = {mode: [] for mode in MODES}
        modes = list(MODES)
        for round_ in range(args.rounds):
            for mode in modes[round_ % 3 :] + modes[: round_ % 3]:
                results[mode].append(run_mode(Path(tmp), mode, raws, repeat, total))
        if args.rounds > 1:
            for mode, label in MODES.items():
                rates = results[mode]
                print(
                    f"ours ({label}) over {len(rates)} rounds: median "
                    f"{statistics.median(rates):,.0f} frames/s, {min(rates):,.0f}-"
                    f"{max(rates):,.0f}"
                )
        print(
            f"(peak RSS counts {base_mb:.0f} MB held before writing: interpreter, libraries "
            f"and the benchmark's {distinct:,} frames)"
        )
        naive = run_naive(Path(tmp) / "naive.duckdb", raws[: args.naive_frames])
        print(f"naive per-row INSERT: {naive:,.0f} frames/s (frames only, no projection)")
        print(
            "ratio ours/naive: "
            + ", ".join(
                f"{statistics.median(results[mode]) / naive:.0f}x ({mode})" for mode in MODES
            )
        )


def run_mode(tmp: Path, mode: str, raws: list[bytes], repeat: int, total: int) -> float:
    """One way, into a new tape: prints its figures, returns its rate."""
    path = tmp / f"ours-{mode}.duckdb"
    for stale in (path, path.with_name(path.name + ".wal")):
        stale.unlink(missing_ok=True)
    reset_peak_rss()
    rate = run_ours(path, raws, repeat, mode)
    peak = peak_rss_mb()
    size = path.stat().st_size / total
    with duckdb.connect(str(path), read_only=True) as conn:
        msgs = conn.execute("SELECT count(*) FROM messages").fetchall()[0][0]
    assert msgs == 2 * total, f"projection has {msgs} rows, expected {2 * total}"
    print(
        f"ours ({MODES[mode]}): {rate:,.0f} frames/s, {size:.0f} B/frame on disk, "
        f"messages {msgs:,}, peak RSS {peak:.0f} MB",
        flush=True,
    )
    return rate


if __name__ == "__main__":
    os.environ.setdefault("PYTHONHASHSEED", "0")
    main()
