"""The fuzz test's attack (test_fuzz.py): the well-behaved clients get going, then the hostile
barrage and the slow-header connections hit the server until they are through."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Coroutine
from dataclasses import dataclass, field
from typing import Any

import pytest

from tests.constants import TIMEOUT
from tests.replay.fuzz_clients import (
    GAP,
    Good,
    Target,
    agent_desk,
    logged_in,
    long_polling,
    websocket,
)
from tests.replay.fuzz_hostile import SLOW_HEADS, Barrage, trickle
from tests.replay.fuzz_requests import Hostile


@dataclass
class Attack:
    """One attack on a target: what the report is made from."""

    target: Target
    barrage: Barrage
    goods: list[Good]
    start: float = 0.0
    end: float = 0.0
    trickles: list[str] = field(default_factory=list)


def launch(*coroutines: Coroutine[Any, Any, None]) -> list[asyncio.Task[None]]:
    return [asyncio.get_running_loop().create_task(c) for c in coroutines]


async def stopped(tasks: list[asyncio.Task[None]], goods: list[Good]) -> None:
    for task in tasks:
        task.cancel()
    results = await asyncio.gather(*tasks, return_exceptions=True)
    for good, result in zip(goods, results, strict=False):
        if isinstance(result, Exception):
            good.problem(f"the client crashed: {result!r}")


async def attack(target: Target, requests: list[Hostile]) -> Attack:
    """Well-behaved clients get going; then the barrage and the slow heads, until through."""
    goods = [Good("long-polling client"), Good("WebSocket client")]
    async with contextlib.AsyncExitStack() as stack:
        http, csrf = await logged_in(target, stack)
        clients = [
            long_polling(goods[0], http, target.url("/cometd"), csrf),
            websocket(goods[1], http, target.url("/cometd", "ws")),
        ]
        if target.gws:
            goods.append(Good("REST agent"))
            clients.append(agent_desk(goods[2], http, target.origin, csrf))
        stack.push_async_callback(stopped, launch(*clients), goods)
        await warmed_up(goods)
        barrage = await stack.enter_async_context(Barrage(target, requests))
        result = Attack(target, barrage, goods)
        slow = launch(*(trickle(target.port, head, result.trickles) for head in SLOW_HEADS))
        stack.push_async_callback(stopped, slow, [])
        result.start = time.monotonic()
        await barrage.run()
        result.end = time.monotonic()
        if target.gws:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(GAP):  # the last acks are due within it
                    while not acked(goods, result.start, result.end):
                        await asyncio.sleep(0.01)
    return result


async def warmed_up(goods: list[Good]) -> None:
    """Deliveries flowing to every well-behaved client (the agent: its requests answered)."""
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(TIMEOUT):
            await asyncio.gather(*(good.started.wait() for good in goods))
    idle = [
        f"{g.name}: {g.problems[:2] or 'nothing received'}" for g in goods if not g.started.is_set()
    ]
    if idle:
        pytest.fail(f"the well-behaved clients never got going: {'; '.join(idle)}", pytrace=False)


def acked(goods: list[Good], start: float, end: float) -> bool:
    """Every agent request posted between start and end was acked to both Bayeux clients (and
    the agent has posted since end, so the request in flight then is among them)."""
    agent, bayeux = goods[-1], goods[:-1]
    due = agent.sent_between(start, end).keys()
    posted_since = max(agent.sent.values(), default=0.0) > end
    return posted_since and all(due <= client.acks.keys() for client in bayeux)
