"""K bare Bayeux clients (aiohttp) that subscribe to /bench and count deliveries; used by
benchmarks/replay.py against our replayer and against Faye alike.

    python benchmarks/count_clients.py URL websocket|long-polling K PER_CLIENT
Prints "ready" once all are subscribed, then one JSON line: count, first, last (monotonic s).
"""

from __future__ import annotations

import asyncio
import sys
import time
from typing import Any

import aiohttp
import orjson

stamps: list[float] = []


def bayeux(*messages: dict[str, Any]) -> bytes:
    return orjson.dumps(list(messages))


async def count(messages: list[dict[str, Any]]) -> int:
    n = sum(1 for m in messages if m.get("channel") == "/bench")
    if n:
        stamps.append(time.monotonic())
    return n


async def websocket(http: aiohttp.ClientSession, url: str, want: int, ready: asyncio.Event) -> int:
    got, n = 0, 0
    async with http.ws_connect(url.replace("http", "ws", 1), max_msg_size=0) as ws:
        await ws.send_bytes(
            bayeux(
                {
                    "channel": "/meta/handshake",
                    "version": "1.0",
                    "id": "h",
                    "supportedConnectionTypes": ["websocket"],
                }
            )
        )
        cid = orjson.loads((await ws.receive()).data)[0]["clientId"]
        await ws.send_bytes(
            bayeux(
                {
                    "channel": "/meta/subscribe",
                    "clientId": cid,
                    "id": "s",
                    "subscription": "/bench",
                },
                {
                    "channel": "/meta/connect",
                    "clientId": cid,
                    "id": "c0",
                    "connectionType": "websocket",
                    "advice": {"timeout": 0},
                },
            )
        )
        ready.set()
        while got < want:
            frame = await ws.receive(timeout=120)
            messages = orjson.loads(frame.data)
            got += await count(messages)
            if any(m.get("channel") == "/meta/connect" for m in messages):
                n += 1
                await ws.send_bytes(
                    bayeux(
                        {
                            "channel": "/meta/connect",
                            "clientId": cid,
                            "id": f"c{n}",
                            "connectionType": "websocket",
                        }
                    )
                )
    return got


async def long_polling(
    http: aiohttp.ClientSession, url: str, want: int, ready: asyncio.Event
) -> int:
    async def post(*messages: dict[str, Any]) -> list[dict[str, Any]]:
        headers = {"Content-Type": "application/json"}  # Faye ignores bodies without it
        async with http.post(url, data=bayeux(*messages), headers=headers) as response:
            return orjson.loads(await response.read())  # type: ignore[no-any-return]

    cid = (
        await post(
            {
                "channel": "/meta/handshake",
                "version": "1.0",
                "id": "h",
                "supportedConnectionTypes": ["long-polling"],
            }
        )
    )[0]["clientId"]
    await post({"channel": "/meta/subscribe", "clientId": cid, "subscription": "/bench", "id": "s"})
    await post(
        {
            "channel": "/meta/connect",
            "clientId": cid,
            "id": "c0",
            "connectionType": "long-polling",
            "advice": {"timeout": 0},
        },
    )
    ready.set()
    got, n = 0, 0
    while got < want:
        n += 1
        got += await count(
            await post(
                {
                    "channel": "/meta/connect",
                    "clientId": cid,
                    "id": f"c{n}",
                    "connectionType": "long-polling",
                }
            )
        )
    return got


async def main(url: str, transport: str, clients: int, per_client: int) -> None:
    run = websocket if transport == "websocket" else long_polling
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as http:
        readies = [asyncio.Event() for _ in range(clients)]
        tasks = [asyncio.create_task(run(http, url, per_client, r)) for r in readies]
        for ready in readies:
            await ready.wait()
        print("ready", flush=True)
        totals = await asyncio.wait_for(asyncio.gather(*tasks), 300)
    print(orjson.dumps({"count": sum(totals), "first": stamps[0], "last": stamps[-1]}).decode())


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])))
