"""Proxy benchmark: request latency and throughput straight to a server and through the capture
proxy (recording into a tape), in the same run, with the ratios.

The upstream is the GWS simulator (`cometd-tape simulate`) and the proxy is `cometd-tape
proxy`, each its own process, as in use; the load comes from this process (aiohttp). Requests
are the Outbound API's `POST /api/v2/me/outbound-records/<n>` (DoNotCallRecord), which the
simulator answers at once ({"statusCode":0}; its acks go to Bayeux clients, of which there are
none here).

  * latency: --sequential requests one at a time; p50 and p99 of each, and the p50 the proxy
    adds;
  * throughput: requests/s each way with --concurrency in flight, with two load generators:
    - wrk (C; Debian package `wrk`), --wrk-seconds per run: the load generator costs little
      CPU, so the figure is what the proxy itself costs. This is the headline figure.
    - this process (aiohttp), --requests per run: a Python client takes most of a core, so on a
      2-core machine the simulator, the proxy and the client compete for CPU; kept as the
      pessimistic figure.

    python benchmarks/proxy.py [--sequential 2000] [--requests 20000] [--concurrency 32]
                               [--wrk-seconds 5] [--repeats 5]
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import os
import re
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


def start(args: list[str], ready: str) -> subprocess.Popen[str]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "tape", *args],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    assert proc.stdout is not None
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if re.search(ready, line):
            return proc
        if not line and proc.poll() is not None:
            break
    proc.kill()
    raise SystemExit(f"{args[0]} did not start")


def stop(proc: subprocess.Popen[str]) -> str:
    proc.send_signal(signal.SIGINT)
    out, _ = proc.communicate(timeout=60)
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
    """User + system CPU time of these processes and their children (Linux /proc)."""
    total = 0.0
    for pid in pids:
        kids = Path(f"/proc/{pid}/task/{pid}/children")
        if kids.exists():
            total += cpu_seconds([int(k) for k in kids.read_text().split()])
        stat = Path(f"/proc/{pid}/stat")
        if stat.exists():
            fields = stat.read_text().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return total


def wait_idle(pids: list[int], quiet_s: float = 0.5, limit_s: float = 15.0) -> float:
    """Wait until these processes stop using CPU (the proxy's writer may still be committing the
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sequential", type=int, default=2000)
    parser.add_argument("--requests", type=int, default=20000)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--wrk-seconds", type=int, default=5)
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        raise SystemExit("benchmarks/proxy.py needs wrk: apt-get install wrk")
    sim_port, proxy_port = free_port(), free_port()
    with tempfile.TemporaryDirectory(prefix="bench-proxy-") as tmp:
        tape = Path(tmp) / "proxy.duckdb"
        sim = start(
            ["simulate", "--listen", f"127.0.0.1:{sim_port}", "--seed", "1"], "GWS simulator on"
        )
        proxy = start(
            [
                "proxy",
                "--upstream",
                f"http://127.0.0.1:{sim_port}",
                "--listen",
                f"127.0.0.1:{proxy_port}",
                "-o",
                str(tape),
            ],
            r"^proxy ",
        )
        direct, via = f"http://127.0.0.1:{sim_port}", f"http://127.0.0.1:{proxy_port}"
        results: dict[str, list[float]] = {"direct": [], "proxy": []}
        rates: dict[str, list[float]] = {"direct": [], "proxy": []}
        wrk_rates: dict[str, list[float]] = {"direct": [], "proxy": []}
        # CPU per request under wrk load: the simulator's, and the proxy's (with its writer)
        cpu_us: dict[str, list[float]] = {"simulator": [], "proxy": []}
        script = Path(tmp) / "post.lua"
        script.write_text(WRK_SCRIPT)
        try:
            for _ in range(args.repeats):  # interleaved, so drift hits both alike
                for name, origin in (("direct", direct), ("proxy", via)):
                    results[name] += asyncio.run(latency(origin, args.sequential))
                    rates[name].append(
                        asyncio.run(throughput(origin, args.requests, args.concurrency))
                    )
                    # start and end with the proxy's writer idle: its CPU for this run only
                    before = wait_idle([sim.pid]), wait_idle([proxy.pid])
                    rate, served = wrk_throughput(
                        origin, args.wrk_seconds, args.concurrency, script
                    )
                    wrk_rates[name].append(rate)
                    if name == "proxy":
                        after = wait_idle([sim.pid]), wait_idle([proxy.pid])
                        cpu_us["simulator"].append((after[0] - before[0]) / served * 1e6)
                        cpu_us["proxy"].append((after[1] - before[1]) / served * 1e6)
        finally:
            summary = stop(proxy)
            stop(sim)
        recorded = tape.stat().st_size if tape.exists() else 0
    d50, d99 = np.percentile(results["direct"], [50, 99])
    p50, p99 = np.percentile(results["proxy"], [50, 99])
    rd, rp = statistics.median(rates["direct"]), statistics.median(rates["proxy"])
    n = len(results["direct"])
    print(
        f"latency, {n} sequential requests each way (ms): direct p50 {d50:.3f} p99 {d99:.3f}; "
        f"proxy p50 {p50:.3f} p99 {p99:.3f}"
    )
    print(
        f"added by the proxy: p50 {p50 - d50:.3f} ms, p99 {p99 - d99:.3f} ms "
        f"(ratio p50 {p50 / d50:.2f}x)"
    )
    wd, wp = statistics.median(wrk_rates["direct"]), statistics.median(wrk_rates["proxy"])
    # Runs are interleaved (direct, proxy, direct, ...), so each pair shares the machine's
    # momentary speed; the median of the pairs' ratios is the robust figure on a noisy host.
    pairs = [p / d for d, p in zip(wrk_rates["direct"], wrk_rates["proxy"], strict=True)]
    print(
        f"throughput, wrk load, {args.wrk_seconds} s x {args.repeats}, {args.concurrency} in "
        f"flight: median of paired ratios proxy/direct {statistics.median(pairs):.1%} "
        f"(pairs {', '.join(f'{r:.0%}' for r in pairs)}); median req/s direct {wd:,.0f}, "
        f"proxy {wp:,.0f} ({wp / wd:.1%})"
    )
    print(
        f"  CPU per request through the proxy (median, us): simulator "
        f"{statistics.median(cpu_us['simulator']):.0f}, proxy with its tape writer "
        f"{statistics.median(cpu_us['proxy']):.0f}"
    )
    print(
        f"  runs (req/s): direct {[round(r) for r in wrk_rates['direct']]}, "
        f"proxy {[round(r) for r in wrk_rates['proxy']]}"
    )
    print(
        f"throughput, aiohttp load in this process, {args.requests} requests x {args.repeats}, "
        f"{args.concurrency} in flight (median req/s): direct {rd:,.0f}; proxy {rp:,.0f}; "
        f"proxy/direct {rp / rd:.1%}"
    )
    print(
        f"  runs (req/s): direct {[round(r) for r in rates['direct']]}, "
        f"proxy {[round(r) for r in rates['proxy']]}"
    )
    print(f"tape: {recorded / 1e6:.1f} MB; proxy said: {summary.strip().splitlines()[-1]}")
    print(f"cores: {os.cpu_count()}")


if __name__ == "__main__":
    main()
