"""Protocol edge cases against the real replay server over HTTP (aiohttp client)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import orjson
import pytest

from replay.protocol import BayeuxServer
from replay.server import ReplayServer
from tests.constants import TIMEOUT


@pytest.fixture
async def server() -> AsyncIterator[ReplayServer]:
    srv = ReplayServer(BayeuxServer(timeout_ms=1000, max_interval_ms=300))
    await srv.start()
    yield srv
    await srv.stop()


async def post(http: aiohttp.ClientSession, url: str, body: Any) -> tuple[int, Any]:
    data = body if isinstance(body, bytes) else orjson.dumps(body)
    async with http.post(url, data=data) as response:
        return response.status, orjson.loads(await response.read())


async def handshake(http: aiohttp.ClientSession, url: str) -> str:
    _, reply = await post(
        http,
        url,
        [
            {
                "channel": "/meta/handshake",
                "version": "1.0",
                "id": "1",
                "supportedConnectionTypes": ["long-polling"],
            }
        ],
    )
    return str(reply[0]["clientId"])


def connect(cid: str, n: int, **extra: Any) -> list[dict[str, Any]]:
    return [
        {
            "channel": "/meta/connect",
            "clientId": cid,
            "connectionType": "long-polling",
            "id": str(n),
            **extra,
        }
    ]


async def test_connect_without_handshake_gets_unknown_client(server: ReplayServer) -> None:
    async with aiohttp.ClientSession() as http:
        status, reply = await post(http, server.url(), connect("nobody", 1))
    assert status == 200
    assert reply[0]["successful"] is False
    assert reply[0]["error"] == "402::Unknown client"
    assert reply[0]["advice"]["reconnect"] == "handshake"
    assert reply[0]["id"] == "1"


async def test_url_suffix_and_chunked_bodies_are_accepted(server: ReplayServer) -> None:
    async def chunks() -> AsyncIterator[bytes]:
        body = orjson.dumps(
            [
                {
                    "channel": "/meta/handshake",
                    "version": "1.0",
                    "id": "1",
                    "supportedConnectionTypes": ["long-polling"],
                }
            ]
        )
        for i in range(0, len(body), 7):
            yield body[i : i + 7]

    async with aiohttp.ClientSession() as http:
        url = server.url() + "/handshake"
        async with http.post(url, data=chunks()) as response:  # Transfer-Encoding: chunked
            assert response.status == 200
            reply = orjson.loads(await response.read())
    assert reply[0]["successful"] is True
    assert len(reply[0]["clientId"]) >= 26


async def test_a_second_concurrent_connect_resumes_the_first(server: ReplayServer) -> None:
    async with aiohttp.ClientSession() as http:
        cid = await handshake(http, server.url())
        await post(http, server.url(), connect(cid, 2))  # the first is answered at once
        held = asyncio.get_running_loop().create_task(post(http, server.url(), connect(cid, 3)))
        await asyncio.sleep(0.1)
        assert not held.done()
        second = asyncio.get_running_loop().create_task(post(http, server.url(), connect(cid, 4)))
        _, first_reply = await asyncio.wait_for(held, TIMEOUT)
        assert first_reply[-1]["id"] == "3"
        assert first_reply[-1]["successful"] is True
        assert not second.done()  # the new one is the one held now
        _, second_reply = await asyncio.wait_for(second, TIMEOUT)
    assert second_reply[-1]["id"] == "4"


async def test_garbage_bodies_get_400(server: ReplayServer) -> None:
    async with aiohttp.ClientSession() as http:
        for body in (b"not json", b"42", b'[{"no":"channel"}]', b""):
            status, reply = await post(http, server.url(), body)
            assert status == 400, body
            assert reply[0]["successful"] is False
            assert reply[0]["error"].startswith("400")


async def test_a_10000_message_backlog_comes_in_one_batch(server: ReplayServer) -> None:
    async with aiohttp.ClientSession() as http:
        cid = await handshake(http, server.url())
        await post(
            http,
            server.url(),
            [{"channel": "/meta/subscribe", "clientId": cid, "subscription": "/a", "id": "2"}],
        )
        await post(http, server.url(), connect(cid, 3))
        for i in range(10_000):
            server.protocol.publish("/a", {"n": i}, time.monotonic())
        _, reply = await post(http, server.url(), connect(cid, 4))
    events = [m for m in reply if m["channel"] == "/a"]
    assert [m["data"]["n"] for m in events] == list(range(10_000))


async def test_a_vanished_client_is_expired_and_freed(server: ReplayServer) -> None:
    async with aiohttp.ClientSession() as http:
        cid = await handshake(http, server.url())
        await post(http, server.url(), connect(cid, 2))
    assert cid in server.protocol.client_ids
    deadline = time.monotonic() + TIMEOUT
    while cid in server.protocol.client_ids and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    assert server.protocol.client_ids == ()
