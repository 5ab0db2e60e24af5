"""The well-behaved side of the fuzz test (test_fuzz.py): the server under test, how a proper
client logs in to it and talks Bayeux, and the clients that must keep working under the hostile
load (long-polling, WebSocket, and the simulator's agent posting REST requests)."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import orjson
from aiohttp import WSMsgType

from tests.agent import basic
from tests.constants import TIMEOUT
from tests.replay.tapes import CHANNELS

GAP = max(1.0, TIMEOUT / 10)  # the longest a well-behaved client may go without receiving
HOLD_MS = int(200 * TIMEOUT)  # the well-behaved clients' connect timeout advice: 2 s
SPACING = 0.05  # between the tape's deliveries, played in a loop
REST_EVERY = 0.05  # how often the simulator's well-behaved agent posts a request


@dataclass(frozen=True, slots=True)
class Target:
    """The server under test: the replayer or the GWS simulator."""

    name: str
    origin: str  # http://127.0.0.1:<port>
    gws: bool  # the simulator: HTTP basic, then the JSESSIONID cookie and the CSRF header

    def url(self, path: str, scheme: str = "http") -> str:
        return scheme + self.origin.removeprefix("http") + path

    @property
    def port(self) -> int:
        return int(self.origin.rsplit(":", 1)[1])


async def login(target: Target, http: aiohttp.ClientSession) -> dict[str, str]:
    """GWS: GET /api/v2/me with basic auth sets JSESSIONID; POSTs send the CSRF token back."""
    if not target.gws:
        return {}
    async with http.get(target.origin + "/api/v2/me", headers=basic("agent", "agent")) as r:
        assert r.status == 200, await r.text()
        return {"X-CSRF-TOKEN": r.headers["X-CSRF-TOKEN"]}


async def logged_in(
    target: Target, stack: contextlib.AsyncExitStack
) -> tuple[aiohttp.ClientSession, dict[str, str]]:
    """A session (closed with the stack) that keeps the JSESSIONID cookie, logged in, and the
    CSRF header its POSTs send."""
    jar = aiohttp.CookieJar(unsafe=True)
    http = await stack.enter_async_context(aiohttp.ClientSession(cookie_jar=jar))
    return http, await login(target, http)


def handshake(kind: str) -> bytes:
    message = {"channel": "/meta/handshake", "version": "1.0", "id": "1"}
    return orjson.dumps([message | {"supportedConnectionTypes": [kind]}])


def subscribe(client_id: str) -> bytes:
    message = {"channel": "/meta/subscribe", "clientId": client_id, "subscription": CHANNELS}
    return orjson.dumps([message | {"id": "2"}])


@dataclass
class Good:
    """What a well-behaved client received and when, and what went wrong for it."""

    name: str
    receipts: list[float] = field(default_factory=list)  # deliveries (the agent: responses)
    round_trips: list[tuple[float, float]] = field(default_factory=list)  # (sent, answered)
    deliveries: int = 0
    acks: dict[str, float] = field(default_factory=dict)  # referenceId -> when it came
    sent: dict[str, float] = field(default_factory=dict)  # the agent: referenceId -> posted
    problems: list[tuple[float, str]] = field(default_factory=list)
    started: asyncio.Event = field(default_factory=asyncio.Event)

    def sent_between(self, start: float, end: float) -> dict[str, float]:
        """The agent's requests posted from start to end: referenceId -> when."""
        return {ref: at for ref, at in self.sent.items() if start <= at <= end}

    def problem(self, text: str) -> None:
        self.problems.append((time.monotonic(), text[:300]))

    def received(self, messages: list[dict[str, Any]], at: float) -> list[dict[str, Any]]:
        """Records a batch; returns its meta replies."""
        replies: list[dict[str, Any]] = []
        deliveries: list[dict[str, Any]] = []
        for message in messages:
            meta = str(message.get("channel")).startswith("/meta/")
            (replies if meta else deliveries).append(message)
            if meta and message.get("successful") is not True:
                self.problem(f"{message.get('channel')} failed: {message}")
        if deliveries:
            self.receipts.append(at)
            self.deliveries += len(deliveries)
            self.started.set()
        for message in deliveries:
            data = message.get("data")
            if isinstance(data, dict) and isinstance(data.get("referenceId"), str):
                self.acks.setdefault(data["referenceId"], at)
        return replies


def connect(client_id: str, n: int, kind: str) -> bytes:
    message = {"channel": "/meta/connect", "clientId": client_id, "connectionType": kind}
    return orjson.dumps([message | {"advice": {"timeout": HOLD_MS}, "id": str(n)}])


def reconnect_advice(replies: list[dict[str, Any]]) -> bool:
    return any(r.get("advice", {}).get("reconnect") == "handshake" for r in replies)


async def long_polling(
    good: Good, http: aiohttp.ClientSession, url: str, csrf: dict[str, str]
) -> None:
    async def post(body: bytes, is_connect: bool = False) -> list[dict[str, Any]]:
        sent = time.monotonic()
        async with http.post(url, data=body, headers=csrf) as response:
            reply = await response.read()
        at = time.monotonic()
        if response.status != 200:
            good.problem(f"HTTP {response.status} for {body[:60]!r}: {reply[:200]!r}")
            await asyncio.sleep(SPACING)
            return []
        if is_connect:
            good.round_trips.append((sent, at))
        return good.received(orjson.loads(reply), at)

    ids = itertools.count(3)
    while True:
        try:
            replies = await post(handshake("long-polling"))
            if not replies or "clientId" not in replies[0]:
                await asyncio.sleep(SPACING)
                continue
            client_id = replies[0]["clientId"]
            await post(subscribe(client_id))
            while not reconnect_advice(replies):
                body = connect(client_id, next(ids), "long-polling")
                replies = await post(body, is_connect=True)
        except (aiohttp.ClientError, ValueError) as exc:
            good.problem(repr(exc))
            await asyncio.sleep(SPACING)


async def websocket(good: Good, http: aiohttp.ClientSession, url: str) -> None:
    async with http.ws_connect(url, max_msg_size=0, heartbeat=None) as ws:
        await ws.send_bytes(handshake("websocket"))
        sent, n, client_id = 0.0, 3, ""
        async for frame in ws:
            at = time.monotonic()
            if frame.type is not WSMsgType.TEXT:
                good.problem(f"unexpected {frame.type.name} frame: {frame.data!r}")
                continue
            for reply in good.received(orjson.loads(frame.data), at):
                if reply["channel"] == "/meta/connect":
                    good.round_trips.append((sent, at))
                if reply["channel"] == "/meta/handshake" and reply.get("successful"):
                    client_id = reply["clientId"]
                    await ws.send_bytes(subscribe(client_id))
                elif reconnect_advice([reply]):
                    await ws.send_bytes(handshake("websocket"))
                    continue
                elif reply["channel"] != "/meta/connect":
                    continue
                sent, n = time.monotonic(), n + 1
                await ws.send_bytes(connect(client_id, n, "websocket"))
    good.problem(f"the server closed the WebSocket (code {ws.close_code})")


async def agent_desk(
    good: Good, http: aiohttp.ClientSession, origin: str, csrf: dict[str, str]
) -> None:
    """The simulator's agent: a DoNotCallRecord every REST_EVERY, each acked over Bayeux."""
    for n in itertools.count():
        reference = f"good-{n}"
        body = orjson.dumps({"operationName": "DoNotCallRecord", "referenceId": reference})
        sent = time.monotonic()
        try:
            url = f"{origin}/api/v2/me/outbound-records/{n}"
            async with http.post(url, data=body, headers=csrf) as response:
                reply = await response.read()
        except aiohttp.ClientError as exc:
            good.problem(f"{reference}: {exc!r}")
            await asyncio.sleep(REST_EVERY)
            continue
        at = time.monotonic()
        good.receipts.append(at)
        good.round_trips.append((sent, at))
        good.sent[reference] = sent
        good.started.set()
        if response.status != 200 or orjson.loads(reply) != {"statusCode": 0}:
            good.problem(f"{reference}: HTTP {response.status} {reply[:200]!r}")
        await asyncio.sleep(REST_EVERY)
