"""Injected faults against Faye's own Node client (npm `faye`), over long-polling and WebSocket:
what it receives when deliveries are dropped, repeated, delayed, reordered or corrupted, how
soon it comes back when the server forgets, disconnects, holds or advises it, and how it rides
out closed, reset, failing, slow and stalled connections. Each test runs its cases at once, each
with its own replayer (Faye resends a failed request only after a fixed 5 s). Times are
CLOCK_MONOTONIC on both sides. `-s` prints what each case measured."""

from __future__ import annotations

import asyncio
import itertools
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import pytest

from replay.app import Replayer, ReplayOptions
from replay.fault_core import FaultInjector, InjectedFault
from replay.faults import parse_faults
from replay.player import PlayOptions
from tests.constants import TIMEOUT
from tests.peers.faye_client import FayeClient, FayeClients, Transport
from tests.replay.tapes import CHANNELS, event_bytes, write_tape

COUNT = 40
SPACING_S = 0.05
TRANSPORTS: tuple[Transport, ...] = ("long-polling", "websocket")
FAYE_RETRY_S = 5.0  # faye/src/protocol/dispatcher.js DEFAULT_RETRY: a failed request waits this
PROMPT_S = TIMEOUT / 20  # "at once", on a loaded machine
QUIET_S = 1.0  # how long a client that stopped is watched for doing anything more
Done = Callable[[FayeClient, Replayer], bool]


@pytest.fixture(scope="module")
def tape(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("faye-faults") / "a.duckdb"
    write_tape(path, COUNT, SPACING_S)
    return path


@dataclass
class Run:
    """What one Faye client saw of one replay, and what the replayer did to it."""

    transport: str
    spec: str
    messages: list[dict[str, Any]]
    events: list[dict[str, Any]]
    wire: list[dict[str, Any]]
    faults: list[InjectedFault]
    origin: float  # monotonic time of the replay's 0: InjectedFault.time counts from it
    log: list[tuple[float, str]]  # the replayer's log lines, stamped with time.monotonic()
    emitted: int  # deliveries the replayer's player sent to the client's sessions

    @property
    def refs(self) -> list[int]:
        return [int(m["data"]["referenceId"]) for m in self.messages]

    @property
    def lost(self) -> list[int]:  # the referenceIds that never arrived
        return sorted(set(range(COUNT)) - set(self.refs))

    @property
    def kind(self) -> str:
        return self.spec.split(":")[0]

    @property
    def fault_time(self) -> float:  # the first fault's, on the monotonic clock
        return self.origin + self.faults[0].time

    def logged(self, text: str) -> list[float]:
        return [t for t, line in self.log if text in line]

    def events_named(self, name: str) -> list[float]:
        return [e["t"] / 1000 for e in self.events if e["event"] == name]

    def largest_gap(self) -> tuple[float, int]:
        """The longest wait between two deliveries, and how many came together after it."""
        times = [m["t"] / 1000 for m in self.messages]
        gap, at = max((b - a, i + 1) for i, (a, b) in enumerate(itertools.pairwise(times)))
        return gap, sum(1 for t in times[at:] if t - times[at] < SPACING_S / 2)

    def wired(self, way: str, channel: str) -> list[float]:  # way: "out" or "in"; trace=True
        return [w["t"] / 1000 for w in self.wire if w["wire"] == way for m in w["messages"]
                if m.get("channel") == channel]  # fmt: skip

    def down_up(self) -> float:  # from transport:down to the next transport:up
        down = self.events_named("transport:down")[0]
        return next(t for t in self.events_named("transport:up") if t > down) - down

    def note(self, text: str) -> None:
        print(f"faye, {self.transport}, {self.spec}: {text}")


def got(count: int) -> Done:
    return lambda client, _replayer: len(client.messages) >= count


def faulted(_client: FayeClient, replayer: Replayer) -> bool:  # a fault was injected
    return bool(replayer.faults)


def played_out(client: FayeClient, replayer: Replayer) -> bool:
    """A live session played the timeline to its end, and the client has all it was sent."""
    done = any(seen.finished for seen in replayer.player.clients.values())
    return done and len(client.messages) >= sum(seen.emitted for seen in replayer.clients)


async def run(
    tape: Path,
    transport: Transport,
    spec: str,
    faye_client: FayeClients,
    done: Done,
    *,
    quiet: float = 2 * SPACING_S,
    trace: bool = False,
    timeout_ms: int = 30_000,
) -> Run:
    """Faye's client against a replay with `spec` until `done`, then `quiet` seconds more."""
    log: list[tuple[float, str]] = []
    play = PlayOptions(speed=1, settle=0.1)
    options = ReplayOptions(play=play, faults=parse_faults([spec]), seed=1, timeout_ms=timeout_ms)
    replayer = await Replayer.start(tape, options, log=lambda s: log.append((time.monotonic(), s)))
    try:
        client = await faye_client(replayer.url, transport, list(CHANNELS), trace=trace)
        deadline = time.monotonic() + 2 * TIMEOUT
        while not done(client, replayer):
            assert time.monotonic() < deadline, f"{spec} over {transport}: not done in time"
            await asyncio.sleep(0.01)
        await asyncio.sleep(quiet)  # one more (a duplicate too many, a late handshake) shows
        await client.stop()
        emitted = sum(seen.emitted for seen in replayer.clients)
    finally:
        await replayer.stop()
    injector = replayer.server.protocol.faults
    assert injector is not None
    return Run(transport, spec, client.messages, client.events, client.wire, replayer.faults,
               injector.started, log, emitted)  # fmt: skip


async def each(
    tape: Path,
    specs: tuple[str, ...],
    faye_client: FayeClients,
    done: Done,
    transports: tuple[Transport, ...] = TRANSPORTS,
    **options: Any,
) -> list[Run]:
    cases = itertools.product(specs, transports)
    return list(await asyncio.gather(*(run(tape, t, s, faye_client, done, **options)
                                       for s, t in cases)))  # fmt: skip


def by_transport(runs: list[Run]) -> tuple[Run, Run]:  # one spec's: long-polling, websocket
    found = {r.transport: r for r in runs}
    return found["long-polling"], found["websocket"]


def kinds(run: Run) -> list[tuple[str, str]]:
    return [(f.kind, f.target) for f in run.faults]


def referenced(fault: InjectedFault) -> list[int]:
    return [int(n) for n in re.findall(r"referenceId (\d+)", fault.detail)]


def one_session_everything(run: Run) -> None:
    assert run.refs == list(range(COUNT))
    assert len(run.logged("handshook")) == 1


def dropped_by_seed(spec: str, seed: int = 1) -> list[int]:
    """What the fault core, sans I/O, drops of the tape's deliveries with this seed."""
    injector = FaultInjector(parse_faults([spec]), seed=seed, clock=0.0)
    injector.on_handshake("c", 0.0)
    events = [orjson.loads(event_bytes(n)) for n in range(COUNT)]
    return [n for n, e in enumerate(events) if not injector.deliver("c", [e], 0.0)[0]]


# --- message faults --------------------------------------------------------------------------


async def test_drop_nth_and_fraction(tape: Path, faye_client: FayeClients) -> None:
    nth, fraction = "drop:nth=3,channel=/v2/me/outbound", "drop:25%"
    expected = {nth: [4], fraction: dropped_by_seed(fraction)}  # nth: 0, 2, then 4 on it
    runs = await asyncio.gather(
        each(tape, (nth,), faye_client, got(COUNT - 1)),
        each(tape, (fraction,), faye_client, got(COUNT - len(expected[fraction]))),
    )
    for run in runs[0] + runs[1]:  # the same seed drops the same ones, on either transport
        lost = expected[run.spec]
        assert {target for _, target in kinds(run)} <= set(CHANNELS)
        assert [kind for kind, _ in kinds(run)] == ["drop"] * len(lost)
        assert [n for fault in run.faults for n in referenced(fault)] == run.lost == lost
        assert run.refs == [n for n in range(COUNT) if n not in lost]
        run.note(f"{len(lost)} of {COUNT} never arrive ({lost}); the rest in order")
    assert kinds(runs[0][0]) == [("drop", "/v2/me/outbound")]


async def test_duplicate(tape: Path, faye_client: FayeClients) -> None:
    for run in await each(tape, ("duplicate:nth=2",), faye_client, got(COUNT + 1)):
        assert kinds(run) == [("duplicate", "/me/internal")]
        assert referenced(run.faults[0]) == [1]
        assert run.refs == [0, 1, 1, *range(2, COUNT)]  # Faye hands both copies to the app
        run.note("referenceId 1 delivered twice to the subscriber (no de-duplication)")


async def test_delay(tape: Path, faye_client: FayeClients) -> None:
    for run in await each(tape, ("delay:325ms,nth=1",), faye_client, got(COUNT)):
        assert kinds(run) == [("delay", "/v2/me/outbound")]
        late = run.messages[run.refs.index(0)]["t"] / 1000 - run.fault_time
        before = run.refs[: run.refs.index(0)]
        assert 0.325 <= late < 0.325 + PROMPT_S
        assert {1, 2, 3, 4, 5} <= set(before)  # due 50 ms apart: these overtake it for sure,
        assert 7 not in before  # and 7, due 25 ms after it, does not
        assert sorted(run.refs) == list(range(COUNT))
        run.note(f"referenceId 0 arrives {late * 1000:.0f} ms late, after {before}")


async def test_reorder(tape: Path, faye_client: FayeClients) -> None:
    for run in await each(tape, ("reorder:window=3,nth=5",), faye_client, got(COUNT)):
        assert [kind for kind, _ in kinds(run)] == ["reorder"]
        shuffled = referenced(run.faults[0])
        assert sorted(shuffled) == [4, 5, 6]
        assert shuffled != [4, 5, 6]
        assert run.refs == [0, 1, 2, 3, *shuffled, *range(7, COUNT)]  # as sent: no re-sorting
        run.note(f"the window 4, 5, 6 is handed on as sent: {shuffled}")


async def test_corrupt(tape: Path, faye_client: FayeClients) -> None:
    runs = await each(tape, ("corrupt:nth=5",), faye_client, got(COUNT - 1))
    for run in runs:
        assert kinds(run) == [("corrupt", "/v2/me/outbound")]
        assert run.lost == referenced(run.faults[0]) == [4]  # the batch it came in, no more
        assert run.refs == [n for n in range(COUNT) if n != 4]
        assert len(run.logged("handshook")) == 1
    poll, socket = by_transport(runs)
    # Long-polling: an unparsable body fails the connect; Faye resends it after 5 s, on the
    # same session, and gets everything queued meanwhile in one answer.
    gap, together = poll.largest_gap()
    assert FAYE_RETRY_S <= poll.down_up() < FAYE_RETRY_S + PROMPT_S
    assert FAYE_RETRY_S <= gap < FAYE_RETRY_S + SPACING_S + PROMPT_S
    poll.note(f"connect failed, resent {poll.down_up():.3f} s later; lost only the message in "
              f"that body; {together} came at once after the resend")  # fmt: skip
    # WebSocket: Faye's onmessage ignores a frame it cannot parse, and carries on.
    assert socket.events_named("transport:down") == []
    assert socket.largest_gap()[0] < 3 * SPACING_S + PROMPT_S
    socket.note("frame ignored: its 1 message lost, no reconnect, no gap")


# --- session faults --------------------------------------------------------------------------


async def test_unknown_client_and_handshake_advice(tape: Path, faye_client: FayeClients) -> None:
    specs = ("unknown-client:at=0.5s", "advice:handshake,at=0.5s")
    for run in await each(tape, specs, faye_client, played_out):
        assert kinds(run) == [(run.kind, "connect")]
        fault = run.fault_time
        again = next(t for t in run.logged("handshook") if t > fault) - fault
        subscribed = next(t for t in run.logged("subscribed to") if t > fault) - fault
        assert again < PROMPT_S
        assert len(run.logged("handshook")) == 2
        assert run.logged("takes up the timeline")
        # What fell due while it handshook went to nobody: at most one, 50 ms apart.
        assert len(run.lost) <= 1
        assert run.emitted == len(run.refs)
        assert run.refs == [n for n in range(COUNT) if n not in run.lost]
        assert run.events_named("transport:down") == []
        run.note(f"re-handshakes {again * 1000:.1f} ms after the fault, re-subscribed at "
                 f"{subscribed * 1000:.1f} ms; lost {run.lost}")  # fmt: skip


async def test_disconnect_and_none_advice(tape: Path, faye_client: FayeClients) -> None:
    specs = ("disconnect:at=0.5s", "advice:none,at=0.5s")
    for run in await each(tape, specs, faye_client, faulted, quiet=QUIET_S, trace=True):
        assert kinds(run) == [(run.kind, "connect")]
        fault = run.fault_time
        assert all(m["t"] / 1000 < fault + PROMPT_S for m in run.messages)
        assert run.refs == list(range(len(run.refs)))
        assert len(run.refs) < COUNT // 2
        assert len(run.logged("handshook")) == 1  # no new session within QUIET_S
        assert [t for t in run.wired("out", "/meta/connect") if t > fault] == []
        told = [t for t in run.wired("in", "/meta/disconnect") if t < fault + PROMPT_S]
        assert bool(told) is (run.kind == "disconnect")
        # Faye does not count itself disconnected: at teardown it still sends a
        # /meta/disconnect, which the replayer rightly answers as from an unknown client.
        (bye,) = [e for e in run.events if e["event"] == "disconnected"]
        assert bye["ok"] is False
        assert "nknown client" in bye["reason"]
        run.note(f"stops after {len(run.refs)} messages, no connect or handshake in "
                 f"{QUIET_S:g} s; its /meta/disconnect at teardown: {bye['reason']!r}")  # fmt: skip


async def test_hold_connect(tape: Path, faye_client: FayeClients) -> None:
    runs = await each(tape, ("hold-connect:at=0.5s,for=1s",), faye_client, got(COUNT))
    for run in runs:
        assert kinds(run) == [("hold-connect", "connect")]
        one_session_everything(run)
    poll, socket = by_transport(runs)
    gap, together = poll.largest_gap()  # what fell due in that second comes in one answer
    assert 1.0 - SPACING_S <= gap < 1.0 + PROMPT_S
    assert together >= 15
    poll.note(f"waits {gap:.3f} s, then gets the {together} held messages at once; none lost")
    assert socket.largest_gap()[0] < 3 * SPACING_S + PROMPT_S  # pushes do not wait for it
    socket.note("deliveries are pushed apart from the connect: no gap, none lost")


async def test_advice_retry_with_interval(tape: Path, faye_client: FayeClients) -> None:
    spec = "advice:retry,interval=500,at=0.5s"
    runs = await each(tape, (spec,), faye_client, got(COUNT), trace=True)
    for run in runs:
        assert kinds(run) == [("advice", "connect")]
        one_session_everything(run)
        advised = next(t for t in run.wired("in", "/meta/connect") if t > run.fault_time)
        waited = next(t for t in run.wired("out", "/meta/connect") if t > advised) - advised
        assert 0.49 <= waited < 0.5 + PROMPT_S  # Node may fire a timer a hair early
        gap = run.largest_gap()[0]
        run.note(f"next connect {waited * 1000:.0f} ms after the advice; none lost; largest "
                 f"gap between deliveries {gap * 1000:.0f} ms")  # fmt: skip
    assert by_transport(runs)[0].largest_gap()[0] >= 0.45  # polls: deliveries wait for it


# --- transport faults ------------------------------------------------------------------------


async def test_close_and_reset(tape: Path, faye_client: FayeClients) -> None:
    """after=8: as the 8th delivery goes (over long-polling, the cut is the next poll's)."""
    specs = ("close:code=4000,after=8", "reset:after=8")
    for run in await each(tape, specs, faye_client, got(COUNT)):
        assert kinds(run) == [(run.kind, run.transport)]
        assert run.messages[7]["t"] / 1000 <= run.fault_time + PROMPT_S
        recovers_after_its_retry(run)
        if run.kind == "close" and run.transport == "websocket":
            assert run.faults[0].detail == "closed with 4000"


async def test_http_500_and_503(tape: Path, faye_client: FayeClients) -> None:
    specs = ("http-500:at=0.5s", "http-503:at=0.5s")  # a WebSocket client sends no poll
    for run in await each(tape, specs, faye_client, got(COUNT), ("long-polling",)):
        assert kinds(run) == [(run.kind, "long-polling")]
        recovers_after_its_retry(run)


def recovers_after_its_retry(run: Run) -> None:
    """Faye's node_http and web_socket transports fail the message; the dispatcher resends
    it after `retry` (5 s), on the same session; the replayer kept what fell due meanwhile."""
    down = run.events_named("transport:down")[0] - run.fault_time
    gap, together = run.largest_gap()
    assert down < PROMPT_S
    assert FAYE_RETRY_S <= run.down_up() < FAYE_RETRY_S + PROMPT_S
    one_session_everything(run)
    assert together >= COUNT // 2
    run.note(f"down {down * 1000:.0f} ms after it, back {run.down_up():.3f} s later, same "
             f"session; none lost; {together} came at once after a {gap:.2f} s gap")  # fmt: skip


async def test_slow(tape: Path, faye_client: FayeClients) -> None:
    runs = await each(tape, ("slow:over=100ms,at=0.5s",), faye_client, got(COUNT))
    for run in runs:
        assert kinds(run) == [("slow", "answers")]
        one_session_everything(run)
        assert run.events_named("transport:down") == []
        times = [m["t"] / 1000 for m in run.messages]  # due 50 ms apart from the first
        late = max(t - (times[0] + n * SPACING_S) for n, t in enumerate(times))
        assert late >= 0.09
        run.note(f"takes every answer as it trickles in: none lost, at most {late:.2f} s late")
    # Each answer (a frame per delivery over WebSocket) takes 100 ms: they queue, none stops.
    assert max(r.largest_gap()[0] for r in runs) < 0.5


async def test_stall(tape: Path, faye_client: FayeClients) -> None:
    """With the replayer's timeout at 1 s Faye gives up on an unanswered message 1.2 s after
    sending it (1.2 x advice.timeout); at the default 30 s it would wait 36 s, past the
    session's expiry."""

    def resent(client: FayeClient, _replayer: Replayer) -> bool:
        """Its connect resent after it gave up, and half a second for what that brings."""
        down = [e["t"] for e in client.events if e["event"] == "transport:down"]
        out = [w["t"] for w in client.wire if w["wire"] == "out"]
        late = bool(down) and out[-1] > down[0] + 1000 * FAYE_RETRY_S / 2
        return late and time.monotonic() * 1000 - out[-1] > 500

    spec = "stall:at=0.5s,for=1.5s"
    runs = await each(tape, (spec,), faye_client, resent, trace=True, timeout_ms=1000)
    for run in runs:
        assert kinds(run) == [("stall", "server")]
        assert len(run.logged("handshook")) == 1  # the same session throughout
        assert run.refs == sorted(set(run.refs))  # nothing twice, nothing out of order
        # The connect held when the stall began goes unanswered: Faye gives up on it 1.2 x the
        # timeout after sending it, and resends after its fixed retry.
        down = run.events_named("transport:down")[0]
        assert 0 < down - run.fault_time < 1.2 + PROMPT_S
        again = next(t for t in run.wired("out", "/meta/connect") if t > down) - down
        assert FAYE_RETRY_S <= again < FAYE_RETRY_S + PROMPT_S
        lost = sorted(set(range(COUNT)) - set(run.refs))
        run.note(f"gives up {down - run.fault_time:.2f} s after it, resends {again:.3f} s "
                 f"later, same session; lost {len(lost)}: {lost[:1]}..{lost[-1:]}")  # fmt: skip
    poll, socket = by_transport(runs)
    # Long-polling: what was queued during the stall went out, late, as the answer to the
    # connect Faye had given up on (it leaves that request open): all of it lost, in one block.
    lost = sorted(set(range(COUNT)) - set(poll.refs))
    assert lost == list(range(lost[0], lost[-1] + 1))
    assert len(lost) > COUNT // 2
    # WebSocket: the pushes wait in the queue and go on the same socket after it: none lost.
    assert socket.refs == list(range(COUNT))
