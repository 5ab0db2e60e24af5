"""An agent desktop made of real third-party clients: aiohttp for the REST calls (basic auth,
the JSESSIONID cookie and the CSRF pair, as GWS wants) and aiocometd-ng for the Bayeux
subscriptions, carrying the same cookie and CSRF header."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from aiocometd_ng import Client, ConnectionType, Extension

CHANNELS = ("/v2/me/outbound", "/me/internal")


class GwsHeaders(Extension):
    """Adds the session cookie and CSRF header to every Bayeux request (and the upgrade)."""

    def __init__(self, headers: dict[str, str]) -> None:
        self.headers = headers

    async def outgoing(self, payload: Any, headers: Any) -> None:
        headers.update(self.headers)

    async def incoming(self, payload: Any, headers: Any = None) -> None:
        return None


@dataclass
class Agent:
    origin: str  # http://host:port, through the proxy or straight to the server
    http: aiohttp.ClientSession
    client: Client
    acks: dict[str, dict[str, Any]] = field(default_factory=dict)  # referenceId -> ack data
    ack_times: dict[str, float] = field(default_factory=dict)
    internal: list[dict[str, Any]] = field(default_factory=list)
    csrf: dict[str, str] = field(default_factory=dict)

    async def post(self, path: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        async with self.http.post(self.origin + path, json=body, headers=self.csrf) as response:
            return response.status, await response.json(content_type=None)

    async def listen(self) -> None:
        async for message in self.client:
            if message["channel"] == CHANNELS[0]:
                ref = message["data"].get("referenceId")
                self.acks[ref] = message["data"]
                self.ack_times[ref] = time.monotonic()
            else:
                self.internal.append(message["data"])

    async def wait_acks(self, refs: list[str], timeout: float, *, metrics: int = 0) -> None:
        """Until every ref has its ack, and at least `metrics` /me/internal messages came."""
        deadline = time.monotonic() + timeout
        while not all(r in self.acks for r in refs) or len(self.internal) < metrics:
            if time.monotonic() > deadline:
                missing = [r for r in refs if r not in self.acks]
                raise AssertionError(
                    f"{len(missing)} acks never came, e.g. {missing[:3]}; "
                    f"{len(self.internal)} of {metrics} metrics messages"
                )
            await asyncio.sleep(0.01)


def basic(user: str, password: str) -> dict[str, str]:
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    return {"Authorization": f"Basic {token}"}


@contextlib.asynccontextmanager
async def agent(
    origin: str,
    kind: ConnectionType = ConnectionType.LONG_POLLING,
    *,
    user: str = "agent",
    password: str = "agent",
    notifications: str = "/api/v2/notifications",
) -> AsyncIterator[Agent]:
    """Log in (GET /api/v2/me with basic auth), then subscribe with the session's cookie."""
    jar = aiohttp.CookieJar(unsafe=True)
    async with aiohttp.ClientSession(cookie_jar=jar, headers=basic(user, password)) as http:
        async with http.get(origin + "/api/v2/me") as response:
            assert response.status == 200, await response.text()
            csrf = {response.headers["X-CSRF-HEADER"]: response.headers["X-CSRF-TOKEN"]}
        cookies = "; ".join(f"{c.key}={c.value}" for c in jar)
        url = origin + notifications
        extension = GwsHeaders({"Cookie": cookies, **csrf})
        async with Client(url, kind, extensions=[extension]) as client:
            for channel in CHANNELS:
                await client.subscribe(channel)
            desk = Agent(origin, http, client, csrf=csrf)
            listener = asyncio.get_running_loop().create_task(desk.listen())
            try:
                yield desk
            finally:
                listener.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await listener
