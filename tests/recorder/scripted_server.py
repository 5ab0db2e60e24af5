"""A small scripted Bayeux server (aiohttp) for recorder tests that need a server to misbehave
on cue: GWS-style auth and CSRF, bad bodies, HTTP errors, reconnect advice. It is test scaffolding
for error paths; interop is tested against Faye, a real third-party server."""

from __future__ import annotations

import base64
import secrets
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiohttp import WSMsgType, web

ADVICE = {"reconnect": "retry", "interval": 0, "timeout": 2000}


@dataclass
class Script:
    """What the server does. `connect_replies` are served, in order, to /meta/connect."""

    user: str | None = None
    password: str | None = None
    csrf_token: str = field(default_factory=lambda: secrets.token_hex(8))
    cookie: str = field(default_factory=lambda: secrets.token_hex(8))
    connect_replies: deque[Any] = field(default_factory=deque)
    seen_headers: list[dict[str, str]] = field(default_factory=list)
    clients: int = 0
    # what the handshake reply offers, and the HTTP status a WebSocket upgrade is refused
    # with (None: accepted)
    connection_types: list[str] = field(default_factory=lambda: ["long-polling", "websocket"])
    refuse_upgrade: int | None = None
    upgrade_headers: list[dict[str, str]] = field(default_factory=list)


def _reply(message: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"channel": message["channel"], "id": message.get("id"), "successful": True, **extra}


class ScriptedServer:
    def __init__(self, script: Script) -> None:
        self.script = script
        self.app = web.Application()
        self.app.router.add_get("/api/v2/me", self.me)
        self.app.router.add_post("/cometd", self.long_poll)
        self.app.router.add_get("/cometd", self.websocket)
        self.runner = web.AppRunner(self.app)
        self.port = 0

    async def start(self) -> None:
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]

    async def stop(self) -> None:
        await self.runner.cleanup()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/cometd"

    def _authorized(self, request: web.Request) -> bool:
        if self.script.user is None:
            return True
        expected = base64.b64encode(f"{self.script.user}:{self.script.password}".encode()).decode()
        return request.headers.get("Authorization") == f"Basic {expected}"

    async def me(self, request: web.Request) -> web.Response:
        if not self._authorized(request):
            return web.json_response({"statusCode": 2}, status=401)
        response = web.json_response({"statusCode": 0, "user": {"userName": self.script.user}})
        response.headers["X-CSRF-HEADER"] = "X-CSRF-TOKEN"
        response.headers["X-CSRF-TOKEN"] = self.script.csrf_token
        response.set_cookie("JSESSIONID", self.script.cookie)
        return response

    async def long_poll(self, request: web.Request) -> web.StreamResponse:
        self.script.seen_headers.append(dict(request.headers))
        if self.script.user is not None:
            if (
                not self._authorized(request)
                or request.cookies.get("JSESSIONID") != self.script.cookie
            ):
                return web.json_response({"statusCode": 2}, status=401)
            if request.headers.get("X-CSRF-TOKEN") != self.script.csrf_token:
                return web.json_response({"statusCode": 2}, status=403)
        replies: list[Any] = []
        for message in orjson.loads(await request.read()):
            scripted = self.answer(message, replies)
            if scripted is not None:
                return scripted
        response = web.Response(body=orjson.dumps(replies), content_type="application/json")
        response.set_cookie("BAYEUX_BROWSER", "b-" + self.script.cookie)  # as CometD's server
        return response

    def answer(self, message: dict[str, Any], replies: list[Any]) -> web.Response | None:
        channel = message["channel"]
        if channel == "/meta/handshake":
            self.script.clients += 1
            replies.append(
                _reply(
                    message,
                    clientId=f"c{self.script.clients}",
                    version="1.0",
                    supportedConnectionTypes=self.script.connection_types,
                    advice=ADVICE,
                )
            )
        elif channel == "/meta/connect" and self.script.connect_replies:
            return _scripted(self.script.connect_replies.popleft(), message)
        elif channel in ("/meta/subscribe", "/meta/unsubscribe"):
            replies.append(_reply(message, subscription=message["subscription"]))
        else:
            replies.append(
                _reply(message, advice=ADVICE) if channel == "/meta/connect" else _reply(message)
            )
        return None

    async def websocket(self, request: web.Request) -> web.StreamResponse:
        self.script.upgrade_headers.append(dict(request.headers))
        if self.script.refuse_upgrade is not None:
            return web.Response(status=self.script.refuse_upgrade, text="no WebSocket here")
        ws = web.WebSocketResponse(max_msg_size=0)
        await ws.prepare(request)
        async for frame in ws:
            if frame.type != WSMsgType.TEXT:
                continue
            replies: list[Any] = []
            for message in orjson.loads(frame.data):
                scripted = self.answer(message, replies)
                if scripted is not None and await _send_ws(ws, scripted):
                    replies.append(_reply(message, advice=ADVICE))  # a binary frame is extra
            if replies:
                await ws.send_str(orjson.dumps(replies).decode())
        return ws


HOLD = "hold"  # a connect_replies item: over WebSocket, never answer that connect


def _scripted(item: Any, message: dict[str, Any]) -> web.Response:
    """An item is (status, body bytes); a dict, sent as the connect reply (with the request's
    id); a list of messages to which a successful connect reply is added; or HOLD."""
    if item == HOLD:
        return web.Response(body=b"HOLD")
    if isinstance(item, dict):
        reply = {**item, "channel": message["channel"], "id": message.get("id")}
        return web.Response(body=orjson.dumps([reply]), content_type="application/json")
    if isinstance(item, tuple):
        status, body = item
        return web.Response(status=status, body=body, content_type="application/json")
    body = orjson.dumps([*item, _reply(message, advice=ADVICE)])
    return web.Response(body=body, content_type="application/json")


async def _send_ws(ws: web.WebSocketResponse, response: web.Response) -> bool:
    """Send a scripted body; True when it was a binary frame (the reply is still owed)."""
    body = response.body
    assert isinstance(body, bytes)
    if body == b"HOLD":
        return False  # no answer at all: the socket stays up, the connect goes unanswered
    if body.startswith(b"BINARY:"):
        await ws.send_bytes(body[len(b"BINARY:") :])
        return True
    await ws.send_str(body.decode("utf-8", "replace"))
    return False
