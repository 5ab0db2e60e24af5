"""Timing at a real client: 2,000 events over 10 s at --speed 1, delivery time minus recorded
offset. WebSocket: median <= 2 ms, p99 <= 10 ms. Long-polling: reported (round-trip bound)."""

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


async def receive_ws(url: str, count: int) -> list[float]:
    """Receipt times of `count` deliveries, seen by a bare WebSocket Bayeux client that
    re-sends /meta/connect after each reply, as real clients do."""
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
            times += [now for m in messages if not m["channel"].startswith("/meta/")]
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
    try:
        times = await receive_ws(replayer.ws_url, COUNT)
    finally:
        await replayer.stop()
    assert len(times) == COUNT
    late = sorted(lateness_ms(times))
    median, p99 = statistics.median(late), late[int(0.99 * len(late)) - 1]
    print(
        f"\nwebsocket lateness over {COUNT} events: median {median:.2f} ms, p99 {p99:.2f} ms, "
        f"max {late[-1]:.2f} ms"
    )
    assert median <= 2.0
    assert p99 <= 10.0
    assert (times[-1] - times[0]) == pytest.approx((COUNT - 1) * SPACING, abs=0.05)  # no drift
