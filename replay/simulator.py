"""A GWS simulator: the Outbound API answered, and acknowledged over Bayeux after a sampled
delay, on the replayer's own server and protocol, fed by a synthetic source instead of a tape.

- Auth as GWS: HTTP basic, or the `JSESSIONID` cookie it sets; every GET answers with the CSRF
  pair (`X-CSRF-HEADER: X-CSRF-TOKEN`, `X-CSRF-TOKEN: <token>`), which every POST must send back
  (403 otherwise), the Bayeux long-polling POSTs included. `GET /api/v2/me` logs in.
- `POST /api/v2/me/outbound-records/<handle>` with operationName DoNotCallRecord,
  CompleteRecord, RescheduleRecord, RejectRecord or UpdateRecord, and
  `POST /api/v2/me/outbound-campaigns/<campaign>` with GetPreviewRecord, answer
  `{"statusCode":0}`. After a delay drawn from a lognormal (given median and p99, seeded) the ack
  (`/v2/me/outbound`, the request's referenceId) and its `DeviceUserEventMessage`
  (`/me/internal`, eventProcessing metrics with serverProcessingTimeTotalMs = the delay) go out
  in ONE batch to the Bayeux clients that handshook with the same JSESSIONID and subscribed to
  each channel; when that session has no Bayeux client, to every subscribed client.
- `error_rate` of requests get `{"statusCode":1,...}` and no ack; `missing_ack_rate` get
  `{"statusCode":0}` and no ack. An unknown operationName gets HTTP 400 with a GWS-style body.
- As GWS, it alone publishes on its service channels: a client's publish on `/v2/me/**` or
  `/me/**` is refused (`403::Publish denied`). A web session unused for `session_timeout_s`
  with no Bayeux client left expires, as a servlet session does.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import math
import random
import secrets
import time
from collections import deque
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiohttp import web

from replay.events import ClientDisconnected, ClientExpired, Event
from replay.protocol import BayeuxServer
from replay.server import DEFAULT_PATHS, HasCookies, ReplayServer, read_body
from tape.gws import EXPECTED_ACK, PREVIEW_OPERATION, RECORD_ACKS

ACKS = RECORD_ACKS  # operationName -> its ack, for outbound-records
PREVIEW = (PREVIEW_OPERATION, EXPECTED_ACK[PREVIEW_OPERATION])  # for outbound-campaigns
Z99 = 2.3263478740408408  # the standard normal's 99th percentile
CSRF_HEADER = "X-CSRF-TOKEN"
OUTBOUND, INTERNAL = "/v2/me/outbound", "/me/internal"
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
SERVICE_CHANNELS = ("/v2/me/**", "/me/**")  # GWS publishes there; its clients may not
ECHOED = (
    "operationName",
    "referenceId",
    "callingList",
    "applicationId",
    "campaignName",
    "phoneNumber",
)


@dataclass(frozen=True, slots=True)
class SimulatorOptions:
    median_ms: float = 20.0
    p99_ms: float = 80.0
    seed: int | None = None
    error_rate: float = 0.0
    missing_ack_rate: float = 0.0
    users: Mapping[str, str] = field(default_factory=lambda: {"agent": "agent"})
    device_id: str = "f32a46c4-8a48-4067-9965-537fc9788790"
    session_timeout_s: float = 1800.0  # a servlet container's default

    def __post_init__(self) -> None:
        if not 0 < self.median_ms <= self.p99_ms:
            raise ValueError("need 0 < median <= p99")
        if not self.session_timeout_s > 0:
            raise ValueError("session_timeout_s must be positive")
        for name in ("error_rate", "missing_ack_rate"):
            if not 0 <= getattr(self, name) <= 1:
                raise ValueError(f"{name} must be within 0..1")


class LatencyModel:
    """Lognormal with the given median and 99th percentile: mu = ln(median),
    sigma = (ln(p99) - ln(median)) / z(0.99)."""

    def __init__(self, median_ms: float, p99_ms: float, rng: random.Random) -> None:
        self.mu = math.log(median_ms)
        self.sigma = (math.log(p99_ms) - self.mu) / Z99
        self._rng = rng

    def sample_ms(self) -> float:
        return self._rng.lognormvariate(self.mu, self.sigma)


@dataclass
class _WebSession:
    user: str
    csrf: str
    last_used: float  # monotonic
    clients: set[str] = field(default_factory=set)


SESSION = web.RequestKey("gws_session", _WebSession)


@dataclass
class SimulatorStats:
    requests: int = 0
    acked: int = 0
    refused: int = 0
    unacked: int = 0
    rejected: int = 0  # 400/401/403
    delays_ms: deque[float] = field(default_factory=lambda: deque(maxlen=10_000))  # the last


class Simulator:
    def __init__(self, options: SimulatorOptions | None = None) -> None:
        self.options = options or SimulatorOptions()
        self._rng = random.Random(self.options.seed)
        self.latency = LatencyModel(self.options.median_ms, self.options.p99_ms, self._rng)
        self.protocol = BayeuxServer(
            unknown_client_error="402::Unknown client", publish_denied=SERVICE_CHANNELS
        )
        self.server = ReplayServer(
            self.protocol, listener=self._on_event, on_handshake=self._handshaken
        )
        self.stats = SimulatorStats()
        self._sessions: dict[str, _WebSession] = {}
        self._session_of: dict[str, _WebSession] = {}  # Bayeux clientId -> its web session
        self._sweeper: asyncio.TimerHandle | None = None
        self._next_handle = 1000
        self._timers: dict[int, asyncio.TimerHandle] = {}
        app = self.server.app
        app.middlewares.append(self._auth)
        app.router.add_get("/api/v2/me", self._me)
        app.router.add_post("/api/v2/me/outbound-records/{handle}", self._record)
        app.router.add_post("/api/v2/me/outbound-campaigns/{campaign}", self._campaign)

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> None:
        await self.server.start(host, port)
        self._sweep()

    async def stop(self) -> None:
        for timer in self._timers.values():
            timer.cancel()
        self._timers.clear()
        if self._sweeper is not None:
            self._sweeper.cancel()
        await self.server.stop()

    def sizes(self) -> dict[str, int]:
        """What it holds now, for logs and for tests that it is freed."""
        mine = {"web_sessions": len(self._sessions), "acks_pending": len(self._timers)}
        return self.server.sizes() | mine

    def _sweep(self) -> None:
        """Expire web sessions idle for session_timeout_s with no Bayeux client left."""
        timeout = self.options.session_timeout_s
        cutoff = time.monotonic() - timeout
        for key, session in list(self._sessions.items()):
            if session.last_used < cutoff and not session.clients:
                del self._sessions[key]
        loop = asyncio.get_running_loop()
        self._sweeper = loop.call_later(min(60.0, timeout / 2), self._sweep)

    def _on_event(self, event: Event) -> None:
        if isinstance(event, ClientDisconnected | ClientExpired):
            session = self._session_of.pop(event.client_id, None)
            if session is not None:
                session.clients.discard(event.client_id)
                session.last_used = time.monotonic()

    @property
    def origin(self) -> str:
        """http://host:port"""
        return self.server.url("/").rstrip("/")

    def url(self, path: str = DEFAULT_PATHS[0]) -> str:
        return self.server.url(path)

    # --- auth -------------------------------------------------------------------------------

    @web.middleware
    async def _auth(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        session_id = request.cookies.get("JSESSIONID")
        session = self._sessions.get(session_id) if session_id else None
        fresh = None
        if session is None:
            user = self._basic_user(request)
            if user is None:
                self.stats.rejected += 1
                return _gws_error(401, 4, "Unauthorized", {"WWW-Authenticate": 'Basic realm="GWS"'})
            fresh = secrets.token_hex(16)
            session = _WebSession(user, secrets.token_hex(16), time.monotonic())
            self._sessions[fresh] = session
        else:
            session.last_used = time.monotonic()
        if request.method == "POST" and request.headers.get(CSRF_HEADER) != session.csrf:
            self.stats.rejected += 1
            return _gws_error(403, 4, "Invalid or missing CSRF token: GET first, then send "
                              f"the {CSRF_HEADER} header it returns")  # fmt: skip
        request[SESSION] = session
        response = await handler(request)
        if fresh is not None:
            response.set_cookie("JSESSIONID", fresh, path="/", httponly=True)
        if request.method == "GET" and not response.prepared:
            response.headers["X-CSRF-HEADER"] = CSRF_HEADER
            response.headers[CSRF_HEADER] = session.csrf
        return response

    def _basic_user(self, request: web.Request) -> str | None:
        header = request.headers.get("Authorization", "")
        if not header.startswith("Basic "):
            return None
        try:
            user, _, password = base64.b64decode(header[6:]).decode().partition(":")
        except (binascii.Error, ValueError):  # ValueError: non-ASCII; covers UnicodeDecodeError
            return None
        return user if self.options.users.get(user) == password else None

    def _handshaken(self, request: HasCookies, client_id: str) -> None:
        session = self._sessions.get(request.cookies.get("JSESSIONID", ""))
        if session is not None:
            session.clients.add(client_id)
            self._session_of[client_id] = session

    # --- the Outbound API ---------------------------------------------------------------------

    async def _me(self, request: web.Request) -> web.Response:
        session: _WebSession = request[SESSION]
        return _json({"statusCode": 0, "user": {"userName": session.user, "id": session.user}})

    async def _record(self, request: web.Request) -> web.Response:
        body = await _body(request)
        if isinstance(body, str):
            return self._bad(body)
        operation = body.get("operationName")
        if operation not in ACKS:
            return self._bad(
                f"Unsupported operationName {operation!r} for outbound-records; expected one of "
                + ", ".join(ACKS)
            )
        handle = _handle(request.match_info["handle"])
        return self._answer(request, body, str(operation), ACKS[str(operation)], handle)

    async def _campaign(self, request: web.Request) -> web.Response:
        body = await _body(request)
        if isinstance(body, str):
            return self._bad(body)
        if body.get("operationName") != PREVIEW[0]:
            return self._bad(
                f"Unsupported operationName {body.get('operationName')!r} for "
                f"outbound-campaigns; expected {PREVIEW[0]}"
            )
        body.setdefault("campaignName", request.match_info["campaign"])
        self._next_handle += 1
        return self._answer(request, body, PREVIEW[0], PREVIEW[1], self._next_handle)

    def _answer(
        self, request: web.Request, body: dict[str, Any], operation: str, ack: str, handle: Any
    ) -> web.Response:
        self.stats.requests += 1
        draw = self._rng.random()
        if draw < self.options.error_rate:
            self.stats.refused += 1
            return _json({"statusCode": 1, "statusMessage": f"{operation} failed (simulated)"})
        if draw < self.options.error_rate + self.options.missing_ack_rate:
            self.stats.unacked += 1
            return _json({"statusCode": 0})
        delay_ms = self.latency.sample_ms()
        self.stats.delays_ms.append(delay_ms)
        session: _WebSession = request[SESSION]
        key = self.stats.requests
        self._timers[key] = asyncio.get_running_loop().call_later(
            delay_ms / 1000, self._publish, key, session, body, ack, handle, delay_ms
        )
        return _json({"statusCode": 0})

    def _publish(
        self,
        key: int,
        session: _WebSession,
        body: dict[str, Any],
        ack: str,
        handle: Any,
        delay_ms: float,
    ) -> None:
        """The ack and its metrics, in one batch. serverProcessingTimeTotalMs is the sampled
        delay (what the simulated server spent), whole ms as GWS reports it."""
        self._timers.pop(key, None)
        now = time.time()
        server_ms = round(delay_ms)
        record = {
            "devicePath": f"/devices/{self.options.device_id}",
            "callingList": body.get("callingList", "CallingList1"),
            "applicationId": body.get("applicationId", 134),
            "recordHandle": handle,
            "campaignName": body.get("campaignName", "Campaign1"),
        }
        outbound: dict[str, Any] = {
            "channel": OUTBOUND,
            "data": {
                "record": record,
                "notificationType": ack,
                "messageType": "OutboundRecordMessage",
                "referenceId": body.get("referenceId"),
            },
        }
        internal: dict[str, Any] = {
            "channel": INTERNAL,
            "data": {
                "metrics": {
                    "eventProcessing": {
                        "serverGenerationTimestamp": int(now * 1000),
                        "nodeProcessingTimeNanos": int(delay_ms * 870_000),
                        "serverProcessingTimeTotalMs": server_ms,
                    }
                },
                "userData": {
                    "GSW_APPLICATION_ID": record["applicationId"],
                    "GSW_RECORD_HANDLE": handle,
                    "GSW_USER_EVENT": ack,
                    "GSW_CALLING_LIST": record["callingList"],
                    "GSW_CAMPAIGN_NAME": record["campaignName"],
                    "GSW_PHONE": body.get("phoneNumber", "3001"),
                },
                "deviceId": self.options.device_id,
                "messageType": "DeviceUserEventMessage",
            },
        }
        now_mono = time.monotonic()
        if session.clients:
            for client_id in session.clients:
                for message in (outbound, internal):
                    self.protocol.deliver_to(client_id, message, now_mono, subscribed_only=True)
        else:
            for message in (outbound, internal):
                self.protocol.publish_message(message, now_mono)
        self.stats.acked += 1
        self.server.pump()

    def _bad(self, text: str) -> web.Response:
        self.stats.rejected += 1
        return _gws_error(400, 2, text)


def _handle(text: str) -> int | str:
    """A numeric handle as a number, as GWS sends it, when JSON can carry it (int64)."""
    if text.isascii() and text.isdecimal() and len(text) < 19:
        return int(text)
    return text


async def _body(request: web.Request) -> dict[str, Any] | str:
    """The request's JSON object, or why it is refused. The fields an ack echoes must be
    strings, numbers, booleans or null: anything else could not be sent back in it."""
    try:
        body = orjson.loads(await read_body(request))
    except orjson.JSONDecodeError:
        return "the body must be a JSON object"
    if not isinstance(body, dict):
        return "the body must be a JSON object"
    for name in ECHOED:
        if isinstance(body.get(name), dict | list):
            return f"{name} must be a string or a number"
    return body


def _json(body: Any, status: int = 200, headers: Mapping[str, str] | None = None) -> web.Response:
    return web.Response(
        body=orjson.dumps(body), status=status, content_type="application/json", headers=headers
    )


def _gws_error(
    status: int, code: int, text: str, headers: Mapping[str, str] | None = None
) -> web.Response:
    return _json({"statusCode": code, "statusMessage": text}, status, headers)
