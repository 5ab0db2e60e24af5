"""Many bare Bayeux clients (aiohttp) in one process, for benchmarks/replay_load.py.

    python benchmarks/load_clients.py URL --long-polling N --websocket M --out PREFIX

Each client handshakes, subscribes to /v2/me/outbound and /me/internal and keeps /meta/connect
going as a real client does (long-polling: the next connect POST after each reply, the first
with advice {timeout: 0}; WebSocket: the next connect after each connect reply). For every
message received on those channels it records the receipt time (time.monotonic(), the clock
every process on the machine shares) and the frame index i (`referenceId`, or the
/me/internal event's `userData.GSW_RECORD_HANDLE`).

Protocol with the parent, one JSON line each way at a time:
  stdout  {"ready": true, "subscribed": n, "failed": m, "ramp_s": s} once every client is
          subscribed, has failed, or --ramp-timeout has passed;
  stdin   "go T_GO T_END" (monotonic seconds): at T_END the clients stop, send
          /meta/disconnect and close (bounded by --disconnect-timeout);
  stdout  {"done": true, ...} once PREFIX.npz (t, i: every receipt, client by client; counts:
          how many each) and PREFIX.json (go, the process's CPU seconds and event-loop lag
          over the load, and per client: transport, subscribed_at, error, error_at) are
          written. The cyclic GC is off from the end of the ramp (its pauses made every
          client late; see main()).
Without a go line within --wait-go seconds (or at stdin EOF) the process still writes its
results and exits. A client that fails (handshake error, HTTP error, dropped connection,
unsuccessful connect) records the error and stops; it never takes the process down.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import itertools
import resource
import sys
import threading
import time
from array import array
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np
import orjson

CHANNELS = ("/v2/me/outbound", "/me/internal")
SUBSCRIBED = frozenset(CHANNELS)
JSON_HEADERS = {"Content-Type": "application/json"}  # Faye ignores bodies without it
SETUP_TIMEOUT_S = 30.0  # one client's handshake + subscribe + first connect
CONNECT_TIMEOUT_S = 120.0  # one long-poll (servers hold them for up to ~60 s)
RAMP_CONCURRENCY = 64  # clients setting up at once, per process

Message = dict[str, Any]


class ClientError(Exception):
    """The server refused or dropped this client."""


class Client:
    """One Bayeux client's state and what it received."""

    __slots__ = (
        "client_id",
        "connects",
        "error",
        "error_at",
        "http",
        "index",
        "indices",
        "setup_done",
        "subscribed_at",
        "times",
        "transport",
        "url",
        "ws",
    )

    def __init__(self, index: int, transport: str, url: str, http: aiohttp.ClientSession) -> None:
        self.index = index
        self.transport = transport
        self.url = url
        self.http = http
        self.client_id: str | None = None
        self.connects = 0
        self.ws: aiohttp.ClientWebSocketResponse | None = None
        self.times = array("d")
        self.indices = array("q")
        self.subscribed_at: float | None = None
        self.error: str | None = None
        self.error_at: float | None = None
        self.setup_done = False

    def fail(self, error: str) -> None:
        if self.error is None:
            self.error = error[:300]
            self.error_at = time.monotonic()

    # -- messages -------------------------------------------------------------------------------

    def handle(self, messages: object, now: float) -> bool:
        """Record the deliveries in a batch; True when it held a /meta/connect reply."""
        if not isinstance(messages, list):
            raise ClientError(f"not a Bayeux batch: {str(messages)[:100]}")
        connected = False
        for m in messages:
            channel = m.get("channel")
            if channel in SUBSCRIBED:
                data = m.get("data") or {}
                ref = data.get("referenceId")
                if ref is None:
                    ref = (data.get("userData") or {}).get("GSW_RECORD_HANDLE", -1)
                self.times.append(now)
                self.indices.append(int(ref))
            elif channel == "/meta/connect":
                if m.get("successful") is not True:
                    raise ClientError(f"connect unsuccessful: {orjson.dumps(m).decode()}")
                connected = True
            elif channel in ("/meta/handshake", "/meta/subscribe") and m.get("successful") is False:
                raise ClientError(f"{channel} unsuccessful: {orjson.dumps(m).decode()}")
        return connected

    def connect_message(self, n: int, first: bool = False) -> Message:
        message: Message = {
            "channel": "/meta/connect",
            "clientId": self.client_id,
            "id": f"c{n}",
            "connectionType": self.transport,
        }
        if first:
            message["advice"] = {"timeout": 0}
        return message

    def handshake_message(self) -> Message:
        return {
            "channel": "/meta/handshake",
            "version": "1.0",
            "id": "h",
            "supportedConnectionTypes": [self.transport],
        }

    def subscribe_messages(self) -> list[Message]:
        return [
            {
                "channel": "/meta/subscribe",
                "clientId": self.client_id,
                "id": f"s{k}",
                "subscription": c,
            }
            for k, c in enumerate(CHANNELS)
        ]

    def take_client_id(self, replies: object) -> None:
        if not isinstance(replies, list) or not replies:
            raise ClientError(f"bad handshake reply: {str(replies)[:200]}")
        reply = replies[0]
        if reply.get("successful") is not True or not reply.get("clientId"):
            raise ClientError(f"handshake unsuccessful: {orjson.dumps(reply).decode()[:200]}")
        self.client_id = str(reply["clientId"])

    # -- long-polling ---------------------------------------------------------------------------

    async def post(self, messages: list[Message], timeout: float) -> tuple[Any, float]:
        async with self.http.post(
            self.url,
            data=orjson.dumps(messages),
            headers=JSON_HEADERS,
            timeout=aiohttp.ClientTimeout(total=timeout),
        ) as response:
            body = await response.read()
            now = time.monotonic()
            if response.status != 200:
                raise ClientError(f"HTTP {response.status}: {body[:100]!r}")
        return orjson.loads(body), now

    async def setup_long_polling(self) -> None:
        replies, _ = await self.post([self.handshake_message()], SETUP_TIMEOUT_S)
        self.take_client_id(replies)
        replies, now = await self.post(self.subscribe_messages(), SETUP_TIMEOUT_S)
        self.handle(replies, now)
        replies, now = await self.post([self.connect_message(0, first=True)], SETUP_TIMEOUT_S)
        self.handle(replies, now)

    async def run_long_polling(self) -> None:
        for n in itertools.count(1):
            replies, now = await self.post([self.connect_message(n)], CONNECT_TIMEOUT_S)
            self.handle(replies, now)

    # -- WebSocket ------------------------------------------------------------------------------

    async def receive(self) -> tuple[Any, float]:
        assert self.ws is not None
        frame = await self.ws.receive()
        now = time.monotonic()
        if frame.type in (aiohttp.WSMsgType.TEXT, aiohttp.WSMsgType.BINARY):
            return orjson.loads(frame.data), now
        if frame.type == aiohttp.WSMsgType.ERROR:
            raise ClientError(f"WebSocket error: {self.ws.exception()!r}")
        raise ClientError(
            f"WebSocket closed by the server ({frame.type.name}, {self.ws.close_code})"
        )

    async def setup_websocket(self) -> None:
        ws_url = self.url.replace("http", "ws", 1)
        self.ws = await self.http.ws_connect(ws_url, max_msg_size=0, autoping=True)
        await self.ws.send_bytes(orjson.dumps([self.handshake_message()]))
        while self.client_id is None:
            replies, now = await self.receive()
            if any(m.get("channel") == "/meta/handshake" for m in replies):
                self.take_client_id([m for m in replies if m.get("channel") == "/meta/handshake"])
            self.handle(replies, now)
        await self.ws.send_bytes(
            orjson.dumps([*self.subscribe_messages(), self.connect_message(0, first=True)])
        )
        pending = set(CHANNELS)
        while pending:
            replies, now = await self.receive()
            await self.handle_ws(replies, now)
            for m in replies:
                if m.get("channel") == "/meta/subscribe" and m.get("successful") is True:
                    pending.discard(m.get("subscription"))

    async def handle_ws(self, replies: object, now: float) -> None:
        """Record a batch's deliveries; answer a connect reply with the next connect."""
        if self.handle(replies, now):
            assert self.ws is not None
            self.connects += 1
            await self.ws.send_bytes(orjson.dumps([self.connect_message(self.connects)]))

    async def run_websocket(self) -> None:
        while True:
            replies, now = await self.receive()
            await self.handle_ws(replies, now)

    # -- lifecycle ------------------------------------------------------------------------------

    async def run(self, ramp: asyncio.Semaphore, on_setup: Callable[[], None]) -> None:
        """Set up (within the ramp's limit), then receive until cancelled or failed."""
        ok = False
        try:
            async with ramp:
                setup = (
                    self.setup_websocket
                    if self.transport == "websocket"
                    else self.setup_long_polling
                )
                await asyncio.wait_for(setup(), SETUP_TIMEOUT_S)
            self.subscribed_at = time.monotonic()
            ok = True
        except TimeoutError:
            self.fail("setup timed out")
        except asyncio.CancelledError:
            self.fail("setup cancelled (ramp timeout)")
            raise
        except Exception as exc:  # any failure is this client's, never the process's
            self.fail(f"setup: {type(exc).__name__}: {exc}")
        finally:
            self.setup_done = True
            on_setup()
        if not ok:
            return
        try:
            if self.transport == "websocket":
                await self.run_websocket()
            else:
                await self.run_long_polling()
        except TimeoutError:
            self.fail("connect timed out")
        except Exception as exc:
            self.fail(f"{type(exc).__name__}: {exc}")

    async def disconnect(self) -> None:
        """Send /meta/disconnect and close; errors here no longer count against the client."""
        if self.client_id is None:
            return
        message = [{"channel": "/meta/disconnect", "clientId": self.client_id, "id": "d"}]
        if self.ws is not None:
            with contextlib.suppress(Exception):
                if not self.ws.closed:
                    await self.ws.send_bytes(orjson.dumps(message))
            with contextlib.suppress(Exception):
                await self.ws.close()
        elif self.error is None:
            with contextlib.suppress(Exception):
                await self.post(message, 5.0)


def raise_nofile(wanted: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < wanted:
        new = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (new, hard))


def read_go(loop: asyncio.AbstractEventLoop) -> asyncio.Future[str]:
    """The parent's next stdin line ("" at EOF), from a daemon thread (never blocks exit)."""
    future: asyncio.Future[str] = loop.create_future()

    def read() -> None:
        line = sys.stdin.readline()

        def deliver() -> None:
            if not future.done():
                future.set_result(line)

        with contextlib.suppress(RuntimeError):  # the loop may be gone
            loop.call_soon_threadsafe(deliver)

    threading.Thread(target=read, name="go-reader", daemon=True).start()
    return future


async def bounded(coros: list[Awaitable[None]], limit: int, timeout: float) -> None:
    semaphore = asyncio.Semaphore(limit)

    async def one(coro: Awaitable[None]) -> None:
        async with semaphore:
            await coro

    tasks = [asyncio.ensure_future(one(c)) for c in coros]
    if not tasks:
        return
    _, pending = await asyncio.wait(tasks, timeout=timeout)
    for task in pending:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


class Stalls:
    """How far this process's event loop lagged behind a 10 ms ticker: a lag delays every
    client here, so it is the harness's share of the lateness measured, not the server's."""

    def __init__(self) -> None:
        self.lags = array("d")

    async def tick(self) -> None:
        while True:
            before = time.monotonic()
            await asyncio.sleep(0.01)
            self.lags.append(time.monotonic() - before - 0.01)

    def summary(self) -> dict[str, float]:
        lags = np.frombuffer(self.lags, dtype=np.float64)
        return {
            "lag_p99_ms": float(np.percentile(lags, 99)) * 1000 if lags.size else 0.0,
            "lag_max_ms": float(lags.max()) * 1000 if lags.size else 0.0,
        }


def rss_mb() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) // 1024
    return 0


def emit(obj: dict[str, Any]) -> None:
    sys.stdout.write(orjson.dumps(obj).decode() + "\n")
    sys.stdout.flush()


async def main(args: argparse.Namespace) -> None:
    loop = asyncio.get_running_loop()
    connector = aiohttp.TCPConnector(limit=0, limit_per_host=0, force_close=False)
    http = aiohttp.ClientSession(
        connector=connector,
        cookie_jar=aiohttp.DummyCookieJar(),
        timeout=aiohttp.ClientTimeout(total=None, sock_connect=10),
    )
    clients = [
        Client(k, transport, args.url, http)
        for k, transport in enumerate(
            ["long-polling"] * args.long_polling + ["websocket"] * args.websocket
        )
    ]
    ramp = asyncio.Semaphore(RAMP_CONCURRENCY)
    all_set = asyncio.Event()
    remaining = [len(clients)]

    def on_setup() -> None:
        remaining[0] -= 1
        if remaining[0] <= 0:
            all_set.set()

    if not clients:
        all_set.set()
    started = time.monotonic()
    tasks = [asyncio.create_task(c.run(ramp, on_setup)) for c in clients]
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(all_set.wait(), args.ramp_timeout)
    for client, task in zip(clients, tasks, strict=True):
        if not client.setup_done:
            task.cancel()
    await asyncio.sleep(0)
    subscribed = sum(1 for c in clients if c.subscribed_at is not None and c.error is None)
    emit(
        {
            "ready": True,
            "subscribed": subscribed,
            "failed": len(clients) - subscribed,
            "ramp_s": round(time.monotonic() - started, 3),
        }
    )

    # No cyclic GC from here on: with 1,000 clients a process it took 2.7 s of a 20 s load
    # (3.4 s with the ramp's objects frozen), in pauses of up to 190 ms that made every
    # client's messages late by as much; without it, RSS grew 50 -> 67 MB in 60 s at 14k msg/s
    # (mostly the receipts recorded).
    gc.collect()
    gc.freeze()
    gc.disable()
    go: list[float] = []
    with contextlib.suppress(TimeoutError):
        line = await asyncio.wait_for(read_go(loop), args.wait_go)
        parts = line.split()
        if len(parts) == 3 and parts[0] == "go":
            go = [float(parts[1]), float(parts[2])]
    cpu_go = cpu_end = time.process_time()
    rss_go = rss_end = 0
    stalls = Stalls()
    if go:
        t_go, t_end = go
        await asyncio.sleep(max(0.0, t_go - time.monotonic()))
        cpu_go = time.process_time()
        rss_go = rss_mb()
        ticker = asyncio.create_task(stalls.tick())
        await asyncio.sleep(max(0.0, min(t_end - time.monotonic(), args.max_duration)))
        ticker.cancel()
        cpu_end = time.process_time()
    rss_end = rss_mb()
    stopped_at = time.monotonic()

    for task in tasks:
        task.cancel()
    if tasks:
        await asyncio.wait(tasks, timeout=5.0)
    await bounded([c.disconnect() for c in clients], 200, args.disconnect_timeout)
    with contextlib.suppress(Exception):
        await asyncio.wait_for(http.close(), 5.0)

    out = Path(args.out)
    counts = np.array([len(c.times) for c in clients], dtype=np.int64)
    times = np.concatenate(
        [np.zeros(0), *(np.frombuffer(c.times, dtype=np.float64) for c in clients)]
    )
    indices = np.concatenate(
        [np.zeros(0, dtype=np.int64), *(np.frombuffer(c.indices, dtype=np.int64) for c in clients)]
    )
    np.savez(
        out.with_suffix(".npz"),
        t=times.astype(np.float64),
        i=indices.astype(np.int64),
        counts=counts,
    )
    meta = {
        "go": go,
        "stopped_at": stopped_at,
        "cpu_s": cpu_end - cpu_go,
        "stalls": stalls.summary(),
        "clients": [
            {
                "transport": c.transport,
                "subscribed_at": c.subscribed_at,
                "error": c.error,
                "error_at": c.error_at,
            }
            for c in clients
        ],
    }
    out.with_suffix(".json").write_bytes(orjson.dumps(meta))
    emit(
        {
            "done": True,
            "messages": int(counts.sum()),
            "cpu_s": round(cpu_end - cpu_go, 3),
            "rss_mb": [rss_go, rss_end],
        }
    )


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("url", help="the Bayeux endpoint, http://127.0.0.1:PORT/...")
    parser.add_argument("--long-polling", type=int, default=0)
    parser.add_argument("--websocket", type=int, default=0)
    parser.add_argument("--out", required=True, help="results go to OUT.npz and OUT.json")
    parser.add_argument("--ramp-timeout", type=float, default=90.0)
    parser.add_argument("--wait-go", type=float, default=120.0)
    parser.add_argument("--max-duration", type=float, default=3600.0)
    parser.add_argument("--disconnect-timeout", type=float, default=15.0)
    return parser.parse_args()


if __name__ == "__main__":
    arguments = parse_args()
    raise_nofile(2 * (arguments.long_polling + arguments.websocket) + 256)
    try:
        import uvloop

        runner: Callable[[Any], Any] = uvloop.run
    except ImportError:  # pragma: no cover - uvloop is a dependency on Linux
        runner = asyncio.run
    runner(main(arguments))
