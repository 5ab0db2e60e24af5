"""recorder.wire.read_body: a long-poll reply's body whole and exact, however it comes in
chunks (it is built in one buffer, not as chunks joined at the end)."""

from __future__ import annotations

import os

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from recorder.wire import read_body

BIG = os.urandom(3 << 20)  # ~50 socket reads


async def _chunked(request: web.Request) -> web.StreamResponse:
    response = web.StreamResponse()
    await response.prepare(request)
    for start in range(0, len(BIG), 100_000):
        await response.write(BIG[start : start + 100_000])
    await response.write_eof()
    return response


def _answer(body: bytes) -> web.Response:
    return web.Response(body=body)


async def _big(_: web.Request) -> web.Response:
    return _answer(BIG)


async def _small(_: web.Request) -> web.Response:
    return _answer(b"[]")


async def _empty(_: web.Request) -> web.Response:
    return _answer(b"")


@pytest.mark.parametrize(
    ("path", "expected"),
    [("/big", BIG), ("/chunked", BIG), ("/small", b"[]"), ("/empty", b"")],
)
async def test_the_body_is_read_whole_and_exact(path: str, expected: bytes) -> None:
    app = web.Application()
    app.router.add_get("/big", _big)
    app.router.add_get("/chunked", _chunked)
    app.router.add_get("/small", _small)
    app.router.add_get("/empty", _empty)
    async with (
        TestServer(app, host="127.0.0.1") as server,
        aiohttp.ClientSession() as http,
        http.get(server.make_url(path)) as response,
    ):
        body = await read_body(response.content)
    assert type(body) is bytes
    assert len(body) == len(expected)
    assert body == expected
