"""The hostile client of the fuzz test (test_fuzz.py): a `Barrage` sends the drawn hostile
requests (fuzz_requests.py), a few at a time, over long-polling POSTs and WebSockets, and records
what became of each; `trickle` sends a request head one byte at a time."""

from __future__ import annotations

import asyncio
import contextlib
import io
import itertools
import time
from collections import deque
from dataclasses import dataclass

import aiohttp
from aiohttp import WSMsgType

from tests.agent import basic
from tests.constants import TIMEOUT
from tests.replay.fuzz_clients import Target, handshake, logged_in, subscribe
from tests.replay.fuzz_requests import Hostile
from tests.replay.fuzz_strategies import CID, SESSIONS

LOAD_BUDGET = 1.5 * TIMEOUT  # the hostile load must be through by then
GIVE_UP = 0.15 * TIMEOUT  # a hostile request unanswered this long (plus 0.5 s a MB) is dropped
WS_WAIT = 0.03 * TIMEOUT  # how long a hostile WebSocket waits for a reply to each frame
POSTERS, SOCKETS = 10, 4  # hostile requests in flight over HTTP, and WebSockets open
TRICKLE_EVERY = 0.1  # a slow-header connection sends one byte this often
SLOW_HEADS = (
    b"POST /cometd HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ",
    b"GET /api/v2/notifications HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
    b"Connection: Upgrade\r\nX-Slow: ",
    b"POST /cometd HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 1000000\r\n\r\n[",  # body
    b"GET /",  # the request line itself
)
REFUSED = frozenset({401, 403, 408, 413, 414, 431})  # no credentials: refused (or too big)


def refused(target: Target, request: Hostile) -> bool:
    """Whether the simulator must refuse it: no valid login, or (a POST) no CSRF token."""
    no_csrf_is_fine = request.via != "post" and request.auth == "no-csrf"
    return target.gws and request.auth != "session" and not no_csrf_is_fine


@dataclass
class Outcome:
    """What became of one hostile request."""

    request: Hostile
    started: float
    ended: float = float("inf")  # while in flight
    status: int | None = None  # HTTP status of the POST or GET, or of the WebSocket upgrade
    close: str = ""  # how the server closed the WebSocket right after this frame, if it did
    dropped: bool = False  # ... without a close frame
    after: Hostile | None = None  # the frame sent before this one on the same WebSocket
    note: str = ""  # given up on: no answer in time


class Barrage:
    """Sends the hostile requests: POSTERS at a time over HTTP, and over SOCKETS WebSockets,
    each frame waiting WS_WAIT for a reply; records an Outcome for each."""

    def __init__(self, target: Target, requests: list[Hostile]) -> None:
        self.target, self.requests = target, requests
        self.outcomes: list[Outcome] = []
        self.client_ids: list[str] = []
        self.csrf: dict[str, str] = {}
        self.finished = False
        self._stack = contextlib.AsyncExitStack()
        self._https: dict[str, aiohttp.ClientSession] = {}

    async def __aenter__(self) -> Barrage:
        http, self.csrf = await logged_in(self.target, self._stack)
        self._https = {"session": http, "no-csrf": http}
        for auth, headers in (
            ("none", {}),
            ("bad-password", basic("agent", "nope")),
            ("bad-cookie", {"Cookie": "JSESSIONID=0123456789abcdef"}),
        ):
            anonymous = aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar(), headers=headers)
            self._https[auth] = await self._stack.enter_async_context(anonymous)
        url = self.target.url("/cometd")
        for _ in range(SESSIONS):  # live sessions, for the messages that name a real clientId
            async with http.post(url, data=handshake("long-polling"), headers=self.csrf) as r:
                client_id = (await r.json(content_type=None))[0]["clientId"]
            async with http.post(url, data=subscribe(client_id), headers=self.csrf) as r:
                await r.read()
            self.client_ids.append(client_id)
        return self

    async def __aexit__(self, *_: object) -> None:
        await self._stack.aclose()

    async def run(self) -> None:
        over_http = deque(r for r in self.requests if r.via in ("post", "upgrade"))
        frames = deque(r for r in self.requests if r.via not in ("post", "upgrade"))
        workers = [self._http(over_http) for _ in range(POSTERS)]
        workers += [self._websocket(frames) for _ in range(SOCKETS)]
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(LOAD_BUDGET):
                await asyncio.gather(*workers)
                self.finished = True

    def _start(self, request: Hostile) -> Outcome:
        outcome = Outcome(request, time.monotonic())
        self.outcomes.append(outcome)
        return outcome

    def _body(self, request: Hostile) -> bytes:
        body = request.body
        if b"@@cid" in body:
            for i, client_id in enumerate(self.client_ids):
                body = body.replace(CID.format(i).encode(), client_id.encode())
        return body

    def _headers(self, request: Hostile) -> dict[str, str]:
        return dict(request.headers) | (self.csrf if request.auth == "session" else {})

    async def _http(self, queue: deque[Hostile]) -> None:
        while queue:
            request = queue.popleft()
            outcome = self._start(request)
            http, url = self._https[request.auth], self.target.url(request.path)
            headers, limit = self._headers(request), GIVE_UP + len(request.body) / 2**21
            try:
                async with asyncio.timeout(limit):
                    if request.via == "upgrade":
                        sending = http.get(url, headers=headers)
                    else:  # aiohttp warns of large bytes bodies: it wants a stream
                        body, big = self._body(request), len(request.body) > 2**20
                        data = io.BytesIO(body) if big else body
                        sending = http.post(url, data=data, headers=headers)
                    async with sending as response:
                        outcome.status = response.status
                        await response.read()
            except TimeoutError:
                outcome.note = f"no answer within {limit:.1f} s"
            except aiohttp.ClientError as exc:
                outcome.note = f"no answer: {exc!r}"
            outcome.ended = time.monotonic()

    async def _websocket(self, queue: deque[Hostile]) -> None:
        ws: aiohttp.ClientWebSocketResponse | None = None
        before: Hostile | None = None
        try:
            while queue:
                request = queue.popleft()
                if refused(self.target, request):
                    await self._open(request)  # records how it was refused
                    continue
                if ws is None:
                    ws, before = await self._open(request), None
                    if ws is None:
                        continue
                outcome = await self._frame(ws, request, before)
                before = request
                if outcome.close:
                    await ws.close()
                    ws = None
        finally:
            if ws is not None:
                await ws.close()

    async def _open(self, request: Hostile) -> aiohttp.ClientWebSocketResponse | None:
        """A WebSocket on the request's path; None (and an Outcome saying why) if refused."""
        outcome = Outcome(request, time.monotonic())
        url = self.target.url(request.path, "ws")
        try:
            async with asyncio.timeout(GIVE_UP):
                ws = await self._https[request.auth].ws_connect(url, max_msg_size=0, heartbeat=None)
        except aiohttp.WSServerHandshakeError as exc:
            outcome.status = exc.status
        except (TimeoutError, aiohttp.ClientError) as exc:
            outcome.note = f"upgrade failed: {exc!r}"
        else:
            if not refused(self.target, request):
                return ws
            outcome.status = 101  # upgraded without credentials
            await ws.close()
        outcome.ended = time.monotonic()
        self.outcomes.append(outcome)
        return None

    async def _frame(
        self, ws: aiohttp.ClientWebSocketResponse, request: Hostile, before: Hostile | None
    ) -> Outcome:
        outcome = self._start(request)
        outcome.after = before
        body, sent = self._body(request), True
        try:
            async with asyncio.timeout(GIVE_UP + len(body) / 2**21):
                try:
                    await _send(ws, request, body)
                except (ConnectionError, aiohttp.ClientError):
                    sent = False  # the server dropped it already: see how, below
                message = await ws.receive(timeout=WS_WAIT)
        except TimeoutError:
            pass  # no reply: a held connect, an empty batch, a ping
        else:
            if message.type is WSMsgType.CLOSE:
                outcome.close = f"closed with code {message.data}"
            elif message.type not in (WSMsgType.TEXT, WSMsgType.BINARY):
                outcome.dropped = True
                when = "right after" if sent else "before this could be sent"
                outcome.close = f"dropped without a close frame ({message.type.name}) {when}"
        outcome.ended = time.monotonic()
        return outcome


async def _send(ws: aiohttp.ClientWebSocketResponse, request: Hostile, body: bytes) -> None:
    if request.via == "binary":
        await ws.send_bytes(body)
        return
    try:
        text = body.decode() if request.via == "text" else None
    except UnicodeDecodeError:
        text = None
    if text is not None:
        await ws.send_str(text)
    else:  # invalid UTF-8 in a text frame, or a frame that breaks the protocol
        opcode = request.opcode if request.via == "frame" else WSMsgType.TEXT
        await ws._writer.send_frame(body, opcode)


async def trickle(port: int, head: bytes, notes: list[str]) -> None:
    """A request head (or body) sent one byte every TRICKLE_EVERY, then filler, until cancelled."""
    _, writer = await asyncio.open_connection("127.0.0.1", port)
    started = time.monotonic()
    try:
        for byte in itertools.chain(head, itertools.repeat(ord("a"))):
            writer.write(bytes([byte]))
            await writer.drain()
            await asyncio.sleep(TRICKLE_EVERY)
    except ConnectionError as exc:
        notes.append(f"{head[:20]!r}... cut off after {time.monotonic() - started:.1f} s ({exc!r})")
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()
