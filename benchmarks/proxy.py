"""Proxy benchmark: request latency and throughput straight to a server and through the capture
proxy (recording into a tape), in the same run, with the ratios.

The upstream is the GWS simulator (`cometd-tape simulate`) and the proxy is `cometd-tape
proxy`, each its own process, as in use; the load comes from this process (aiohttp). Requests
are the Outbound API's `POST /api/v2/me/outbound-records/<n>` (DoNotCallRecord), which the
simulator answers at once ({"statusCode":0}; its acks go to Bayeux clients, of which there are
none here).

  * latency: --sequential requests one at a time; p50 and p99 of each, and the p50 the proxy
    adds;
  * throughput: --requests requests with --concurrency in flight; requests/s each way.

    python benchmarks/proxy.py [--sequential 2000] [--requests 20000] [--concurrency 32]
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import os
import re
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sequential", type=int, default=2000)
    parser.add_argument("--requests", type=int, default=20000)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
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
        try:
            for _ in range(args.repeats):  # interleaved, so drift hits both alike
                for name, origin in (("direct", direct), ("proxy", via)):
                    results[name] += asyncio.run(latency(origin, args.sequential))
                    rates[name].append(
                        asyncio.run(throughput(origin, args.requests, args.concurrency))
                    )
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
    print(
        f"throughput, {args.requests} requests x {args.repeats}, {args.concurrency} in flight "
        f"(median req/s): direct {rd:,.0f}; proxy {rp:,.0f}; proxy/direct {rp / rd:.1%}"
    )
    print(
        f"runs (req/s): direct {[round(r) for r in rates['direct']]}, "
        f"proxy {[round(r) for r in rates['proxy']]}"
    )
    print(f"tape: {recorded / 1e6:.1f} MB; proxy said: {summary.strip().splitlines()[-1]}")
    print(f"cores: {os.cpu_count()}")


if __name__ == "__main__":
    main()
