"""Fuzz: a few thousand hostile requests drawn by Hypothesis (fuzz_requests.py) hit the replayer
and the GWS simulator over long-polling and WebSocket (fuzz_hostile.py), with a few slow-header
connections, while well-behaved clients (fuzz_clients.py: long-polling, WebSocket, and the
simulator's agent posting REST requests) keep working.

It fails on any 5xx; a WebSocket the server drops without a close frame; a request to the
simulator without credentials (or a POST without the CSRF token) not refused; an error logged or
given to the event loop's exception handler; a well-behaved client receiving nothing for more
than GAP, or waiting longer than that (plus its connect timeout) for an answer or an ack. The
failure (fuzz_report.py) lists each kind of problem with an example request;
COMETD_TAPE_FUZZ_SEED replays a run.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from replay.app import Replayer, ReplayOptions
from replay.player import PlayOptions
from replay.simulator import Simulator, SimulatorOptions
from tests.constants import TIMEOUT
from tests.replay.fuzz_attack import attack
from tests.replay.fuzz_clients import SPACING, Target
from tests.replay.fuzz_report import findings, summary
from tests.replay.fuzz_requests import Hostile, fuzz_seed, hostile_requests
from tests.replay.fuzz_watch import Watch
from tests.replay.tapes import write_tape

pytestmark = pytest.mark.slow


@contextlib.asynccontextmanager
async def running(name: str, tmp_path: Path) -> AsyncIterator[Target]:
    if name == "replay":
        tape = tmp_path / "fuzz.duckdb"
        write_tape(tape, 40, SPACING)
        replayer = await Replayer.start(tape, ReplayOptions(play=PlayOptions(speed=1, loop=True)))
        target, stop = Target(name, replayer.server.url("/").rstrip("/"), False), replayer.stop
    else:
        simulator = Simulator(SimulatorOptions(median_ms=5, p99_ms=20, seed=1))
        await simulator.start()
        target, stop = Target(name, simulator.origin, True), simulator.stop
    try:
        yield target
    finally:
        await asyncio.wait_for(stop(), TIMEOUT)


@pytest.fixture(scope="module")
def hostile() -> tuple[int, list[Hostile]]:
    seed = fuzz_seed()
    return seed, hostile_requests(seed)


@pytest.mark.parametrize("name", ["replay", "simulate"])
async def test_hostile_requests_do_not_hurt_a_well_behaved_client(
    name: str, tmp_path: Path, hostile: tuple[int, list[Hostile]]
) -> None:
    seed, requests = hostile
    async with Watch() as watch, running(name, tmp_path) as target:
        result = await attack(target, requests)
    problems = findings(result, watch)
    if problems:
        pytest.fail(
            f"{summary(result, watch, seed)}\n\n"
            + "\n".join(problems)
            + f"\n\n(the same requests again: COMETD_TAPE_FUZZ_SEED={seed})",
            pytrace=False,
        )
    print("\n" + summary(result, watch, seed))  # shown with -s
