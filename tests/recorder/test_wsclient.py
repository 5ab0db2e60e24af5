"""The recorder's own WebSocket client against aiohttp's WebSocket server on 127.0.0.1: the
opening handshake and its refusals, frames both ways, pings and pongs, the keepalive, and
the closing handshake. The frame encoder is also checked sans I/O against the proxy's reader."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
from aiohttp import WSMsgType, web
from hypothesis import given
from hypothesis import strategies as st

from recorder.wsclient import HandshakeError, WsConnection, accept_key, connect
from recorder.wsframes import BINARY, TEXT, WsReader, mask_frame

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def test_accept_key_is_rfc_6455s_example() -> None:
    assert accept_key(b"dGhlIHNhbXBsZSBub25jZQ==") == b"s3pPLMBiTxaQ9kYGzzhZRbK+xOo="


@given(st.binary(max_size=70_000), st.binary(min_size=4, max_size=4), st.sampled_from([1, 2, 9]))
def test_a_masked_frame_reads_back(payload: bytes, mask: bytes, opcode: int) -> None:
    got: list[tuple[int, bytes]] = []
    reader = WsReader(
        lambda op, raw: got.append((op, raw)), on_control=lambda op, raw: got.append((op, raw))
    )
    reader.feed(mask_frame(opcode, payload, mask))
    assert got == [(opcode, payload)]


@contextlib.asynccontextmanager
async def server(handler: Handler) -> AsyncIterator[str]:
    app = web.Application()
    app.router.add_get("/ws", handler)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        yield f"ws://127.0.0.1:{port}/ws"
    finally:
        await runner.cleanup()


class Client:
    def __init__(self) -> None:
        self.messages: list[tuple[int, bytes]] = []
        self.lost: asyncio.Future[str] = asyncio.get_running_loop().create_future()

    def on_message(self, opcode: int, raw: bytes) -> None:
        self.messages.append((opcode, raw))

    def on_lost(self, reason: str) -> None:
        assert not self.lost.done(), "on_lost is called once"
        self.lost.set_result(reason)

    async def open(self, url: str, **kwargs: object) -> WsConnection:
        return await connect(url, self.on_message, self.on_lost, **kwargs)  # type: ignore[arg-type]


async def test_frames_flow_both_ways_and_headers_arrive() -> None:
    seen: dict[str, object] = {}

    async def handler(request: web.Request) -> web.StreamResponse:
        seen["auth"] = request.headers.get("Authorization")
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        first = await ws.receive()
        seen["first"] = (first.type, first.data)
        await ws.send_str('[{"channel":"/a","data":"é"}]')
        await ws.send_bytes(b"\x00\xff")
        await ws.send_str("x" * 200_000)  # a 64-bit length
        await ws.close(code=4001)
        return ws

    async with server(handler) as url:
        client = Client()
        conn = await client.open(url, headers={"Authorization": "Basic dTpw"})
        conn.send_text(b'[{"channel":"/meta/connect"}]')
        reason = await asyncio.wait_for(client.lost, 5)
    assert seen == {
        "auth": "Basic dTpw",
        "first": (WSMsgType.TEXT, '[{"channel":"/meta/connect"}]'),
    }
    assert client.messages == [
        (TEXT, '[{"channel":"/a","data":"é"}]'.encode()),
        (BINARY, b"\x00\xff"),
        (TEXT, b"x" * 200_000),
    ]
    assert reason == "closed with code 4001"
    assert conn.close_code == 4001


async def test_a_server_ping_is_answered_with_its_payload() -> None:
    got: asyncio.Future[tuple[WSMsgType, bytes]] = asyncio.get_running_loop().create_future()

    async def handler(request: web.Request) -> web.StreamResponse:
        ws = web.WebSocketResponse(autoping=False)
        await ws.prepare(request)
        await ws.ping(b"hello")
        msg = await ws.receive()
        got.set_result((msg.type, msg.data))
        await ws.close()
        return ws

    async with server(handler) as url:
        client = Client()
        await client.open(url)
        assert await asyncio.wait_for(got, 5) == (WSMsgType.PONG, b"hello")
        await asyncio.wait_for(client.lost, 5)


async def test_a_server_that_never_pongs_is_dropped_by_the_keepalive() -> None:
    pings: list[bytes] = []

    async def handler(request: web.Request) -> web.StreamResponse:
        ws = web.WebSocketResponse(autoping=False)  # never answers our pings
        await ws.prepare(request)
        async for msg in ws:
            if msg.type == WSMsgType.PING:
                pings.append(msg.data)
        return ws

    async with server(handler) as url:
        client = Client()
        await client.open(url, ping_interval=0.05, ping_timeout=0.2)
        reason = await asyncio.wait_for(client.lost, 5)
    assert reason == "no pong within 0.2 s (keepalive)"
    assert len(pings) == 1


async def test_a_live_server_keeps_the_connection_through_pings() -> None:
    async def handler(request: web.Request) -> web.StreamResponse:
        ws = web.WebSocketResponse()  # aiohttp pongs by itself
        await ws.prepare(request)
        async for _ in ws:
            pass
        return ws

    async with server(handler) as url:
        client = Client()
        conn = await client.open(url, ping_interval=0.05, ping_timeout=0.2)
        await asyncio.sleep(0.6)
        assert not client.lost.done()
        await conn.close()


async def test_our_close_is_a_closing_handshake() -> None:
    closed: asyncio.Future[int | None] = asyncio.get_running_loop().create_future()

    async def handler(request: web.Request) -> web.StreamResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        async for _ in ws:
            pass
        closed.set_result(ws.close_code)
        return ws

    async with server(handler) as url:
        client = Client()
        conn = await client.open(url)
        await conn.close()
        assert await asyncio.wait_for(closed, 5) == 1000


@pytest.mark.parametrize("status", [401, 403, 404])
async def test_a_refused_upgrade_says_the_status(status: int) -> None:
    async def handler(request: web.Request) -> web.StreamResponse:
        return web.Response(status=status, text="no")

    async with server(handler) as url:
        with pytest.raises(HandshakeError, match=f"HTTP {status}") as info:
            await Client().open(url)
    assert info.value.status == status


async def test_a_server_that_is_not_http_is_refused() -> None:
    async def garbage(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(100)
        writer.write(b"SSH-2.0-OpenSSH\r\n\r\n")
        await writer.drain()
        writer.close()

    tcp = await asyncio.start_server(garbage, "127.0.0.1", 0)
    port = tcp.sockets[0].getsockname()[1]
    async with tcp:
        with pytest.raises(HandshakeError, match="not an HTTP response"):
            await Client().open(f"ws://127.0.0.1:{port}/ws")


async def test_a_silent_server_times_out_the_handshake() -> None:
    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read()  # until the client gives up and drops the connection
        writer.close()

    tcp = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = tcp.sockets[0].getsockname()[1]
    async with tcp:
        with pytest.raises(TimeoutError):
            await Client().open(f"ws://127.0.0.1:{port}/ws", open_timeout=0.2)


async def test_a_control_frame_from_the_peer_is_not_a_message() -> None:
    async def handler(request: web.Request) -> web.StreamResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        await ws.ping(b"p")
        await ws.send_str("[]")
        await ws.close()
        return ws

    async with server(handler) as url:
        client = Client()
        await client.open(url)
        await asyncio.wait_for(client.lost, 5)
    assert client.messages == [(TEXT, b"[]")]


async def test_a_text_frame_that_is_not_utf8_is_passed_on_as_it_came() -> None:
    """The recorder stores it with a parse_error; a strict client would close the connection."""

    async def raw_server(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        key = next(
            line.split(b":", 1)[1].strip()
            for line in head.split(b"\r\n")
            if line.lower().startswith(b"sec-websocket-key:")
        )
        writer.write(
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Accept: " + accept_key(key) + b"\r\n\r\n"
        )
        writer.write(bytes([0x81, 3]) + b"\xff\xfe[")  # FIN + TEXT, unmasked, 3 bytes
        writer.write(bytes([0x88, 2]) + (1000).to_bytes(2, "big"))  # close
        await writer.drain()
        await reader.read()  # the client's close, then EOF
        writer.close()

    tcp = await asyncio.start_server(raw_server, "127.0.0.1", 0)
    port = tcp.sockets[0].getsockname()[1]
    async with tcp:
        client = Client()
        await client.open(f"ws://127.0.0.1:{port}/ws")
        assert await asyncio.wait_for(client.lost, 5) == "closed with code 1000"
    assert client.messages == [(TEXT, b"\xff\xfe[")]
