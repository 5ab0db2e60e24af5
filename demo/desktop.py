"""The demo's agent desktop, also driven by tests: it logs in through the capture proxy (basic
auth, JSESSIONID, CSRF), subscribes to /v2/me/outbound and /me/internal with our Bayeux client,
sends Outbound API requests at a rate and waits for their acks. Its Bayeux client's own log goes
to a sink: a tape there holds what `cometd-tape record` would record of the same traffic."""

from __future__ import annotations

import asyncio
import base64
import itertools
import random
import sys
import time

import aiohttp
import click

from recorder.auth import Credentials
from recorder.record import Recorder, RecordOptions
from recorder.status import Status
from replay.simulator import ACKS
from tape.frame import Session
from tape.session import SessionLog, new_session_id
from tape.sink import FrameSink, NullSink

USER, PASSWORD = "agent", "agent"
OUTBOUND = "/v2/me/outbound"
MIX = ("DoNotCallRecord",) * 6 + tuple(ACKS)  # mostly DoNotCallRecord, some of each other


async def drive(
    origin: str,
    count: int,
    rate: float,
    transport: str,
    seed: int,
    *,
    bayeux_origin: str | None = None,
    sink: FrameSink | None = None,
) -> None:
    """The agent desktop: log in, subscribe with our Bayeux client, send, wait for the acks.
    REST goes to `origin`; Bayeux to `bayeux_origin` (default: `origin` too). The Bayeux
    client's frames go to `sink` (default: nowhere), as a `record` session."""
    token = base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
    jar = aiohttp.CookieJar(unsafe=True)
    async with aiohttp.ClientSession(cookie_jar=jar) as http:
        async with http.get(
            origin + "/api/v2/me", headers={"Authorization": f"Basic {token}"}
        ) as response:
            if response.status != 200:
                raise click.ClickException(
                    f"login through the proxy failed: HTTP {response.status}"
                )
            csrf = {response.headers["X-CSRF-HEADER"]: response.headers["X-CSRF-TOKEN"]}
        cookie = "; ".join(f"{c.key}={c.value}" for c in jar)
        status = Status("desktop", transport)
        session = Session(session_id=new_session_id(), mode="record", transport=transport)
        log = SessionLog(sink or NullSink(), session)
        desktop = Recorder(
            RecordOptions(
                url=(bayeux_origin or origin) + "/api/v2/notifications",
                transport=transport,
                credentials=Credentials(headers={"Cookie": cookie, **csrf}),
            ),
            log,
            status,
        )
        bayeux = asyncio.get_running_loop().create_task(desktop.run())
        await _subscribed(desktop, bayeux)
        rng = random.Random(seed)
        refused = 0
        sent = 0
        begin = time.monotonic()
        progress = _Progress(count)
        for n in range(count):
            await asyncio.sleep(max(0.0, begin + n / rate - time.monotonic()))
            operation = rng.choice(MIX)
            body = {
                "operationName": operation,
                "referenceId": f"demo-{n}",
                "campaignName": f"Campaign{1 + n % 3}",
                "callingList": "CallingList1",
                "applicationId": 134,
                "phoneNumber": f"555{n:04d}",
            }
            async with http.post(
                f"{origin}/api/v2/me/outbound-records/{1000 + n}", json=body, headers=csrf
            ) as response:
                answer = await response.json(content_type=None)
                refused += answer.get("statusCode") != 0
            sent += 1
            progress.show(sent, status.messages[OUTBOUND])
        deadline = time.monotonic() + 10
        while status.messages[OUTBOUND] < sent - refused and time.monotonic() < deadline:
            progress.show(sent, status.messages[OUTBOUND])
            await asyncio.sleep(0.05)
        progress.show(sent, status.messages[OUTBOUND], final=True)
        desktop.stop("demo done")
        await asyncio.wait_for(bayeux, 10)
        log.release()
        log.close("demo done")


async def _subscribed(desktop: Recorder, task: asyncio.Task[object]) -> None:
    deadline = time.monotonic() + 10
    # Confirmed, not only asked for: a request sent before its channel's subscribe reply
    # can have its ack published to no one (2 of 20 recordings did).
    while len(desktop.client.confirmed) < 2 or desktop.status.state != "connected":
        if task.done():
            outcome = task.result()
            raise click.ClickException(f"the desktop's Bayeux client stopped: {outcome}")
        if time.monotonic() > deadline:
            raise click.ClickException("the desktop could not subscribe within 10 s")
        await asyncio.sleep(0.02)


class _Progress:
    def __init__(self, total: int) -> None:
        self.total, self.tty, self._last = total, sys.stderr.isatty(), 0.0
        self._spin = itertools.cycle("|/-\\")

    def show(self, sent: int, acked: int, *, final: bool = False) -> None:
        now = time.monotonic()
        if not final and now - self._last < (0.1 if self.tty else 2.0):
            return
        self._last = now
        width = 30
        done = int(width * sent / self.total)
        bar = "#" * done + "." * (width - done)
        line = f"desktop [{bar}] sent {sent}/{self.total}, acked {acked}"
        if self.tty:
            click.echo(
                f"\r\x1b[2K{line}" + ("\n" if final else f" {next(self._spin)}"), err=True, nl=False
            )
        else:
            click.echo(line, err=True)
