"""The real Faye Node client harness (tests/peers/faye_client.py) against the real Faye server."""

from __future__ import annotations

import os
import signal
from pathlib import Path
from typing import Any

import pytest

from tests.peers import faye as faye_module
from tests.peers import faye_client as faye_client_module
from tests.peers import node_peer
from tests.peers.faye import GWS_CHANNELS, FayeServer
from tests.peers.faye_client import FayeClient, FayeClientError, FayeClients, Transport

Message = dict[str, Any]

# Until tests/conftest.py registers them for every test, bring the fixtures into this module.
faye_server = faye_module.faye_server
faye_client = faye_client_module.faye_client

TRANSPORTS: tuple[Transport, ...] = ("websocket", "long-polling")


def assert_gws_pairs(messages: list[Message], start: int, count: int) -> None:
    """Each channel got its half of the GWS pairs, complete and in publish order."""
    by_channel = {c: [m for m in messages if m["channel"] == c] for c in GWS_CHANNELS}
    assert len(messages) == 2 * count
    acks, metrics = by_channel["/v2/me/outbound"], by_channel["/me/internal"]
    handles = list(range(start, start + count))
    assert [a["data"]["referenceId"] for a in acks] == [str(i) for i in handles]
    assert [a["data"]["record"]["recordHandle"] for a in acks] == handles
    assert {a["data"]["messageType"] for a in acks} == {"OutboundRecordMessage"}
    assert [m["data"]["userData"]["GSW_RECORD_HANDLE"] for m in metrics] == handles
    assert {m["data"]["messageType"] for m in metrics} == {"DeviceUserEventMessage"}


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_receives_gws_traffic_in_order(
    faye_server: FayeServer, faye_client: FayeClients, transport: Transport
) -> None:
    client = await faye_client(faye_server.url, transport, GWS_CHANNELS)
    assert client.subscribed["subscribed"] == list(GWS_CHANNELS)
    assert client.subscribed["connection_type"] == transport
    assert len(client.client_id) == 31
    await faye_server.await_subscribed(GWS_CHANNELS)

    answer = await faye_server.apublish_gws(100)
    assert answer["published"] == 200
    messages = await client.wait_messages(200)
    assert_gws_pairs(messages, start=0, count=100)

    assert all(set(m) == {"t", "wall", "channel", "data", "id"} for m in messages)
    ids = [m["id"] for m in messages]
    assert all(isinstance(i, str) and i for i in ids)
    assert len(set(ids)) == 200
    times = [m["t"] for m in messages]
    assert times == sorted(times)
    assert client.errors == []


async def test_many_clients_both_transports(
    faye_server: FayeServer, faye_client: FayeClients
) -> None:
    clients = [await faye_client(faye_server.url, t, GWS_CHANNELS) for t in TRANSPORTS * 2]
    await faye_server.await_subscribed(GWS_CHANNELS, count=4)
    await faye_server.apublish_gws(50, start=7)
    for client in clients:
        assert_gws_pairs(await client.wait_messages(100), start=7, count=50)
    assert len({c.client_id for c in clients}) == 4


async def test_wire_trace_long_polling(faye_server: FayeServer, faye_client: FayeClients) -> None:
    client = await faye_client(faye_server.url, "long-polling", ["/a", "/b"], trace=True)
    await faye_server.apublish("/a", ["x"])
    await client.wait_messages(1)
    out = [w for w in client.wire if w["wire"] == "out"]
    assert {w["via"] for w in client.wire} == {"long-polling"}

    (handshake,) = out[0]["messages"]
    assert handshake["channel"] == "/meta/handshake"
    assert handshake["id"] == "1"
    assert "advice" not in handshake
    assert "ext" not in handshake
    assert "minimumVersion" not in handshake
    # Disabled transports are still advertised: the list is every transport Node Faye has.
    assert handshake["supportedConnectionTypes"] == ["in-process", "websocket", "long-polling"]

    # The first connect goes in one POST with the subscribes, and because it shares a batch
    # Faye's transport adds advice {timeout: 0} to it, so the server answers at once.
    connect, *subscribes = out[1]["messages"]
    assert connect["channel"] == "/meta/connect"
    assert connect["connectionType"] == "long-polling"
    assert connect["advice"] == {"timeout": 0}
    assert [s["subscription"] for s in subscribes] == ["/b", "/a"]  # Faye subscribes in reverse
    assert [connect["id"], *(s["id"] for s in subscribes)] == ["2", "3", "4"]

    # The next connect is alone in its POST, carries no advice, and is held by the server.
    (second,) = out[2]["messages"]
    assert second["channel"] == "/meta/connect"
    assert "advice" not in second
    assert second["id"] == "5"


async def test_wire_trace_websocket_handshakes_over_http(
    faye_server: FayeServer, faye_client: FayeClients
) -> None:
    client = await faye_client(faye_server.url, "websocket", ["/a"], trace=True)
    await faye_server.apublish("/a", ["x", "y"])
    await client.wait_messages(2)
    wire = client.wire
    assert [w["via"] for w in wire[:2]] == ["long-polling", "long-polling"]
    assert wire[0]["messages"][0]["channel"] == "/meta/handshake"
    rest = wire[2:]
    assert {w["via"] for w in rest} == {"websocket"}
    # No batching over WebSocket: every frame is a one-element array, so the first connect
    # carries no advice and Faye holds it.
    assert all(len(w["messages"]) == 1 for w in rest)
    outgoing = [w["messages"][0] for w in rest if w["wire"] == "out"]
    assert [m["channel"] for m in outgoing[:2]] == ["/meta/connect", "/meta/subscribe"]
    assert "advice" not in outgoing[0]
    assert outgoing[0]["connectionType"] == "websocket"
    delivered = [w["messages"][0] for w in rest if w["wire"] == "in"][-2:]
    assert [d["data"] for d in delivered] == ["x", "y"]
    assert [d["id"] for d in delivered] == [m["id"] for m in client.messages]


async def test_wait_messages_times_out_clearly(
    faye_server: FayeServer, faye_client: FayeClients
) -> None:
    client = await faye_client(faye_server.url, "long-polling", ["/a"])
    await faye_server.apublish("/a", [1, 2])
    await client.wait_messages(2)  # both are in before the short wait for a third starts
    with pytest.raises(FayeClientError, match=r"2 of 3 messages: .*within 0.3 s"):
        await client.wait_messages(3, timeout=0.3)
    assert [m["data"] for m in client.messages] == [1, 2]


async def test_unreachable_server_fails_to_start(faye_client: FayeClients) -> None:
    with pytest.raises(FayeClientError, match=r"did not subscribe.*within 0.5 s"):
        await faye_client("http://127.0.0.1:9/cometd", "long-polling", ["/a"], timeout=0.5)
    (client,) = faye_client.started
    assert not client.running


async def test_bad_arguments_are_refused() -> None:
    client = FayeClient()
    with pytest.raises(ValueError, match="transport"):
        await client.start("http://127.0.0.1:9/cometd", "eventsource", ["/a"])  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="channels"):
        await client.start("http://127.0.0.1:9/cometd", "websocket", [])
    with pytest.raises(FayeClientError, match="not been started"):
        await client.wait_messages(1)
    await client.stop()  # never started: nothing to do


async def test_missing_node_modules_says_how_to_install(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(node_peer, "NODE_MODULES", tmp_path / "node_modules")
    with pytest.raises(FayeClientError, match=r"npm ci --prefix tests"):
        await FayeClient().start("http://127.0.0.1:9/cometd", "websocket", ["/a"])


async def test_missing_node_says_how_to_install() -> None:
    with pytest.raises(FayeClientError, match=r"not on PATH.*npm ci --prefix tests"):
        await FayeClient(node="no-such-node-binary-here").start(
            "http://127.0.0.1:9/cometd", "websocket", ["/a"]
        )


async def test_sigterm_disconnects_too(faye_server: FayeServer, faye_client: FayeClients) -> None:
    client = await faye_client(faye_server.url, "websocket", ["/a"])
    os.kill(client.pid, signal.SIGTERM)  # the process this test started, by its PID
    event = await client.wait_event("disconnected")
    assert event["ok"] is True
    await client.stop()
    assert client.returncode == 0
    assert (await faye_server.aclients())["disconnects"] == 1
