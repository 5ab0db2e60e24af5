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

from recorder.auth import Credentials
from recorder.events import Outgoing
from recorder.websocket import WebSocketTransport
from recorder.wsclient import HandshakeError, WsConnection, accept_key, connect
from recorder.wsframes import BINARY, TEXT, WsReader, mask_frame
from tape.bayeux import Message
from tape.frame import Session
from tape.session import SessionLog
from tests.conftest import ListSink

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def test_accept_key_is_rfc_6455s_example() -> None:
    assert accept_key(b"dGhlIHNhbXBsZSBub25jZQ==") == b"s3pPLMBiTxaQ9kYGzzhZRbK+xOo="


@given(st.binary(max_size=70_000), st.binary(min_size=4, max_size=4), st.sampled_from([1, 2]))
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
        self.losses: list[str] = []  # checked in the tests: an assert in a callback is lost
        self.lost: asyncio.Future[str] = asyncio.get_running_loop().create_future()

    def on_message(self, opcode: int, raw: bytes) -> None:
        self.messages.append((opcode, raw))

    def on_lost(self, reason: str) -> None:
        self.losses.append(reason)
        if not self.lost.done():
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
    await asyncio.sleep(0.05)
    assert client.losses == ["closed with code 4001"]  # once


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
    assert client.losses == [reason]


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


async def _read_key(reader: asyncio.StreamReader) -> bytes:
    """A raw server's side of the opening handshake: the client's Sec-WebSocket-Key."""
    request = await reader.readuntil(b"\r\n\r\n")
    return next(
        line.split(b":", 1)[1].strip()
        for line in request.split(b"\r\n")
        if line.lower().startswith(b"sec-websocket-key:")
    )


async def test_a_text_frame_that_is_not_utf8_is_passed_on_as_it_came() -> None:
    """The recorder stores it with a parse_error; a strict client would close the connection."""

    async def raw_server(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        key = await _read_key(reader)
        writer.write(  # one write: the frames come in the same read as the 101 response
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Accept: "
            + accept_key(key)
            + b"\r\n\r\n"
            + bytes([0x81, 3])  # FIN + TEXT, unmasked, 3 bytes
            + b"\xff\xfe["
            + bytes([0x88, 2])  # close
            + (1000).to_bytes(2, "big")
        )
        await writer.drain()
        await reader.read()  # the client's close, then EOF
        writer.close()

    tcp = await asyncio.start_server(raw_server, "127.0.0.1", 0)
    port = tcp.sockets[0].getsockname()[1]
    async with tcp:
        client = Client()
        conn = await client.open(f"ws://127.0.0.1:{port}/ws")
        assert await asyncio.wait_for(client.lost, 5) == "closed with code 1000"
    assert client.messages == [(TEXT, b"\xff\xfe[")]
    assert conn._keepalive is None  # not started on a connection that had already ended


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

    async with server(handler) as url:
        client = Client()
        conn = await client.open(url, ping_interval=0.3, ping_timeout=0.05)
        await asyncio.sleep(1.05)
        await conn.close()
    assert len(pings) == 3, pings  # at 0.3, 0.6 and 0.9 s, not every ping_timeout
    assert client.losses == ["closed with code 1000"]


async def test_the_transport_stops_with_a_closing_handshake_and_reports_no_failure() -> None:
    got: asyncio.Queue[str] = asyncio.Queue()
    closed: asyncio.Future[int | None] = asyncio.get_running_loop().create_future()

    async def handler(request: web.Request) -> web.StreamResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        async for msg in ws:
            await got.put(msg.data)
            await ws.send_str('[{"channel":"/a","data":1}]')
        closed.set_result(ws.close_code)
        return ws

    async with server(handler) as url:
        sink = ListSink()
        log = SessionLog(sink, Session(session_id="s", transport="websocket"))
        delivered: list[Message] = []
        failures: list[str] = []
        transport = WebSocketTransport(
            url,
            log,
            delivered.extend,
            lambda reason, status, ids: failures.append(reason),
            credentials=Credentials(),
        )
        await transport.open()
        transport.send(Outgoing("connect", ({"channel": "/meta/connect", "id": "1"},)))
        assert await asyncio.wait_for(got.get(), 5) == '[{"channel":"/meta/connect","id":"1"}]'
        while not delivered:
            await asyncio.sleep(0.01)
        await transport.close()
        assert await asyncio.wait_for(closed, 5) == 1000
    assert [m.channel for m in delivered] == ["/a"]
    assert failures == []
    assert [(f.direction, f.raw) for f in sink.frames] == [
        ("out", b'[{"channel":"/meta/connect","id":"1"}]'),
        ("in", b'[{"channel":"/a","data":1}]'),
    ]


async def test_a_url_the_request_cannot_carry_is_reported_not_fatal() -> None:
    failures: list[tuple[str, int | None]] = []
    log = SessionLog(ListSink(), Session(session_id="s", transport="websocket"))
    transport = WebSocketTransport(
        "ws://127.0.0.1:1/cometd",
        log,
        lambda messages: None,
        lambda reason, status, ids: failures.append((reason, status)),
        credentials=Credentials(headers={"X-Name": "€"}),  # not latin-1: cannot be sent
    )
    await transport.open()
    for attempt in range(2):  # the transport survives: a second batch is tried as well
        transport.send(Outgoing("handshake", ({"channel": "/meta/handshake"},)))
        while len(failures) <= attempt:
            await asyncio.sleep(0.01)
    await transport.close()
    assert [status for _, status in failures] == [None, None]
    assert [reason for reason, _ in failures] == [
        "cannot open ws://127.0.0.1:1/cometd: header X-Name is not ASCII text"
    ] * 2


def _upgrade(key: bytes, extra: bytes = b"", accept: bytes | None = None) -> bytes:
    return (
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        + b"Sec-WebSocket-Accept: "
        + (accept_key(key) if accept is None else accept)
        + b"\r\n"
        + extra
        + b"\r\n"
    )


@pytest.mark.parametrize(
    ("head", "why"),
    [
        (lambda key: _upgrade(key, accept=b"x" * 28), "Sec-WebSocket-Accept does not match"),
        (
            lambda key: _upgrade(key).replace(b"Connection: Upgrade", b"Connection: close"),
            "does not upgrade",
        ),
        (lambda key: _upgrade(key, b"Sec-WebSocket-Protocol: chat\r\n"), "subprotocol"),
        (
            lambda key: _upgrade(key, b"Sec-WebSocket-Extensions: permessage-deflate\r\n"),
            "extension",
        ),
        (  # a duplicate header: both count
            lambda key: _upgrade(
                key,
                b"Sec-WebSocket-Extensions: permessage-deflate\r\nSec-WebSocket-Extensions:\r\n",
            ),
            "extension",
        ),
        (  # a folded one: its continuation counts
            lambda key: _upgrade(key, b"Sec-WebSocket-Extensions:\r\n permessage-deflate\r\n"),
            "extension",
        ),
        (lambda key: b"HTTP/1.1 1\xc2\xb20 Weird\r\n\r\n", "not an HTTP response"),
    ],
)
async def test_a_101_response_that_breaks_rfc_6455_is_refused(
    head: Callable[[bytes], bytes], why: str
) -> None:
    async def raw_server(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        key = await _read_key(reader)
        writer.write(head(key))
        await writer.drain()
        await reader.read()
        writer.close()

    tcp = await asyncio.start_server(raw_server, "127.0.0.1", 0)
    port = tcp.sockets[0].getsockname()[1]
    async with tcp:
        with pytest.raises(HandshakeError, match=why):
            await Client().open(f"ws://127.0.0.1:{port}/ws")
