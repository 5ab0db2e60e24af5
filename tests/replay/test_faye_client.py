"""Faye's own Node client (npm `faye`) against the replayer, over both transports: it receives
exactly the recorded events, in recorded order, with the tape's data."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from replay.app import Replayer, ReplayOptions
from replay.player import PlayOptions
from tests.peers.faye_client import FayeClients
from tests.replay.tapes import CHANNELS, write_tape


@pytest.mark.parametrize("transport", ["long-polling", "websocket"])
async def test_faye_client_receives_the_recorded_events(
    transport: str, faye_client: FayeClients, tmp_path: Path
) -> None:
    tape = tmp_path / "a.duckdb"
    events = write_tape(tape, 200, 0.002, per_frame=2)
    replayer = await Replayer.start(tape, ReplayOptions(play=PlayOptions(speed=1, settle=0.3)))
    try:
        client = await faye_client(replayer.url, transport, list(CHANNELS))  # type: ignore[arg-type]
        got = await client.wait_messages(len(events))
    finally:
        await replayer.stop()
    expected = [orjson.loads(e) for e in events]
    for channel in CHANNELS:  # Faye's client delivers per subscription; order holds per channel
        mine = [m["data"] for m in got if m["channel"] == channel]
        assert mine == [e["data"] for e in expected if e["channel"] == channel]
    assert len(got) == len(events)
