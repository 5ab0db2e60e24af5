"""The Faye harness works against a real Bayeux client: a minimal long-polling client on aiohttp."""

from __future__ import annotations

import asyncio
import itertools
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.conftest import TIMEOUT
from tests.peers import faye as faye_module
from tests.peers import node_peer
from tests.peers.faye import GWS_CHANNELS, FayeError, FayeServer

Message = dict[str, Any]


# Until tests/conftest.py registers it for every test, bring the fixture into this module.
faye_server = faye_module.faye_server


class LongPoller:
    """Just enough of a Bayeux long-polling client to drive Faye by hand."""

    def __init__(self, http: aiohttp.ClientSession, url: str) -> None:
        self.http = http
        self.url = url
        self.client_id: str | None = None
        self._ids = itertools.count(1)

    async def send(self, *messages: Message) -> list[Message]:
        batch = [{**m, "id": str(next(self._ids))} for m in messages]
        if self.client_id is not None:
            batch = [{"clientId": self.client_id, **m} for m in batch]
        async with self.http.post(self.url, json=batch) as response:
            assert response.status == 200, await response.text()
            replies = await response.json(content_type=None)
        assert isinstance(replies, list)
        return replies

    async def handshake(self) -> Message:
        (reply,) = await self.send(
            {
                "channel": "/meta/handshake",
                "version": "1.0",
                "supportedConnectionTypes": ["long-polling"],
            }
        )
        assert reply["successful"] is True, reply
        self.client_id = reply["clientId"]
        return reply

    async def subscribe(self, *channels: str) -> None:
        replies = await self.send(
            *({"channel": "/meta/subscribe", "subscription": c} for c in channels)
        )
        assert [r["subscription"] for r in replies] == list(channels)
        assert all(r["successful"] is True for r in replies), replies

    async def connect(self, *, immediate: bool = False) -> list[Message]:
        message: Message = {"channel": "/meta/connect", "connectionType": "long-polling"}
        if immediate:
            message["advice"] = {"timeout": 0}
        return await self.send(message)

    async def collect(self, count: int) -> list[Message]:
        """Long-poll until `count` events have arrived; bounded by TIMEOUT and by poll count."""
        events: list[Message] = []
        async with asyncio.timeout(TIMEOUT):
            for _ in range(count + 10):
                replies = await self.connect()
                (connect,) = [r for r in replies if r["channel"] == "/meta/connect"]
                assert connect["successful"] is True, connect
                events.extend(r for r in replies if not r["channel"].startswith("/meta/"))
                if len(events) >= count:
                    break
        assert len(events) == count
        return events


@pytest.fixture
async def http() -> Any:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=TIMEOUT)) as session:
        yield session


async def subscribed_client(
    faye_server: FayeServer, http: aiohttp.ClientSession, channels: tuple[str, ...] = GWS_CHANNELS
) -> LongPoller:
    client = LongPoller(http, faye_server.url)
    await client.handshake()
    await client.subscribe(*channels)
    (first,) = await client.connect(immediate=True)
    assert first["successful"] is True, first
    await faye_server.await_subscribed(channels)
    return client


def assert_gws_pairs(events: list[Message], start: int, count: int) -> None:
    assert [e["channel"] for e in events] == list(GWS_CHANNELS) * count
    acks, metrics = events[0::2], events[1::2]
    assert [a["data"]["referenceId"] for a in acks] == [str(i) for i in range(start, start + count)]
    assert [a["data"]["record"]["recordHandle"] for a in acks] == list(range(start, start + count))
    assert {a["data"]["notificationType"] for a in acks} == {"DoNotCallAcknowledge"}
    assert {a["data"]["messageType"] for a in acks} == {"OutboundRecordMessage"}
    assert [m["data"]["userData"]["GSW_RECORD_HANDLE"] for m in metrics] == list(
        range(start, start + count)
    )
    assert {m["data"]["messageType"] for m in metrics} == {"DeviceUserEventMessage"}
    assert all(isinstance(e["id"], str) and e["id"] for e in events)


async def test_handshake_reply_is_fayes(
    faye_server: FayeServer, http: aiohttp.ClientSession
) -> None:
    assert faye_server.url == f"http://127.0.0.1:{faye_server.port}/cometd"
    reply = await LongPoller(http, faye_server.url).handshake()
    assert reply["version"] == "1.0"
    assert reply["advice"] == {"reconnect": "retry", "interval": 0, "timeout": 60000}
    assert len(reply["clientId"]) == 31
    assert "minimumVersion" not in reply


async def test_gws_acks_arrive_in_order(
    faye_server: FayeServer, http: aiohttp.ClientSession
) -> None:
    client = LongPoller(http, faye_server.url)
    await client.handshake()
    await client.subscribe("/v2/me/outbound")
    (first,) = await client.connect(immediate=True)
    assert first["successful"] is True, first
    await faye_server.await_subscribed(["/v2/me/outbound"])

    answer = await faye_server.apublish_gws(50)
    assert answer["published"] == 100

    acks = await client.collect(50)
    assert {a["channel"] for a in acks} == {"/v2/me/outbound"}
    assert [a["data"]["referenceId"] for a in acks] == [str(i) for i in range(50)]
    assert [a["data"]["record"]["recordHandle"] for a in acks] == list(range(50))
    assert len({a["id"] for a in acks}) == 50


async def test_gws_pairs_interleave_across_channels(
    faye_server: FayeServer, http: aiohttp.ClientSession
) -> None:
    client = await subscribed_client(faye_server, http)
    await faye_server.apublish_gws(20, start=1000)
    assert_gws_pairs(await client.collect(40), start=1000, count=20)


async def test_publish_gws_5000_keeps_order(
    faye_server: FayeServer, http: aiohttp.ClientSession
) -> None:
    client = await subscribed_client(faye_server, http)
    started = time.perf_counter()
    answer = await faye_server.apublish_gws(5000)
    seconds = time.perf_counter() - started
    assert answer["published"] == 10_000
    events = await client.collect(10_000)
    assert_gws_pairs(events, start=0, count=5000)
    print(f"publish_gws(5000): {seconds:.3f} s round trip, {answer['elapsed_ms']:.0f} ms in Faye")


async def test_publish_list_in_order(faye_server: FayeServer, http: aiohttp.ClientSession) -> None:
    client = await subscribed_client(faye_server, http, ("/a/b",))
    data = [{"n": i, "s": "é" * (i % 5)} for i in range(3000)]
    answer = await faye_server.apublish("/a/b", data)
    assert answer["published"] == 3000
    events = await client.collect(3000)
    assert [e["data"] for e in events] == data
    assert {e["channel"] for e in events} == {"/a/b"}


async def test_blast_reports_throughput(
    faye_server: FayeServer, http: aiohttp.ClientSession
) -> None:
    client = await subscribed_client(faye_server, http, ("/bench",))
    asked = time.monotonic_ns()
    answer = await faye_server.ablast("/bench", 2000, size=500)
    answered = time.monotonic_ns()
    assert answer["published"] == 2000
    assert answer["elapsed_ms"] > 0
    # on this process's monotonic clock: benchmarks measure subscribers' rates from there
    assert asked < answer["started_monotonic_ns"] < answered
    events = await client.collect(2000)
    assert [e["data"]["seq"] for e in events] == list(range(2000))
    assert all(480 <= len(str(e["data"]).encode()) <= 520 for e in events[:3])


async def test_clients_tracks_handshakes_and_subscriptions(
    faye_server: FayeServer, http: aiohttp.ClientSession
) -> None:
    state = await faye_server.aclients()
    del state["id"]
    assert state == {
        "ok": True,
        "handshakes": 0,
        "disconnects": 0,
        "clients": 0,
        "subscriptions": {},
    }
    client = await subscribed_client(faye_server, http)
    state = await faye_server.aclients()
    assert state["handshakes"] == 1
    assert state["clients"] == 1
    assert state["subscriptions"] == {client.client_id: sorted(GWS_CHANNELS)}

    await client.send({"channel": "/meta/unsubscribe", "subscription": "/me/internal"})
    assert (await faye_server.aclients())["subscriptions"] == {
        client.client_id: ["/v2/me/outbound"]
    }

    await client.send({"channel": "/meta/disconnect"})
    state = await faye_server.aclients()
    assert (state["clients"], state["disconnects"], state["subscriptions"]) == (0, 1, {})


async def test_wait_subscribed_counts_clients(
    faye_server: FayeServer, http: aiohttp.ClientSession
) -> None:
    waiting = asyncio.create_task(faye_server.await_subscribed(GWS_CHANNELS, count=2))
    first = await subscribed_client(faye_server, http)
    await asyncio.sleep(0.05)
    assert not waiting.done()
    second = await subscribed_client(faye_server, http)
    assert (await waiting)["subscribed"] == 2
    assert first.client_id != second.client_id

    with pytest.raises(FayeError, match=r"timeout after 200 ms: 2 of 3 clients"):
        await faye_server.await_subscribed(GWS_CHANNELS, count=3, timeout=0.2)


async def test_kill_and_restart_forget_clients(
    faye_server: FayeServer, http: aiohttp.ClientSession
) -> None:
    client = await subscribed_client(faye_server, http)
    port, old_pid, old_id = faye_server.port, faye_server.pid, client.client_id

    await asyncio.to_thread(faye_server.restart)
    assert faye_server.port == port
    assert faye_server.pid != old_pid
    assert faye_server.running

    (reply,) = await client.connect()
    assert reply["successful"] is False
    assert reply["error"] == f"401:{old_id}:Unknown client"
    assert reply["advice"]["reconnect"] == "handshake"

    # A client that follows the advice gets going again on the new server.
    fresh = await subscribed_client(faye_server, http)
    assert fresh.client_id != old_id
    await faye_server.apublish_gws(3)
    assert_gws_pairs(await fresh.collect(6), start=0, count=3)


async def test_missing_client_id_is_402(
    faye_server: FayeServer, http: aiohttp.ClientSession
) -> None:
    (reply,) = await LongPoller(http, faye_server.url).connect(immediate=True)
    assert reply["successful"] is False
    assert reply["error"] == "402:clientId:Missing required parameter"


def test_bad_commands_are_refused(faye_server: FayeServer) -> None:
    answer = faye_server.raw_command({"cmd": "no-such-command"})
    assert answer["ok"] is False
    assert "unknown command" in answer["error"]
    with pytest.raises(FayeError, match="unknown command"):
        faye_server.command({"cmd": "no-such-command"})
    with pytest.raises(FayeError, match="channel"):
        faye_server.publish("no-slash", [1])
    # The server is still fine after refusing.
    assert faye_server.publish("/nobody/listens", [1, 2, 3])["published"] == 3


def test_commands_are_thread_safe(faye_server: FayeServer) -> None:
    async def many() -> list[dict[str, Any]]:
        return await asyncio.gather(*(faye_server.apublish(f"/t/{i}", [i] * 10) for i in range(20)))

    answers = asyncio.run(many())
    assert [a["published"] for a in answers] == [10] * 20


def test_stop_exits_on_stdin_eof() -> None:
    server = FayeServer()
    server.start()
    pid = server.pid
    started = time.monotonic()
    server.stop()
    assert time.monotonic() - started < TIMEOUT / 4  # exited at EOF, not terminated
    assert not server.running
    with pytest.raises(FayeError, match="not running"):
        server.command({"cmd": "clients"})
    server.stop()  # idempotent
    server.kill()
    assert pid > 0


def test_kill_then_commands_fail_clearly(faye_server: FayeServer) -> None:
    faye_server.kill()
    assert not faye_server.running
    with pytest.raises(FayeError, match="not running"):
        faye_server.clients()
    faye_server.start()  # a fresh start on a new free port works after a kill
    assert faye_server.clients()["handshakes"] == 0


def test_missing_node_modules_says_how_to_install(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(node_peer, "NODE_MODULES", tmp_path / "node_modules")
    with pytest.raises(FayeError, match=r"npm ci --prefix tests"):
        FayeServer().start()


def test_missing_node_says_how_to_install() -> None:
    with pytest.raises(FayeError, match=r"not on PATH.*npm ci --prefix tests"):
        FayeServer(node="no-such-node-binary-here").start()
