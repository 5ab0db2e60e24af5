"""Real clients against the replayer: aiocometd-ng (Python) over both transports receives
exactly the recorded events, in order, with the tape's data; raw bytes stay byte-faithful."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
from aiocometd_ng import Client, ConnectionType

from replay.app import Replayer, ReplayOptions
from replay.player import PlayOptions
from tests.constants import TIMEOUT
from tests.replay.tapes import CHANNELS, recorded_data, write_tape


@pytest.fixture
async def replayer(tmp_path: Path) -> AsyncIterator[tuple[Replayer, list[bytes]]]:
    tape = tmp_path / "a.duckdb"
    events = write_tape(tape, 300, 0.002, per_frame=3)
    running = await Replayer.start(tape, ReplayOptions(play=PlayOptions(speed=1, settle=0.2)))
    yield running, events
    await running.stop()


@pytest.mark.parametrize("kind", [ConnectionType.LONG_POLLING, ConnectionType.WEBSOCKET])
async def test_aiocometd_ng_receives_exactly_the_recorded_events(
    kind: ConnectionType, replayer: tuple[Replayer, list[bytes]]
) -> None:
    running, events = replayer
    got: list[dict[str, Any]] = []
    async with Client(running.url, kind) as client:
        for channel in CHANNELS:
            await client.subscribe(channel)

        async def receive() -> None:
            async for message in client:
                got.append(message)
                if len(got) == len(events):
                    return

        await asyncio.wait_for(receive(), TIMEOUT)
    expected = [orjson.loads(e) for e in events]
    assert [m["channel"] for m in got] == [e["channel"] for e in expected]
    assert [m["data"] for m in got] == [e["data"] for e in expected]
    recorded_ids = {e["id"] for e in expected}
    assert not {m.get("id") for m in got} & recorded_ids  # fresh ids, never the recorded ones


async def test_data_is_byte_faithful_on_the_wire(replayer: tuple[Replayer, list[bytes]]) -> None:
    running, events = replayer
    async with aiohttp.ClientSession() as http:

        async def post(messages: list[dict[str, Any]]) -> bytes:
            async with http.post(running.url, data=orjson.dumps(messages)) as response:
                return await response.read()

        hs = orjson.loads(
            await post(
                [
                    {
                        "channel": "/meta/handshake",
                        "version": "1.0",
                        "supportedConnectionTypes": ["long-polling"],
                        "id": "1",
                    }
                ]
            )
        )
        cid = hs[0]["clientId"]
        await post(
            [
                {
                    "channel": "/meta/subscribe",
                    "clientId": cid,
                    "subscription": list(CHANNELS),
                    "id": "2",
                }
            ]
        )
        body = b""
        for n in range(5000):  # bounded: ends when all arrived
            body += await post(
                [
                    {
                        "channel": "/meta/connect",
                        "clientId": cid,
                        "id": str(3 + n),
                        "connectionType": "long-polling",
                    }
                ]
            )
            if body.count(b'"referenceId"') >= len(events):
                break
    for event in events:
        assert recorded_data(event) in body  # 1.50 and 1e3 and the \u00e9 escape, as recorded
