"""The record loop: drives the sans-I/O Bayeux client with a transport and writes the tape.

It turns what the client reports into lifecycle frames (transport, connected, disconnected,
reconnecting, rehandshake with the gap, stopped), so analysis can tell silence from an outage.

Transport negotiation (`transport="auto"`, the default): the handshake goes over long-polling;
when its reply lists `websocket` among the server's supportedConnectionTypes, a WebSocket is
opened to the same URL (with the cookies and CSRF pair the HTTP exchanges set) and the session
goes on over it, the handshake's clientId kept; when it is not offered or the upgrade fails,
the session stays on long-polling. A lifecycle frame "transport" says which and why, and the
session row's `transport` is set to the one used. CometD's Client.js differs in one respect: it
sends the handshake over its first transport (WebSocket) and, when that upgrade fails, hands
the handshake over to long-polling after its backoff; going over HTTP first costs a server
without WebSocket no failed upgrade, lets the login and the server's cookies go with the
upgrade, and is what Faye's own client does. Like Client.js, the transport chosen is kept for
the session and its re-handshakes. "websocket" and "long-polling" are strict: no fallback.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import sys
import time
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from typing import Protocol

from recorder import events as ev
from recorder.auth import Credentials, Handover, LoginError
from recorder.net import CLIENT_CERT, UNTRUSTED, NetOptions, describe_error
from recorder.protocol import BayeuxClient
from recorder.replay_ext import ReplayExtension
from recorder.status import Status
from recorder.websocket import UpgradeError, WebSocketTransport
from tape.bayeux import Message
from tape.schema import TapeError
from tape.session import SessionLog

TRANSPORTS = ("auto", "websocket", "long-polling")

Deliver = Callable[[list[Message]], None]
# reason, HTTP status, the ids of the failed request's messages (None: all in flight)
Fail = Callable[[str, int | None, Collection[str] | None], None]


class RecordError(Exception):
    """The recording could not start or was refused; the message is for the user."""


class Transport(Protocol):
    """What the recorder needs of a transport (long-polling, WebSocket, or a test's mock).

    It logs every frame it sends and receives to the session's log, hands received messages
    to `deliver` and failures to `fail` (the callbacks it was made with)."""

    name: str
    bytes_in: int

    async def open(self) -> None: ...
    async def close(self) -> None: ...
    def send(self, batch: ev.Outgoing) -> None: ...
    async def login(self, login_url: str) -> None:
        """GET the login URL for cookies and the CSRF pair, sent with every later request;
        raises LoginError."""
        ...

    def reset(self) -> None:
        """Drop a connection that may be stuck (a connect went unanswered); the next batch
        goes on a new one."""
        ...

    async def upgrade(self) -> None:
        """Connect now, before the first batch (negotiation); raises UpgradeError."""
        ...

    def handover(self) -> Handover:
        """What a transport taking this session over must carry: cookies, the CSRF pair."""
        ...


class TransportFactory(Protocol):
    """Makes the transport named ("long-polling" or "websocket"), carrying `handover`."""

    def __call__(
        self, name: str, deliver: Deliver, fail: Fail, handover: Handover
    ) -> Transport: ...


@dataclass(slots=True)
class RecordOptions:
    url: str
    channels: tuple[str, ...] = ("/v2/me/outbound", "/me/internal")
    transport: str = "auto"  # "auto": WebSocket if offered and the upgrade works, else LP
    net: NetOptions = field(default_factory=NetOptions)
    credentials: Credentials = field(default_factory=Credentials)
    login_url: str | None = None
    url_suffix: bool = False
    duration: float | None = None
    max_messages: int | None = None
    # --ext replay: where each channel starts (-1 new only, -2 all retained, or after an id),
    # and per channel (recorder/replay_ext.py)
    replay: tuple[int, dict[str, int]] | None = None


@dataclass(frozen=True, slots=True)
class Outcome:
    reason: str
    ok: bool


class Recorder:
    def __init__(
        self,
        options: RecordOptions,
        log: SessionLog,
        status: Status,
        *,
        transports: TransportFactory | None = None,
    ) -> None:
        """`transports`: makes each transport (tests pass a mock's); by default the real ones."""
        if options.transport not in TRANSPORTS:
            raise ValueError(f"transport {options.transport!r} is not one of {TRANSPORTS}")
        self.options, self.log, self.status = options, log, status
        strict_ws = options.transport == "websocket"
        self.replay = None if options.replay is None else ReplayExtension(*options.replay)
        self.client = BayeuxClient(
            options.channels,
            connection_type="websocket" if strict_ws else "long-polling",
            supported_connection_types={
                "auto": ("websocket", "long-polling"),
                "websocket": ("websocket",),
                "long-polling": ("long-polling",),
            }[options.transport],
            ext_out=self.replay.outgoing if self.replay else None,
            ext_in=self.replay.incoming if self.replay else None,
        )
        self._make = transports or self._transport
        self.transport = self._new("websocket" if strict_ws else "long-polling")
        self._negotiating = options.transport == "auto"  # until the first handshake reply
        self._tasks: set[asyncio.Task[None]] = set()
        self._wake = asyncio.Event()
        self._outcome: Outcome | None = None
        self._stopping: str | None = None
        self._stop_asked_at = 0.0
        self._connected_once = False
        self._lost_at: float | None = None

    def _new(self, name: str, handover: Handover | None = None) -> Transport:
        return self._make(name, self._deliver, self._failed, handover or Handover())

    def _transport(self, name: str, deliver: Deliver, fail: Fail, handover: Handover) -> Transport:
        """The real transports: the default TransportFactory."""
        opts = self.options
        credentials = opts.credentials.carrying(handover)
        if name == "websocket":
            return WebSocketTransport(
                opts.url, self.log, deliver, fail, credentials=credentials, net=opts.net
            )
        # Imported here: aiohttp is ~10 MB of RSS and 0.2 s of start-up that a WebSocket
        # recording does not need.
        from recorder.long_polling import LongPollingTransport

        return LongPollingTransport(
            opts.url,
            self.log,
            deliver,
            fail,
            credentials=credentials,
            net=opts.net,
            url_suffix=opts.url_suffix,
            connect_timeout_ms=lambda: self.client.advice.timeout,
        )

    async def run(self) -> Outcome:
        net = self.options.net
        try:
            if net.cacert or net.cert or net.key:
                net.ssl_context()  # the TLS files, read once here to say what is wrong
        except (OSError, ssl.SSLError) as exc:
            reason = f"cannot use the TLS files given (--cacert, --cert, --key): {exc}"
            self._finish(reason, ok=False)
            raise RecordError(reason) from exc
        await self.transport.open()
        try:
            await self._login()
            if self._outcome is None:  # a signal during the login already ended it
                if not self._negotiating:
                    self._chose(
                        self.transport.name, f"asked for (--transport {self.transport.name})"
                    )
                self.client.start(time.monotonic())
                self._pump()
                await self._loop()
        finally:
            for task in list(self._tasks):
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)
            await self.transport.close()
        assert self._outcome is not None
        with contextlib.suppress(TapeError):  # a failed tape has already said why
            self.log.lifecycle("stopped", reason=self._outcome.reason)
        return self._outcome

    def stop(self, reason: str) -> None:
        """Ask for a clean stop: /meta/disconnect if connected, then end (signal-safe)."""
        if self._stopping is None:
            self._stopping, self._stop_asked_at = reason, time.monotonic()
            self.client.disconnect(time.monotonic())
            self._pump()

    async def _login(self) -> None:
        """GET the login URL for cookies and the CSRF pair, over the transport: a WebSocket
        one does it over its own HTTP session first, and carries what it learnt to the
        upgrade."""
        if not self.options.login_url:
            return
        try:
            await self.transport.login(self.options.login_url)
        except LoginError as exc:
            self._finish(str(exc), ok=False)
            raise RecordError(str(exc)) from exc

    async def _loop(self) -> None:
        deadline = (
            None if self.options.duration is None else time.monotonic() + self.options.duration
        )
        while self._outcome is None:
            now = time.monotonic()
            if deadline is not None and now >= deadline and self._stopping is None:
                self.stop(f"duration {self.options.duration:g} s reached")
            await self._sleep(now, deadline)
            try:
                self.log.check()
            except TapeError as exc:  # e.g. disk full: stop now, say why
                self._finish(str(exc), ok=False)
                break
            self.client.tick(time.monotonic())
            self._pump(wake=False)
            if self._stopping is not None and time.monotonic() - self._stop_asked_at > 3:
                self._finish(self._stopping, ok=True)  # the server never answered the disconnect

    async def _sleep(self, now: float, deadline: float | None) -> None:
        if self._stopping is not None:  # the deadline has passed: wait for the cut-off instead
            deadline = self._stop_asked_at + 3
        wakes = [t for t in (self.client.next_wakeup(), deadline) if t is not None]
        timeout = max(0.0, min(wakes) - now) if wakes else 1.0
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wake.wait(), min(timeout, 1.0))
        self._wake.clear()

    def _deliver(self, messages: list[Message]) -> None:
        if self._negotiating and any(_handshake_ok(m) for m in messages):
            self._negotiating = False
            task = asyncio.get_running_loop().create_task(self._negotiate(messages))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
            return
        now = time.monotonic()
        if self._lost_at is not None and any(_connect_ok(m) for m in messages):
            self.log.lifecycle("gap", gap_ms=round((now - self._lost_at) * 1000, 3), action="retry")
            self._lost_at = None
        self.client.receive(messages, now)
        self._pump()

    async def _negotiate(self, messages: list[Message]) -> None:
        """The handshake succeeded over long-polling: go on over WebSocket if the server offers
        it and the upgrade works, else stay; then hand the reply on."""
        reply = next(m for m in messages if _handshake_ok(m))
        offered = list(reply.supported_connection_types or ())
        lp = self.transport
        if "websocket" not in offered:
            self._chose(lp.name, f"the server offers {offered}, not websocket")
        else:
            ws = self._new("websocket", lp.handover())
            try:
                await ws.upgrade()
            except Exception as exc:  # UpgradeError; anything else must not end the recording
                why = exc if isinstance(exc, UpgradeError) else describe_error(exc)
                self._chose(lp.name, f"the server offers websocket, but the upgrade failed: {why}")
            else:
                await ws.open()
                self.transport, self.client.connection_type = ws, "websocket"
                self._chose(ws.name, "the server offers websocket and the upgrade succeeded")
        if self._outcome is not None:  # stopped meanwhile
            if self.transport is not lp:
                await lp.close()
            return
        try:
            self._deliver(messages)
        except TapeError:
            return  # the loop stops on it (log.check) and says why
        if self.transport is not lp:
            await lp.close()  # nothing is in flight on it: the handshake was its only request

    def _chose(self, transport: str, reason: str) -> None:
        self.log.lifecycle("transport", chosen=transport, reason=reason)
        self.log.update(transport=transport)
        self.status.transport = transport

    def _failed(
        self, reason: str, http_status: int | None, ids: Collection[str] | None = None
    ) -> None:
        if not self._connected_once and self._stopping is None:
            self._finish(
                _first_failure(self.options.url, reason, http_status, self.options.transport),
                ok=False,
            )
            return
        self.client.request_failed(time.monotonic(), reason, ids=ids)
        self._pump()

    def _pump(self, *, wake: bool = True) -> None:
        """Send what the client wants sent and act on its events; wake the loop to re-plan."""
        for batch in self.client.data_to_send():
            self.transport.send(batch)
        delivered = 0
        per_channel = self.status.messages
        for event in self.client.events_received():
            # The hot path (every message recorded): counted inline, checked once per batch.
            if type(event) is ev.MessagesDelivered:
                per_channel.update([m.channel for m in event.messages])
                delivered += len(event.messages)
                continue
            if delivered:
                self._delivered(delivered)
                delivered = 0
            self._on_event(event)
        if delivered:
            self._delivered(delivered)
        self.status.frames = self.log.frames
        self.status.bytes_in = self.transport.bytes_in
        if wake:
            self._wake.set()

    def _on_event(self, event: ev.Event) -> None:
        handler = _HANDLERS.get(type(event))
        if handler is not None:
            handler(self, event)

    def _finish(self, reason: str, *, ok: bool) -> None:
        if self._outcome is None:
            self._outcome = Outcome(reason, ok)
            self.status.state = "stopped"
        self._wake.set()

    # --- event handlers --------------------------------------------------------------------

    def _handshaken(self, event: ev.HandshakeSucceeded) -> None:
        now = time.monotonic()
        if not self._connected_once:
            self.log.lifecycle(
                "connected", client_id=event.client_id, transport=self.transport.name
            )
        else:
            gap = None if self._lost_at is None else round((now - self._lost_at) * 1000, 3)
            self.log.lifecycle("rehandshake", client_id=event.client_id, gap_ms=gap)
        self._connected_once, self._lost_at = True, None
        self.status.state = "connected"
        self.log.update(client_id=event.client_id)
        refusal = self.replay.refusal() if self.replay else None
        if refusal is not None:
            self.log.lifecycle("replay", supported=False, reason=refusal)
            print(f"warning: --ext replay: {refusal}", file=sys.stderr)

    def _handshake_failed(self, event: ev.HandshakeFailed) -> None:
        if not self._connected_once:
            self._finish(f"the server refused the handshake: {event.error}", ok=False)

    def _delivered(self, count: int) -> None:
        self.status.delivered += count
        self.status.last_event_wall = time.time()
        limit = self.options.max_messages
        if limit is not None and self.status.delivered >= limit:
            self.stop(f"{limit} messages recorded")

    def _lost(self, event: ev.ConnectionLost) -> None:
        if self._lost_at is None:
            self._lost_at = time.monotonic()
            self.log.lifecycle("disconnected", reason=event.reason)
        self.status.reconnects += 1
        self.status.state = "reconnecting"
        self.log.lifecycle("reconnecting", reason=event.reason, attempt=self.status.reconnects)
        if event.timed_out:
            self.transport.reset()  # the socket may be alive, the server behind it stuck

    def _rehandshaking(self, event: ev.Rehandshaking) -> None:
        if self._lost_at is None:
            self._lost_at = time.monotonic()
        self.status.state = "rehandshaking"
        self.log.lifecycle("reconnecting", reason=event.reason, action="handshake")

    def _stopped(self, event: ev.Stopped) -> None:
        asked = self._stopping is not None and event.reason == "disconnected"
        self._finish(self._stopping if asked and self._stopping else event.reason, ok=asked)


_HANDLERS: dict[type, Callable[[Recorder, ev.Event], None]] = {
    ev.HandshakeSucceeded: Recorder._handshaken,  # type: ignore[dict-item]
    ev.HandshakeFailed: Recorder._handshake_failed,  # type: ignore[dict-item]
    ev.ConnectionLost: Recorder._lost,  # type: ignore[dict-item]
    ev.Rehandshaking: Recorder._rehandshaking,  # type: ignore[dict-item]
    ev.Stopped: Recorder._stopped,  # type: ignore[dict-item]
}


def _connect_ok(message: Message) -> bool:
    return message.channel == "/meta/connect" and message.successful is True


def _handshake_ok(message: Message) -> bool:
    return message.channel == "/meta/handshake" and message.successful is True


def _first_failure(url: str, reason: str, http_status: int | None, transport: str = "auto") -> str:
    """The one-line error for a server that never let us in."""
    if UNTRUSTED in reason:
        detail = reason[reason.index(UNTRUSTED) + len(UNTRUSTED) :].strip()
        return (
            f"cannot reach {url}: its TLS certificate is not trusted {detail}; give the CA "
            "that signed it with --cacert FILE (or skip the check with --insecure)"
        )
    if CLIENT_CERT in reason:
        return (
            f"cannot reach {url}: the server refused the TLS connection without a client "
            "certificate it accepts; give one with --cert FILE --key FILE"
        )
    if http_status == 407:
        return (
            f"the proxy on the way to {url} refused its credentials (HTTP 407); check the "
            "user:password in --proxy or HTTPS_PROXY/HTTP_PROXY"
        )
    if http_status in (401, 403):
        return f"{url} refused the credentials (HTTP {http_status}); check --user and the password"
    if transport == "websocket" and http_status is not None:
        return (
            f"{url} refused the WebSocket upgrade ({reason}); --transport websocket is strict: "
            "use --transport long-polling, or auto to fall back to long-polling"
        )
    if http_status is not None or "not Bayeux" in reason:
        return f"{url} does not look like a CometD server: {reason}"
    return f"cannot reach {url}: {reason}"
