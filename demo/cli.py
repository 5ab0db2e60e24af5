"""`cometd-tape demo`: the whole job in one process, on the built-in GWS simulator.

The simulator serves GWS; the capture proxy sits in front of it and records into a tape; a
driver acts as an agent desktop through the proxy: it logs in (basic auth, JSESSIONID, CSRF),
subscribes to /v2/me/outbound and /me/internal with our Bayeux client, and sends Outbound API
requests at a given rate. Then the latency table and summary are printed and the HTML report
written.
"""

from __future__ import annotations

import time
from pathlib import Path

import click

from analysis.latency import STATS, latency
from analysis.output import render
from analysis.recorder import notes, recorder_latency
from analysis.report import build_report
from analysis.summary import summary
from analysis.views import open_tapes
from demo.desktop import PASSWORD, USER, drive
from recorder.proxy import CaptureProxy, ProxyOptions
from recorder.proxy_cli import run
from replay.sim_cli import check_latency, latency_options
from replay.simulator import Simulator, SimulatorOptions
from tape.outputs import claim_output
from tape.process_writer import ProcessTapeWriter
from tape.schema import TapeError


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
    recorded = record_tape(output)
    outputs = ((output, "-o", True), (recorded, "-o", True), (report, "--report", False))
    for path, option, tape in outputs:  # all refused before any is replaced
        if path.exists() and not overwrite:
            claim_output(path, overwrite=False, option=option, tape=tape)
    check_latency(median_ms, p99_ms)
    for path, option, tape in outputs:
        claim_output(path, overwrite=overwrite, option=option, tape=tape)
    options = SimulatorOptions(
        median_ms=median_ms, p99_ms=p99_ms, seed=seed, error_rate=error_rate, users={USER: PASSWORD}
    )
    started = time.monotonic()
    run(_capture(options, output, recorded, count, rate, transport, seed))
    click.echo(
        f"\ntape: {output} ({output.stat().st_size / 1e6:.1f} MB), "
        f"captured in {time.monotonic() - started:.1f} s; {recorded}: the desktop's own Bayeux "
        "client, as `cometd-tape record` records it\n"
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
    _recorder_view(recorded)
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


def record_tape(output: Path) -> Path:
    """Where the demo keeps what a recorder alone sees: `demo.duckdb` -> `demo-record.duckdb`."""
    return output.with_name(f"{output.stem}-record{output.suffix or '.duckdb'}")


def _recorder_view(recorded: Path) -> None:
    """The same traffic as a recorder alone sees it: no requests, so delivery and server
    processing by notification, with the clock offset it rests on."""
    conn = open_tapes([recorded])
    try:
        rows = recorder_latency(conn, ("notification",))
        lines = notes(conn)
    finally:
        conn.close()
    click.echo(f"\nWhat a recorder alone sees of it ({recorded.name}), by notification (ms)")
    click.echo(
        render(
            ["notification", "part", *STATS],
            [(*r.group, r.part, *r.values) for r in rows],
            "table",
        )
    )
    click.echo("\n".join(f"note: {line}" for line in lines[:-1]))


async def _capture(
    options: SimulatorOptions,
    output: Path,
    recorded: Path,
    count: int,
    rate: float,
    transport: str,
    seed: int,
) -> None:
    simulator = Simulator(options)
    await simulator.start()
    writers = []
    try:
        writers.append(ProcessTapeWriter(output))
        writers.append(ProcessTapeWriter(recorded))
    except TapeError:
        for writer in writers:
            writer.close()
        await simulator.stop()
        raise
    labels = {"demo": "1"}
    proxy = CaptureProxy(ProxyOptions(upstream=simulator.origin, labels=labels), writers[0])
    await proxy.start()
    try:
        await drive(proxy.origin, count, rate, transport, seed, sink=writers[1])
    finally:
        await proxy.stop()
        await simulator.stop()
        for writer in writers:
            writer.close()
