"""`cometd-tape demo`: the whole job in one process, on the built-in GWS simulator.

The simulator serves GWS; the capture proxy sits in front of it and records into a tape; a
driver acts as an agent desktop through the proxy: it logs in (basic auth, JSESSIONID, CSRF),
subscribes to /v2/me/outbound and /me/internal with our Bayeux client, and sends Outbound API
requests at a given rate. Then the latency table and summary are printed and the HTML report
written.
"""

from __future__ import annotations

import asyncio
import base64
import itertools
import random
import sys
import time
from pathlib import Path

import aiohttp
import click

from analysis.latency import STATS, latency
from analysis.output import render
from analysis.report import build_report
from analysis.summary import summary
from analysis.views import open_tapes
from recorder.auth import Credentials
from recorder.proxy import CaptureProxy, ProxyOptions
from recorder.proxy_cli import run
from recorder.record import Recorder, RecordOptions
from recorder.status import Status
from replay.sim_cli import check_latency, latency_options
from replay.simulator import ACKS, Simulator, SimulatorOptions
from tape.frame import Frame, Session
from tape.outputs import claim_output
from tape.process_writer import ProcessTapeWriter
from tape.schema import TapeError
from tape.session import SessionLog

USER, PASSWORD = "agent", "agent"
OUTBOUND = "/v2/me/outbound"
MIX = ("DoNotCallRecord",) * 6 + tuple(ACKS)  # mostly DoNotCallRecord, some of each other


class _Discard:
    """The desktop's own Bayeux client records nothing: the proxy's tape is the record."""

    def write(self, frame: Frame) -> None:
        pass

    def put_session(self, session: Session) -> None:
        pass

    def check(self) -> None:
        pass

    def flush(self) -> None:
        pass

    def close(self) -> None:
        pass


@click.command("demo")
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False, path_type=Path),
    default=Path("demo.duckdb"),
    show_default=True,
    help="The tape to write.",
)
@click.option(
    "--report",
    type=click.Path(dir_okay=False, path_type=Path),
    help="The HTML report to write (default: the tape's name with .html).",
)
@click.option("--overwrite", is_flag=True, help="Replace the tape and report if they exist.")
@click.option(
    "-n",
    "--requests",
    "count",
    type=click.IntRange(1, 100_000),
    default=600,
    show_default=True,
    help="Requests the desktop sends.",
)
@click.option(
    "--rate",
    type=click.FloatRange(min=1),
    default=150.0,
    show_default=True,
    help="Requests per second.",
)
@click.option(
    "--transport",
    type=click.Choice(["long-polling", "websocket"]),
    default="long-polling",
    show_default=True,
    help="The desktop's Bayeux transport (GWS itself has only long-polling).",
)
@latency_options
@click.option(
    "--error-rate",
    type=click.FloatRange(0, 1),
    default=0.01,
    show_default=True,
    help="Fraction refused with a non-zero statusCode.",
)
@click.option("--seed", type=int, default=2026, show_default=True, help="Seed for the delays.")
def demo_command(
    output: Path,
    report: Path | None,
    overwrite: bool,
    count: int,
    rate: float,
    transport: str,
    median_ms: float,
    p99_ms: float,
    error_rate: float,
    seed: int,
) -> None:
    """Run the main job on the built-in GWS simulator: capture through the proxy, then the
    latency table, the summary and an HTML report."""
    report = report or output.with_suffix(".html")
    outputs = ((output, "-o", True), (report, "--report", False))
    for path, option, tape in outputs:  # both refused before either is replaced
        if path.exists() and not overwrite:
            claim_output(path, overwrite=False, option=option, tape=tape)
    check_latency(median_ms, p99_ms)
    for path, option, tape in outputs:
        claim_output(path, overwrite=overwrite, option=option, tape=tape)
    options = SimulatorOptions(
        median_ms=median_ms, p99_ms=p99_ms, seed=seed, error_rate=error_rate, users={USER: PASSWORD}
    )
    started = time.monotonic()
    run(_capture(options, output, count, rate, transport, seed))
    click.echo(
        f"\ntape: {output} ({output.stat().st_size / 1e6:.1f} MB), "
        f"captured in {time.monotonic() - started:.1f} s\n"
    )
    conn = open_tapes([output])
    rows = latency(conn, ("operation",))
    click.echo("Request -> ack latency by operation (ms)")
    click.echo(
        render(
            ["operation", "part", *STATS],
            [(*r.group, r.part, *r.values) for r in rows],
            "table",
        )
    )
    sections = summary(conn)
    for key in ("requests", "unmatched", "acks", "channels"):
        section = sections[key]
        body = render(section.columns, section.rows, "table") if section.rows else "  none"
        click.echo(f"\n{section.title}\n{body}")
    report.write_text(build_report(conn, f"cometd-tape demo: {output.name}"), encoding="utf-8")
    click.echo(
        f'\nreport: {report}\nnext: cometd-tape analyze sql {output} "select * from '
        f'request_latency limit 5"\n      cometd-tape replay {output} --reactive   (serves it '
        "back, answering REST requests from the tape)"
    )


async def _capture(
    options: SimulatorOptions, output: Path, count: int, rate: float, transport: str, seed: int
) -> None:
    simulator = Simulator(options)
    await simulator.start()
    try:
        writer = ProcessTapeWriter(output)
    except TapeError:
        await simulator.stop()
        raise
    proxy = CaptureProxy(ProxyOptions(upstream=simulator.origin, labels={"demo": "1"}), writer)
    await proxy.start()
    try:
        await _drive(proxy.origin, count, rate, transport, seed)
    finally:
        await proxy.stop()
        await simulator.stop()
        writer.close()


async def _drive(origin: str, count: int, rate: float, transport: str, seed: int) -> None:
    """The agent desktop: log in, subscribe with our Bayeux client, send, wait for the acks."""
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
        log = SessionLog(_Discard(), Session(session_id="desktop"))
        desktop = Recorder(
            RecordOptions(
                url=origin + "/api/v2/notifications",
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


async def _subscribed(desktop: Recorder, task: asyncio.Task[object]) -> None:
    deadline = time.monotonic() + 10
    while len(desktop.client.subscriptions) < 2 or desktop.status.state != "connected":
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
