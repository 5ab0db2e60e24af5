"""The Recorder over MockTransport: scripted sessions with no server and no socket."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import orjson
import pytest

from recorder.record import Outcome, Recorder, RecordOptions
from recorder.status import Status
from tape.frame import Kind, Session
from tape.session import SessionLog
from tests.conftest import TIMEOUT, ListSink
from tests.recorder.mock_transport import MockTransport, MockTransports

CHANNEL = "/v2/me/outbound"


class Run:
    """A Recorder with mock transports, running in a task, and the frames it wrote."""

    def __init__(self, transports: MockTransports | None = None, **options: Any) -> None:
        self.sink = ListSink()
        self.log = SessionLog(self.sink, Session(session_id="s1", transport="auto"))
        self.status = Status("s1", options.get("transport", "auto"))
        self.transports = transports or MockTransports()
        opts = RecordOptions(url="http://mock/cometd", channels=(CHANNEL,), **options)
        self.recorder = Recorder(opts, self.log, self.status, transports=self.transports)
        self.task = asyncio.get_running_loop().create_task(self.recorder.run())

    @property
    def transport(self) -> MockTransport:
        return self.transports.current

    def lifecycle(self) -> list[dict[str, Any]]:
        return [orjson.loads(f.raw) for f in self.sink.frames if f.kind == Kind.LIFECYCLE]

    def events(self) -> list[str]:
        return [e["event"] for e in self.lifecycle()]

    async def outcome(self) -> Outcome:
        return await asyncio.wait_for(self.task, TIMEOUT)


def handshake_ok(
    request: dict[str, Any], client_id: str, *types: str, timeout: int = 30000
) -> dict[str, Any]:
    return {
        "channel": "/meta/handshake",
        "id": request["id"],
        "successful": True,
        "clientId": client_id,
        "version": "1.0",
        "supportedConnectionTypes": list(types or ("long-polling",)),
        "advice": {"reconnect": "retry", "interval": 0, "timeout": timeout},
    }


def ok(request: dict[str, Any], **fields: Any) -> dict[str, Any]:
    return {"channel": request["channel"], "id": request["id"], "successful": True, **fields}


def event(i: int) -> dict[str, Any]:
    return {"channel": CHANNEL, "data": {"referenceId": str(i)}}


async def connected(run: Run, client_id: str = "c1") -> dict[str, Any]:
    """Handshake, subscribe and the first connect, answered: returns the second connect."""
    t = run.transport
    t.reply(handshake_ok(await t.expect("/meta/handshake"), client_id))
    subscribe = await t.expect("/meta/subscribe")
    assert (subscribe["clientId"], subscribe["subscription"]) == (client_id, CHANNEL)
    connect = await t.expect("/meta/connect")
    assert connect["connectionType"] == "long-polling"
    t.reply(ok(subscribe, subscription=CHANNEL), ok(connect))
    return await t.expect("/meta/connect")


async def test_a_scripted_session_with_a_402_and_the_rehandshake() -> None:
    run = Run(transport="long-polling", max_messages=3)
    t = run.transport
    connect = await connected(run)
    t.reply(event(1), event(2), ok(connect))
    connect = await t.expect("/meta/connect")
    # The server forgot the client: 402, advice handshake. A new session, subscribed again.
    t.reply(
        {
            "channel": "/meta/connect",
            "id": connect["id"],
            "successful": False,
            "error": "402::Unknown client",
            "advice": {"reconnect": "handshake", "interval": 0},
        }
    )
    connect = await connected(run, "c2")
    assert connect["clientId"] == "c2"
    t.reply(event(3), ok(connect))
    await t.expect("/meta/connect")  # sent on the reply, before the third message is counted
    t.reply(ok(await t.expect("/meta/disconnect")))  # three messages: the recorder stops
    outcome = await run.outcome()
    assert outcome == Outcome("3 messages recorded", ok=True)
    assert run.events() == [
        "transport",
        "connected",
        "reconnecting",
        "rehandshake",
        "stopped",
    ]
    rehandshake = run.lifecycle()[3]
    assert rehandshake["client_id"] == "c2"
    assert rehandshake["gap_ms"] >= 0
    assert run.status.delivered == 3
    assert run.status.messages[CHANNEL] == 3
    assert run.log.session.client_id == "c2"
    assert t.opened
    assert t.closed
    assert len(run.transports.made) == 1


async def test_a_transport_failure_is_retried_at_once_then_after_the_backoff() -> None:
    run = Run(transport="long-polling")
    t = run.transport
    connect = await connected(run)
    t.fail("connect request failed: reset by peer", None, [connect["id"]])
    connect = await t.expect("/meta/connect")  # the first retry is immediate
    failed_at = time.monotonic()
    t.fail("connect request failed: reset by peer", None, [connect["id"]])
    connect = await t.expect("/meta/connect")  # the second waits for the backoff (0.5 s)
    assert time.monotonic() - failed_at >= 0.45
    t.reply(event(1), ok(connect))
    await t.expect("/meta/connect")
    run.recorder.stop("test over")
    t.reply(ok(await t.expect("/meta/disconnect")))
    assert (await run.outcome()).ok
    events = run.events()
    assert events[:2] == ["transport", "connected"]
    assert events[2:6] == ["disconnected", "reconnecting", "reconnecting", "gap"]
    attempts = [e.get("attempt") for e in run.lifecycle() if e["event"] == "reconnecting"]
    assert attempts == [1, 2]
    gap = next(e for e in run.lifecycle() if e["event"] == "gap")
    assert gap["gap_ms"] >= 450
    assert gap["action"] == "retry"
    assert run.status.reconnects == 2
    assert t.resets == 0


async def test_a_connect_never_answered_resets_the_transport(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr("recorder.protocol.CONNECT_GRACE_S", 0.2)
    run = Run(transport="websocket")
    t = run.transport
    handshake = await t.expect("/meta/handshake")
    t.reply(handshake_ok(handshake, "c1", "websocket", timeout=0))  # a connect may not be held
    subscribe, connect = await t.expect("/meta/subscribe"), await t.expect("/meta/connect")
    assert connect["connectionType"] == "websocket"
    t.reply(ok(subscribe, subscription=CHANNEL))  # and the connect goes unanswered
    connect = await t.expect("/meta/connect")
    assert t.resets == 1
    run.recorder.stop("test over")
    t.reply(ok(connect), ok(await t.expect("/meta/disconnect")))
    assert (await run.outcome()).ok
    assert "no /meta/connect reply" in run.lifecycle()[2]["reason"]


async def test_the_login_goes_through_the_transport() -> None:
    run = Run(transport="websocket", login_url="http://mock/api/v2/me")
    t = run.transport
    await t.expect("/meta/handshake")
    assert t.logins == ["http://mock/api/v2/me"]
    run.recorder.stop("test over")
    assert (await run.outcome()).ok


@pytest.mark.parametrize("refused", [False, True])
async def test_auto_upgrades_to_websocket_when_offered(refused: bool) -> None:
    run = Run(MockTransports(refuse_upgrade=refused))
    lp = run.transport
    lp.reply(handshake_ok(await lp.expect("/meta/handshake"), "c1", "websocket", "long-polling"))
    async with asyncio.timeout(TIMEOUT):
        while len(run.transports.made) < 2 or not (refused or run.transport is not lp):
            await asyncio.sleep(0.01)
    ws = run.transports.made[1]
    assert ws.name == "websocket"
    assert ws.handed == lp.handover()
    used = lp if refused else ws
    await used.expect("/meta/subscribe")
    connect = await used.expect("/meta/connect")
    assert connect["connectionType"] == ("long-polling" if refused else "websocket")
    assert lp.closed is not refused
    assert ws.opened is not refused
    run.recorder.stop("test over")
    used.reply(ok(connect), ok(await used.expect("/meta/disconnect")))
    assert (await run.outcome()).ok
    chosen = run.lifecycle()[0]
    assert chosen["event"] == "transport"
    assert chosen["chosen"] == used.name
    assert run.log.session.transport == used.name
