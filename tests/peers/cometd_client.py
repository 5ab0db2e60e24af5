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

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal, TypeVar

import orjson
import pytest

from tests.constants import TIMEOUT
from tests.peers.cometd_server import CometdError
from tests.peers.node_peer import PEERS, NodeChild, PeerError

TRANSPORTS = ("websocket", "long-polling")

Transport = Literal["websocket", "long-polling"]
Json = dict[str, Any]
T = TypeVar("T")

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


class CometdClient(NodeChild):
    """The official CometD client in a child process: start, watch what it sees, stop.

    After `start()` returns, every channel is subscribed. The lists fill in as lines arrive (on
    the reader thread); `wait_for()` waits for any condition over them.
    """

    name: ClassVar[str] = "the CometD client"
    script: ClassVar[Path] = PEERS / "cometd_client.js"
    package: ClassVar[str] = "cometd-nodejs-client"
    error: ClassVar[type[PeerError]] = CometdClientError

    def __init__(self, *, node: str = "node") -> None:
        super().__init__(node=node)
        self._started = False
        self._trace = False
        self._config: Json = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._messages: list[Json] = []
        self._events: list[Json] = []
        self._errors: list[str] = []
        self._wire: list[Json] = []
        self._subscriptions: list[Json] = []
        self._changed = asyncio.Event()  # set (and replaced) whenever a line or EOF arrives
        self._eof = False

    def env(self) -> dict[str, str]:
        env = super().env()
        env.pop("COMETD_CLIENT_TRACE", None)
        if self._trace:
            env["COMETD_CLIENT_TRACE"] = "1"
        env["COMETD_CLIENT_CONFIG"] = json.dumps(self._config)
        return env

    # -- lifecycle ------------------------------------------------------------------------------

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
        if self._started:
            raise CometdClientError("this CometD client was already started; use a new one")
        if transport not in TRANSPORTS:
            raise ValueError(f"transport must be one of {TRANSPORTS}, not {transport!r}")
        if isinstance(channels, str) or not channels:
            raise ValueError("channels must be a non-empty sequence of channel names")
        self._trace = trace
        self._config = (options or ClientOptions()).config()
        self._loop = asyncio.get_running_loop()
        self._spawn([url, transport, *channels])
        self._started = True
        wait = TIMEOUT if timeout is None else timeout
        try:
            await self.wait_for(self._settled, wait)
        except CometdClientError as exc:
            problem: str | None = str(exc)
        else:
            problem = self._start_problem()
        if problem is not None:
            await asyncio.to_thread(self.kill)
            raise CometdClientError(
                f"the CometD client did not subscribe to {list(channels)} at {url} over "
                f"{transport}: {problem}{self._stderr_tail()}"
            )

    async def stop(self) -> None:  # type: ignore[override]
        """Close stdin (the client disconnects and exits), wait, then terminate or kill.

        Only the process this object started is signalled, by its PID. Idempotent.
        """
        await asyncio.to_thread(super().stop)

    async def __aenter__(self) -> CometdClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # -- what the client saw --------------------------------------------------------------------

    @property
    def messages(self) -> list[Json]:
        """Delivered messages so far, in arrival order: {t, wall, channel, data[, id]}."""
        return list(self._messages)

    @property
    def events(self) -> list[Json]:
        """Meta replies, transport failures, status changes and the stop, in order."""
        return list(self._events)

    @property
    def errors(self) -> list[str]:
        return list(self._errors)

    @property
    def wire(self) -> list[Json]:
        """With trace=True: {wire: "out"|"in", via, t, wall, message} per Bayeux message."""
        return list(self._wire)

    @property
    def subscriptions(self) -> list[Json]:
        """One {subscribed, client_id, connection_type, handshake, t, wall} per (re)subscription."""
        return list(self._subscriptions)

    @property
    def subscribed(self) -> Json:
        """The first subscription (there is one once start() has returned)."""
        if not self._subscriptions:
            raise CometdClientError("the CometD client has not subscribed")
        return dict(self._subscriptions[0])

    @property
    def client_id(self) -> str:
        """The clientId of the latest subscription."""
        if not self._subscriptions:
            raise CometdClientError("the CometD client has not subscribed")
        return str(self._subscriptions[-1]["client_id"])

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

    def named(self, name: str) -> list[Json]:
        """The events called `name` ("status", "transport_failure", "websocket", "stopped"...)."""
        return [e for e in self._events if e.get("event") == name]

    @property
    def pid(self) -> int:
        if not self._started:
            raise CometdClientError("the CometD client has not been started")
        return super().pid

    # -- waiting --------------------------------------------------------------------------------

    async def wait_for(self, ready: Callable[[], T | None], timeout: float | None = None) -> T:
        """Return `ready()`'s first true value, re-checked on every line the client writes.

        Raises CometdClientError after `timeout` (TIMEOUT), or once the client has exited.
        """
        if not self._started:
            raise CometdClientError("the CometD client has not been started")
        wait = TIMEOUT if timeout is None else timeout
        try:
            async with asyncio.timeout(wait):
                while not (value := ready()) and not self._eof:
                    await self._changed.wait()
        except TimeoutError:
            raise CometdClientError(
                f"the condition was not met within {wait:g} s{self._errors_text()}"
            ) from None
        if not value:
            raise CometdClientError(
                f"the CometD client exited (status {self.returncode}) before the condition was "
                f"met{self._errors_text()}{self._stderr_tail()}"
            )
        return value

    async def wait_messages(self, count: int, timeout: float | None = None) -> list[Json]:
        """Return all messages once at least `count` arrived."""
        try:
            await self.wait_for(lambda: len(self._messages) >= count, timeout)
        except CometdClientError as exc:
            raise CometdClientError(f"{len(self._messages)} of {count} messages: {exc}") from None
        return self.messages

    async def wait_event(self, name: str, timeout: float | None = None, **fields: object) -> Json:
        """Return the first event called `name` whose fields equal `fields`, waiting if need be:
        `wait_event("status", status="rehandshaken")`."""

        def found() -> Json | None:
            matches = (e for e in self.named(name) if all(e.get(k) == v for k, v in fields.items()))
            return next(matches, None)

        try:
            return await self.wait_for(found, timeout)
        except CometdClientError as exc:
            raise CometdClientError(f"no {name!r} event with {fields}: {exc}") from None

    async def wait_subscribed(self, handshake: int, timeout: float | None = None) -> Json:
        """Return the subscription made after the `handshake`-th successful handshake."""

        def found() -> Json | None:
            return next((s for s in self._subscriptions if s["handshake"] == handshake), None)

        try:
            return await self.wait_for(found, timeout)
        except CometdClientError as exc:
            raise CometdClientError(f"no subscription after handshake {handshake}: {exc}") from None

    # -- child process output (on NodeChild's reader thread) ------------------------------------

    def _loads(self, line: str) -> object:
        return orjson.loads(line)

    def _on_message(self, item: Json) -> None:
        if "wire" in item:
            self._wire.append(item)
        elif "event" in item:
            self._events.append(item)
        elif "subscribed" in item:
            self._subscriptions.append(item)
        elif "error" in item:
            self._errors.append(str(item["error"]))
        elif "channel" in item and "t" in item:
            self._messages.append(item)
        else:
            self._errors.append(f"unexpected line on stdout: {str(item)[:200]!r}")
        self._notify_soon()

    def _on_bad_line(self, line: str) -> None:
        self._errors.append(f"not a JSON object on stdout: {line[:200]!r}")
        self._notify_soon()

    def _on_eof(self) -> None:
        self._eof = True
        self._notify_soon()

    def _notify(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    def _notify_soon(self) -> None:
        """From the reader thread: wake the waiters on the loop that started the client."""
        if self._loop is not None:
            with contextlib.suppress(RuntimeError):  # the loop is closed: nobody waits
                self._loop.call_soon_threadsafe(self._notify)

    def _settled(self) -> bool:
        """start() is over: subscribed, failed, or given up."""
        return bool(self._subscriptions or self._errors) or self._gave_up()

    def _start_problem(self) -> str | None:
        if self._subscriptions:
            return None
        if self._errors:
            return self._errors[0]
        last = self.failures[-1]
        return f"it gave up after {last['channel']} failed ({last.get('failure')})"

    def _gave_up(self) -> bool:
        """The client decided not to retry a failure (action none) and is disconnected."""
        return any(f["action"] == "none" for f in self.failures) and "disconnected" in self.statuses

    def _errors_text(self) -> str:
        return f" (client errors: {'; '.join(self._errors[:5])})" if self._errors else ""


class CometdClients:
    """The `cometd_client` fixture: call it to start a subscribed client; all stop at teardown."""

    def __init__(self) -> None:
        self.started: list[CometdClient] = []

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
async def cometd_client() -> AsyncIterator[CometdClients]:
    """A factory: `await cometd_client(url, "websocket", channels)` -> a subscribed CometdClient."""
    clients = CometdClients()
    try:
        yield clients
    finally:
        await clients.stop_all()
