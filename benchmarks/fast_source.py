"""A fast local Bayeux source for benchmarks/record.py: pushes COUNT messages over WebSocket,
BATCH per frame, as fast as it can, after the client subscribes.

    python benchmarks/fast_source.py COUNT BATCH

It prints the port it listens on, then "started T" (time.monotonic()) when the blast begins.
"""

import asyncio
import contextlib
import sys
import time

import orjson
from aiohttp import web

count, batch = int(sys.argv[1]), int(sys.argv[2])
PAD = "x" * 400


async def blast(request):
    with contextlib.suppress(ConnectionError):  # the recorder has all it wanted and left
        request.transport.set_write_buffer_limits(high=HIGH_WATER)
        await _blast(request)


MESSAGE = b'{"channel":"/bench","id":"e%d","data":{"seq":%d,"pad":"' + PAD.encode() + b'"}}'
CHUNK = 64 * 1024  # bytes of frames per write
HIGH_WATER = 1024 * 1024  # the most left unsent in the socket's buffer before waiting


def text_frame(payload: bytes) -> bytes:
    """An unmasked, unfragmented WebSocket text frame (RFC 6455 5.2), as a server sends it."""
    n = len(payload)
    if n < 126:
        return bytes((0x81, n)) + payload
    if n < 65536:
        return bytes((0x81, 126)) + n.to_bytes(2, "big") + payload
    return bytes((0x81, 127)) + n.to_bytes(8, "big") + payload


async def _blast(request):
    """The frames are built from a byte template and written straight to the socket, many per
    write: the source is on the same two cores as the recorder it measures, so the less CPU it
    takes (aiohttp's send_str cost ~8 s a million frames), the closer the figure is to the
    recorder's own ceiling. They are byte for byte what orjson.dumps gave for the same
    messages."""
    chunk, size = [], 0
    for start in range(0, count, batch):
        msgs = b",".join(MESSAGE % (i, i) for i in range(start, min(start + batch, count)))
        frame = text_frame(b"[" + msgs + b"]")
        chunk.append(frame)
        size += len(frame)
        if size >= CHUNK:
            await _write(request, chunk)
            chunk, size = [], 0
    if chunk:
        await _write(request, chunk)


async def _write(request, chunk):
    transport = request.transport
    if transport is None or transport.is_closing():
        raise ConnectionError("the recorder went away")
    transport.write(b"".join(chunk))
    await request.writer.drain()  # waits while the socket's buffer is over HIGH_WATER


async def ws(request):
    """Like a real server: the blast runs beside the reader, so pings are answered; the first
    /meta/connect is answered at once and later ones are held (long-poll style)."""
    sock = web.WebSocketResponse(max_msg_size=0)
    await sock.prepare(request)
    connects = 0
    tasks = []
    async for frame in sock:
        replies = []
        messages = orjson.loads(frame.data)
        for m in messages:
            reply = {"channel": m["channel"], "id": m.get("id"), "successful": True}
            if m["channel"] == "/meta/handshake":
                reply.update(
                    clientId="bench",
                    version="1.0",
                    supportedConnectionTypes=["websocket"],
                    advice={"reconnect": "retry", "interval": 0, "timeout": 30000},
                )
            if m["channel"] == "/meta/connect":
                connects += 1
                if connects > 1:
                    continue  # held: the client's deadline follows the traffic
            if m["channel"] == "/meta/subscribe":
                reply["subscription"] = m["subscription"]
            replies.append(reply)
        if replies:
            await sock.send_str(orjson.dumps(replies).decode())
        if any(m["channel"] == "/meta/subscribe" for m in messages):
            # When the messages start to flow: the benchmark's clock starts here, as it does
            # for Faye when the blast begins (CLOCK_MONOTONIC is one clock for every process).
            print(f"started {time.monotonic()}", flush=True)
            tasks.append(asyncio.create_task(blast(request)))
    return sock


app = web.Application()
app.router.add_get("/cometd", ws)


async def main():
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    print(site._server.sockets[0].getsockname()[1], flush=True)
    await asyncio.Event().wait()


asyncio.run(main())
