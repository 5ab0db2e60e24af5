"""Timing at a real client: 2,000 events over 10 s at --speed 1 arrive complete, in order, and
paced as recorded (neither bunched up nor stretched), within bounds scaled from TIMEOUT that a
loaded machine meets. The precise lateness figures (median, p99) are a benchmark's job:
`python benchmarks/replay.py` prints them (see docs/benchmarks.md)."""

from __future__ import annotations

import statistics
import time
from pathlib import Path

import aiohttp
import orjson
import pytest

from replay.app import Replayer, ReplayOptions
from replay.player import PlayOptions
from tests.constants import TIMEOUT
from tests.replay.tapes import CHANNELS, write_tape

COUNT, SPACING = 2000, 0.005


def _bayeux(*messages: dict[str, object]) -> str:
    return orjson.dumps(list(messages)).decode()


async def receive_ws(url: str, count: int, ids: list[str] | None = None) -> list[float]:
    """Receipt times of `count` deliveries, seen by a bare WebSocket Bayeux client that
    re-sends /meta/connect after each reply, as real clients do; their referenceIds go to
    `ids`."""
    times: list[float] = []
    async with aiohttp.ClientSession() as http, http.ws_connect(url) as ws:
        hello = {
            "channel": "/meta/handshake",
            "version": "1.0",
            "id": "h",
            "supportedConnectionTypes": ["websocket"],
        }
        await ws.send_str(_bayeux(hello))
        cid = orjson.loads((await ws.receive()).data)[0]["clientId"]

        def connect(n: int) -> str:
            return _bayeux(
                {
                    "channel": "/meta/connect",
                    "clientId": cid,
                    "connectionType": "websocket",
                    "id": f"c{n}",
                }
            )

        subscribe = {
            "channel": "/meta/subscribe",
            "clientId": cid,
            "subscription": list(CHANNELS),
            "id": "s",
        }
        await ws.send_str(_bayeux(subscribe))
        await ws.send_str(connect(0))
        deadline, n = time.monotonic() + COUNT * SPACING + TIMEOUT, 0
        while len(times) < count and time.monotonic() < deadline:
            frame = await ws.receive(timeout=TIMEOUT)
            now = time.monotonic()
            messages = orjson.loads(frame.data)
            events = [m for m in messages if not m["channel"].startswith("/meta/")]
            times += [now] * len(events)
            if ids is not None:
                ids += [str(m["data"]["referenceId"]) for m in events]
            if any(m["channel"] == "/meta/connect" for m in messages):
                n += 1
                await ws.send_str(connect(n))
    return times


def lateness_ms(times: list[float]) -> list[float]:
    offsets = [i * SPACING for i in range(len(times))]
    skew = min(t - o for t, o in zip(times, offsets, strict=True))  # the earliest was on time
    return [(t - o - skew) * 1000 for t, o in zip(times, offsets, strict=True)]


@pytest.mark.slow
async def test_websocket_delivery_follows_the_recorded_timing(tmp_path: Path) -> None:
    tape = tmp_path / "t.duckdb"
    write_tape(tape, COUNT, SPACING)
    replayer = await Replayer.start(tape, ReplayOptions(play=PlayOptions(speed=1)))
    ids: list[str] = []
    try:
        times = await receive_ws(replayer.ws_url, COUNT, ids)
    finally:
        await replayer.stop()
    assert ids == [str(i) for i in range(COUNT)]  # complete, in the recorded order
    # Paced as recorded: the first to the last delivery takes the recording's ~10 s, not
    # nothing (sent at once) nor twice as long. Lateness is against the recorded offsets, the
    # earliest delivery taken as on time, so a bunched-up or stretched replay is late by seconds.
    recorded = (COUNT - 1) * SPACING
    assert abs((times[-1] - times[0]) - recorded) <= TIMEOUT / 10
    late = sorted(lateness_ms(times))
    print(f"\nwebsocket lateness: median {statistics.median(late):.2f} ms, max {late[-1]:.2f} ms")
    assert statistics.median(late) <= TIMEOUT / 20 * 1000
    assert late[-1] <= TIMEOUT / 5 * 1000
