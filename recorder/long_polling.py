"""Long-polling transport (aiohttp): each batch is an HTTP POST of a JSON array.

/meta/connect travels on its own request, which the server holds until events arrive or the
advice timeout passes; other batches go in parallel (Bayeux 1.0, "long-polling"). Every request
and response body is logged to the tape with its HTTP fields and an exchange id.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Callable, Collection

import aiohttp
import orjson
from yarl import URL

from recorder.auth import Credentials, Csrf, Handover, LoginError, session_headers
from recorder.events import Outgoing
from recorder.net import NetOptions, describe_error
from recorder.wire import log_received, read_body, stored_headers
from tape.bayeux import Message
from tape.schema import TapeError
from tape.session import SessionLog

Deliver = Callable[[list[Message]], None]
# reason, HTTP status, the ids of the failed request's messages (None: all in flight)
Fail = Callable[[str, int | None, Collection[str] | None], None]

NETWORK_DELAY_S = 10.0  # on top of the advice timeout, as CometD's maxNetworkDelay


__all__ = ["NETWORK_DELAY_S", "LoginError", "LongPollingTransport"]


class LongPollingTransport:
    name = "long-polling"

    def __init__(
        self,
        url: str,
        log: SessionLog,
        deliver: Deliver,
        fail: Fail,
        *,
        credentials: Credentials,
        net: NetOptions | None = None,
        url_suffix: bool = False,
        connect_timeout_ms: Callable[[], int | None] = lambda: None,
    ) -> None:
        self.url = url.rstrip("/")
        self._log, self._deliver, self._fail = log, deliver, fail
        self._credentials = credentials
        self._net = net or NetOptions()
        self.csrf = Csrf()
        self._suffix = url_suffix
        self._connect_timeout_ms = connect_timeout_ms
        self._exchanges = itertools.count(1)
        self._tasks: set[asyncio.Task[None]] = set()
        self._session: aiohttp.ClientSession | None = None
        self.bytes_in = 0

    async def open(self) -> None:
        jar = aiohttp.CookieJar(unsafe=True)  # unsafe: keep cookies for IP-address hosts too
        jar.update_cookies(self._credentials.cookies, URL(self.url))
        net = self._net
        tls = self.url.startswith("https:") or net.insecure or bool(net.cacert or net.cert)
        # TLS and the proxy for every request, the login's included. trust_env: the proxy from
        # HTTPS_PROXY/HTTP_PROXY/NO_PROXY (aiohttp tunnels https through it with CONNECT).
        # Redirects are followed (aiohttp's default, up to 10), with the cookies kept in `jar`;
        # a POST answered 307 or 308 is sent again, body and all, to the new location.
        self._session = aiohttp.ClientSession(
            cookie_jar=jar,
            headers=session_headers(self._credentials),
            # The TLS context (the system's CAs: ~90 ms to load) only where TLS is used.
            connector=aiohttp.TCPConnector(limit=8, ssl=net.ssl_context() if tls else True),
            trust_env=net.trust_env,
            proxy=net.proxy_url,
        )

    def cookies(self) -> dict[str, str]:
        """The cookies the server set so far (and the user's), as a WebSocket upgrade to the
        same URL should carry them: a server may bind the session to one (BAYEUX_BROWSER)."""
        if self._session is None:
            return dict(self._credentials.cookies)
        found = self._session.cookie_jar.filter_cookies(URL(self.url))
        return {name: morsel.value for name, morsel in found.items()}

    def handover(self) -> Handover:
        """The cookies and the CSRF pair, for a WebSocket that takes the session over."""
        return Handover(self.cookies(), self.csrf.headers())

    def reset(self) -> None:
        """Nothing to drop: every request has its own timeout (advice timeout + network delay)."""

    async def upgrade(self) -> None:
        """Nothing to open ahead: each batch is its own request."""

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._session is not None:
            await self._session.close()

    async def login(self, login_url: str) -> None:
        """GET the login URL as GWS expects: learn the CSRF pair and the session cookies."""
        assert self._session is not None
        exchange = self._exchange()
        self._log.append(
            "out",
            b"",
            kind="http-request",
            exchange_id=exchange,
            http_method="GET",
            http_path=URL(login_url).path_qs,
            transport="http",
        )
        try:
            async with self._session.get(login_url) as response:
                body = await response.read()
                self.csrf.learn(response.headers)
                self._log.append(
                    "in",
                    body,
                    kind="http-response",
                    exchange_id=exchange,
                    http_status=response.status,
                    transport="http",
                    headers=stored_headers(response.headers, self.csrf.secret_names()),
                )
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise LoginError(f"cannot reach {login_url}: {_describe(exc)}") from exc
        if response.status in (401, 403):
            raise LoginError(f"{login_url} refused the credentials (HTTP {response.status})")
        if response.status >= 400:
            raise LoginError(f"{login_url} answered HTTP {response.status}")

    def send(self, batch: Outgoing) -> None:
        task = asyncio.get_running_loop().create_task(self._post(batch))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _exchange(self) -> str:
        return f"x{next(self._exchanges)}"

    def _timeout(self, batch: Outgoing) -> float:
        advice = self._connect_timeout_ms() if batch.kind == "connect" else None
        return (advice or 0) / 1000 + NETWORK_DELAY_S

    async def _post(self, batch: Outgoing) -> None:
        try:
            await self._post_logged(batch)
        except TapeError:
            # The tape can take no more frames: the recorder's loop stops on it (log.check)
            # and says why, once. Raised here, it would end this task with a traceback.
            return

    async def _post_logged(self, batch: Outgoing) -> None:
        assert self._session is not None
        body = orjson.dumps(list(batch.messages))
        url = f"{self.url}/{batch.kind}" if self._suffix else self.url
        exchange = self._exchange()
        headers = self.csrf.headers()
        self._log.append(
            "out",
            body,
            exchange_id=exchange,
            http_method="POST",
            http_path=URL(url).path_qs,
            transport=self.name,
            checked=True,
            headers=stored_headers(headers.items(), self.csrf.secret_names()),
        )
        try:
            await self._exchange_body(url, body, headers, exchange, batch)
        except (aiohttp.ClientError, TimeoutError) as exc:
            self._fail(f"{batch.kind} request failed: {_describe(exc)}", None, _ids(batch))

    async def _exchange_body(
        self, url: str, body: bytes, headers: dict[str, str], exchange: str, batch: Outgoing
    ) -> None:
        assert self._session is not None
        timeout = aiohttp.ClientTimeout(total=self._timeout(batch))
        async with self._session.post(url, data=body, headers=headers, timeout=timeout) as resp:
            raw = await read_body(resp.content)
            self.csrf.learn(resp.headers)
        self.bytes_in += len(raw)
        error = None if resp.status == 200 else f"HTTP {resp.status}"
        messages = log_received(
            self._log,
            raw,
            self.name,
            error=error,
            exchange_id=exchange,
            http_status=resp.status,
            headers=stored_headers(resp.headers, self.csrf.secret_names()),
        )
        if error is not None:
            self._fail(f"{batch.kind} answered {error}", resp.status, _ids(batch))
        elif batch.kind == "connect" and not any(m.channel == "/meta/connect" for m in messages):
            # Without its reply the client would wait for this connect forever.
            if messages:
                self._deliver(messages)
            self._fail("the connect got no /meta/connect reply", resp.status, _ids(batch))
        elif messages:
            self._deliver(messages)
        elif raw.strip() not in (b"", b"[]"):
            self._fail(f"the {batch.kind} reply is not Bayeux", resp.status, _ids(batch))


def _ids(batch: Outgoing) -> list[str]:
    return [str(m["id"]) for m in batch.messages if m.get("id") is not None]


def _describe(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError):
        return "timed out"
    return describe_error(exc)
