"""`cometd-tape record --rotate` against a real Faye server over both transports: segments cut
by time and by size hold every message once and in order, a session's seq runs on across
them, and the set can be analysed while the recorder is still writing it."""

from __future__ import annotations

import asyncio
import os
import re
import secrets
import signal
import socket
import subprocess
import sys
from pathlib import Path

import duckdb
import orjson
import pytest

from demo.desktop import PASSWORD, USER, drive
from replay.simulator import Simulator, SimulatorOptions
from tests.cli import cometd_tape
from tests.constants import ROOT, TIMEOUT
from tests.peers.faye import FayeServer

TRANSPORTS = ["long-polling", "websocket"]


def start(faye: FayeServer, folder: Path, transport: str, rotate: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tape",
            "record",
            faye.url,
            "-o",
            f"{folder}.duckdb",
            "--transport",
            transport,
            "--rotate",
            rotate,
        ],
        cwd=ROOT,
        stderr=subprocess.PIPE,
        text=True,
    )


async def stop(proc: subprocess.Popen[str]) -> str:
    os.kill(proc.pid, signal.SIGINT)
    _, stderr = await asyncio.to_thread(proc.communicate, timeout=TIMEOUT * 3)
    assert proc.returncode == 0, stderr
    assert "Traceback" not in stderr
    return stderr


def analyze_json(*args: str) -> list[dict[str, object]]:
    done = cometd_tape("analyze", "sql", *args, "--format", "json")
    assert done.returncode == 0, done.stderr
    return list(orjson.loads(done.stdout))


def check_set(folder: Path) -> list[dict[str, object]]:
    """The set's frames: one session, seq 1..n with no gap or repeat, in segment order; and
    the session row in every segment. Returns the outbound messages in order."""
    segments = sorted(folder.glob("*.duckdb"))
    spans = []
    for segment in segments:
        conn = duckdb.connect(str(segment), read_only=True)
        spans.append(conn.execute("SELECT min(seq), max(seq), count(*) FROM frames").fetchone())
        assert conn.execute("SELECT count(*) FROM sessions").fetchone() == (1,)
        conn.close()
    assert [s[0] for s in spans] == [1, *(s[1] + 1 for s in spans[:-1])]  # on from the last
    assert all(s[2] == s[1] - s[0] + 1 for s in spans)  # gapless within each
    (row,) = analyze_json(str(folder), "SELECT segments FROM sessions")
    assert row["segments"] == [s.name for s in segments]
    return analyze_json(
        str(folder),
        "SELECT m.reference_id, d.data FROM message_data d JOIN messages m "
        "USING (session_id, seq, idx) WHERE m.channel = '/v2/me/outbound' ORDER BY seq, idx",
    )


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_rotation_by_time_keeps_every_message_once_in_order(
    transport: str, faye_server: FayeServer, tmp_path: Path
) -> None:
    folder = tmp_path / "shift"
    proc = start(faye_server, folder, transport, "1s")
    try:
        await faye_server.await_subscribed()
        published = await faye_server.apace(300, 3.5)  # GWS pairs, referenceId "0", "1", ...
        await asyncio.sleep(1.0)
        await stop(proc)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert len(list(folder.glob("*.duckdb"))) >= 3
    acks = check_set(folder)
    assert [a["reference_id"] for a in acks] == [str(i) for i in range(published["pairs"])]


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_rotation_by_size_keeps_every_message_once_in_order(
    transport: str, faye_server: FayeServer, tmp_path: Path
) -> None:
    folder = tmp_path / "shift"
    proc = start(faye_server, folder, transport, "1MB")
    sent = [{"n": n, "pad": secrets.token_hex(400)} for n in range(4_000)]  # ~3.3 MB, random
    try:
        await faye_server.await_subscribed()
        for n in range(0, len(sent), 500):
            await faye_server.apublish("/v2/me/outbound", sent[n : n + 500])
            await asyncio.sleep(0.3)  # the watcher looks at the size every 0.1 s
        await asyncio.sleep(1.0)
        await stop(proc)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert len(list(folder.glob("*.duckdb"))) >= 2
    got = [orjson.loads(str(m["data"])) for m in check_set(folder)]
    assert got == sent


async def test_a_set_is_analysed_while_the_recorder_writes_it(
    faye_server: FayeServer, tmp_path: Path
) -> None:
    folder = tmp_path / "live"
    proc = start(faye_server, folder, "websocket", "1s")
    try:
        await faye_server.await_subscribed()
        pacing = asyncio.ensure_future(faye_server.apace(200, 4.0))
        await asyncio.sleep(2.5)
        done = await asyncio.to_thread(
            cometd_tape, "analyze", "sql", str(folder), "SELECT count(*) AS n FROM messages",
            "--format", "json",
        )  # fmt: skip
        published = await pacing
        await stop(proc)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert done.returncode == 0, done.stderr
    assert "is being written (skipped); the analysis runs up to" in done.stderr
    live_count = orjson.loads(done.stdout)[0]["n"]
    (final,) = analyze_json(str(folder), "SELECT count(*) AS n FROM messages")
    assert 0 < live_count < final["n"]
    assert final["n"] >= 2 * published["pairs"]


@pytest.mark.parametrize("workers", [None, 2])
async def test_the_proxy_rotates_and_every_request_meets_its_ack(
    workers: int | None, tmp_path: Path
) -> None:
    simulator = Simulator(
        SimulatorOptions(median_ms=150, p99_ms=400, seed=3, users={USER: PASSWORD})
    )
    await simulator.start()
    port = free_port()
    folder = tmp_path / "site"
    extra = ["--workers", str(workers)] if workers else []
    proc = subprocess.Popen(
        [sys.executable, "-m", "tape", "proxy", "--upstream", simulator.origin,
         "--listen", f"127.0.0.1:{port}", "-o", f"{folder}.duckdb", "--rotate", "1s", *extra],
        cwd=ROOT,
        stderr=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    try:
        await wait_listening(port)
        await drive(f"http://127.0.0.1:{port}", 400, 150.0, "long-polling", seed=4)
        await stop(proc)
    finally:
        if proc.poll() is None:
            proc.kill()
        await simulator.stop()
    names = sorted(p.name for p in folder.glob("*.duckdb"))
    # Cut by time, but only while frames come: a worker that got no connection has one segment.
    assert len(names) >= 3, names
    pattern = r"w[12]-\d{4}\.duckdb" if workers else r"\d{4}\.duckdb"
    assert all(re.fullmatch(pattern, name) for name in names), names
    (row,) = analyze_json(
        str(folder), "SELECT count(*) AS n, count(ack_ms) AS acked FROM request_latency"
    )
    assert row == {"n": 400, "acked": 400}


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


async def wait_listening(port: int) -> None:
    deadline = asyncio.get_running_loop().time() + TIMEOUT * 3
    while True:
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            if asyncio.get_running_loop().time() > deadline:
                raise
            await asyncio.sleep(0.1)
            continue
        writer.close()
        return
