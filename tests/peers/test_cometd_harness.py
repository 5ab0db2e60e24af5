"""The cometd-nodejs-server harness against a minimal long-polling client on aiohttp, and what
this server does that Faye does not (see tests/peers/cometd_server.py)."""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.constants import TIMEOUT
from tests.peers import node_peer
from tests.peers.cometd_server import CometdError, CometdServer, cometd_server

__all__ = ["cometd_server"]  # the fixture, used by the tests below

Message = dict[str, Any]
COOKIE = "BAYEUX_BROWSER"


class LongPoller:
    """Just enough of a Bayeux long-polling client to drive the server by hand. Its aiohttp
    session keeps cookies (for 127.0.0.1 too), as a browser would."""

    def __init__(self, http: aiohttp.ClientSession, url: str) -> None:
        self.http = http
        self.url = url
        self.client_id: str | None = None
        self._ids = itertools.count(1)
        self.last_headers: Any = None
        self.early: list[Message] = []  # events that came with a reply before collect()

    async def send(self, *messages: Message) -> list[Message]:
        batch = [{**m, "id": str(next(self._ids))} for m in messages]
        if self.client_id is not None:
            batch = [{"clientId": self.client_id, **m} for m in batch]
        async with self.http.post(self.url, json=batch) as response:
            assert response.status == 200, await response.text()
            self.last_headers = response.headers
            replies = await response.json(content_type=None)
        assert isinstance(replies, list)
        return replies

    async def handshake(self) -> Message:
        (reply,) = await self.send(
            {
                "channel": "/meta/handshake",
                "version": "1.0",
                "supportedConnectionTypes": ["websocket", "long-polling"],
            }
        )
        assert reply["successful"] is True, reply
        self.client_id = reply["clientId"]
        return reply

    async def subscribe(self, *channels: str) -> list[Message]:
        return await self.send(
            *({"channel": "/meta/subscribe", "subscription": c} for c in channels)
        )

    async def connect(self, *, immediate: bool = False) -> list[Message]:
        message: Message = {"channel": "/meta/connect", "connectionType": "long-polling"}
        if immediate:
            message["advice"] = {"timeout": 0}
        return await self.send(message)

    async def collect(self, count: int) -> list[Message]:
        """Long-poll until `count` events have arrived; bounded by TIMEOUT."""
        events, self.early = self.early, []
        async with asyncio.timeout(TIMEOUT):
            while len(events) < count:
                replies = await self.connect()
                assert replies[-1]["channel"] == "/meta/connect", replies[-1]
                assert replies[-1]["successful"] is True, replies[-1]
                events.extend(r for r in replies if not r["channel"].startswith("/meta/"))
        assert len(events) == count
        return events


def new_http() -> aiohttp.ClientSession:
    return aiohttp.ClientSession(
        cookie_jar=aiohttp.CookieJar(unsafe=True),
        timeout=aiohttp.ClientTimeout(total=TIMEOUT * 4),
    )


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with new_http() as session:
        yield session


async def subscribed(server: CometdServer, http: aiohttp.ClientSession, *channels: str) -> Any:
    client = LongPoller(http, server.url)
    await client.handshake()
    replies = await client.subscribe(*channels)
    replies += await client.connect(immediate=True)
    meta = [r for r in replies if r["channel"].startswith("/meta/")]
    assert [r["channel"] for r in meta] == ["/meta/subscribe"] * len(channels) + ["/meta/connect"]
    assert all(r["successful"] is True for r in meta), meta
    # With a stream running, events may come with either reply (ahead of it).
    client.early = [r for r in replies if not r["channel"].startswith("/meta/")]
    await server.await_subscribed(channels)
    return client


async def test_handshake_reply_is_long_polling_only_and_sets_the_browser_cookie(
    cometd_server: CometdServer, http: aiohttp.ClientSession
) -> None:
    client = LongPoller(http, cometd_server.url)
    reply = await client.handshake()
    assert reply["supportedConnectionTypes"] == ["long-polling"]
    assert reply["advice"] == {"reconnect": "retry", "timeout": 30000, "interval": 0}
    assert len(reply["clientId"]) == 40
    assert client.last_headers["Set-Cookie"].startswith(f"{COOKIE}=")
    assert "HttpOnly" in client.last_headers["Set-Cookie"]


async def test_websocket_upgrade_is_refused(cometd_server: CometdServer) -> None:
    async with new_http() as http:
        with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
            await http.ws_connect(cometd_server.url.replace("http://", "ws://", 1))
    assert refused.value.status == 400


async def test_a_session_is_bound_to_its_browser_cookie(
    cometd_server: CometdServer, http: aiohttp.ClientSession
) -> None:
    client = await subscribed(cometd_server, http, "/a")
    # The same clientId from a client without the cookie: the server finds no session.
    async with new_http() as bare:
        stranger = LongPoller(bare, cometd_server.url)
        stranger.client_id = client.client_id
        (reply,) = await stranger.connect(immediate=True)
    assert reply["successful"] is False
    assert reply["error"] == "402::session_unknown"
    assert reply["advice"] == {"reconnect": "handshake", "interval": 0}
    # With the cookie it is still there.
    (ok,) = await client.connect(immediate=True)
    assert ok["successful"] is True


async def test_events_come_before_the_connect_reply_in_one_batch(
    cometd_server: CometdServer, http: aiohttp.ClientSession
) -> None:
    client = await subscribed(cometd_server, http, "/a")
    cometd_server.publish("/a", [{"n": 1}, {"n": 2}])  # queued: no connect is held
    replies = await client.connect()
    assert [r["channel"] for r in replies] == ["/a", "/a", "/meta/connect"]
    assert [r["data"] for r in replies[:2]] == [{"n": 1}, {"n": 2}]
    assert all("id" not in r for r in replies[:2])  # server-side publishes carry no id
    # A subscribe reply carries queued events too, also ahead of the reply.
    cometd_server.publish("/a", [{"n": 3}])
    replies = await client.subscribe("/b")
    assert [r["channel"] for r in replies] == ["/a", "/meta/subscribe"]


async def test_unknown_session_is_402_with_handshake_advice(
    cometd_server: CometdServer, http: aiohttp.ClientSession
) -> None:
    client = await subscribed(cometd_server, http, "/a")
    client.client_id = "no-such-session"
    (connect,) = await client.connect(immediate=True)
    assert connect["error"] == "402::session_unknown"
    assert connect["advice"] == {"reconnect": "handshake", "interval": 0}
    (subscribe,) = await client.subscribe("/b")
    assert subscribe["error"] == "402::session_unknown"
    assert "advice" not in subscribe  # advice only on handshake and connect replies


async def test_stream_publishes_in_order_at_its_rate(
    cometd_server: CometdServer, http: aiohttp.ClientSession
) -> None:
    client = await subscribed(cometd_server, http, "/seq")
    started = time.monotonic()
    stream = cometd_server.stream("/seq", 500, count=250, start=7, size=100)
    assert stream["first_seq"] == 7
    events = await client.collect(250)
    done = await asyncio.to_thread(cometd_server.stream_wait, int(stream["stream"]))
    elapsed = time.monotonic() - started
    assert [e["data"]["seq"] for e in events] == list(range(7, 257))
    assert len(events[0]["data"]["pad"]) == 100
    assert (done["published"], done["next_seq"], done["done"]) == (250, 257, True)
    assert 0.45 < elapsed < TIMEOUT  # 250 at 500/s: about half a second, not all at once


async def test_subscribe_log_says_where_a_stream_was_when_a_session_subscribed(
    cometd_server: CometdServer, http: aiohttp.ClientSession
) -> None:
    stream = cometd_server.stream("/seq", 200)
    await asyncio.sleep(0.3)
    client = await subscribed(cometd_server, http, "/seq")
    await asyncio.sleep(0.3)
    done = cometd_server.stream_stop(int(stream["stream"]))
    (entry,) = cometd_server.clients()["subscribe_log"]
    assert entry["session"] == client.client_id
    first = entry["next_seq"]
    assert 0 < first < done["next_seq"]
    events = await client.collect(done["next_seq"] - first)
    # Everything published after the subscription arrives; nothing from before it.
    assert [e["data"]["seq"] for e in events] == list(range(first, done["next_seq"]))


async def test_a_channel_swept_by_the_server_still_gets_the_stream(
    http: aiohttp.ClientSession,
) -> None:
    # The sweeper drops a channel nobody subscribes to; a stream started before the first
    # subscriber must publish to the channel the subscribe makes, not the dropped one.
    with CometdServer(sweep_period_ms=50) as server:
        stream = server.stream("/late", 200)
        await asyncio.sleep(0.3)
        client = await subscribed(server, http, "/late")
        await asyncio.sleep(0.2)
        done = server.stream_stop(int(stream["stream"]))
        first = server.clients()["subscribe_log"][0]["next_seq"]
        events = await client.collect(done["next_seq"] - first)
    assert [e["data"]["seq"] for e in events] == list(range(first, done["next_seq"]))


async def test_a_session_without_connects_expires_after_max_interval(
    http: aiohttp.ClientSession,
) -> None:
    with CometdServer(timeout_ms=500, max_interval_ms=300, sweep_period_ms=50) as server:
        before_connect = time.monotonic()
        client = await subscribed(server, http, "/a")
        assert server.clients()["expired"] == 0
        async with asyncio.timeout(TIMEOUT):
            while (state := server.clients())["expired"] == 0:
                await asyncio.sleep(0.02)
        assert time.monotonic() - before_connect >= 0.3  # not before maxInterval
        assert (state["expired"], state["subscriptions"]) == (1, {})
        (reply,) = await client.connect(immediate=True)
        assert reply["error"] == "402::session_unknown"


async def test_a_held_connect_keeps_the_session_alive(http: aiohttp.ClientSession) -> None:
    with CometdServer(timeout_ms=800, max_interval_ms=200, sweep_period_ms=50) as server:
        client = await subscribed(server, http, "/a")
        (held,) = await client.connect()  # held the whole 800 ms: longer than maxInterval
        assert held["successful"] is True
        assert server.clients()["expired"] == 0


async def test_configure_changes_options_while_running(
    cometd_server: CometdServer, http: aiohttp.ClientSession
) -> None:
    answer = cometd_server.configure(timeout_ms=200, max_interval_ms=5000)
    assert answer["options"]["timeout"] == 200
    assert answer["options"]["maxInterval"] == 5000
    client = await subscribed(cometd_server, http, "/a")
    started = time.monotonic()
    (reply,) = await client.connect()  # held for the new timeout, not 30 s
    assert reply["successful"] is True
    assert 0.15 < time.monotonic() - started < TIMEOUT / 2
    with pytest.raises(CometdError, match="unknown option"):
        cometd_server.command({"cmd": "configure", "nope": 1})


async def test_restart_keeps_the_port_and_forgets_sessions(
    cometd_server: CometdServer, http: aiohttp.ClientSession
) -> None:
    client = await subscribed(cometd_server, http, "/a")
    port, pid = cometd_server.port, cometd_server.pid
    await asyncio.to_thread(cometd_server.restart)
    assert (cometd_server.port, cometd_server.running) == (port, True)
    assert cometd_server.pid != pid
    (reply,) = await client.connect(immediate=True)
    assert reply["error"] == "402::session_unknown"
    assert reply["advice"] == {"reconnect": "handshake", "interval": 0}
    # Following the advice works, with the old server's cookie still sent.
    fresh = await subscribed(cometd_server, http, "/a")
    assert fresh.client_id != client.client_id
    cometd_server.publish("/a", ["after"])
    assert [e["data"] for e in await fresh.collect(1)] == ["after"]


def test_bad_commands_are_refused(cometd_server: CometdServer) -> None:
    assert cometd_server.raw_command({"cmd": "no-such-command"})["ok"] is False
    with pytest.raises(CometdError, match="broadcast channel"):
        cometd_server.publish("/meta/connect", [1])
    with pytest.raises(CometdError, match="rate"):
        cometd_server.stream("/s", 0)
    stream = cometd_server.stream("/s", 10)
    with pytest.raises(CometdError, match="already runs"):
        cometd_server.stream("/s", 10)
    cometd_server.stream_stop(int(stream["stream"]))
    with pytest.raises(CometdError, match="no stream"):
        cometd_server.stream_stop(999)
    assert cometd_server.publish("/nobody/listens", [1, 2, 3])["published"] == 3


def test_stop_exits_on_stdin_eof() -> None:
    server = CometdServer()
    server.start()
    started = time.monotonic()
    server.stop()
    assert time.monotonic() - started < TIMEOUT / 4
    assert not server.running
    with pytest.raises(CometdError, match="not running"):
        server.clients()
    server.stop()  # idempotent
    server.kill()


def test_missing_package_says_how_to_install(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(node_peer, "NODE_MODULES", tmp_path / "node_modules")
    with pytest.raises(CometdError, match=r"cometd-nodejs-server.*npm ci --prefix tests"):
        CometdServer().start()


def test_missing_node_says_how_to_install() -> None:
    with pytest.raises(CometdError, match=r"not on PATH.*npm ci --prefix tests"):
        CometdServer(node="no-such-node-binary-here").start()
