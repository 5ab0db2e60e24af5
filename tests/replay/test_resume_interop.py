"""The replayer honours the Salesforce-style replay extension for a real third-party client:
aiocometd-ng with a replay extension written the way Salesforce's are (EMP Connector's
ReplayExtension, cometdReplayExtension.js), over long-polling and WebSocket. It resumes after a
given replayId, gets new events only with -1 and every retained one with -2, and a second
session resuming from the first one's last replayId gets the rest of the recording once."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiocometd_ng import Client, ConnectionType, Extension

from replay.app import Replayer, ReplayOptions
from replay.player import PlayOptions
from tape.frame import Frame, Session
from tape.writer import TapeWriter
from tests.constants import TIMEOUT

TOPIC = "/topic/Orders"
KINDS = [ConnectionType.LONG_POLLING, ConnectionType.WEBSOCKET]
FIRST_ID = 1001  # the recorded tape's replayIds: 1001, 1002...
T0 = 1_700_000_000_000_000_000


class SalesforceReplay(Extension):
    """ext.replay on the handshake; on each subscribe, once the server said yes, the replayId to
    resume each channel from: the last one delivered, else the one configured."""

    def __init__(self, start: int) -> None:
        self.start = start
        self.supported = False
        self.last: dict[str, int] = {}

    async def outgoing(self, payload: list[dict[str, Any]], headers: dict[str, str]) -> None:
        for message in payload:
            if message["channel"] == "/meta/handshake":
                message.setdefault("ext", {})["replay"] = True
            elif message["channel"] == "/meta/subscribe" and self.supported:
                channel = message["subscription"]
                replay = {channel: self.last.get(channel, self.start)}
                message.setdefault("ext", {})["replay"] = replay

    async def incoming(
        self, payload: list[dict[str, Any]], headers: dict[str, str] | None = None
    ) -> None:
        for message in payload:
            if message["channel"] == "/meta/handshake":
                self.supported = (message.get("ext") or {}).get("replay") is True
            elif isinstance(message.get("data"), dict):
                replay_id = (message["data"].get("event") or {}).get("replayId")
                if isinstance(replay_id, int):
                    self.last[message["channel"]] = replay_id


def write_tape(path: Path, count: int, spacing_s: float, *, recorded_ids: bool) -> None:
    """`count` deliveries on TOPIC: Salesforce's shape with replayIds FIRST_ID... when
    `recorded_ids`, else plain data {"n": n} (the replayer then numbers them 1, 2...)."""
    with TapeWriter(path) as writer:
        writer.put_session(Session(session_id="rec", transport="websocket", started_ns=T0))
        for n in range(count):
            data: dict[str, Any] = {"n": n}
            if recorded_ids:
                data = {"event": {"replayId": FIRST_ID + n}, "payload": {"n": n}}
            raw = orjson.dumps([{"channel": TOPIC, "data": data, "id": f"r{n}"}])
            offset = int((0.2 + n * spacing_s) * 1e9)
            writer.write(Frame("rec", n + 1, T0 + offset, offset, "in", "websocket", "bayeux", raw))


@pytest.fixture
async def start(tmp_path: Path) -> AsyncIterator[Callable[..., Any]]:
    running: list[Replayer] = []

    async def start(count: int, spacing_s: float, *, recorded_ids: bool, **play: Any) -> Replayer:
        tape = tmp_path / f"t{len(running)}.duckdb"
        write_tape(tape, count, spacing_s, recorded_ids=recorded_ids)
        options = ReplayOptions(play=PlayOptions(**({"settle": 0.1} | play)))
        running.append(await Replayer.start(tape, options))
        return running[-1]

    yield start
    for replayer in running:
        await replayer.stop()


def replay_id(message: dict[str, Any]) -> int:
    return int(message["data"]["event"]["replayId"])


async def receive(
    client: Client, until: Callable[[list[dict[str, Any]]], bool], quiet_s: float | None = None
) -> list[dict[str, Any]]:
    """Deliveries until `until` holds; then, with `quiet_s`, any that follow within it."""
    got: list[dict[str, Any]] = []

    async def loop() -> None:
        async for message in client:
            got.append(message)
            if until(got):
                return

    await asyncio.wait_for(loop(), TIMEOUT)
    if quiet_s is not None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(loop(), quiet_s)
    return got


@pytest.mark.parametrize("kind", KINDS, ids=lambda k: k.value)
async def test_a_subscribe_resumes_after_the_given_replay_id(
    kind: ConnectionType, start: Callable[..., Any]
) -> None:
    spacing = 0.1
    replayer = await start(40, spacing, recorded_ids=True)
    extension = SalesforceReplay(FIRST_ID + 29)
    async with Client(replayer.url, kind, extensions=[extension]) as client:
        subscribed = time.monotonic()
        await client.subscribe(TOPIC)
        assert extension.supported  # the replayer acknowledged ext.replay
        first = await receive(client, lambda g: True)
        waited = time.monotonic() - subscribed
        rest = await receive(client, lambda g: replay_id(g[-1]) == FIRST_ID + 39, quiet_s=0.3)
    got = first + rest
    assert [replay_id(m) for m in got] == list(range(FIRST_ID + 30, FIRST_ID + 40))
    assert [m["data"]["payload"]["n"] for m in got] == list(range(30, 40))  # as recorded
    # The timeline starts at the event after the id: not after 30 recorded gaps (3 s).
    assert waited < 20 * spacing


@pytest.mark.parametrize("kind", KINDS, ids=lambda k: k.value)
async def test_new_only_and_all_retained_against_a_playing_timeline(
    kind: ConnectionType, start: Callable[..., Any]
) -> None:
    # The shared clock: one event bus. A plain client starts it; a quarter of the way through,
    # one client joins with -1 and one with -2.
    count = 80
    replayer = await start(count, 0.025, recorded_ids=False, clock="shared")
    async with Client(replayer.url, kind) as plain:
        await plain.subscribe(TOPIC)
        first_part = await receive(plain, lambda g: len(g) >= count // 4)
        assert "event" not in first_part[0]["data"]  # it did not ask: data as recorded
        new_only, every = SalesforceReplay(-1), SalesforceReplay(-2)
        async with (
            Client(replayer.url, kind, extensions=[new_only]) as late,
            Client(replayer.url, kind, extensions=[every]) as full,
        ):
            await late.subscribe(TOPIC)
            await full.subscribe(TOPIC)
            got_new = await receive(late, lambda g: replay_id(g[-1]) == count, quiet_s=0.2)
            got_all = await receive(full, lambda g: replay_id(g[-1]) == count, quiet_s=0.2)
    new_ids = [replay_id(m) for m in got_new]
    assert new_ids == list(range(new_ids[0], count + 1))  # in order, none twice, to the end
    assert new_ids[0] > count // 4  # nothing retained
    assert [replay_id(m) for m in got_all] == list(range(1, count + 1))
    assert [m["data"]["n"] for m in got_all] == list(range(count))


@pytest.mark.parametrize("kind", KINDS, ids=lambda k: k.value)
async def test_a_new_session_resumes_where_the_last_one_stopped(
    kind: ConnectionType, start: Callable[..., Any]
) -> None:
    count = 50
    replayer = await start(count, 0.01, recorded_ids=False)
    async with Client(replayer.url, kind, extensions=[SalesforceReplay(-2)]) as first:
        await first.subscribe(TOPIC)
        before = await receive(first, lambda g: len(g) >= 20)
    # As durable Salesforce consumers do, the application keeps the replayId of the last event
    # it processed (the transport may have taken more, lost with the session) and resumes there.
    resumed = SalesforceReplay(replay_id(before[-1]))
    async with Client(replayer.url, kind, extensions=[resumed]) as second:
        await second.subscribe(TOPIC)  # with ext.replay {TOPIC: that id}
        after = await receive(second, lambda g: replay_id(g[-1]) == count, quiet_s=0.3)
    ids = [replay_id(m) for m in before + after]
    assert ids == list(range(1, count + 1))  # every event once, in order, across the sessions
    assert [m["data"]["n"] for m in before + after] == list(range(count))
