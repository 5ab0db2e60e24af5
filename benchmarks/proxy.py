"""Proxy benchmark: request latency, throughput and CPU per request straight to a server, through
the capture proxy (one process, and `--workers 2`), and through mitmproxy's `mitmdump` (the
capture proxy people use today) writing its own flow file, in the same run, with the ratios.

The upstream is the GWS simulator (`cometd-tape simulate`); each proxy is its own process (tree),
as in use, recording: ours into a tape (with --workers 2, a tape set: a folder of one tape per
worker), mitmdump into a flow file (`-w`, reverse mode, `flow_detail=0` so that it does not
print each flow). Requests are the Outbound API's `POST /api/v2/me/outbound-records/<n>`
(DoNotCallRecord), which the simulator answers at once ({"statusCode":0}; its acks go to Bayeux
clients, of which there are none here).

  * latency: --sequential requests one at a time (aiohttp, from this process); p50 and p99 of
    each, and what each proxy adds to direct's;
  * throughput: requests/s with --concurrency in flight, driven by wrk (C; Debian package
    `wrk`), --wrk-seconds per run: the load generator costs little CPU, so the figure is what
    the proxy itself costs. Each round runs direct first, then each proxy; a proxy's figure is
    the median over rounds of its rate / that round's direct rate;
  * CPU per request under the wrk load: user + system time (/proc) of each proxy's process tree
    (ours: the proxy, its workers, and the tape writer process of each), and of the simulator;
  * others: the share of the machine that other processes used during the wrk runs (median):
    on a shared machine, what it takes from the two cores the proxy needs is what its
    throughput figure lost;
  * the same throughput with an aiohttp client in this process (--requests per run), for
    direct and ours only: a Python client takes most of a core, so on 2 cores it is the
    pessimistic figure (0 skips it).

    pip install -e '.[bench]'   # mitmproxy
    python benchmarks/proxy.py [--sequential 2000] [--requests 20000] [--concurrency 32]
                               [--wrk-seconds 5] [--repeats 5] [--no-mitmdump]
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import os
import re
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import aiohttp
import numpy as np

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start(argv: list[str], ready: str) -> subprocess.Popen[str]:
    proc = subprocess.Popen(
        argv, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    assert proc.stdout is not None
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if re.search(ready, line):
            return proc
        if not line and proc.poll() is not None:
            break
    proc.kill()
    raise SystemExit(f"{' '.join(argv[:4])} did not start")


def ours(*args: str) -> list[str]:
    return [sys.executable, "-m", "tape", *args]


def stop(proc: subprocess.Popen[str]) -> str:
    proc.send_signal(signal.SIGINT)
    out, _ = proc.communicate(timeout=120)
    return out


async def login(http: aiohttp.ClientSession, origin: str) -> dict[str, str]:
    token = base64.b64encode(b"agent:agent").decode()
    async with http.get(origin + "/api/v2/me", headers={"Authorization": f"Basic {token}"}) as r:
        assert r.status == 200, r.status
        return {"X-CSRF-TOKEN": r.headers["X-CSRF-TOKEN"]}


async def latency(origin: str, count: int) -> list[float]:
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as http:
        csrf = await login(http, origin)
        out = []
        for n in range(count):
            body = {"operationName": "DoNotCallRecord", "referenceId": f"l{n}"}
            start = time.perf_counter()
            async with http.post(
                f"{origin}/api/v2/me/outbound-records/{n}", json=body, headers=csrf
            ) as r:
                await r.read()
                assert r.status == 200
            out.append((time.perf_counter() - start) * 1000)
        return out


async def throughput(origin: str, count: int, concurrency: int) -> float:
    connector = aiohttp.TCPConnector(limit=concurrency)
    jar = aiohttp.CookieJar(unsafe=True)
    async with aiohttp.ClientSession(cookie_jar=jar, connector=connector) as http:
        csrf = await login(http, origin)
        queue = iter(range(count))

        async def worker() -> None:
            for n in queue:
                body = {"operationName": "DoNotCallRecord", "referenceId": f"t{n}"}
                async with http.post(
                    f"{origin}/api/v2/me/outbound-records/{n}", json=body, headers=csrf
                ) as r:
                    await r.read()
                    assert r.status == 200

        start = time.perf_counter()
        await asyncio.wait_for(asyncio.gather(*(worker() for _ in range(concurrency))), 300)
        return count / (time.perf_counter() - start)


WRK_SCRIPT = """
counter = 0
request = function()
  counter = counter + 1
  local body = '{"operationName":"DoNotCallRecord","referenceId":"w' .. counter .. '"}'
  return wrk.format("POST", "/api/v2/me/outbound-records/" .. counter, nil, body)
end
"""


async def wrk_headers(origin: str) -> list[str]:
    """Log in once and return the headers a logged-in desktop sends (cookie and CSRF)."""
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as http:
        csrf = await login(http, origin)
        cookies = "; ".join(f"{c.key}={c.value}" for c in http.cookie_jar)
    return [
        f"Cookie: {cookies}",
        f"X-CSRF-TOKEN: {csrf['X-CSRF-TOKEN']}",
        "Content-Type: application/json",
    ]


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU time of these processes and all their descendants (Linux /proc)."""
    total = 0.0
    for pid in pids:
        for task in Path(f"/proc/{pid}/task").glob("*"):  # children started by any thread
            kids = task / "children"
            if kids.exists():
                total += cpu_seconds([int(k) for k in kids.read_text().split()])
        stat = Path(f"/proc/{pid}/stat")
        if stat.exists():
            fields = stat.read_text().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return total


def wait_idle(pids: list[int], quiet_s: float = 0.5, limit_s: float = 15.0) -> float:
    """Wait until these processes stop using CPU (a tape writer may still be committing the
    previous run's frames); return their CPU seconds then."""
    deadline = time.monotonic() + limit_s
    last = cpu_seconds(pids)
    while time.monotonic() < deadline:
        time.sleep(quiet_s)
        now = cpu_seconds(pids)
        if now - last < 0.02:
            return now
        last = now
    return last


def machine_busy() -> float:
    """CPU seconds every process on the machine has used (Linux /proc/stat: all but idle)."""
    user, nice, system, _, _, irq, softirq, steal = map(
        int, Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]
    )
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def children_cpu() -> float:
    """CPU seconds of this process's finished children (wrk)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def wrk_throughput(origin: str, seconds: int, concurrency: int, script: Path) -> tuple[float, int]:
    """Requests/s, and how many requests wrk completed."""
    headers = asyncio.run(wrk_headers(origin))
    argv = ["wrk", "-t1", f"-c{concurrency}", f"-d{seconds}s", "-s", str(script)]
    for header in headers:
        argv += ["-H", header]
    out = subprocess.run(
        [*argv, origin], capture_output=True, text=True, timeout=seconds + 60, check=True
    ).stdout
    bad = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    errors = re.search(r"Socket errors: (.*)", out)
    if bad or errors:
        raise SystemExit(f"wrk saw failures against {origin}:\n{out}")
    match = re.search(r"Requests/sec:\s+([\d.]+)", out)
    done = re.search(r"(\d+) requests in", out)
    assert match, out
    assert done, out
    return float(match.group(1)), int(done.group(1))


def size_of(path: Path) -> int:
    files = path.rglob("*") if path.is_dir() else [path]
    return sum(f.stat().st_size for f in files if f.is_file())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sequential", type=int, default=2000)
    parser.add_argument("--requests", type=int, default=20000)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--wrk-seconds", type=int, default=5)
    parser.add_argument("--no-mitmdump", action="store_true", help="leave mitmdump out")
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        raise SystemExit("benchmarks/proxy.py needs wrk: apt-get install wrk")
    mitmdump = shutil.which("mitmdump", path=f"{Path(sys.executable).parent}:{os.environ['PATH']}")
    if mitmdump is None and not args.no_mitmdump:
        raise SystemExit("benchmarks/proxy.py needs mitmproxy: pip install -e '.[bench]'")
    with tempfile.TemporaryDirectory(prefix="bench-proxy-") as tmp:
        run(args, Path(tmp), None if args.no_mitmdump else mitmdump)


def run(args: argparse.Namespace, tmp: Path, mitmdump: str | None) -> None:
    sim_port = free_port()
    upstream = f"http://127.0.0.1:{sim_port}"
    sim = start(ours("simulate", "--listen", f"127.0.0.1:{sim_port}", "--seed", "1"), "GWS sim")
    procs: dict[str, subprocess.Popen[str]] = {}
    outputs: dict[str, Path] = {}
    origins = {"direct": upstream}
    try:
        for name, extra in (("ours w1", []), ("ours w2", ["--workers", "2"])):
            port = free_port()
            outputs[name] = tmp / (name.replace(" ", "-") + ("" if extra else ".duckdb"))
            argv = ["proxy", "--upstream", upstream, "--listen", f"127.0.0.1:{port}"]
            procs[name] = start(ours(*argv, *extra, "-o", str(outputs[name])), r"^proxy ")
            origins[name] = f"http://127.0.0.1:{port}"
        if mitmdump is not None:
            port = free_port()
            outputs["mitmdump"] = tmp / "flows.mitm"
            argv = [mitmdump, "--mode", f"reverse:{upstream}", "--listen-host", "127.0.0.1"]
            argv += ["--listen-port", str(port), "-w", str(outputs["mitmdump"])]
            argv += ["--set", "flow_detail=0", "--set", f"confdir={tmp / 'mitmproxy'}"]
            procs["mitmdump"] = start(argv, "listening at")
            origins["mitmdump"] = f"http://127.0.0.1:{port}"
        results = measure(args, tmp, sim, procs, origins)
    finally:
        said = {name: stop(proc) for name, proc in procs.items()}
        stop(sim)
    report(args, results, said, {name: size_of(path) for name, path in outputs.items()})
    if "mitmdump" in outputs:
        print(f"mitmdump's flow file holds {flows_in(outputs['mitmdump']):,} flows")


def flows_in(path: Path) -> int:
    """The flows mitmdump wrote (read with mitmproxy's own reader): it recorded every request."""
    from mitmproxy.io import FlowReader

    with path.open("rb") as f:
        return sum(1 for _ in FlowReader(f).stream())


Results = dict[str, dict[str, list[float]]]


def measure(
    args: argparse.Namespace,
    tmp: Path,
    sim: subprocess.Popen[str],
    procs: dict[str, subprocess.Popen[str]],
    origins: dict[str, str],
) -> Results:
    script = tmp / "post.lua"
    script.write_text(WRK_SCRIPT)
    keys = ("latency", "aiohttp", "wrk", "cpu", "sim_cpu", "others")
    results: Results = {name: {key: [] for key in keys} for name in origins}
    for _ in range(args.repeats):  # interleaved, so drift hits all alike
        for name, origin in origins.items():
            got = results[name]
            got["latency"] += asyncio.run(latency(origin, args.sequential))
            if args.requests and name != "mitmdump":
                got["aiohttp"].append(
                    asyncio.run(throughput(origin, args.requests, args.concurrency))
                )
            tree = [procs[name].pid] if name in procs else []
            # start and end with the writers idle: the CPU of this run only
            before = wait_idle([sim.pid]), wait_idle(tree)
            machine, ours = machine_busy(), cpu_seconds([os.getpid()])  # and all it started
            wrk_before, started = children_cpu(), time.monotonic()
            rate, served = wrk_throughput(origin, args.wrk_seconds, args.concurrency, script)
            # what the rest of the machine used meanwhile (other users' work competes for the
            # same two cores), as a share of the machine
            spent = children_cpu() - wrk_before + cpu_seconds([os.getpid()])
            others = machine_busy() - machine - (spent - ours)
            got["others"].append(others / (time.monotonic() - started) / (os.cpu_count() or 1))
            after = wait_idle([sim.pid]), wait_idle(tree)
            got["wrk"].append(rate)
            got["sim_cpu"].append((after[0] - before[0]) / served * 1e6)
            got["cpu"].append((after[1] - before[1]) / served * 1e6)
    return results


def report(
    args: argparse.Namespace, results: Results, said: dict[str, str], sizes: dict[str, int]
) -> None:
    direct = results["direct"]
    d50, d99 = np.percentile(direct["latency"], [50, 99])
    print(
        f"{args.sequential} sequential requests x {args.repeats} each; wrk {args.wrk_seconds} s "
        f"x {args.repeats} rounds, {args.concurrency} in flight; {os.cpu_count()} cores; "
        f"direct p50 {d50:.3f} ms, p99 {d99:.3f} ms"
    )
    print(
        f"{'':10} {'req/s':>8} {'% direct':>9} {'pairs':>24} {'+p50 ms':>8} {'+p99 ms':>8} "
        f"{'CPU us/req':>10} {'sim us/req':>10} {'others':>7}"
    )
    cpu: dict[str, float] = {}
    share: dict[str, float] = {}
    for name, got in results.items():
        p50, p99 = np.percentile(got["latency"], [50, 99])
        pairs = [r / d for r, d in zip(got["wrk"], direct["wrk"], strict=True)]
        share[name] = statistics.median(pairs)
        cpu[name] = statistics.median(got["cpu"]) if name != "direct" else float("nan")
        shown = "-" if name == "direct" else f"{cpu[name]:.0f}"
        print(
            f"{name:10} {statistics.median(got['wrk']):8,.0f} {share[name]:9.1%} "
            f"{' '.join(f'{r:.0%}' for r in pairs):>24} {p50 - d50:8.3f} {p99 - d99:8.3f} "
            f"{shown:>10} {statistics.median(got['sim_cpu']):10.0f} "
            f"{statistics.median(got['others']):7.0%}"
        )
    if "mitmdump" in results:
        for name in ("ours w1", "ours w2"):
            print(
                f"{name} / mitmdump: CPU per request {cpu[name] / cpu['mitmdump']:.3f}x, "
                f"throughput {share[name] / share['mitmdump']:.1f}x"
            )
    w1, w2 = results["ours w1"]["wrk"], results["ours w2"]["wrk"]
    gains = [b / a for a, b in zip(w1, w2, strict=True)]
    print(f"ours w2 / w1 throughput, per round: {', '.join(f'{g:.2f}x' for g in gains)}")
    for name, got in results.items():
        shares = ", ".join(f"{o:.0%}" for o in got["others"])
        print(f"  runs (req/s) {name}: {[round(r) for r in got['wrk']]}; others: {shares}")
    if args.requests:
        print(f"aiohttp client in this process, {args.requests} requests a run (median req/s):")
        for name, got in results.items():
            if got["aiohttp"]:
                rates = got["aiohttp"]
                ratio = statistics.median(rates) / statistics.median(direct["aiohttp"])
                print(f"  {name}: {statistics.median(rates):,.0f} ({ratio:.1%} of direct)")
    for name, out in said.items():
        lines = [line for line in out.strip().splitlines() if line.strip()]
        last = lines[-1] if lines else ""
        print(f"{name}: recorded {sizes.get(name, 0) / 1e6:.1f} MB; said: {last[:160]}")


if __name__ == "__main__":
    main()
