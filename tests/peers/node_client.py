"""What the Node Bayeux *client* harnesses share: a `NodeChild` whose lines asyncio code waits on.

`NodeClient` runs `node SCRIPT URL TRANSPORT CHANNEL...`; the script subscribes and prints
one JSON line per thing its client sees: `{"subscribed": [...], "client_id", ...}`, delivered
messages `{"t", "wall", "channel", "data"[, "id"]}`, `{"event": ...}`, `{"wire": ...}` (with
trace on) and `{"error": ...}`. The reader thread sorts them into lists and wakes the waiters
on the loop that started the client; `wait_for()` re-checks a condition on every line, until a
deadline or the child's exit. `FayeClient` (faye_client.py) and `CometdClient`
(cometd_client.py) name the script and add what their client reports besides.
`NodeClients` is the base of their pytest fixtures: factories that stop every client started.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Sequence
from typing import Any, ClassVar, Generic, NoReturn, Self, TypeVar

import orjson

from tests.constants import TIMEOUT
from tests.peers.node_peer import NodeChild

TRANSPORTS = ("websocket", "long-polling")

Json = dict[str, Any]
T = TypeVar("T")
C = TypeVar("C", bound="NodeClient")

__all__ = ["TRANSPORTS", "NodeClient", "NodeClients"]


class NodeClient(NodeChild):
    """A Bayeux client in a Node child process: start, watch what it reports, wait, stop.

    The lists fill in as lines arrive (on the reader thread); the properties return copies.
    """

    trace_variable: ClassVar[str]  # the environment variable that turns the wire trace on

    def __init__(self, *, node: str = "node") -> None:
        super().__init__(node=node)
        self._started = False
        self._trace = False
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
        env.pop(self.trace_variable, None)
        if self._trace:
            env[self.trace_variable] = "1"
        return env

    # -- lifecycle ------------------------------------------------------------------------------

    async def _start(
        self,
        url: str,
        transport: str,
        channels: Sequence[str],
        *,
        trace: bool,
        timeout: float | None,
    ) -> None:
        """Spawn the client; return once it confirmed every subscription (within `timeout`)."""
        if self._started:
            raise self.error(f"{self.name} was already started; use a new {type(self).__name__}")
        if transport not in TRANSPORTS:
            raise ValueError(f"transport must be one of {TRANSPORTS}, not {transport!r}")
        if isinstance(channels, str) or not channels:
            raise ValueError("channels must be a non-empty sequence of channel names")
        self._trace = trace
        self._loop = asyncio.get_running_loop()
        self._spawn([url, transport, *channels])
        self._started = True
        try:
            await self.wait_for(self._settled, timeout)
        except self.error as exc:
            problem: str | None = str(exc)
        else:
            problem = self._start_problem()
        if problem is not None:
            await self._fail(
                f"did not subscribe to {list(channels)} at {url} over {transport}", problem
            )

    async def _fail(self, what: str, problem: str) -> NoReturn:
        await asyncio.to_thread(self.kill)
        raise self.error(f"{self.name} {what}: {problem}{self._stderr_tail()}")

    async def stop(self) -> None:  # type: ignore[override]
        """Close stdin (the client disconnects and exits), wait, then terminate or kill.

        Only the process this object started is signalled, by its PID. Idempotent.
        """
        await asyncio.to_thread(super().stop)

    async def __aenter__(self) -> Self:
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
        """The {"event": name, t, wall, ...} lines, in order (the script lists them)."""
        return list(self._events)

    @property
    def errors(self) -> list[str]:
        return list(self._errors)

    @property
    def wire(self) -> list[Json]:
        """With trace=True: {wire: "out"|"in", via, t, wall, ...} per body, frame or message."""
        return list(self._wire)

    @property
    def subscriptions(self) -> list[Json]:
        """One {subscribed, client_id, connection_type, t, wall, ...} per (re)subscription."""
        return list(self._subscriptions)

    @property
    def subscribed(self) -> Json:
        """The first subscription (there is one once start() has returned)."""
        return dict(self._subscription(0))

    @property
    def client_id(self) -> str:
        """The clientId of the latest subscription."""
        return str(self._subscription(-1)["client_id"])

    def named(self, name: str) -> list[Json]:
        """The events called `name`, in order."""
        return [e for e in self._events if e.get("event") == name]

    @property
    def pid(self) -> int:
        if not self._started:
            raise self.error(f"{self.name} has not been started")
        return super().pid

    # -- waiting --------------------------------------------------------------------------------

    async def wait_for(self, ready: Callable[[], T | None], timeout: float | None = None) -> T:
        """Return `ready()`'s first true value, re-checked on every line the client writes.

        Raises the client's error after `timeout` (TIMEOUT), or once the client has exited.
        """
        if not self._started:
            raise self.error(f"{self.name} has not been started")
        wait = TIMEOUT if timeout is None else timeout
        try:
            async with asyncio.timeout(wait):
                while not (value := ready()) and not self._eof:
                    await self._changed.wait()
        except TimeoutError:
            raise self.error(
                f"the condition was not met within {wait:g} s{self._errors_text()}"
            ) from None
        if not value:
            raise self.error(
                f"{self.name} exited (status {self.returncode}) before the condition was "
                f"met{self._errors_text()}{self._stderr_tail()}"
            )
        return value

    async def wait_messages(self, count: int, timeout: float | None = None) -> list[Json]:
        """Return all messages once at least `count` arrived."""
        try:
            await self.wait_for(lambda: len(self._messages) >= count, timeout)
        except self.error as exc:
            raise self.error(f"{len(self._messages)} of {count} messages: {exc}") from None
        return self.messages

    async def wait_event(self, name: str, timeout: float | None = None, **fields: object) -> Json:
        """Return the first event called `name` whose fields equal `fields`, waiting if need be:
        `wait_event("status", status="rehandshaken")`."""

        def found() -> Json | None:
            matches = (e for e in self.named(name) if all(e.get(k) == v for k, v in fields.items()))
            return next(matches, None)

        try:
            return await self.wait_for(found, timeout)
        except self.error as exc:
            with_fields = f" with {fields}" if fields else ""
            raise self.error(f"no {name!r} event{with_fields}: {exc}") from None

    # -- start()'s end, for subclasses ----------------------------------------------------------

    def _settled(self) -> bool:
        """start() is over: subscribed, failed, or given up."""
        return bool(self._subscriptions or self._errors) or self._gave_up() is not None

    def _start_problem(self) -> str | None:
        if self._subscriptions:
            return None
        return self._errors[0] if self._errors else self._gave_up()

    def _gave_up(self) -> str | None:
        """Why the client stopped trying to connect, once it has (it never does here)."""
        return None

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

    def _subscription(self, index: int) -> Json:
        if not self._subscriptions:
            raise self.error(f"{self.name} has not subscribed")
        return self._subscriptions[index]

    def _errors_text(self) -> str:
        return f" (client errors: {'; '.join(self._errors[:5])})" if self._errors else ""


class NodeClients(Generic[C]):
    """A client fixture's factory: it keeps the clients it started and stops them all at the end."""

    def __init__(self) -> None:
        self.started: list[C] = []

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
