"""Injected reconnection faults against the CometD project's own JavaScript client (npm `cometd`
9 on `cometd-nodejs-client`), over long-polling and WebSocket at once: whether it handshakes
again and how fast, whether it subscribes again, and which deliveries it lost or got twice.

Each test replays a 40-delivery tape (referenceId = index, 50 ms apart) to one client per
transport, concurrently. Times come from the client's own monotonic clock (the harness's `t`,
in ms) and the fault injector's, which is the same clock."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from replay.app import Replayer, ReplayOptions
from replay.fault_core import InjectedFault
from replay.faults import parse_faults
from replay.player import PlayOptions
from tests.constants import TIMEOUT
from tests.peers.cometd_client import (
    ClientOptions,
    CometdClient,
    CometdClientError,
    CometdClients,
    Transport,
)
from tests.replay.tapes import CHANNELS, write_tape

COUNT = 40
SPACING_S = 0.05
BOTH: tuple[Transport, ...] = ("long-polling", "websocket")
WATCH_S = 0.6 * TIMEOUT  # the most a run waits for the tape's last delivery
QUIET_S = 1.0  # after a fault that ends the session: 20 deliveries' worth of silence
PROMPT_S = TIMEOUT / 20  # "at once": a re-handshake within this of the fault
BACKOFF_S = 1.0  # CometD's default backoffIncrement: the first retry waits that long
# Short connect timeouts, so that a held or swallowed connect expires within the test:
# the client gives up on a connect after the server's timeout plus its maxNetworkDelay.
SHORT_TIMEOUT_MS = 1000
SHORT_DELAY = ClientOptions(max_network_delay_ms=500)


@pytest.fixture(scope="module")
def tape(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("cometd-faults") / "a.duckdb"
    write_tape(path, COUNT, SPACING_S)
    return path


@dataclass(slots=True)
class Run:
    """What one client went through: its view, the faults injected, the replayer's log."""

    transport: Transport
    client: CometdClient
    faults: list[InjectedFault]
    lines: list[str]
    fault_at: float  # the first fault, in the client's clock (ms)

    @property
    def ids(self) -> list[int]:
        return [int(m["data"]["referenceId"]) for m in self.client.messages]

    @property
    def lost(self) -> list[int]:
        return sorted(set(range(COUNT)) - set(self.ids))

    @property
    def twice(self) -> list[int]:
        ids = self.ids
        return sorted({n for n in ids if ids.count(n) > 1})

    def after_fault(self, t_ms: float) -> float:
        return (t_ms - self.fault_at) / 1000

    def summary(self) -> str:
        c = self.client
        return (
            f"{self.transport}: faults {self.faults}, handshakes {len(c.handshakes)}, "
            f"failures {c.failures}, statuses {c.statuses}, lost {self.lost}, "
            f"twice {self.twice}, errors {c.errors}, log {self.lines}"
        )


async def run(
    tape: Path,
    clients: CometdClients,
    transport: Transport,
    spec: str,
    *,
    ends: bool = False,
    recovers: tuple[Transport, ...] = (),
    timeout_ms: int = 30_000,
    options: ClientOptions | None = None,
    trace: bool = False,
) -> Run:
    """Replay with one fault to a subscribed client until it has the last delivery (or, when
    the fault `ends` its session, until QUIET_S after the fault), and, if its transport is in
    `recovers`, until it connected again after a failure."""
    lines: list[str] = []
    replay_options = ReplayOptions(
        play=PlayOptions(speed=1, settle=0.1),
        faults=parse_faults([spec]),
        seed=1,
        timeout_ms=timeout_ms,
    )
    replayer = await Replayer.start(tape, replay_options, log=lines.append)
    try:
        client = await clients(replayer.url, transport, CHANNELS, options=options, trace=trace)
        if ends:
            with contextlib.suppress(CometdClientError):
                await client.wait_for(lambda: replayer.faults, WATCH_S)
            await asyncio.sleep(QUIET_S)
            if len(client.handshakes) > 1:  # it came back after all: let the timeline finish
                with contextlib.suppress(CometdClientError):
                    await client.wait_for(lambda: COUNT - 1 in _ids(client), WATCH_S)
        else:
            with contextlib.suppress(CometdClientError):  # the assertions say what is missing
                await client.wait_for(lambda: _done(client, transport in recovers), WATCH_S)
            await asyncio.sleep(3 * SPACING_S)  # room for a duplicate
        await client.stop()  # before the replayer, whose going away the client would report
        faults = replayer.faults
        injector: Any = replayer.server.protocol.faults
        started = float(injector.started)
    finally:
        await replayer.stop()
    assert faults, f"{transport}: {spec} was never injected"
    return Run(transport, client, faults, lines, (started + faults[0].time) * 1000)


def _ids(client: CometdClient) -> list[int]:
    return [int(m["data"]["referenceId"]) for m in client.messages]


def _done(client: CometdClient, recovers: bool) -> bool:
    reconnected = client.statuses.count("connected") >= 2
    return COUNT - 1 in _ids(client) and (reconnected or not recovers)


async def both(tape: Path, clients: CometdClients, spec: str, **kw: Any) -> list[Run]:
    """The same fault to a long-polling and a WebSocket client, each on its own replayer."""
    return list(await asyncio.gather(*(run(tape, clients, t, spec, **kw) for t in BOTH)))


def assert_rehandshook(r: Run) -> None:
    """It handshook again at once, subscribed again, and the timeline went on: what it lost is
    what fell due while it handshook, in one stretch, and nothing came twice."""
    c = r.client
    assert [f["action"] for f in c.failures] == ["handshake"], r.summary()
    assert len(c.handshakes) == 2, r.summary()
    assert r.after_fault(c.handshakes[1]) < PROMPT_S, r.summary()
    assert [s["handshake"] for s in c.subscriptions] == [1, 2]
    assert c.subscriptions[1]["client_id"] != c.subscriptions[0]["client_id"]
    assert any("takes up the timeline" in line for line in r.lines)
    assert r.ids == sorted(r.ids)
    assert r.twice == []
    assert r.ids[-1] == COUNT - 1
    assert len(r.lost) <= 3, r.summary()
    if r.lost:  # one stretch
        assert r.lost == list(range(r.lost[0], r.lost[-1] + 1)), r.summary()


def assert_went_quiet(r: Run) -> None:
    """No new handshake, no retry: what came before the fault, then nothing."""
    c = r.client
    assert len(c.handshakes) == 1, r.summary()
    assert c.failures == [], r.summary()
    assert r.ids == list(range(len(r.ids))), r.summary()
    assert len(r.ids) < COUNT // 2, r.summary()
    assert not any("takes up the timeline" in line for line in r.lines)


def assert_retried_in_session(r: Run, reason: str) -> None:
    """One failed connect, retried after the backoff on the same session: nothing lost."""
    c = r.client
    assert len(c.failures) == 1, r.summary()
    failure = c.failures[0]
    assert (failure["channel"], failure["action"]) == ("/meta/connect", "retry"), r.summary()
    assert reason in str(failure["failure"]), r.summary()
    assert failure["delay"] == BACKOFF_S * 1000
    assert len(c.handshakes) == 1, r.summary()
    assert c.statuses[:4] == ["handshaken", "connected", "broken", "connected"], r.summary()
    assert r.ids == list(range(COUNT)), r.summary()


async def test_a_402_mid_session_is_a_new_handshake_at_once(
    tape: Path, cometd_client: CometdClients
) -> None:
    for r in await both(tape, cometd_client, "unknown-client:at=0.5s"):
        (fault,) = r.faults
        assert (fault.kind, fault.target) == ("unknown-client", "connect")
        errors = [e.get("error") for e in r.client.meta("/meta/connect")]
        assert "402::Unknown client" in errors, r.summary()
        assert_rehandshook(r)


async def test_a_server_side_disconnect_is_the_end(
    tape: Path, cometd_client: CometdClients
) -> None:
    for r in await both(tape, cometd_client, "disconnect:at=0.5s", ends=True):
        assert [f.kind for f in r.faults] == ["disconnect"]
        assert_went_quiet(r)
        assert r.client.statuses[-1] == "disconnected"


async def test_advice_handshake(tape: Path, cometd_client: CometdClients) -> None:
    for r in await both(tape, cometd_client, "advice:handshake,at=0.5s", ends=True):
        (fault,) = r.faults
        assert fault.kind == "advice"
        # On the held connect, the advice goes on an unsuccessful reply (402), as CometD's server
        # sends it: its client throws on handshake advice in a successful reply (Client.js
        # #connectResponse). With no connect held, the next connect gets 402 + handshake.
        # Either way the client follows it as after unknown-client.
        assert_rehandshook(r)


async def test_advice_none_stops_the_client(tape: Path, cometd_client: CometdClients) -> None:
    for r in await both(tape, cometd_client, "advice:none,at=0.5s", ends=True):
        (fault,) = r.faults
        assert fault.kind == "advice"
        assert "'none'" in fault.detail
        assert_went_quiet(r)


async def test_advice_retry_interval_is_honoured(tape: Path, cometd_client: CometdClients) -> None:
    spec = "advice:retry,interval=1000,at=0.5s"
    for r in await both(tape, cometd_client, spec, trace=True):
        assert [f.kind for f in r.faults] == ["advice"], r.summary()
        assert len(r.client.handshakes) == 1
        assert r.client.failures == []
        assert r.ids == list(range(COUNT)), r.summary()
        wire = r.client.wire
        advised = next(
            w["t"]
            for w in wire
            if w["wire"] == "in" and (w["message"].get("advice") or {}).get("interval") == 1000
        )
        connect = next(
            w["t"]
            for w in wire
            if w["wire"] == "out"
            and w["t"] > advised
            and w["message"]["channel"] == "/meta/connect"
        )
        assert 0.95 <= (connect - advised) / 1000 < 1.0 + PROMPT_S  # it waited the interval
        times = [m["t"] for m in r.client.messages]
        gap = max(b - a for a, b in itertools.pairwise(times)) / 1000
        if r.transport == "long-polling":  # deliveries wait for the next poll
            assert 0.9 <= gap < 1.0 + PROMPT_S
        else:  # the server pushes over the socket without a held connect: no gap
            assert gap < 4 * SPACING_S


@pytest.mark.parametrize(
    ("spec", "reasons"),
    [
        ("close:at=0.5s", {"long-polling": "socket hang up", "websocket": "1011"}),
        ("reset:at=0.5s", {"long-polling": "ECONNRESET", "websocket": "1006"}),
    ],
)
async def test_a_dropped_connection_is_retried_on_the_same_session(
    spec: str, reasons: dict[str, str], tape: Path, cometd_client: CometdClients
) -> None:
    for r in await both(tape, cometd_client, spec, recovers=BOTH):
        (fault,) = r.faults
        assert (fault.kind, fault.target) == (spec.split(":")[0], r.transport)
        assert_retried_in_session(r, reasons[r.transport])
        if r.transport == "websocket":  # a new socket after the backoff
            sockets = r.client.named("websocket")
            assert [s["what"] for s in sockets] == ["open", "close", "open"]
            reopened = (sockets[2]["t"] - sockets[1]["t"]) / 1000
            assert BACKOFF_S - 0.05 <= reopened < BACKOFF_S + PROMPT_S


@pytest.mark.parametrize("status", [500, 503])
async def test_a_failed_long_poll_is_retried_on_the_same_session(
    status: int, tape: Path, cometd_client: CometdClients
) -> None:
    spec = f"http-{status}:at=0.5s"
    for r in await both(tape, cometd_client, spec, recovers=("long-polling",)):
        (fault,) = r.faults
        assert (fault.kind, fault.target) == (f"http-{status}", r.transport)
        if r.transport == "long-polling":
            assert_retried_in_session(r, f"'http_code': {status}")
        else:  # no long-poll to fail
            assert r.client.failures == [], r.summary()
            assert r.ids == list(range(COUNT)), r.summary()


async def test_a_connect_held_past_max_network_delay_is_given_up_and_retried(
    tape: Path, cometd_client: CometdClients
) -> None:
    spec = "hold-connect:at=0.5s,for=3s"
    runs = await both(
        tape, cometd_client, spec, recovers=BOTH, timeout_ms=SHORT_TIMEOUT_MS, options=SHORT_DELAY
    )
    for r in runs:
        (fault,) = r.faults
        assert fault.kind == "hold-connect"
        assert "for 3 s" in fault.detail
        reason = "expired" if r.transport == "long-polling" else "Message Timeout"
        assert_retried_in_session(r, reason)
        (failure,) = r.client.failures  # timeout + maxNetworkDelay after the connect was sent
        assert r.after_fault(failure["t"]) < (SHORT_TIMEOUT_MS + 500) / 1000 + PROMPT_S


async def test_a_stalled_server_costs_a_connect_and_over_long_polling_its_messages(
    tape: Path, cometd_client: CometdClients
) -> None:
    spec = "stall:at=0.5s,for=2s"
    runs = await both(
        tape, cometd_client, spec, recovers=BOTH, timeout_ms=SHORT_TIMEOUT_MS, options=SHORT_DELAY
    )
    for r in runs:
        assert [(f.kind, f.target) for f in r.faults] == [("stall", "server")]
        (failure,) = r.client.failures
        assert r.after_fault(failure["t"]) < 2.0 + PROMPT_S  # within the stall
        assert failure["action"] == "retry", r.summary()
        assert len(r.client.handshakes) == 1, r.summary()
        assert r.client.statuses[:4] == ["handshaken", "connected", "broken", "connected"]
    poll, socket = (
        next(r for r in runs if r.transport == t) for t in ("long-polling", "websocket")
    )
    assert "expired" in str(poll.client.failures[0]["failure"])
    # Long-polling: what was queued during the stall went out, late, as the answer to the
    # connect the client had given up on (it does not close that request): lost, all of it.
    assert poll.ids == list(range(poll.ids[-1] + 1)), poll.summary()
    assert poll.lost == list(range(poll.ids[-1] + 1, COUNT)), poll.summary()
    assert len(poll.lost) > COUNT // 2, poll.summary()
    # WebSocket: it closes the socket, the queue waits for its next one: nothing lost.
    assert "Message Timeout" in str(socket.client.failures[0]["failure"])
    assert socket.ids == list(range(COUNT)), socket.summary()
