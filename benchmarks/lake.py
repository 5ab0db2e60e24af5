"""Lake benchmark: `cometd-tape analyze latency LAKE --by campaign` over a Parquet lake of 20
tapes, on DuckDB and on Apache Spark in local mode with 2 cores and with 1, in the same run.

The lake: 5,000,000 requests (with their HTTP responses) and their acks, each ack with its
/me/internal metrics message: 10,000,000 Bayeux messages, in 20 tapes made by the committed,
seeded generator (analysis/generate.py), each its own sessions, half of them from a second
capture point, spread over two days; added to the lake by `analyze export --to`.

Each run is a fresh process, timed as a whole (Spark's JVM start included), with the peak
resident memory of its process tree (Python and Spark's JVM), sampled every 0.1 s. The outputs
must be identical. Spark's driver gets --driver-memory (default 4g; PYSPARK_SUBMIT_ARGS).

    pip install -e '.[spark]'   # and Java 8, 11 or 17
    python benchmarks/lake.py [--requests 5000000] [--tapes 20] [--keep DIR]
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


HOURS_2 = 2 * 3600 * 10**9


def make_lake(folder: Path, requests: int, tapes: int) -> Path:
    import duckdb

    from analysis.generate import T0_NS, generate

    lake = folder / "lake"
    if (lake / "_manifests").is_dir():
        print(f"reusing the lake in {lake}")
        return lake
    made = []
    started = time.perf_counter()
    for n in range(tapes):
        tape = folder / f"t{n:02d}.duckdb"
        # its own sessions, two hours after the one before (the 20 span two days), every
        # other one from a second capture point
        generate(
            tape, requests // tapes, seed=n, session_prefix=f"t{n}-", t0_ns=T0_NS + n * HOURS_2
        )
        if n % 2:
            conn = duckdb.connect(str(tape))
            conn.execute(
                "UPDATE tape_meta SET value = 'cometd-tape (bench@site-b)' WHERE key = 'created_by'"
            )
            conn.close()
        made.append(tape)
    print(f"generated {tapes} tapes of {requests // tapes:,} requests: {_since(started)}")
    started = time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "tape", "analyze", "export", *map(str, made), "--to", str(lake)],
        cwd=ROOT,
        check=True,
        stdout=subprocess.DEVNULL,
    )
    size = sum(p.stat().st_size for p in lake.rglob("*.parquet"))
    print(f"exported to the lake ({size / 1e6:,.0f} MB of Parquet): {_since(started)}")
    for tape in made:
        tape.unlink()
    return lake


def _since(started: float) -> str:
    return f"{time.perf_counter() - started:.1f} s"


def tree_rss(pid: int) -> int:
    """Resident bytes of a process and all its descendants, now."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            children.setdefault(int(fields[1]), []).append(int(entry.name))
    total, todo = 0, [pid]
    while todo:
        current = todo.pop()
        todo += children.get(current, [])
        try:
            for line in Path(f"/proc/{current}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1]) * 1024
        except OSError:
            continue
    return total


def timed(args: list[str], env: dict[str, str]) -> tuple[float, int, str]:
    """(seconds, peak RSS of the process tree in bytes, stdout) of one fresh process."""
    started = time.perf_counter()
    process = subprocess.Popen(
        [sys.executable, "-m", "tape", *args],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    peak = 0
    done = threading.Event()

    def sample() -> None:
        nonlocal peak
        while not done.wait(0.1):
            peak = max(peak, tree_rss(process.pid))

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    out, err = process.communicate(timeout=3600)
    done.set()
    sampler.join()
    seconds = time.perf_counter() - started
    if process.returncode != 0:
        raise SystemExit(f"{' '.join(args)} failed:\n{err}")
    return seconds, peak, out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=5_000_000)
    parser.add_argument("--tapes", type=int, default=20)
    parser.add_argument("--driver-memory", default="4g")
    parser.add_argument("--keep", type=Path, help="Build the lake here (and reuse it).")
    args = parser.parse_args()
    folder = args.keep or Path(tempfile.mkdtemp(prefix="lake-bench-"))
    folder.mkdir(parents=True, exist_ok=True)
    try:
        lake = make_lake(folder, args.requests, args.tapes)
        env = dict(os.environ)
        env["PYSPARK_SUBMIT_ARGS"] = f"--driver-memory {args.driver_memory} pyspark-shell"
        command = ["analyze", "latency", str(lake), "--by", "campaign"]
        runs = {
            "DuckDB": command,
            "Spark local[2]": [*command, "--engine", "spark", "--master", "local[2]"],
            "Spark local[1]": [*command, "--engine", "spark", "--master", "local[1]"],
        }
        results = {}
        for name, argv in runs.items():
            results[name] = timed(argv, env)
            seconds, peak, _ = results[name]
            print(f"{name:15} {seconds:7.1f} s   peak RSS {peak / 1e6:7.0f} MB", flush=True)
        outputs = {out for _, _, out in results.values()}
        print("outputs identical:", "yes" if len(outputs) == 1 else "NO")
        duck = results["DuckDB"][0]
        two, one = results["Spark local[2]"][0], results["Spark local[1]"][0]
        print(f"Spark local[2] / DuckDB: {two / duck:.2f}x the time")
        print(f"Spark local[1] / local[2]: {one / two:.2f}x (2 cores' speed-up)")
        print(next(iter(results.values()))[2])
    finally:
        if args.keep is None:
            shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
