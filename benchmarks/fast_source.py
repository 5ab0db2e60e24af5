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


async def blast(sock):
    with contextlib.suppress(ConnectionError):  # the recorder has all it wanted and left
        await _blast(sock)


async def _blast(sock):
    for start in range(0, count, batch):
        msgs = [
            {"channel": "/bench", "id": f"e{i}", "data": {"seq": i, "pad": PAD}}
            for i in range(start, min(start + batch, count))
        ]
        await sock.send_str(orjson.dumps(msgs).decode())


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
            tasks.append(asyncio.create_task(blast(sock)))
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
