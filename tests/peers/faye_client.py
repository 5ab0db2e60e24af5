"""A real Faye (npm `faye`) Bayeux *client* in a Node child process, for tests.

`FayeClient` runs `node tests/peers/faye_client.js URL TRANSPORT CHANNEL...`, which subscribes
to the channels and reports every delivered message as a JSON line on stdout. Use it to check
that what we serve (or replay) is something a real third-party client accepts::

    client = FayeClient()
    await client.start(server.url, "websocket", GWS_CHANNELS)
    await faye_server.apublish_gws(100)
    messages = await client.wait_messages(200)  # [{"t", "wall", "channel", "data", "id"}, ...]
    await client.stop()

or, in a test, the `faye_client` fixture, a factory that stops every client it started::

    client = await faye_client(server.url, "long-polling")

Message times: "t" is the Node process's monotonic clock in ms. On Linux that is
CLOCK_MONOTONIC, the same clock as `time.monotonic()`, so `t / 1000` compares with it directly.
"wall" is the Node process's `Date.now()`.

With `trace=True` the client also reports every HTTP body and WebSocket frame it sends or
receives (`wire`). Node must be on PATH and the pinned Faye installed with
`npm ci --prefix tests`.

The child process, the sorting of its lines and the waiting are `NodeClient`'s
(tests/peers/node_client.py), shared with the CometD client's harness.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import ClassVar, Literal

import pytest

from tests.peers.faye import GWS_CHANNELS, INSTALL_HINT, FayeError
from tests.peers.node_client import NodeClient, NodeClients
from tests.peers.node_peer import PEERS, PeerError

SCRIPT = PEERS / "faye_client.js"

Transport = Literal["websocket", "long-polling"]

__all__ = ["FayeClient", "FayeClientError", "FayeClients", "Transport", "faye_client"]


class FayeClientError(FayeError):
    """The Faye client could not start or subscribe, died, or missed a deadline."""


class FayeClient(NodeClient):
    """A real Faye client in a child process: start, collect delivered messages, stop.

    After `start()` returns, every channel is subscribed. `messages`, `events`, `errors` and
    `wire` fill in as lines arrive (on the reader thread); `wait_messages()` waits for a count.
    `wire` has one {wire, via, t, wall, messages} per HTTP body or WebSocket frame; the events
    are transport:up, transport:down and disconnected.
    """

    name: ClassVar[str] = "the Faye client"
    script: ClassVar[Path] = SCRIPT
    package: ClassVar[str] = "faye"
    error: ClassVar[type[PeerError]] = FayeClientError
    trace_variable: ClassVar[str] = "FAYE_CLIENT_TRACE"

    def install_hint(self) -> str:
        return INSTALL_HINT

    async def start(
        self,
        url: str,
        transport: Transport,
        channels: Sequence[str] = GWS_CHANNELS,
        *,
        trace: bool = False,
        timeout: float | None = None,
    ) -> None:
        """Spawn the client; return once Faye confirmed every subscription (within `timeout`)."""
        await self._start(url, transport, channels, trace=trace, timeout=timeout)


class FayeClients(NodeClients[FayeClient]):
    """The `faye_client` fixture: call it to start a subscribed client; all stop at teardown."""

    async def __call__(
        self,
        url: str,
        transport: Transport,
        channels: Sequence[str] = GWS_CHANNELS,
        *,
        trace: bool = False,
        timeout: float | None = None,
    ) -> FayeClient:
        client = FayeClient()
        self.started.append(client)
        await client.start(url, transport, channels, trace=trace, timeout=timeout)
        return client


@pytest.fixture
async def faye_client() -> AsyncIterator[FayeClients]:
    """A factory: `await faye_client(url, "websocket", channels)` -> a subscribed FayeClient."""
    clients = FayeClients()
    try:
        yield clients
    finally:
        await clients.stop_all()
