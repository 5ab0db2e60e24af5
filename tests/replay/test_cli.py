"""`cometd-tape replay` as a user runs it, and the playback options: shared clock, loop,
channel filter and time range."""

from __future__ import annotations

import asyncio
import re
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import aiohttp
import orjson

from replay.app import Replayer, ReplayOptions
from replay.player import PlayOptions
from replay.timeline import TimelineOptions
from tests.constants import ROOT, TIMEOUT
from tests.replay.tapes import CHANNELS, write_tape


class Poller:
    """A bare long-polling Bayeux client that collects deliveries."""

    def __init__(self, http: aiohttp.ClientSession, url: str) -> None:
        self.http, self.url, self.cid, self.n = http, url, "", 0
        self.received: list[dict[str, Any]] = []

    async def post(self, message: dict[str, Any]) -> list[dict[str, Any]]:
        self.n += 1
        body = orjson.dumps([{**message, "id": str(self.n), "clientId": self.cid}])
        async with self.http.post(self.url, data=body) as response:
            replies: list[dict[str, Any]] = orjson.loads(await response.read())
        self.received += [m for m in replies if not m["channel"].startswith("/meta/")]
        return replies

    async def start(self, channels: list[str]) -> None:
        hs = await self.post(
            {
                "channel": "/meta/handshake",
                "version": "1.0",
                "supportedConnectionTypes": ["long-polling"],
            }
        )
        self.cid = hs[0]["clientId"]
        await self.post({"channel": "/meta/subscribe", "subscription": channels})

    async def until(self, count: int) -> list[dict[str, Any]]:
        for _ in range(1000):  # bounded
            if len(self.received) >= count:
                break
            await self.post({"channel": "/meta/connect", "connectionType": "long-polling"})
        return self.received


def replay_cmd(tape: Path, *options: str) -> list[str]:
    """`cometd-tape replay TAPE` on a free loopback port, as a user would start it."""
    return [sys.executable, "-m", "tape", "replay", str(tape), "--listen", "127.0.0.1:0", *options]


async def start_replay(tape: Path, *options: str) -> tuple[subprocess.Popen[str], str]:
    """The CLI started as a user would, and the first line it printed (its URLs)."""
    proc = subprocess.Popen(
        replay_cmd(tape, *options),
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    return proc, await asyncio.to_thread(proc.stdout.readline)


def refs(messages: list[dict[str, Any]]) -> list[str]:
    return [m["data"]["referenceId"] for m in messages]


async def test_the_cli_serves_logs_and_summarises(tmp_path: Path) -> None:
    tape = tmp_path / "t.duckdb"
    write_tape(tape, 20, 0.001)
    proc, line = await start_replay(tape, "--speed", "0")
    try:
        match = re.search(r"replaying 20 messages from .* on (http://127\.0\.0\.1:\d+/\S+)", line)
        assert match, line
        async with aiohttp.ClientSession() as http:
            client = Poller(http, match.group(1))
            await client.start(list(CHANNELS))
            assert refs(await client.until(20)) == [str(i) for i in range(20)]
        proc.send_signal(signal.SIGINT)
        _, stderr = await asyncio.to_thread(proc.communicate, timeout=TIMEOUT)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0
    assert "subscribed to /v2/me/outbound, /me/internal" in stderr
    assert "served 1 clients, 20 messages emitted (20 in the timeline)" in stderr
    assert "Traceback" not in stderr


async def play(tape: Path, options: ReplayOptions, clients: int, count: int) -> list[list[str]]:
    replayer = await Replayer.start(tape, options)
    try:
        async with aiohttp.ClientSession() as http:
            pollers = [Poller(http, replayer.url) for _ in range(clients)]
            for poller in pollers:
                await poller.start(list(CHANNELS))
            got = await asyncio.wait_for(
                asyncio.gather(*(p.until(count) for p in pollers)), TIMEOUT
            )
    finally:
        await replayer.stop()
    return [refs(g) for g in got]


async def test_channel_filter_and_time_range(tmp_path: Path) -> None:
    tape = tmp_path / "t.duckdb"
    write_tape(tape, 40, 0.01)  # offsets 0, 0.01, ... 0.39 s
    options = ReplayOptions(
        timeline=TimelineOptions(channels=("/v2/me/*",), start=0.1, end=0.2),
        play=PlayOptions(speed=0),
    )
    (got,) = await play(tape, options, 1, 6)
    assert got == ["10", "12", "14", "16", "18", "20"]  # even ones are on /v2/me/outbound


async def test_loop_repeats_the_timeline(tmp_path: Path) -> None:
    tape = tmp_path / "t.duckdb"
    write_tape(tape, 5, 0.01)
    options = ReplayOptions(play=PlayOptions(speed=1, loop=True, settle=0.05))
    (got,) = await play(tape, options, 1, 15)
    assert got[:15] == [str(i % 5) for i in range(15)]


async def test_a_shared_clock_broadcasts_one_stream(tmp_path: Path) -> None:
    tape = tmp_path / "t.duckdb"
    write_tape(tape, 30, 0.01)
    options = ReplayOptions(play=PlayOptions(speed=1, clock="shared", settle=0.1))
    first, second = await play(tape, options, 2, 30)
    assert first == second == [str(i) for i in range(30)]


def test_filters_that_leave_nothing_are_a_clear_error(tmp_path: Path) -> None:
    tape = tmp_path / "t.duckdb"
    write_tape(tape, 5, 0.01)
    result = subprocess.run(
        replay_cmd(tape, "--from", "5", "--to", "1"),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        check=False,
    )
    assert result.returncode == 1
    assert "is left after the --channel/--from/--to filters" in result.stderr
    assert "Traceback" not in result.stderr
