"""The HTTP side of reactive replay: every request that is not Bayeux is answered by the
Responder (replay/responder.py), and what the recorded request caused is delivered to the
client's Bayeux session after the recorded delay.

The client's session: the Bayeux clients that handshook with the same `JSESSIONID` cookie as
the REST request (the replayer hands out one when a request has none, as GWS does at login);
when there are none, every client subscribed to the channel.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections import defaultdict
from collections.abc import Callable

import orjson
from aiohttp import web

from replay.events import ClientDisconnected, ClientExpired, Event
from replay.protocol import BayeuxServer
from replay.responder import Incoming, Responder, Served, Unmatched
from replay.server import HasCookies, ReplayServer, read_body

COOKIE = "JSESSIONID"


class ReactiveFront:
    def __init__(
        self,
        server: ReplayServer,
        responder: Responder,
        speed: float = 1.0,
        log: Callable[[str], None] | None = None,
    ) -> None:
        self.server, self.responder, self.speed = server, responder, speed
        self._log = log or (lambda _line: None)
        self.protocol: BayeuxServer = server.protocol
        self.delivered = 0
        self._clients: dict[str, set[str]] = {}  # cookie -> Bayeux clientIds
        self._cookies: dict[str, list[str]] = {}  # clientId -> its cookies, to forget it
        self._timers: dict[int, asyncio.TimerHandle] = {}
        self._next = 0
        server.app.router.add_route("*", "/{tail:.*}", self.handle)

    def handshaken(self, request: HasCookies, client_id: str) -> None:
        cookie = request.cookies.get(COOKIE)
        if cookie:
            self._clients.setdefault(cookie, set()).add(client_id)
            self._cookies.setdefault(client_id, []).append(cookie)

    def on_event(self, event: Event) -> None:
        if isinstance(event, ClientDisconnected | ClientExpired):
            for cookie in self._cookies.pop(event.client_id, ()):
                clients = self._clients.get(cookie)
                if clients is not None:
                    clients.discard(event.client_id)
                    if not clients:
                        del self._clients[cookie]

    def sizes(self) -> dict[str, int]:
        return {"cookies": len(self._clients), "follow_ups": len(self._timers)}

    def close(self) -> None:
        for timer in self._timers.values():
            timer.cancel()
        self._timers.clear()

    async def handle(self, request: web.Request) -> web.Response:
        raw = await read_body(request)
        try:
            body = orjson.loads(raw) if raw else None
        except orjson.JSONDecodeError:
            body = None
        incoming = Incoming(
            request.method, request.path_qs, body if isinstance(body, dict) else None
        )
        result = self.responder.answer(incoming)
        cookie = request.cookies.get(COOKIE)
        shown = f"{request.method} {request.path} ({incoming.operation or 'no operationName'})"
        if isinstance(result, Unmatched):
            self._log(f"REST {shown}: matched nothing, 404; " + "; ".join(result.differences))
            return web.Response(
                body=orjson.dumps(result.as_json(), option=orjson.OPT_INDENT_2),
                status=404,
                content_type="application/json",
            )
        self._schedule(result, cookie)
        recorded = result.exchange
        self._log(
            f"REST {shown}: answered as recorded request {recorded.session_id[:8]}#{recorded.seq}"
            f" (HTTP {recorded.status}), {len(result.follow_ups)} follow-up messages"
        )
        response = web.Response(body=recorded.response, status=recorded.status)
        for name, value in recorded.headers:
            response.headers.add(name, value)
        if cookie is None:
            response.set_cookie(COOKIE, secrets.token_hex(16), path="/", httponly=True)
        return response

    def _schedule(self, served: Served, cookie: str | None) -> None:
        by_delay: dict[float, list[tuple[str, bytes]]] = defaultdict(list)
        for delay, channel, data in served.follow_ups:
            by_delay[delay].append((channel, data))
        loop = asyncio.get_running_loop()
        for delay, messages in by_delay.items():
            wait = delay / self.speed if self.speed > 0 else 0.0
            self._next += 1
            self._timers[self._next] = loop.call_later(
                max(wait, 0.0), self._fire, self._next, messages, cookie
            )

    def _fire(self, key: int, messages: list[tuple[str, bytes]], cookie: str | None) -> None:
        self._timers.pop(key, None)
        self._deliver(messages, cookie)

    def _deliver(self, messages: list[tuple[str, bytes]], cookie: str | None) -> None:
        protocol = self.protocol
        mine = [c for c in self._clients.get(cookie or "", ()) if protocol.has_client(c)]
        now = time.monotonic()
        for channel, data in messages:
            message = {"channel": channel, "data": orjson.Fragment(data)}
            if not mine:  # no session of its own: every client subscribed to the channel
                self.delivered += protocol.publish_message(message, now)
            for client_id in mine:
                self.delivered += protocol.deliver_to(client_id, message, now, subscribed_only=True)
        self.server.pump()
