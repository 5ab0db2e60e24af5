"""Fuzz: a few thousand hostile requests drawn by Hypothesis (tests/replay/fuzzing.py) hit the
replayer and the GWS simulator over long-polling and WebSocket, with a few slow-header
connections, while well-behaved clients (long-polling, WebSocket, and the simulator's agent
posting REST requests) keep working.

It fails on any 5xx; a WebSocket the server drops without a close frame; a request to the
simulator without credentials (or a POST without the CSRF token) not refused; an error logged or
given to the event loop's exception handler; a well-behaved client receiving nothing for more
than GAP, or waiting longer than that (plus its connect timeout) for an answer or an ack. The
failure lists each kind of problem with an example request; COMETD_TAPE_FUZZ_SEED replays a run.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import itertools
import logging
import sys
import threading
import time
import traceback
from collections import Counter
from collections.abc import AsyncIterator, Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
from aiohttp import WSMsgType

from replay.app import Replayer, ReplayOptions
from replay.player import PlayOptions
from replay.simulator import Simulator, SimulatorOptions
from tests.constants import TIMEOUT
from tests.replay.fuzzing import (
    LOAD_BUDGET,
    REFUSED,
    SLOW_HEADS,
    Barrage,
    Hostile,
    Outcome,
    Target,
    fuzz_seed,
    handshake,
    hostile_requests,
    login,
    refused,
    subscribe,
    trickle,
)
from tests.replay.tapes import write_tape

pytestmark = pytest.mark.slow

GAP = max(1.0, TIMEOUT / 10)  # the longest a well-behaved client may go without receiving
HOLD_MS = int(200 * TIMEOUT)  # the well-behaved clients' connect timeout advice: 2 s
SPACING = 0.05  # between the tape's deliveries, played in a loop
REST_EVERY = 0.05  # how often the simulator's well-behaved agent posts a request
STALL_SAMPLE = 0.5  # a stall this long has the loop's thread's stack sampled
QUIET = ("aiohttp", "asyncio")  # their errors go in the failure, grouped, not echoed by pytest


@dataclass
class Good:
    """What a well-behaved client received and when, and what went wrong for it."""

    name: str
    receipts: list[float] = field(default_factory=list)  # deliveries (the agent: responses)
    round_trips: list[tuple[float, float]] = field(default_factory=list)  # (sent, answered)
    deliveries: int = 0
    acks: dict[str, float] = field(default_factory=dict)  # referenceId -> when it came
    sent: dict[str, float] = field(default_factory=dict)  # the agent: referenceId -> posted
    problems: list[tuple[float, str]] = field(default_factory=list)
    started: asyncio.Event = field(default_factory=asyncio.Event)

    def problem(self, text: str) -> None:
        self.problems.append((time.monotonic(), text[:300]))

    def received(self, messages: list[dict[str, Any]], at: float) -> list[dict[str, Any]]:
        """Records a batch; returns its meta replies."""
        replies: list[dict[str, Any]] = []
        deliveries: list[dict[str, Any]] = []
        for message in messages:
            meta = str(message.get("channel")).startswith("/meta/")
            (replies if meta else deliveries).append(message)
            if meta and message.get("successful") is not True:
                self.problem(f"{message.get('channel')} failed: {message}")
        if deliveries:
            self.receipts.append(at)
            self.deliveries += len(deliveries)
            self.started.set()
        for message in deliveries:
            data = message.get("data")
            if isinstance(data, dict) and isinstance(data.get("referenceId"), str):
                self.acks.setdefault(data["referenceId"], at)
        return replies


def connect(client_id: str, n: int, kind: str) -> bytes:
    message = {"channel": "/meta/connect", "clientId": client_id, "connectionType": kind}
    return orjson.dumps([message | {"advice": {"timeout": HOLD_MS}, "id": str(n)}])


def reconnect_advice(replies: list[dict[str, Any]]) -> bool:
    return any(r.get("advice", {}).get("reconnect") == "handshake" for r in replies)


async def long_polling(
    good: Good, http: aiohttp.ClientSession, url: str, csrf: dict[str, str]
) -> None:
    async def post(body: bytes, is_connect: bool = False) -> list[dict[str, Any]]:
        sent = time.monotonic()
        async with http.post(url, data=body, headers=csrf) as response:
            reply = await response.read()
        at = time.monotonic()
        if response.status != 200:
            good.problem(f"HTTP {response.status} for {body[:60]!r}: {reply[:200]!r}")
            await asyncio.sleep(SPACING)
            return []
        if is_connect:
            good.round_trips.append((sent, at))
        return good.received(orjson.loads(reply), at)

    ids = itertools.count(3)
    while True:
        try:
            replies = await post(handshake("long-polling"))
            if not replies or "clientId" not in replies[0]:
                await asyncio.sleep(SPACING)
                continue
            client_id = replies[0]["clientId"]
            await post(subscribe(client_id))
            while not reconnect_advice(replies):
                body = connect(client_id, next(ids), "long-polling")
                replies = await post(body, is_connect=True)
        except (aiohttp.ClientError, ValueError) as exc:
            good.problem(repr(exc))
            await asyncio.sleep(SPACING)


async def websocket(good: Good, http: aiohttp.ClientSession, url: str) -> None:
    async with http.ws_connect(url, max_msg_size=0, heartbeat=None) as ws:
        await ws.send_bytes(handshake("websocket"))
        sent, n, client_id = 0.0, 3, ""
        async for frame in ws:
            at = time.monotonic()
            if frame.type is not WSMsgType.TEXT:
                good.problem(f"unexpected {frame.type.name} frame: {frame.data!r}")
                continue
            for reply in good.received(orjson.loads(frame.data), at):
                if reply["channel"] == "/meta/connect":
                    good.round_trips.append((sent, at))
                if reply["channel"] == "/meta/handshake" and reply.get("successful"):
                    client_id = reply["clientId"]
                    await ws.send_bytes(subscribe(client_id))
                elif reconnect_advice([reply]):
                    await ws.send_bytes(handshake("websocket"))
                    continue
                elif reply["channel"] != "/meta/connect":
                    continue
                sent, n = time.monotonic(), n + 1
                await ws.send_bytes(connect(client_id, n, "websocket"))
    good.problem(f"the server closed the WebSocket (code {ws.close_code})")


async def agent_desk(
    good: Good, http: aiohttp.ClientSession, origin: str, csrf: dict[str, str]
) -> None:
    """The simulator's agent: a DoNotCallRecord every REST_EVERY, each acked over Bayeux."""
    for n in itertools.count():
        reference = f"good-{n}"
        body = orjson.dumps({"operationName": "DoNotCallRecord", "referenceId": reference})
        sent = time.monotonic()
        try:
            url = f"{origin}/api/v2/me/outbound-records/{n}"
            async with http.post(url, data=body, headers=csrf) as response:
                reply = await response.read()
        except aiohttp.ClientError as exc:
            good.problem(f"{reference}: {exc!r}")
            await asyncio.sleep(REST_EVERY)
            continue
        at = time.monotonic()
        good.receipts.append(at)
        good.round_trips.append((sent, at))
        good.sent[reference] = sent
        good.started.set()
        if response.status != 200 or orjson.loads(reply) != {"statusCode": 0}:
            good.problem(f"{reference}: HTTP {response.status} {reply[:200]!r}")
        await asyncio.sleep(REST_EVERY)


class Watch(logging.Handler):
    """Records logged at ERROR or above (aiohttp's "Error handling request" among them), what
    the event loop's exception handler is given, the loop's stalls (a 10 ms ticker's delay),
    and, from a thread, where the loop's thread was when a stall passed STALL_SAMPLE."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[logging.LogRecord] = []
        self.contexts: list[dict[str, Any]] = []
        self.stalls: list[tuple[float, float]] = []  # (when, how long)
        self.blocked_in: list[tuple[float, list[str]]] = []  # (stalled since, innermost frames)
        self._beat = time.monotonic()
        self._done = threading.Event()

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    async def __aenter__(self) -> Watch:
        gc.collect()  # what earlier tests left is theirs to report, not this test's
        self._loggers = [logging.getLogger(name) for name in ("", *QUIET)]
        for logger in self._loggers:
            logger.addHandler(self)
        self._propagate = [logger.propagate for logger in self._loggers]
        for logger in self._loggers[1:]:
            logger.propagate = False
        loop = asyncio.get_running_loop()
        self._previous = loop.get_exception_handler()
        loop.set_exception_handler(lambda _loop, context: self.contexts.append(context))
        self._ticker = loop.create_task(self._tick())
        loop_thread = threading.get_ident()
        self._sampler = threading.Thread(target=self._sample, args=(loop_thread,), daemon=True)
        self._sampler.start()
        return self

    async def __aexit__(self, *_: object) -> None:
        self._done.set()
        self._sampler.join()
        self._ticker.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._ticker
        gc.collect()  # "Task exception was never retrieved" is reported when a task is freed
        await asyncio.sleep(0)
        asyncio.get_running_loop().set_exception_handler(self._previous)
        for logger, propagate in zip(self._loggers, self._propagate, strict=True):
            logger.removeHandler(self)
            logger.propagate = propagate

    async def _tick(self) -> None:
        while True:
            before = self._beat = time.monotonic()
            await asyncio.sleep(0.01)
            late = time.monotonic() - before - 0.01
            if late > 0.05:
                self.stalls.append((before, late))

    def _sample(self, loop_thread: int) -> None:
        sampled = 0.0
        while not self._done.wait(0.05):
            beat = self._beat
            if time.monotonic() - beat > STALL_SAMPLE and beat != sampled:
                sampled = beat
                frame = sys._current_frames().get(loop_thread)
                stack = traceback.extract_stack(frame) if frame is not None else []
                ours = [f for f in stack if "site-packages" not in f.filename][-3:]
                self.blocked_in.append((beat, [_frame_line(f) for f in ours]))


@dataclass
class Attack:
    target: Target
    barrage: Barrage
    goods: list[Good]
    start: float = 0.0
    end: float = 0.0
    trickles: list[str] = field(default_factory=list)


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
        jar = aiohttp.CookieJar(unsafe=True)
        http = await stack.enter_async_context(aiohttp.ClientSession(cookie_jar=jar))
        csrf = await login(target, http)
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
    due = {ref for ref, sent in agent.sent.items() if start <= sent <= end}
    posted_since = max(agent.sent.values(), default=0.0) > end
    return posted_since and all(due <= client.acks.keys() for client in bayeux)


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


# --- the report ------------------------------------------------------------------------------


def findings(a: Attack, watch: Watch) -> list[str]:
    outcomes = a.barrage.outcomes
    out = []
    if not a.barrage.finished:
        done = sum(o.ended < float("inf") for o in outcomes)
        out.append(
            f"THE LOAD WAS NOT THROUGH IN {LOAD_BUDGET:.0f} s: {done} of "
            f"{len(a.barrage.requests)} hostile requests answered"
        )
    out += grouped("HTTP 5xx", [o for o in outcomes if (o.status or 0) >= 500])
    not_refused = [
        o
        for o in outcomes
        if refused(a.target, o.request) and o.status is not None and o.status not in REFUSED
    ]
    out += grouped("NOT REFUSED WITHOUT A LOGIN OR A CSRF TOKEN (401/403)", not_refused)
    out += grouped("WEBSOCKETS DROPPED WITHOUT A CLOSE FRAME", [o for o in outcomes if o.dropped])
    out += logged(watch)
    for good in a.goods:
        out += good_findings(good, a, watch)
    return out


def grouped(title: str, items: list[Outcome]) -> list[str]:
    """A count by kind of request, and one example of each kind."""
    if not items:
        return []
    kinds = Counter(o.request.kind for o in items)
    lines = [f"{title}: {len(items)} ({', '.join(f'{k} {n}' for k, n in kinds.most_common())})"]
    for kind in kinds:
        o = next(o for o in items if o.request.kind == kind)
        if o.dropped:
            lines.append(f"  - {o.close}: {o.request}")
            lines.append(f"    (the frame before it on that socket: {o.after or 'none'})")
        else:
            lines.append(f"  - HTTP {o.status}: {o.request}")
    return lines


def _frame_line(frame: traceback.FrameSummary) -> str:
    return f"{Path(frame.filename).name}:{frame.lineno} in {frame.name}: {frame.line}"


def _error(exc: BaseException | None) -> tuple[str, str, list[str]]:
    """The exception's type, where it was raised (the innermost frame outside site-packages),
    and those frames, innermost last."""
    if exc is None:
        return "", "", []
    frames = traceback.extract_tb(exc.__traceback__)
    ours = [f for f in frames if "site-packages" not in f.filename][-3:] or frames[-1:]
    lines = [_frame_line(f) for f in ours]
    where = f"{ours[-1].filename}:{ours[-1].lineno}" if ours else ""
    return f"{type(exc).__name__}: {str(exc)[:160]}", where, lines


def logged(watch: Watch) -> list[str]:
    groups: dict[tuple[str, str, str], list[Any]] = {}
    for record in watch.records:
        exc = record.exc_info[1] if record.exc_info else None
        what, where, frames = _error(exc)
        source = f"{record.name} logged {record.getMessage()[:100]!r}"
        groups.setdefault((source, what.split(":")[0], where), [0, what, frames])[0] += 1
    for context in watch.contexts:
        what, where, frames = _error(context.get("exception"))
        message = str(context.get("message"))[:100].split("(")[0]
        source = f"the loop's exception handler got {message!r}"
        groups.setdefault((source, what.split(":")[0], where), [0, what, frames])[0] += 1
    if not groups:
        return []
    total = sum(count for count, _, _ in groups.values())
    lines = [f"ERRORS LOGGED: {total}, {len(groups)} distinct"]
    ranked = sorted(groups.items(), key=lambda item: -item[1][0])
    for (source, _, _), (count, what, frames) in ranked[:8]:
        lines.append(f"  - {count} x {source}: {what}")
        lines += [f"        {frame}" for frame in frames]
    return lines + [f"  ... and {len(ranked) - 8} more"] * (len(ranked) > 8)


def longest_gap(good: Good, a: Attack) -> tuple[float, float]:
    points = [a.start, *(t for t in good.receipts if a.start < t < a.end), a.end]
    return max(itertools.pairwise(points), key=lambda p: p[1] - p[0])


def good_findings(good: Good, a: Attack, watch: Watch) -> list[str]:
    name = good.name.upper()
    out = [f"{name}: {text} ({at - a.start:+.2f} s into the load)" for at, text in good.problems]
    out = out[:5] + [f"    ... and {len(out) - 5} more"] * (len(out) > 5)
    since, until = longest_gap(good, a)
    if until - since > GAP:
        out += stalled(good, a, watch, since, until)
    limit = GAP if good.sent else HOLD_MS / 1000 + GAP
    trips = [(t1 - t0, t0) for t0, t1 in good.round_trips if a.start <= t0 <= a.end]
    if trips and max(trips)[0] > limit:
        took, at = max(trips)
        out.append(
            f"{name}: a request took {took:.2f} s to be answered (limit {limit:.1f} s), "
            f"sent {at - a.start:+.2f} s into the load"
        )
    return out + late_acks(good, a)


def stalled(good: Good, a: Attack, watch: Watch, since: float, until: float) -> list[str]:
    """Which hostile requests were in flight: those sent before the silence, biggest first."""
    blocked = max((late for at, late in watch.stalls if since - 0.1 <= at <= until), default=0.0)
    during = [o for o in a.barrage.outcomes if o.started < until and o.ended > since]
    during.sort(key=lambda o: (o.started > since, -len(o.request.body)))
    lines = [
        f"{good.name.upper()} RECEIVED NOTHING FOR {until - since:.2f} s (limit {GAP:.1f} s), "
        f"{since - a.start:+.2f} s to {until - a.start:+.2f} s into the load; the event loop was "
        f"blocked for up to {blocked:.2f} s of it; {len(during)} hostile requests in flight, "
        "e.g.:"
    ]
    lines += [f"  - {o.request}" for o in during[:4]]
    where = [frames for at, frames in watch.blocked_in if since - 0.1 <= at <= until and frames]
    if where:
        lines.append("  the event loop's thread was blocked in:")
        lines += [f"        {frame}" for frame in where[0]]
    return lines


def late_acks(good: Good, a: Attack) -> list[str]:
    """The agent's requests sent during the load whose ack this Bayeux client got late or never."""
    agent = next((g for g in a.goods if g.sent), None)
    if agent is None or good is agent:
        return []
    due = {ref: t for ref, t in agent.sent.items() if a.start <= t <= a.end}
    late = sorted((good.acks.get(ref, float("inf")) - t, ref) for ref, t in due.items())
    late = [(took, ref) for took, ref in late if took > GAP]
    if not late:
        return []
    took, ref = late[-1]
    return [
        f"{good.name.upper()}: {len(late)} of {len(due)} acks of the agent's requests came later "
        f"than {GAP:.1f} s or never (e.g. {ref}: {took:.2f} s)"
    ]


def summary(a: Attack, watch: Watch, seed: int) -> str:
    outcomes = a.barrage.outcomes
    via = Counter({"post": "POST", "upgrade": "GET"}.get(o.request.via, "WS") for o in outcomes)
    statuses = Counter(o.status for o in outcomes if o.status is not None)
    closes = Counter(o.close.split(" (")[0] for o in outcomes if o.close)
    given_up = sum(bool(o.note) for o in outcomes)
    trickles = f" ({'; '.join(a.trickles)})" if a.trickles else ""
    lines = [
        f"{a.target.name}: {len(outcomes)} hostile requests {dict(via)} in {a.end - a.start:.1f} s"
        f" (seed {seed}), and {len(SLOW_HEADS)} slow-header connections{trickles}",
        f"    HTTP statuses {dict(sorted(statuses.items()))}; WebSocket closes {dict(closes)}; "
        f"{given_up} given up on",
    ]
    for good in a.goods:
        since, until = longest_gap(good, a)
        count = sum(a.start < t < a.end for t in good.receipts)
        what = f"{count} responses" if good.sent else f"{count} batches, {good.deliveries} messages"
        lines.append(f"    {good.name}: {what}, longest gap {until - since:.2f} s")
    longest = max((late for _, late in watch.stalls), default=0.0)
    lines.append(f"    event loop: longest stall {longest:.2f} s")
    return "\n".join(lines)
