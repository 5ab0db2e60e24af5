"""A fast local Bayeux source for benchmarks/record.py: pushes COUNT messages over WebSocket,
BATCH per frame, as fast as it can, after the client subscribes.

    python benchmarks/fast_source.py COUNT BATCH   # prints the port it listens on
"""

import asyncio
import sys

import orjson
from aiohttp import web

count, batch = int(sys.argv[1]), int(sys.argv[2])
PAD = "x" * 400


async def ws(request):
    sock = web.WebSocketResponse(max_msg_size=0)
    await sock.prepare(request)
    async for frame in sock:
        replies = []
        for m in orjson.loads(frame.data):
            reply = {"channel": m["channel"], "id": m.get("id"), "successful": True}
            if m["channel"] == "/meta/handshake":
                reply.update(
                    clientId="bench",
                    version="1.0",
                    supportedConnectionTypes=["websocket"],
                    advice={"reconnect": "retry", "interval": 0, "timeout": 30000},
                )
            if m["channel"] == "/meta/subscribe":
                reply["subscription"] = m["subscription"]
            replies.append(reply)
        await sock.send_str(orjson.dumps(replies).decode())
        if any(m["channel"] == "/meta/subscribe" for m in orjson.loads(frame.data)):
            for start in range(0, count, batch):
                msgs = [
                    {"channel": "/bench", "id": f"e{i}", "data": {"seq": i, "pad": PAD}}
                    for i in range(start, min(start + batch, count))
                ]
                await sock.send_str(orjson.dumps(msgs).decode())
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
