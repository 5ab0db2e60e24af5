"""`cometd-tape replay`: serve a tape to clients under test, with the recorded timing."""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import Callable
from pathlib import Path

import click

from replay.app import Replayer, ReplayOptions
from replay.faults import Fault, FaultError, parse_fault
from replay.player import PlayOptions
from replay.responder import DEFAULT_MATCHERS, body_field
from replay.server import DEFAULT_PATHS
from replay.timeline import TimelineOptions
from tape.cli import listen_address, listen_option, run_loop
from tape.runtime import settle_gc
from tape.source import readable
from tape.tapeset import named_tapes

STATUS_S = 5.0


def fault_specs(texts: tuple[str, ...]) -> tuple[Fault, ...]:
    try:
        return tuple(parse_fault(text) for text in texts)
    except FaultError as exc:
        raise click.BadParameter(str(exc), param_hint="--fault") from None


@click.command("replay")
@click.argument("tape", type=click.Path(path_type=Path), callback=named_tapes)
@listen_option
@click.option(
    "--speed",
    type=click.FloatRange(min=0),
    default=1.0,
    show_default=True,
    help="Divide recorded offsets by this; 0 sends as fast as possible.",
)
@click.option(
    "--session",
    help="Replay this recorded session (default: the first with "
    "deliveries; 'all' merges every session).",
)
@click.option(
    "-c",
    "--channel",
    "channels",
    multiple=True,
    help="Only replay messages on channels matching this pattern (repeat).",
)
@click.option("--from", "start", type=float, help="Start this many seconds into the timeline.")
@click.option("--to", "end", type=float, help="Stop this many seconds into the timeline.")
@click.option("--loop/--no-loop", default=False, show_default=True, help="Repeat the timeline.")
@click.option(
    "--clock",
    type=click.Choice(["per-client", "shared"]),
    default="per-client",
    show_default=True,
    help="Each client gets its own timeline, or one broadcast.",
)
@click.option(
    "--start-at",
    type=click.Choice(["first-delivery", "session-start"]),
    default="first-delivery",
    show_default=True,
    help="Where offsets run from.",
)
@click.option(
    "--path",
    "paths",
    multiple=True,
    help=f"Bayeux path to serve (repeat; default {' and '.join(DEFAULT_PATHS)}).",
)
@click.option(
    "--unknown-client-error",
    default="402::Unknown client",
    show_default=True,
    help="Error text for unknown clientIds (CometD 4: 402::session_unknown).",
)
@click.option(
    "--reactive",
    is_flag=True,
    help="Answer REST requests from the tape's recorded ones, and deliver the acks they caused "
    "with the recorded delay and the new referenceId (they leave the timeline).",
)
@click.option(
    "--match-on",
    "match_on",
    multiple=True,
    metavar="FIELD",
    help="With --reactive, also match this JSON body field (repeat).",
)
@click.option(
    "--fault",
    "faults",
    multiple=True,
    metavar="SPEC",
    callback=lambda _ctx, _param, value: fault_specs(value),
    help="Inject a fault (repeat): drop:10%, delay:100ms-2s, unknown-client:at=5s, "
    "close:code=1011,at=3s, http-503:at=2s ... (docs/faults.md).",
)
@click.option(
    "--seed", type=int, default=0, show_default=True, help="Seed of the faults' random choices."
)
def replay_command(
    tape: Path,
    listen: str,
    speed: float,
    session: str | None,
    channels: tuple[str, ...],
    start: float | None,
    end: float | None,
    loop: bool,
    clock: str,
    start_at: str,
    paths: tuple[str, ...],
    unknown_client_error: str,
    reactive: bool,
    match_on: tuple[str, ...],
    faults: tuple[Fault, ...],
    seed: int,
) -> None:
    """Serve a tape's recorded deliveries to CometD clients under test.

    Clients connect over long-polling or WebSocket, handshake and subscribe; each then gets
    the recorded messages on its channels at the recorded offsets divided by --speed.
    """
    options = ReplayOptions(
        timeline=TimelineOptions(session, channels, start, end, start_at == "session-start"),
        play=PlayOptions(speed=speed, clock=clock, loop=loop),
        paths=paths or DEFAULT_PATHS,
        unknown_client_error=unknown_client_error,
        reactive=reactive,
        matchers=(*DEFAULT_MATCHERS, *(body_field(f) for f in match_on)),
        faults=faults,
        seed=seed,
    )
    host, port = listen_address(listen)
    with readable(tape) as db:  # a tape set or a JSONL tape: joined into a temporary tape
        run_loop(_serve(db, options, host, port, shown=tape))


async def _serve(tape: Path, options: ReplayOptions, host: str, port: int, *, shown: Path) -> None:
    def log(line: str) -> None:
        click.echo(f"{time.strftime('%H:%M:%S')} {line}", err=True)

    replayer = await Replayer.start(tape, options, host=host, port=port, log=log)
    settle_gc()  # the timeline and the modules are loaded: the collector need not rescan them
    total = len(replayer.player.timeline)
    for path in replayer.server.paths:
        click.echo(
            f"replaying {total} messages from {shown} on {replayer.server.url(path)} "
            f"(WebSocket: {replayer.server.url(path, 'ws')})"
        )
    if replayer.front is not None:
        responder = replayer.front.responder
        click.echo(
            f"reactive: answering REST requests from {len(responder.exchanges)} recorded ones; "
            f"the {len(responder.follow_up_keys)} messages they caused leave the timeline and "
            "follow each matching request instead",
            err=True,
        )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    reporter = loop.create_task(_progress(replayer, log))
    await stop.wait()
    reporter.cancel()
    await replayer.stop()
    if replayer.front is not None:
        front = replayer.front
        click.echo(
            f"reactive: {front.responder.served} requests answered, "
            f"{len(front.responder.unmatched)} matched nothing (404), "
            f"{front.delivered} follow-up messages delivered",
            err=True,
        )
    dropped = replayer.server.protocol.dropped
    click.echo(
        f"served {replayer.player.served} clients, {replayer.player.emitted} messages emitted "
        f"({total} in the timeline)" + (f", {dropped} dropped from full queues" if dropped else ""),
        err=True,
    )


async def _progress(replayer: Replayer, log: Callable[[str], None]) -> None:
    """A status line every 5 s while anything changes, and once when it stops changing."""
    last = ""
    while True:
        await asyncio.sleep(STATUS_S)
        line = status(replayer)
        if line != last:
            log(line)
            last = line


def status(replayer: Replayer) -> str:
    sizes = replayer.sizes()
    return (
        f"status: {sizes['sessions']} live clients, {replayer.player.served} served, "
        f"{replayer.player.emitted} emitted, {sizes['queued']} queued, "
        f"{replayer.server.protocol.dropped} dropped"
    )
