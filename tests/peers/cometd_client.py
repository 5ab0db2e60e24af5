"""The CometD project's own JavaScript client (npm `cometd` 9 on `cometd-nodejs-client` 2) in a
Node child process, for tests that watch how a real client copes with what a server does.

`CometdClient` runs `node tests/peers/cometd_client.js URL TRANSPORT CHANNEL...`. The client
subscribes in its /meta/handshake listener (CometD forgets subscriptions at every handshake),
and reports every delivered message, every meta reply its listeners see, every reconnection
decision it makes and its connection status, as JSON lines. In a test, the `cometd_client`
fixture is a factory that stops every client it started::

    client = await cometd_client(server.url, "long-polling", ["/a"])
    ...  # the server forgets the session
    await client.wait_for(lambda: len(client.handshakes) >= 2)
    await client.wait_subscribed(handshake=2)  # it subscribed again after the re-handshake

`t` is the Node process's monotonic clock in ms: on Linux CLOCK_MONOTONIC, the clock of
`time.monotonic()`, so `t / 1000` compares with it directly. `wall` is `Date.now()`.
The line formats are listed at the top of tests/peers/cometd_client.js.

`transport` is strict: the client has that transport alone and never falls back. With
`trace=True` every message it sends or receives is in `wire` (one line per message, as an
extension sees it). Node must be on PATH and the pinned packages installed with
`npm ci --prefix tests`.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal

import pytest

from tests.peers.cometd_server import CometdError
from tests.peers.node_client import NodeClient, NodeClients
from tests.peers.node_peer import PEERS, PeerError

Transport = Literal["websocket", "long-polling"]
Json = dict[str, Any]

__all__ = [
    "ClientOptions",
    "CometdClient",
    "CometdClientError",
    "CometdClients",
    "Transport",
    "cometd_client",
]


class CometdClientError(CometdError):
    """The CometD client could not start or subscribe, died, or missed a deadline."""


@dataclass(frozen=True, slots=True)
class ClientOptions:
    """CometD configure() options; None leaves the client's default (in brackets)."""

    max_network_delay_ms: int | None = None  # a reply's extra wait past its timeout [10000]
    backoff_increment_ms: int | None = None  # added to the retry delay per failure [1000]
    max_backoff_ms: int | None = None  # the retry delay's ceiling [60000]
    log_level: Literal["warn", "info", "debug"] | None = None  # CometD's log, on stderr [info]

    def config(self) -> Json:
        names = {
            "maxNetworkDelay": self.max_network_delay_ms,
            "backoffIncrement": self.backoff_increment_ms,
            "maxBackoff": self.max_backoff_ms,
            "logLevel": self.log_level,
        }
        return {name: value for name, value in names.items() if value is not None}


class CometdClient(NodeClient):
    """The official CometD client in a child process: start, watch what it sees, stop.

    After `start()` returns, every channel is subscribed. The lists fill in as lines arrive (on
    the reader thread); `wait_for()` waits for any condition over them. `wire` has one
    {wire, via, t, wall, message} per Bayeux message; `events` holds meta replies, transport
    failures, status changes and the stop; `subscriptions` one line per handshake's subscribe.
    """

    name: ClassVar[str] = "the CometD client"
    script: ClassVar[Path] = PEERS / "cometd_client.js"
    package: ClassVar[str] = "cometd-nodejs-client"
    error: ClassVar[type[PeerError]] = CometdClientError
    trace_variable: ClassVar[str] = "COMETD_CLIENT_TRACE"

    def __init__(self, *, node: str = "node") -> None:
        super().__init__(node=node)
        self._config: Json = {}

    def env(self) -> dict[str, str]:
        env = super().env()
        env["COMETD_CLIENT_CONFIG"] = json.dumps(self._config)
        return env

    async def start(
        self,
        url: str,
        transport: Transport,
        channels: Sequence[str],
        *,
        options: ClientOptions | None = None,
        trace: bool = False,
        timeout: float | None = None,
    ) -> None:
        """Spawn the client; return once the server confirmed every subscription."""
        if not self._started:
            self._config = (options or ClientOptions()).config()
        await self._start(url, transport, channels, trace=trace, timeout=timeout)

    # -- what the client saw --------------------------------------------------------------------

    @property
    def handshakes(self) -> list[float]:
        """The times (t, ms) of the successful /meta/handshake replies."""
        return [e["t"] for e in self.meta("/meta/handshake") if e["successful"]]

    @property
    def failures(self) -> list[Json]:
        """The client's decisions after failures: {channel, cause, action, delay, interval}."""
        return self.named("transport_failure")

    @property
    def statuses(self) -> list[str]:
        """handshaken, connected, broken, rehandshaken, disconnected... as they changed."""
        return [str(e["status"]) for e in self.named("status")]

    def meta(self, listener: str) -> list[Json]:
        """The replies the listener on `listener` saw ("/meta/connect", "/meta/unsuccessful"...)."""
        return self.named(listener)

    async def wait_subscribed(self, handshake: int, timeout: float | None = None) -> Json:
        """Return the subscription made after the `handshake`-th successful handshake."""

        def found() -> Json | None:
            return next((s for s in self._subscriptions if s["handshake"] == handshake), None)

        try:
            return await self.wait_for(found, timeout)
        except CometdClientError as exc:
            raise CometdClientError(f"no subscription after handshake {handshake}: {exc}") from None

    def _gave_up(self) -> str | None:
        """The client decided not to retry a failure (action none) and is disconnected."""
        failures = self.failures
        if not any(f["action"] == "none" for f in failures) or "disconnected" not in self.statuses:
            return None
        last = failures[-1]
        return f"it gave up after {last['channel']} failed ({last.get('failure')})"


class CometdClients(NodeClients[CometdClient]):
    """The `cometd_client` fixture: call it to start a subscribed client; all stop at teardown."""

    async def __call__(
        self,
        url: str,
        transport: Transport,
        channels: Sequence[str],
        *,
        options: ClientOptions | None = None,
        trace: bool = False,
        timeout: float | None = None,
    ) -> CometdClient:
        client = CometdClient()
        self.started.append(client)
        await client.start(url, transport, channels, options=options, trace=trace, timeout=timeout)
        return client


@pytest.fixture
async def cometd_client() -> AsyncIterator[CometdClients]:
    """A factory: `await cometd_client(url, "websocket", channels)` -> a subscribed CometdClient."""
    clients = CometdClients()
    try:
        yield clients
    finally:
        await clients.stop_all()
