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

The child process and its JSON lines are `NodeChild`'s (tests/peers/node_peer.py), as for the
servers; this class sorts the lines and lets asyncio code wait for them.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path
from typing import Any, ClassVar, Literal

import orjson
import pytest

from tests.constants import TIMEOUT
from tests.peers.faye import GWS_CHANNELS, INSTALL_HINT, FayeError
from tests.peers.node_peer import PEERS, NodeChild, PeerError

SCRIPT = PEERS / "faye_client.js"
TRANSPORTS = ("websocket", "long-polling")

Transport = Literal["websocket", "long-polling"]
Json = dict[str, Any]

__all__ = ["FayeClient", "FayeClientError", "FayeClients", "Transport", "faye_client"]


class FayeClientError(FayeError):
    """The Faye client could not start or subscribe, died, or missed a deadline."""


class FayeClient(NodeChild):
    """A real Faye client in a child process: start, collect delivered messages, stop.

    After `start()` returns, every channel is subscribed. `messages`, `events`, `errors` and
    `wire` fill in as lines arrive (on the reader thread); `wait_messages()` waits for a count.
    """

    name: ClassVar[str] = "the Faye client"
    script: ClassVar[Path] = SCRIPT
    package: ClassVar[str] = "faye"
    error: ClassVar[type[PeerError]] = FayeClientError

    def __init__(self, *, node: str = "node") -> None:
        super().__init__(node=node)
        self._started = False
        self._trace = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._messages: list[Json] = []
        self._events: list[Json] = []
        self._errors: list[str] = []
        self._wire: list[Json] = []
        self._subscribed: Json | None = None
        self._changed = asyncio.Event()  # set (and replaced) whenever a line or EOF arrives
        self._eof = False

    def env(self) -> dict[str, str]:
        env = super().env()
        env.pop("FAYE_CLIENT_TRACE", None)
        if self._trace:
            env["FAYE_CLIENT_TRACE"] = "1"
        return env

    def install_hint(self) -> str:
        return INSTALL_HINT

    # -- lifecycle ------------------------------------------------------------------------------

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
        if self._started:
            raise FayeClientError("this Faye client was already started; use a new FayeClient")
        if transport not in TRANSPORTS:
            raise ValueError(f"transport must be one of {TRANSPORTS}, not {transport!r}")
        if isinstance(channels, str) or not channels:
            raise ValueError("channels must be a non-empty sequence of channel names")
        self._trace = trace
        self._loop = asyncio.get_running_loop()
        self._spawn([url, transport, *channels])
        self._started = True
        wait = TIMEOUT if timeout is None else timeout
        try:
            await self._wait_for(
                lambda: self._subscribed is not None or bool(self._errors) or self._eof, wait
            )
        except TimeoutError:
            problem: str | None = f"no subscription confirmed within {wait:g} s"
        else:
            if self._subscribed is not None:
                problem = None
            elif self._errors:
                problem = self._errors[0]
            else:
                problem = "it exited before subscribing"
        if problem is not None:
            await asyncio.to_thread(self.kill)
            raise FayeClientError(
                f"the Faye client did not subscribe to {list(channels)} at {url} over "
                f"{transport}: {problem}{self._stderr_tail()}"
            )

    async def stop(self) -> None:  # type: ignore[override]
        """Close stdin (the client disconnects and exits), wait, then terminate or kill.

        Only the process this object started is signalled, by its PID. Idempotent.
        """
        await asyncio.to_thread(super().stop)

    async def __aenter__(self) -> FayeClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # -- results --------------------------------------------------------------------------------

    @property
    def messages(self) -> list[Json]:
        """Delivered messages so far, in arrival order: {t, wall, channel, data, id}."""
        return list(self._messages)

    @property
    def events(self) -> list[Json]:
        """transport:up / transport:down / disconnected events, in order."""
        return list(self._events)

    @property
    def errors(self) -> list[str]:
        return list(self._errors)

    @property
    def wire(self) -> list[Json]:
        """With trace=True: {wire: "out"|"in", via, t, wall, messages} per body or frame."""
        return list(self._wire)

    @property
    def subscribed(self) -> Json:
        """The subscribed line: subscribed (channels), client_id, connection_type, t, wall."""
        if self._subscribed is None:
            raise FayeClientError("the Faye client has not subscribed")
        return dict(self._subscribed)

    @property
    def client_id(self) -> str:
        return str(self.subscribed["client_id"])

    @property
    def pid(self) -> int:
        if not self._started:
            raise FayeClientError("the Faye client has not been started")
        return super().pid

    async def wait_messages(self, count: int, timeout: float | None = None) -> list[Json]:
        """Return all messages once at least `count` arrived; raise after `timeout` (TIMEOUT)."""
        if not self._started:
            raise FayeClientError("the Faye client has not been started")
        wait = TIMEOUT if timeout is None else timeout
        try:
            await self._wait_for(lambda: len(self._messages) >= count or self._eof, wait)
        except TimeoutError:
            raise FayeClientError(
                f"{len(self._messages)} of {count} messages arrived within {wait:g} s"
                f"{self._errors_text()}{self._stderr_tail()}"
            ) from None
        if len(self._messages) < count:
            raise FayeClientError(
                f"the Faye client exited (status {self.returncode}) after "
                f"{len(self._messages)} of {count} messages{self._errors_text()}"
                f"{self._stderr_tail()}"
            )
        return self.messages

    async def wait_event(self, name: str, timeout: float | None = None) -> Json:
        """Return the first event called `name` (e.g. "transport:down"), waiting if need be."""
        wait = TIMEOUT if timeout is None else timeout

        def found() -> Json | None:
            return next((e for e in self._events if e.get("event") == name), None)

        try:
            await self._wait_for(lambda: found() is not None or self._eof, wait)
        except TimeoutError:
            raise FayeClientError(f"no {name!r} event within {wait:g} s") from None
        event = found()
        if event is None:
            raise FayeClientError(f"the Faye client exited before a {name!r} event")
        return event

    # -- plumbing -------------------------------------------------------------------------------

    async def _wait_for(self, ready: Callable[[], bool], timeout: float = TIMEOUT) -> None:
        """Wait until `ready()` is true, re-checking on every line; TimeoutError after timeout."""
        async with asyncio.timeout(timeout):
            while not ready():
                await self._changed.wait()

    def _notify(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    def _notify_soon(self) -> None:
        """From the reader thread: wake the waiters on the loop that started the client."""
        if self._loop is not None:
            with contextlib.suppress(RuntimeError):  # the loop is closed: nobody waits
                self._loop.call_soon_threadsafe(self._notify)

    # -- child process output (on NodeChild's reader thread) ------------------------------------

    def _loads(self, line: str) -> object:
        return orjson.loads(line)

    def _on_message(self, item: Json) -> None:
        if "channel" in item and "t" in item:
            self._messages.append(item)
        elif "wire" in item:
            self._wire.append(item)
        elif "event" in item:
            self._events.append(item)
        elif "subscribed" in item:
            self._subscribed = item
        elif "error" in item:
            self._errors.append(str(item["error"]))
        else:
            self._errors.append(f"unexpected line on stdout: {str(item)[:200]!r}")
        self._notify_soon()

    def _on_bad_line(self, line: str) -> None:
        self._errors.append(f"not a JSON object on stdout: {line[:200]!r}")
        self._notify_soon()

    def _on_eof(self) -> None:
        self._eof = True
        self._notify_soon()

    def _errors_text(self) -> str:
        return f" (client errors: {'; '.join(self._errors[:5])})" if self._errors else ""


class FayeClients:
    """The `faye_client` fixture: call it to start a subscribed client; all stop at teardown."""

    def __init__(self) -> None:
        self.started: list[FayeClient] = []

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

    async def stop_all(self) -> None:
        errors: list[BaseException] = []
        for client in self.started:
            try:
                await client.stop()
            except Exception as exc:
                errors.append(exc)
        self.started.clear()
        if errors:
            raise errors[0]


@pytest.fixture
async def faye_client() -> AsyncIterator[FayeClients]:
    """A factory: `await faye_client(url, "websocket", channels)` -> a subscribed FayeClient."""
    clients = FayeClients()
    try:
        yield clients
    finally:
        await clients.stop_all()
