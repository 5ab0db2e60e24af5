"""Long-polling served from the socket (replay/longpoll.py), over raw TCP: what HTTP/1.1 clients
send (chunked bodies, Expect, HTTP/1.0, keep-alive), what it refuses, and the hand-over to
aiohttp of a connection whose next request is not a long-poll."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable

import orjson
import pytest

from replay.protocol import BayeuxServer
from replay.server import ReplayServer
from tests.constants import TIMEOUT

HANDSHAKE = orjson.dumps(
    [{"channel": "/meta/handshake", "version": "1.0", "supportedConnectionTypes": ["long-polling"]}]
)


@pytest.fixture
async def server() -> AsyncIterator[ReplayServer]:
    srv = ReplayServer(BayeuxServer(), read_timeout_s=0.5)
    srv.app.router.add_get("/rest", _rest)
    await srv.start()
    yield srv
    await srv.stop()


async def _rest(request: object) -> object:
    from aiohttp import web

    return web.Response(text="rest")


async def until(condition: Callable[[], bool]) -> None:
    """Poll `condition` until it holds, for at most TIMEOUT (the caller asserts the state)."""
    deadline = time.monotonic() + TIMEOUT
    while not condition() and time.monotonic() < deadline:
        await asyncio.sleep(0.01)


async def exchange(server: ReplayServer, *requests: bytes) -> list[bytes]:
    """Send the requests one after another on one connection; each response, whole."""
    reader, writer = await asyncio.open_connection(server.host, server.port)
    answers = []
    try:
        for request in requests:
            writer.write(request)
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), TIMEOUT)
            length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
            answers.append(head + await reader.readexactly(length))
    finally:
        writer.close()
    return answers


def post(body: bytes, path: str = "/cometd", extra: bytes = b"") -> bytes:
    head = f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Length: {len(body)}\r\n".encode()
    return head + extra + b"\r\n" + body


async def test_keep_alive_polls_then_a_rest_call_handed_to_aiohttp(server: ReplayServer) -> None:
    first, second, rest = await exchange(
        server,
        post(HANDSHAKE),
        post(HANDSHAKE, "/cometd/handshake"),
        b"GET /rest HTTP/1.1\r\nHost: x\r\n\r\n",
    )
    assert first.startswith(b"HTTP/1.1 200 OK\r\n")
    assert b'"successful":true' in first
    assert b'"successful":true' in second
    assert rest.startswith(b"HTTP/1.1 200 OK")
    assert rest.endswith(b"rest")
    assert b"Server: Python" in rest  # aiohttp's


async def test_chunked_bodies_and_expect_continue(server: ReplayServer) -> None:
    reader, writer = await asyncio.open_connection(server.host, server.port)
    try:
        writer.write(
            b"POST /cometd HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
            b"Expect: 100-continue\r\n\r\n"
        )
        assert await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), TIMEOUT) == (
            b"HTTP/1.1 100 Continue\r\n\r\n"
        )
        half = len(HANDSHAKE) // 2
        for chunk in (HANDSHAKE[:half], HANDSHAKE[half:], b""):
            writer.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), TIMEOUT)
        assert head.startswith(b"HTTP/1.1 200 OK")
    finally:
        writer.close()


async def test_http_1_0_gets_its_answer_then_the_connection_closes(server: ReplayServer) -> None:
    reader, writer = await asyncio.open_connection(server.host, server.port)
    writer.write(
        b"POST /cometd HTTP/1.0\r\nContent-Length: %d\r\n\r\n%s" % (len(HANDSHAKE), HANDSHAKE)
    )
    answer = await asyncio.wait_for(reader.read(), TIMEOUT)  # to EOF: closed after it
    writer.close()
    assert answer.startswith(b"HTTP/1.1 200 OK")
    assert b"Connection: close" in answer


@pytest.mark.parametrize(
    ("request_bytes", "status"),
    [
        (post(b"x" * (2**20 + 1)), b"413"),
        (b"POST /cometd HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nabc", b"408"),
        (b"POST /cometd HTTP/1.1\r\nContent-Length: nope\r\n\r\n", b"400"),
        (post(b"[1]"), b"400"),
    ],
)
async def test_refusals(server: ReplayServer, request_bytes: bytes, status: bytes) -> None:
    reader, writer = await asyncio.open_connection(server.host, server.port)
    writer.write(request_bytes)
    answer = await asyncio.wait_for(reader.read(4096), TIMEOUT)
    writer.close()
    assert answer.startswith(b"HTTP/1.1 " + status)


async def test_a_client_gone_while_held_frees_its_poll(server: ReplayServer) -> None:
    (hello,) = await exchange(server, post(HANDSHAKE))
    cid = orjson.loads(hello.split(b"\r\n\r\n", 1)[1])[0]["clientId"]
    connect = {"channel": "/meta/connect", "clientId": cid, "connectionType": "long-polling"}
    await exchange(server, post(orjson.dumps([connect | {"advice": {"timeout": 0}}])))
    _reader, writer = await asyncio.open_connection(server.host, server.port)
    writer.write(post(orjson.dumps([connect])))
    await writer.drain()
    await until(lambda: server.sizes()["held_polls"] != 0)
    assert server.sizes()["held_polls"] == 1
    writer.close()
    await until(lambda: server.sizes()["held_polls"] == 0)
    assert server.sizes()["held_polls"] == 0
    assert server.sizes()["poll_connections"] == 0


async def test_two_connects_in_one_read_leave_no_poll_held(server: ReplayServer) -> None:
    (hello,) = await exchange(server, post(HANDSHAKE))
    cid = orjson.loads(hello.split(b"\r\n\r\n", 1)[1])[0]["clientId"]
    connect = {"channel": "/meta/connect", "clientId": cid, "connectionType": "long-polling"}
    await exchange(server, post(orjson.dumps([connect | {"advice": {"timeout": 0}}])))
    reader, writer = await asyncio.open_connection(server.host, server.port)
    writer.write(post(orjson.dumps([connect])) * 2)  # pipelined: refused, the first freed
    answer = await asyncio.wait_for(reader.read(), TIMEOUT)
    writer.close()
    assert b"HTTP/1.1 400" in answer
    await until(lambda: server.sizes()["held_polls"] == 0)
    assert server.sizes()["held_polls"] == 0


async def test_a_post_asking_for_an_upgrade_is_answered_once(server: ReplayServer) -> None:
    reader, writer = await asyncio.open_connection(server.host, server.port)
    writer.write(post(HANDSHAKE, extra=b"Connection: Upgrade\r\nUpgrade: websocket\r\n"))
    answer = await asyncio.wait_for(reader.read(), TIMEOUT)
    writer.close()
    assert answer.count(b"HTTP/1.1 ") == 1
    assert answer.startswith(b"HTTP/1.1 400")
    assert server.protocol.client_ids == ()


async def test_expect_continue_over_the_limit_gets_413_at_once(server: ReplayServer) -> None:
    reader, writer = await asyncio.open_connection(server.host, server.port)
    writer.write(
        b"POST /cometd HTTP/1.1\r\nHost: x\r\nContent-Length: 10000000\r\n"
        b"Expect: 100-continue\r\n\r\n"
    )
    answer = await asyncio.wait_for(reader.read(), TIMEOUT)
    writer.close()
    assert answer.startswith(b"HTTP/1.1 413")


async def test_http_1_0_keep_alive_is_said_so(server: ReplayServer) -> None:
    request = b"POST /cometd HTTP/1.0\r\nConnection: keep-alive\r\nContent-Length: %d\r\n\r\n%s"
    (answer,) = await exchange(server, request % (len(HANDSHAKE), HANDSHAKE))
    assert b"Connection: keep-alive" in answer
