"""A real Faye (npm `faye`) Bayeux server in a Node child process, for tests (a `NodePeer`).

`FayeServer` runs `node tests/peers/faye_server.js` on 127.0.0.1, mounted at `/cometd`, and
drives it with JSON-line commands over the child's stdin/stdout. Register the `faye_server`
fixture in tests/conftest.py with::

    from tests.peers.faye import faye_server  # noqa: F401

Node must be on PATH and the pinned Faye installed with `npm ci --prefix tests`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import pytest

from tests.constants import TIMEOUT
from tests.peers.node_peer import NODE_MODULES, PEERS, TESTS, Json, NodePeer, PeerError

SCRIPT = PEERS / "faye_server.js"
INSTALL_HINT = "run `npm ci --prefix tests` (from the repository root) to install the pinned Faye"

GWS_CHANNELS = ("/v2/me/outbound", "/me/internal")

__all__ = [
    "GWS_CHANNELS",
    "INSTALL_HINT",
    "NODE_MODULES",
    "PEERS",
    "TESTS",
    "FayeError",
    "FayeServer",
    "Json",
    "TlsFiles",
    "faye_server",
]


@dataclass(frozen=True)
class TlsFiles:
    """PEM files for a Faye server over HTTPS: its certificate chain and key, and the CA its
    clients' certificates must be signed by (None: no client certificate asked for)."""

    cert: Path
    key: Path
    client_ca: Path | None = None


class FayeError(PeerError):
    """The Faye server could not start, died, or answered a command with ok: false."""


class FayeServer(NodePeer):
    """A real Faye server in a child process: start, drive with commands, kill, restart, stop.

    `command()` and the helpers built on it are thread-safe and may overlap (answers are matched
    by id). The `a`-prefixed coroutines run them in a worker thread for asyncio tests.
    """

    name: ClassVar[str] = "the Faye server"
    script: ClassVar[Path] = SCRIPT
    package: ClassVar[str] = "faye"
    error: ClassVar[type[PeerError]] = FayeError

    def __init__(
        self, *, timeout_s: float = 60.0, node: str = "node", tls: TlsFiles | None = None
    ) -> None:
        super().__init__(node=node)
        self.timeout_s = timeout_s  # Faye's `timeout` option (FAYE_TIMEOUT), in seconds
        self.tls = tls  # serve HTTPS (and WSS) with these files

    def env(self) -> dict[str, str]:
        env = {**super().env(), "FAYE_TIMEOUT": str(self.timeout_s)}
        if self.tls is not None:
            env.update(FAYE_TLS_CERT=str(self.tls.cert), FAYE_TLS_KEY=str(self.tls.key))
            if self.tls.client_ca is not None:
                env["FAYE_TLS_CLIENT_CA"] = str(self.tls.client_ca)
        return env

    def install_hint(self) -> str:
        return INSTALL_HINT

    def __enter__(self) -> FayeServer:
        if self._proc is None:
            self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- addresses ------------------------------------------------------------------------------

    @property
    def url(self) -> str:
        scheme = "https" if self.tls is not None else "http"
        return f"{scheme}://127.0.0.1:{self.port}/cometd"

    @property
    def ws_url(self) -> str:
        scheme = "wss" if self.tls is not None else "ws"
        return f"{scheme}://127.0.0.1:{self.port}/cometd"

    # -- commands -------------------------------------------------------------------------------

    async def acommand(self, cmd: Json, *, timeout: float | None = None) -> Json:
        return await asyncio.to_thread(self.command, cmd, timeout=timeout)

    def publish(
        self, channel: str, data: Iterable[object], *, timeout: float | None = None
    ) -> Json:
        """Publish each item of `data` on `channel`, in order, from Faye's in-process client."""
        return self.command(
            {"cmd": "publish", "channel": channel, "data": list(data)}, timeout=timeout
        )

    def publish_gws(self, count: int, start: int = 0, *, timeout: float | None = None) -> Json:
        """Publish `count` GWS pairs (ack on /v2/me/outbound, then event on /me/internal)."""
        return self.command({"cmd": "gws", "count": count, "start": start}, timeout=timeout)

    def blast(
        self,
        channel: str,
        count: int,
        size: int = 500,
        *,
        timeout: float | None = None,
        via: str = "client",
    ) -> Json:
        """Publish `count` ~`size`-byte messages {seq, pad} as fast as Faye can; has elapsed_ms.

        `via="engine"` hands them straight to Faye's engine (no in-process client round trip)."""
        return self.command(
            {"cmd": "blast", "channel": channel, "count": count, "size": size, "via": via},
            timeout=timeout,
        )

    def pace(
        self,
        rate: float,
        duration: float,
        start: int = 0,
        *,
        tick_ms: int = 5,
        timeout: float | None = None,
    ) -> Json:
        """Publish GWS pairs start, start + 1, ... (referenceId str(i)) at `rate` pairs a second
        for `duration` seconds, pair i due i / rate s after the start (an absolute clock, checked
        every `tick_ms`), straight into Faye's engine. Returns once done, with published
        (messages), pairs, started_monotonic_ns, elapsed_ms and max_lag_ms (the timer's worst)."""
        wait = duration + TIMEOUT if timeout is None else timeout
        return self.command(
            {
                "cmd": "pace",
                "rate": rate,
                "duration_ms": round(duration * 1000),
                "start": start,
                "tick_ms": tick_ms,
            },
            timeout=wait,
        )

    def clients(self) -> Json:
        """Handshake/disconnect counts, live clients, subscriptions; Faye's own client excluded."""
        return self.command({"cmd": "clients"})

    def wait_subscribed(
        self,
        channels: Sequence[str] = GWS_CHANNELS,
        count: int = 1,
        *,
        timeout: float | None = None,
    ) -> Json:
        """Return once at least `count` clients are subscribed to every one of `channels`."""
        wait = TIMEOUT if timeout is None else timeout
        return self.command(
            {
                "cmd": "wait_subscribed",
                "channels": list(channels),
                "count": count,
                "timeout_ms": int(wait * 1000),
            },
            timeout=wait + TIMEOUT / 2,
        )

    async def apublish(
        self, channel: str, data: Iterable[object], *, timeout: float | None = None
    ) -> Json:
        items = list(data)
        return await asyncio.to_thread(self.publish, channel, items, timeout=timeout)

    async def apublish_gws(
        self, count: int, start: int = 0, *, timeout: float | None = None
    ) -> Json:
        return await asyncio.to_thread(self.publish_gws, count, start, timeout=timeout)

    async def ablast(
        self,
        channel: str,
        count: int,
        size: int = 500,
        *,
        timeout: float | None = None,
        via: str = "client",
    ) -> Json:
        return await asyncio.to_thread(self.blast, channel, count, size, timeout=timeout, via=via)

    async def apace(
        self,
        rate: float,
        duration: float,
        start: int = 0,
        *,
        tick_ms: int = 5,
        timeout: float | None = None,
    ) -> Json:
        return await asyncio.to_thread(
            self.pace, rate, duration, start, tick_ms=tick_ms, timeout=timeout
        )

    async def aclients(self) -> Json:
        return await asyncio.to_thread(self.clients)

    async def await_subscribed(
        self,
        channels: Sequence[str] = GWS_CHANNELS,
        count: int = 1,
        *,
        timeout: float | None = None,
    ) -> Json:
        """The coroutine form of wait_subscribed()."""
        return await asyncio.to_thread(self.wait_subscribed, channels, count, timeout=timeout)


@pytest.fixture
def faye_server() -> Iterator[FayeServer]:
    """A started Faye server on a free 127.0.0.1 port (url: http://127.0.0.1:N/cometd)."""
    server = FayeServer()
    try:
        server.start()
        yield server
    finally:
        server.stop()
