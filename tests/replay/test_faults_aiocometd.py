"""Injected faults against aiocometd-ng (PyPI), a real asyncio Bayeux client, over both
transports: what it receives when deliveries are dropped, repeated, delayed, reordered or
corrupted, and how it comes back when the server forgets it or advises a new handshake."""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path
from typing import Any

import pytest
from aiocometd_ng import Client, ConnectionType

from replay.app import Replayer, ReplayOptions
from replay.fault_core import InjectedFault
from replay.faults import parse_faults
from replay.player import PlayOptions
from tests.constants import TIMEOUT
from tests.replay.tapes import CHANNELS, write_tape

COUNT = 40
SPACING_S = 0.05
TRANSPORTS = {"long-polling": ConnectionType.LONG_POLLING, "websocket": ConnectionType.WEBSOCKET}


@pytest.fixture(scope="module")
def tape(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("faults") / "a.duckdb"
    write_tape(path, COUNT, SPACING_S)
    return path


async def run(
    tape: Path, transport: str, *specs: str, quiet_s: float = 1.0
) -> tuple[list[int], list[InjectedFault], list[str], str | None]:
    """The referenceIds the client received (until `quiet_s` passes with none), the faults
    injected, the replayer's log, and the client's error, if it gave up."""
    lines: list[str] = []
    options = ReplayOptions(
        play=PlayOptions(speed=1, settle=0.1), faults=parse_faults(list(specs)), seed=1
    )
    replayer = await Replayer.start(tape, options, log=lines.append)
    got: list[int] = []
    error = None
    try:
        async with Client(replayer.url, connection_types=[TRANSPORTS[transport]]) as client:
            for channel in CHANNELS:
                await client.subscribe(channel)
            error = await _receive(client, got, quiet_s)
    finally:
        await replayer.stop()
    return got, replayer.faults, lines, error


async def _receive(client: Client, got: list[int], quiet_s: float) -> str | None:
    deadline = asyncio.get_running_loop().time() + 4 * TIMEOUT
    while asyncio.get_running_loop().time() < deadline and len(got) < 2 * COUNT:
        try:
            message: Any = await asyncio.wait_for(client.receive(), quiet_s)
        except TimeoutError:
            return None
        except Exception as exc:  # the client gave up: what it says is what the user sees
            return f"{type(exc).__name__}: {exc}"
        got.append(int(message["data"]["referenceId"]))
    return None


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_message_faults_reach_the_client_as_injected(transport: str, tape: Path) -> None:
    specs = ("drop:nth=3", "duplicate:nth=6", "delay:nth=10,300ms", "reorder:window=3,nth=20")
    got, faults, _, error = await run(tape, transport, *specs)
    assert error is None
    assert [f.kind for f in faults] == ["drop", "duplicate", "delay", "reorder"]
    # nth counts the deliveries in the tape's order: the 3rd is referenceId 2
    assert 2 not in got
    assert got.count(5) == 2
    assert sorted(set(got)) == [n for n in range(COUNT) if n != 2]
    assert got.index(9) > got.index(12)  # delayed 300 ms: six later ones overtook it
    window = got[got.index(19) - 2 : got.index(19) + 3]
    assert sorted(n for n in window if 19 <= n <= 21) == [19, 20, 21]
    assert got[got.index(18) + 1 : got.index(18) + 4] != [19, 20, 21]  # shuffled


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_corrupt_json_costs_the_client_its_connection(transport: str, tape: Path) -> None:
    got, faults, _, error = await run(tape, transport, "corrupt:nth=10")
    assert [f.kind for f in faults] == ["corrupt"]
    assert got == list(range(9))  # what came before the bad batch, then nothing
    assert error is not None  # it reports the lost connection and does not recover


@pytest.mark.parametrize("transport", TRANSPORTS)
@pytest.mark.parametrize("spec", ["unknown-client:at=0.8s", "advice:handshake,at=0.8s"])
async def test_it_handshakes_again_and_the_timeline_goes_on(
    transport: str, spec: str, tape: Path
) -> None:
    got, faults, lines, error = await run(tape, transport, spec)
    assert error is None
    (_fault,) = faults
    handshakes = [line for line in lines if line.endswith("handshook")]
    assert len(handshakes) == 2  # the same client, once more
    assert any("takes up the timeline" in line for line in lines)
    assert got == sorted(got)
    assert len(got) == len(set(got))
    assert got[-1] == COUNT - 1
    assert COUNT - 3 <= len(got) <= COUNT  # at most what fell due while it handshook


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_a_503_loses_aiocometd_its_session(transport: str, tape: Path) -> None:
    got, faults, _, error = await run(tape, transport, "http-503:at=0.8s", quiet_s=2.0)
    assert [f.kind for f in faults] == ["http-503"]
    if transport == "websocket":  # no long-poll to fail: nothing happens to it
        assert faults[0].target == "websocket"
        assert error is None
        assert len(got) == COUNT
    else:  # PEERS.md: it does not recover from a failed connect on Python 3.11
        assert error is not None
        assert len(got) < COUNT


async def test_slow_answers_arrive_late_and_whole(tape: Path) -> None:
    with contextlib.suppress(TimeoutError):
        got, faults, _, error = await run(tape, "websocket", "slow:over=200ms,at=0.5s")
    assert error is None
    assert got == list(range(COUNT))
    assert [f.kind for f in faults] == ["slow"]
