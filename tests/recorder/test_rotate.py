"""`cometd-tape record --rotate` against a real Faye server over both transports: segments cut
by time and by size hold every message once and in order, a session's seq runs on across
them, and the set can be analysed while the recorder is still writing it."""

from __future__ import annotations

import asyncio
import os
import secrets
import signal
import subprocess
import sys
from pathlib import Path

import duckdb
import orjson
import pytest

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
