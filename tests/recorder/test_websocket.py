"""The WebSocket transport (websockets' client, frames read by recorder/wsframes.py) against
real servers on 127.0.0.1: aiohttp's WebSocket server, and raw sockets for what no library
server sends (bytes that are not UTF-8, frames in the 101 response's read, protocol errors).
Frames both ways, pings and pongs, the keepalive, the closing handshake, refusals, redirects and
frames up to the 64 MiB limit."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import itertools
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field

import pytest
from aiohttp import WSMsgType, web

from recorder.auth import Credentials
from recorder.events import Outgoing
from recorder.websocket import MAX_FRAME, WebSocketTransport
from tape.bayeux import Message
from tape.frame import Frame, Session
from tape.session import SessionLog
from tests.conftest import ListSink
from tests.constants import TIMEOUT

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
CONNECT = Outgoing("connect", ({"channel": "/meta/connect", "id": "1"},))


@contextlib.asynccontextmanager
async def server(handler: Handler, **routes: Handler) -> AsyncIterator[str]:
    app = web.Application()
    app.router.add_get("/ws", handler)
    for path, other in routes.items():
        app.router.add_get(f"/{path}", other)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        yield f"http://127.0.0.1:{port}/ws"
    finally:
        await runner.cleanup()


@contextlib.asynccontextmanager
async def raw_server(
    serve: Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]],
) -> AsyncIterator[str]:
    tcp = await asyncio.start_server(serve, "127.0.0.1", 0)
    port = tcp.sockets[0].getsockname()[1]
    async with tcp:
        yield f"ws://127.0.0.1:{port}/ws"


@dataclass
class Client:
    """A WebSocketTransport with what it delivers and reports kept for the test."""

    url: str
    credentials: Credentials = field(default_factory=Credentials)
    ping: tuple[float, float] = (20.0, 20.0)
    sink: ListSink = field(default_factory=ListSink)
    delivered: list[Message] = field(default_factory=list)
    failures: list[tuple[str, int | None]] = field(default_factory=list)

    def __post_init__(self) -> None:
        log = SessionLog(self.sink, Session(session_id="s", transport="websocket"))
        self.transport = WebSocketTransport(
            self.url,
            log,
            self.delivered.extend,
            lambda reason, status, ids: self.failures.append((reason, status)),
            credentials=self.credentials,
            ping_interval=self.ping[0],
            ping_timeout=self.ping[1],
        )

    async def __aenter__(self) -> Client:
        await self.transport.open()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.transport.close()

    async def failed(self) -> tuple[str, int | None]:
        await until(lambda: bool(self.failures))
        return self.failures[0]

    def received(self) -> list[Frame]:
        return [f for f in self.sink.frames if f.direction == "in"]


async def until(condition: Callable[[], bool]) -> None:
    async with asyncio.timeout(TIMEOUT):
        while not condition():
            await asyncio.sleep(0.01)


async def test_frames_flow_both_ways_with_the_credentials_and_a_close_code_is_reported() -> None:
    seen: dict[str, object] = {}

    async def handler(request: web.Request) -> web.StreamResponse:
        seen["auth"] = request.headers.get("Authorization")
        seen["cookie"] = request.headers.get("Cookie")
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        first = await ws.receive()
        seen["first"] = (first.type, first.data)
        await ws.send_str('[{"channel":"/a","data":"é"}]')
        await ws.send_bytes(b"\x00\xff")
        await ws.send_str('[{"channel":"/b","data":"' + "x" * 200_000 + '"}]')  # 64-bit length
        await ws.close(code=4001)
        return ws

    async with server(handler) as url:
        credentials = Credentials(user="u", password="p", cookies={"JSESSIONID": "j1"})
        async with Client(url, credentials=credentials) as client:
            client.transport.send(CONNECT)
            reason, status = await client.failed()
    assert seen == {
        "auth": "Basic dTpw",
        "cookie": "JSESSIONID=j1",
        "first": (WSMsgType.TEXT, '[{"channel":"/meta/connect","id":"1"}]'),
    }
    assert [m.channel for m in client.delivered] == ["/a", "/b"]
    raws = [f.raw for f in client.received()]
    assert raws[0] == '[{"channel":"/a","data":"é"}]'.encode()
    assert raws[1] == b"\x00\xff"
    assert len(raws[2]) > 200_000
    assert (client.received()[1].parse_error or "").startswith("binary WebSocket frame")
    assert (reason, status) == ("websocket closed: closed with code 4001", None)
    await asyncio.sleep(0.05)
    assert len(client.failures) == 1  # once


async def test_a_server_ping_is_answered_with_its_payload() -> None:
    got: asyncio.Future[tuple[WSMsgType, bytes]] = asyncio.get_running_loop().create_future()

    async def handler(request: web.Request) -> web.StreamResponse:
        ws = web.WebSocketResponse(autoping=False)
        await ws.prepare(request)
        await ws.receive()  # the connect
        await ws.ping(b"hello")
        msg = await ws.receive()
        got.set_result((msg.type, msg.data))
        await ws.send_str("[]")  # a frame after the ping still arrives
        await ws.receive()
        return ws

    async with server(handler) as url, Client(url) as client:
        client.transport.send(CONNECT)
        assert await asyncio.wait_for(got, TIMEOUT) == (WSMsgType.PONG, b"hello")
        await until(lambda: len(client.received()) == 1)
    assert [f.raw for f in client.received()] == [b"[]"]


async def test_a_server_that_never_pongs_is_dropped_by_the_keepalive() -> None:
    pings: list[bytes] = []

    async def handler(request: web.Request) -> web.StreamResponse:
        ws = web.WebSocketResponse(autoping=False)  # never answers our pings
        await ws.prepare(request)
        async for msg in ws:
            if msg.type == WSMsgType.PING:
                pings.append(msg.data)
        return ws

    async with server(handler) as url, Client(url, ping=(0.05, 0.2)) as client:
        client.transport.send(CONNECT)
        reason, _ = await client.failed()
    assert reason == "websocket closed: no pong within 0.2 s (keepalive)"
    assert len(pings) == 1


async def test_pings_go_out_every_interval_while_pongs_come_back() -> None:
    pings: list[float] = []

    async def handler(request: web.Request) -> web.StreamResponse:
        ws = web.WebSocketResponse(autoping=False)
        await ws.prepare(request)
        async for msg in ws:
            if msg.type == WSMsgType.PING:
                pings.append(asyncio.get_running_loop().time())
                await ws.pong(msg.data)
        return ws

    async with server(handler) as url, Client(url, ping=(0.3, TIMEOUT / 2)) as client:
        client.transport.send(CONNECT)
        deadline = asyncio.get_running_loop().time() + TIMEOUT
        while len(pings) < 3 and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.05)
        assert client.failures == []  # kept alive, never dropped
    assert len(pings) >= 3, pings
    # One ping an interval, not more often (a loaded machine may only make them later).
    assert all(b - a >= 0.25 for a, b in itertools.pairwise(pings)), pings


async def test_our_close_is_a_closing_handshake_and_no_failure() -> None:
    closed: asyncio.Future[int | None] = asyncio.get_running_loop().create_future()

    async def handler(request: web.Request) -> web.StreamResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        async for _ in ws:
            await ws.send_str('[{"channel":"/a","data":1}]')
        closed.set_result(ws.close_code)
        return ws

    async with server(handler) as url:
        client = Client(url)
        async with client:
            client.transport.send(CONNECT)
            await until(lambda: bool(client.delivered))
        assert await asyncio.wait_for(closed, TIMEOUT) == 1000
    assert client.failures == []
    assert [(f.direction, f.raw) for f in client.sink.frames] == [
        ("out", b'[{"channel":"/meta/connect","id":"1"}]'),
        ("in", b'[{"channel":"/a","data":1}]'),
    ]


@pytest.mark.parametrize("status", [400, 401, 403, 404])
async def test_a_refused_upgrade_says_the_status(status: int) -> None:
    async def handler(request: web.Request) -> web.StreamResponse:
        return web.Response(status=status, text="no")

    async with server(handler) as url, Client(url) as client:
        client.transport.send(CONNECT)
        reason, got = await client.failed()
    assert got == status
    assert f"server rejected WebSocket connection: HTTP {status}" in reason


async def test_a_redirect_is_followed() -> None:
    async def moved(request: web.Request) -> web.StreamResponse:
        raise web.HTTPTemporaryRedirect("/there")

    async def there(request: web.Request) -> web.StreamResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        await ws.receive()
        await ws.send_str("[]")
        await ws.receive()
        return ws

    async with server(moved, there=there) as url, Client(url) as client:
        client.transport.send(CONNECT)
        await until(lambda: bool(client.received()))
    assert client.failures == []


async def test_a_frame_of_64_mib_is_recorded_and_a_larger_one_refused() -> None:
    """The limit is MAX_FRAME (64 MiB), not the library's 1 MiB default: a 5 MB GWS reply must
    be recorded. A frame over it fails the connection (with close code 1009)."""
    head = b'[{"channel":"/big","data":"'
    payload = head + b"x" * (MAX_FRAME - len(head) - 3) + b'"}]'
    assert len(payload) == MAX_FRAME

    async def handler(request: web.Request) -> web.StreamResponse:
        ws = web.WebSocketResponse(max_msg_size=0)
        await ws.prepare(request)
        await ws.receive()
        await ws.send_frame(payload, WSMsgType.TEXT)
        with contextlib.suppress(ConnectionError):  # the client drops it part-way
            await ws.send_frame(payload + b" ", WSMsgType.TEXT)
            await ws.receive()
        return ws

    async with server(handler) as url, Client(url) as client:
        client.transport.send(CONNECT)
        reason, _ = await client.failed()
    assert [m.channel for m in client.delivered] == ["/big"]
    assert [len(f.raw) for f in client.received()] == [MAX_FRAME]
    assert reason == (
        "websocket closed: not a WebSocket stream: "
        f"a frame of {MAX_FRAME + 1} bytes is over the {MAX_FRAME}-byte limit"
    )


def accept_key(key: bytes) -> bytes:
    return base64.b64encode(hashlib.sha1(key + b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11").digest())


async def upgrade(reader: asyncio.StreamReader) -> bytes:
    """A raw server's side of the opening handshake: the 101 response for the client's key."""
    request = await reader.readuntil(b"\r\n\r\n")
    key = next(
        line.split(b":", 1)[1].strip()
        for line in request.split(b"\r\n")
        if line.lower().startswith(b"sec-websocket-key:")
    )
    return (
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Accept: " + accept_key(key) + b"\r\n\r\n"
    )


def frame(opcode: int, payload: bytes, *, fin: bool = True) -> bytes:
    assert len(payload) < 126
    return bytes([(0x80 if fin else 0) | opcode, len(payload)]) + payload


CLOSE_1000 = frame(0x8, (1000).to_bytes(2, "big"))


async def test_frames_in_the_101_responses_read_and_bytes_that_are_not_utf8_pass_as_they_came() -> (
    None
):
    """One write: the frames come in the same read as the 101 response. A text frame that is
    not UTF-8 is kept as it came (stored with a parse error), not refused; a fragmented message
    is put together, with a ping between its fragments answered."""
    pong: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(
            await upgrade(reader)
            + frame(0x1, b"\xff\xfe[")
            + frame(0x1, b'[{"channel":', fin=False)
            + frame(0x9, b"mid")
            + frame(0x0, b'"/f"}]')
        )
        await writer.drain()
        data = await reader.read(200)  # our connect, then the pong, masked
        while len(data) < 200 and b"\x8a" not in data:
            data += await reader.read(200)
        pong.set_result(data)
        writer.write(CLOSE_1000)
        await writer.drain()
        await reader.read()
        writer.close()

    async with raw_server(serve) as url, Client(url) as client:
        client.transport.send(CONNECT)
        reason, _ = await client.failed()
        assert b"\x8a\x83" in await asyncio.wait_for(pong, TIMEOUT)  # a masked 3-byte pong
    assert reason == "websocket closed: closed with code 1000"
    raws = [f.raw for f in client.received()]
    assert raws == [b"\xff\xfe[", b'[{"channel":"/f"}]']
    assert client.received()[0].parse_error is not None
    assert [m.channel for m in client.delivered] == ["/f"]


@pytest.mark.parametrize(
    ("bad", "why"),
    [
        (bytes([0x81, 0x82]) + b"abcd" + b"xy", "masked frame"),
        (bytes([0xC1, 2]) + b"[]", "reserved bits"),
        (bytes([0x80, 2]) + b"[]", "continuation frame out of place"),
    ],
)
async def test_a_frame_rfc_6455_forbids_fails_the_connection(bad: bytes, why: str) -> None:
    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(await upgrade(reader))
        await reader.read(100)  # our connect
        writer.write(frame(0x1, b"[]") + bad)
        await writer.drain()
        await reader.read()
        writer.close()

    async with raw_server(serve) as url, Client(url) as client:
        client.transport.send(CONNECT)
        reason, _ = await client.failed()
    assert reason.startswith("websocket closed: not a WebSocket stream"), reason
    assert why in reason
    assert [f.raw for f in client.received()] == [b"[]"]  # what came before it is kept


async def test_a_server_that_is_not_http_is_reported() -> None:
    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(100)
        writer.write(b"SSH-2.0-OpenSSH\r\n\r\n")
        await writer.drain()
        writer.close()

    async with raw_server(serve) as url, Client(url) as client:
        client.transport.send(CONNECT)
        reason, status = await client.failed()
    assert reason.startswith(f"cannot open {url}: ")
    assert status is None


async def test_a_header_the_request_cannot_carry_is_reported_not_fatal() -> None:
    client = Client(
        "ws://127.0.0.1:1/cometd",
        credentials=Credentials(headers={"X-Name": "\r\nInjected: 1"}),
    )
    async with client:
        for attempt in range(2):  # the transport survives: a second batch is tried as well
            client.transport.send(CONNECT)
            await until(lambda n=attempt: len(client.failures) > n)  # type: ignore[misc]
    assert [status for _, status in client.failures] == [None, None]
    assert all(r.startswith("cannot open ws://127.0.0.1:1/cometd: ") for r, _ in client.failures)
