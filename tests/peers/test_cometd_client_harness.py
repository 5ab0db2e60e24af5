"""The official CometD JavaScript client harness (tests/peers/cometd_client.py) against the
CometD project's own Node server and against Faye's, including re-handshakes after the server
forgot the session."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import time
from pathlib import Path
from typing import Any

import pytest

from tests.constants import TIMEOUT
from tests.peers import node_peer
from tests.peers.cometd_client import (
    ClientOptions,
    CometdClient,
    CometdClientError,
    CometdClients,
    Transport,
)
from tests.peers.cometd_server import CometdServer, cometd_server
from tests.peers.faye import FayeServer

__all__ = ["cometd_server"]  # the fixture, used by the tests below

Json = dict[str, Any]
TRANSPORTS: tuple[Transport, ...] = ("websocket", "long-polling")
# The client re-handshakes at once when the advice says so; its backoff would be 1 s and more.
REHANDSHAKE_S = TIMEOUT / 40


def rehandshake_ms(client: CometdClient, error: str) -> float:
    """From the /meta/connect reply whose error starts with `error` to the next handshake."""
    unknown = next(e for e in client.meta("/meta/connect") if e.get("error", "").startswith(error))
    assert unknown["advice"]["reconnect"] == "handshake"
    decision = next(f for f in client.failures if f["t"] >= unknown["t"])
    assert (decision["action"], decision["delay"], decision["interval"]) == ("handshake", 0, 0)
    handshake = next(e for e in client.meta("/meta/handshake") if e["t"] > unknown["t"])
    assert handshake["successful"] is True
    assert handshake["reestablish"] is True
    return float(handshake["t"] - unknown["t"])


async def test_receives_from_the_cometd_server(
    cometd_server: CometdServer, cometd_client: CometdClients
) -> None:
    client = await cometd_client(cometd_server.url, "long-polling", ["/a", "/b"])
    subscribed = client.subscribed
    assert (subscribed["connection_type"], subscribed["handshake"]) == ("long-polling", 1)
    assert re.fullmatch("[0-9a-f]{40}", client.client_id)
    cometd_server.publish("/a", range(30))
    cometd_server.publish("/b", range(20))
    messages = await client.wait_messages(50)
    assert [m["data"] for m in messages if m["channel"] == "/a"] == list(range(30))
    assert [m["data"] for m in messages if m["channel"] == "/b"] == list(range(20))
    assert all(set(m) == {"t", "wall", "channel", "data"} for m in messages)  # no ids
    assert client.statuses[:2] == ["handshaken", "connected"]
    (handshake,) = client.meta("/meta/handshake")
    assert handshake["reestablish"] is False
    assert handshake["advice"] == {"reconnect": "retry", "timeout": 30000, "interval": 0}
    assert [e["subscription"] for e in client.meta("/meta/subscribe")] == ["/a", "/b"]
    assert client.errors == []


async def test_websocket_alone_gives_up_on_the_cometd_server(cometd_server: CometdServer) -> None:
    client = CometdClient()
    with pytest.raises(CometdClientError, match=r"gave up after /meta/handshake failed"):
        await client.start(cometd_server.url, "websocket", ["/a"])
    assert not client.running
    first = client.named("websocket")[0]
    assert (first["what"], first["reason"]) == ("error", "Unexpected server response: 400")
    (decision,) = client.failures
    assert (decision["channel"], decision["action"]) == ("/meta/handshake", "none")
    assert client.statuses == ["disconnected"]


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_receives_from_faye(
    faye_server: FayeServer, cometd_client: CometdClients, transport: Transport
) -> None:
    client = await cometd_client(faye_server.url, transport, ["/a", "/b"])
    assert client.subscribed["connection_type"] == transport
    assert len(client.client_id) == 31
    await faye_server.await_subscribed(["/a", "/b"])
    await faye_server.apublish("/a", list(range(40)))
    await faye_server.apublish("/b", ["x"])
    messages = await client.wait_messages(41)
    assert [m["data"] for m in messages if m["channel"] == "/a"] == list(range(40))
    assert all(isinstance(m["id"], str) for m in messages)
    assert len({m["id"] for m in messages}) == 41
    assert [m["t"] for m in messages] == sorted(m["t"] for m in messages)
    assert client.errors == []


async def test_handshakes_over_the_websocket_itself(
    faye_server: FayeServer, cometd_client: CometdClients
) -> None:
    client = await cometd_client(faye_server.url, "websocket", ["/a"], trace=True)
    await faye_server.apublish("/a", ["x"])
    await client.wait_messages(1)
    wire = client.wire
    assert {w["via"] for w in wire} == {"websocket"}  # unlike Faye's client: no HTTP first
    handshake, *rest = [w["message"] for w in wire if w["wire"] == "out"]
    assert handshake["channel"] == "/meta/handshake"
    assert handshake["supportedConnectionTypes"] == ["websocket"]
    assert (handshake["version"], handshake["minimumVersion"]) == ("1.0", "1.0")
    assert handshake["advice"] == {"timeout": 60000, "interval": 0}
    # It subscribes in its handshake listener, so the subscribe goes before the first connect,
    # which asks the server to answer at once.
    subscribe, connect = rest[:2]
    assert (subscribe["channel"], subscribe["subscription"]) == ("/meta/subscribe", "/a")
    assert (connect["channel"], connect["advice"]) == ("/meta/connect", {"timeout": 0})
    assert [int(m["id"]) for m in (handshake, subscribe, connect)] == [1, 2, 3]
    incoming = [w["message"] for w in wire if w["wire"] == "in"]
    assert [m["data"] for m in incoming if "data" in m] == ["x"]


async def test_rehandshakes_after_the_cometd_server_expires_its_session(
    cometd_client: CometdClients,
) -> None:
    """The client is paused (SIGSTOP) until the server has expired its session."""
    with CometdServer(timeout_ms=1000, max_interval_ms=1000, sweep_period_ms=100) as server:
        client = await cometd_client(server.url, "long-polling", ["/a"])
        expired = (await asyncio.to_thread(server.clients))["expired"]
        os.kill(client.pid, signal.SIGSTOP)  # the process this test started, by its PID
        try:
            deadline = time.monotonic() + TIMEOUT
            while (await asyncio.to_thread(server.clients))["expired"] == expired:
                assert time.monotonic() < deadline, "the server did not expire the session"
                await asyncio.sleep(0.05)
        finally:
            os.kill(client.pid, signal.SIGCONT)
        again = await client.wait_subscribed(handshake=2)
        assert again["client_id"] != client.subscribed["client_id"]
        assert rehandshake_ms(client, "402::session_unknown") < REHANDSHAKE_S * 1000
        assert "rehandshaken" in client.statuses
        await server.await_subscribed(["/a"])
        await asyncio.to_thread(server.publish, "/a", ["after"])
        (message,) = await client.wait_messages(1)
        assert message["data"] == "after"
        assert message["t"] > again["t"]


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_rehandshakes_after_faye_restarts(
    faye_server: FayeServer, cometd_client: CometdClients, transport: Transport
) -> None:
    options = ClientOptions(backoff_increment_ms=100)
    client = await cometd_client(faye_server.url, transport, ["/a"], options=options)
    await faye_server.await_subscribed(["/a"])
    await asyncio.to_thread(faye_server.restart)  # a new server: it knows no client
    again = await client.wait_subscribed(handshake=2)
    assert again["client_id"] != client.subscribed["client_id"]
    # The held connect failed with the old server, and was retried on the backoff.
    lost = client.failures[0]
    assert (lost["channel"], lost["cause"], lost["action"]) == ("/meta/connect", "failure", "retry")
    code = "websocket_code" if transport == "websocket" else "http_code"
    # A socket cut (1006), or closed as Faye shuts down in time (1000, seen once in 20 runs).
    assert lost["failure"][code] in ((1000, 1006) if transport == "websocket" else (0,))
    assert rehandshake_ms(client, "401:") < REHANDSHAKE_S * 1000
    await faye_server.await_subscribed(["/a"])
    await faye_server.apublish("/a", ["after"])
    (message,) = await client.wait_messages(1)
    assert message["data"] == "after"
    if transport == "websocket":
        assert [e["what"] for e in client.named("websocket")][:2] == ["open", "close"]
        assert client.named("websocket")[-1]["what"] == "open"


async def test_options_reach_the_client(cometd_client: CometdClients) -> None:
    options = ClientOptions(backoff_increment_ms=50, max_backoff_ms=150, log_level="debug")
    with pytest.raises(CometdClientError, match=r"not met within 1 s"):
        await cometd_client(
            "http://127.0.0.1:9/cometd", "long-polling", ["/a"], options=options, timeout=1.0
        )
    failures = cometd_client.started[0].failures
    assert [f["delay"] for f in failures[:6]] == [0, 50, 100, 150, 150, 150]
    assert {f["action"] for f in failures} == {"handshake"}
    assert cometd_client.started[0].errors == []  # the debug log went to stderr


async def test_wait_for_says_what_it_waited_for(
    faye_server: FayeServer, cometd_client: CometdClients
) -> None:
    client = await cometd_client(faye_server.url, "long-polling", ["/a"])
    assert await client.wait_for(lambda: client.handshakes) == client.handshakes
    with pytest.raises(CometdClientError, match=r"0 of 1 messages: .* within 0.2 s"):
        await client.wait_messages(1, timeout=0.2)
    with pytest.raises(CometdClientError, match=r"no 'status' event .*rehandshaken"):
        await client.wait_event("status", timeout=0.2, status="rehandshaken")
    assert (await client.wait_event("status", status="connected"))["t"] > client.handshakes[0]


async def test_bad_arguments_and_missing_packages(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    client = CometdClient()
    with pytest.raises(ValueError, match="transport"):
        await client.start("http://127.0.0.1:9/cometd", "auto", ["/a"])  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="channels"):
        await client.start("http://127.0.0.1:9/cometd", "websocket", [])
    with pytest.raises(CometdClientError, match="not been started"):
        await client.wait_messages(1)
    await client.stop()  # never started: nothing to do
    monkeypatch.setattr(node_peer, "NODE_MODULES", tmp_path / "node_modules")
    with pytest.raises(CometdClientError, match=r"npm ci --prefix tests"):
        await client.start("http://127.0.0.1:9/cometd", "websocket", ["/a"])
