"""The CometD project's own Node server (npm `cometd-nodejs-server`) in a child process, for tests.

`CometdServer` runs `node tests/peers/cometd_server.js` on 127.0.0.1, mounted at `/cometd`, and
drives it with JSON-line commands, as `FayeServer` does Faye. Use the `cometd_server` fixture
(import it into a test module or a conftest). Node must be on PATH and the pinned package
installed with `npm ci --prefix tests`.

What this server does that Faye does not (each checked in tests/peers/test_cometd_harness.py):

- It binds sessions to its `BAYEUX_BROWSER` cookie, set on the first handshake reply: a request
  without the cookie finds no session, whatever its clientId (`402::session_unknown`).
- It puts the queued events *before* the /meta/connect reply in the same response array, and a
  reply to a subscribe or publish may carry queued events too.
- An unknown session gets `402::session_unknown` with advice `{"reconnect": "handshake",
  "interval": 0}` on /meta/connect (the advice only on handshake and connect replies).
- It speaks long-polling only: the handshake reply lists `["long-polling"]` and a WebSocket
  upgrade is refused.
- A session expires `maxInterval` ms after its last /meta/connect reply (not while a connect is
  held), noticed by a sweep every `sweepPeriod` ms.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import ClassVar

import pytest

from tests.constants import TIMEOUT
from tests.peers.node_peer import PEERS, Json, NodePeer, PeerError


class CometdError(PeerError):
    """The CometD server could not start, died, or refused a command."""


class CometdServer(NodePeer):
    """A real cometd-nodejs-server: sessions, subscriptions, sequence-numbered streams."""

    name: ClassVar[str] = "the CometD server"
    script: ClassVar[Path] = PEERS / "cometd_server.js"
    package: ClassVar[str] = "cometd-nodejs-server"
    error: ClassVar[type[PeerError]] = CometdError

    def __init__(
        self,
        *,
        timeout_ms: int = 30_000,
        max_interval_ms: int = 10_000,
        sweep_period_ms: int = 997,
        node: str = "node",
    ) -> None:
        super().__init__(node=node)
        # The server's options; a restart starts with these, not with configure()'s changes.
        self.timeout_ms = timeout_ms  # how long a /meta/connect is held
        self.max_interval_ms = max_interval_ms  # how long a session lives without a connect
        self.sweep_period_ms = sweep_period_ms  # how often expired sessions are removed

    def env(self) -> dict[str, str]:
        return {
            **super().env(),
            "COMETD_TIMEOUT": str(self.timeout_ms),
            "COMETD_MAX_INTERVAL": str(self.max_interval_ms),
            "COMETD_SWEEP_PERIOD": str(self.sweep_period_ms),
        }

    def __enter__(self) -> CometdServer:
        if self._proc is None:
            self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- commands -------------------------------------------------------------------------------

    def publish(self, channel: str, data: Iterable[object]) -> Json:
        """Publish each item of `data` on `channel`, in order, as the server itself."""
        return self.command({"cmd": "publish", "channel": channel, "data": list(data)})

    def stream(
        self,
        channel: str,
        rate: float,
        *,
        count: int | None = None,
        start: int = 0,
        size: int = 0,
        tick_ms: int = 5,
    ) -> Json:
        """Start publishing {seq, t_ms[, pad]} on `channel`, seq = start, start + 1, ..., at
        `rate` a second (message k due k / rate s after the start, on an absolute clock), until
        `count` messages or stream_stop(). Returns at once; the answer's `stream` is its id."""
        cmd: Json = {"cmd": "stream", "channel": channel, "rate": rate, "start": start}
        cmd.update({"count": count, "size": size, "tick_ms": tick_ms})
        return self.command(cmd)

    def stream_wait(self, stream: int, *, timeout: float | None = None) -> Json:
        """Wait for a counted stream to end; its published, first_seq, next_seq, max_lag_ms."""
        return self.command({"cmd": "stream_wait", "stream": stream}, timeout=timeout)

    def stream_stop(self, stream: int) -> Json:
        """Stop a stream now; what it published, as stream_wait()."""
        return self.command({"cmd": "stream_stop", "stream": stream})

    def clients(self) -> Json:
        """handshakes, disconnects, expired (sessions removed by the sweep), subscriptions
        ({session: [channels]}), subscribe_log ([{session, channel, next_seq, t_ms}]: next_seq
        is the seq the channel's stream published next after the subscription, None if no stream
        had started on it) and the current options."""
        return self.command({"cmd": "clients"})

    def configure(
        self,
        *,
        timeout_ms: int | None = None,
        max_interval_ms: int | None = None,
        sweep_period_ms: int | None = None,
    ) -> Json:
        """Change server options while it runs (they apply to the next connect or sweep)."""
        cmd: Json = {"cmd": "configure"}
        for key, value in (
            ("timeout", timeout_ms),
            ("maxInterval", max_interval_ms),
            ("sweepPeriod", sweep_period_ms),
        ):
            if value is not None:
                cmd[key] = value
        return self.command(cmd)

    def wait_subscribed(
        self, channels: Sequence[str], count: int = 1, *, timeout: float | None = None
    ) -> Json:
        """Return once at least `count` sessions are subscribed to every one of `channels`."""
        wait = TIMEOUT if timeout is None else timeout
        cmd: Json = {"cmd": "wait_subscribed", "channels": list(channels), "count": count}
        cmd["timeout_ms"] = int(wait * 1000)
        return self.command(cmd, timeout=wait + TIMEOUT / 2)

    async def await_subscribed(
        self, channels: Sequence[str], count: int = 1, *, timeout: float | None = None
    ) -> Json:
        return await asyncio.to_thread(self.wait_subscribed, channels, count, timeout=timeout)


@pytest.fixture
def cometd_server() -> Iterator[CometdServer]:
    """A started cometd-nodejs-server on a free 127.0.0.1 port (url: http://127.0.0.1:N/cometd),
    holding connects 30 s, expiring sessions 10 s after their last connect (the defaults)."""
    server = CometdServer()
    try:
        server.start()
        yield server
    finally:
        server.stop()
