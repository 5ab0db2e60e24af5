"""`cometd-tape proxy`: a capture proxy in front of a CometD/GWS server.

One process by default, recording into one tape. With `--workers N`, N worker processes listen
on the same port (SO_REUSEPORT: the kernel spreads the connections over them), each with its own
CaptureProxy and tape writer, and `-o` names a folder, a tape set: worker K records into
`OUT/wK-0001.duckdb`. This process then only starts them, sums their figures, and stops them all
when told to (Ctrl-C, SIGTERM) or when one of them dies.
"""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing
import signal
import socket
import sys
import time
from collections.abc import Coroutine
from dataclasses import dataclass
from multiprocessing.connection import Connection, wait
from multiprocessing.process import BaseProcess
from pathlib import Path
from types import FrameType
from typing import Any
from urllib.parse import urlsplit

import click

from recorder.cli import _pairs
from recorder.proxy import DEFAULT_BAYEUX_PATHS, CaptureProxy, ProxyOptions, Stats, serve_worker
from tape.cli import (
    TapeClaim,
    claim_set,
    claim_tape,
    listen_address,
    listen_option,
    output_tape_options,
    rotate_option,
    run_loop,
)
from tape.privacy import Privacy, privacy_options
from tape.process_writer import ProcessTapeWriter, Segments
from tape.runtime import settle_gc
from tape.schema import TapeError
from tape.segments import Rotation, set_folder

MAX_WORKERS = 64
START_S = 60  # a worker's start (Python, its tape writer's process) takes ~1-2 s here
STOP_S = 300  # a worker's stop: its tape writer commits what it has, as the one-process proxy


@click.command("proxy")
@click.option("--upstream", required=True, help="The server to forward to: http://host:port.")
@listen_option
@output_tape_options
@rotate_option
@click.option(
    "--workers",
    type=click.IntRange(1, MAX_WORKERS),
    default=None,
    help="Serve with N processes on the one port, each recording its own tape: -o then names "
    "a tape set, -o shift.duckdb writing shift/w1-0001.duckdb, shift/w2-0001.duckdb, ... "
    "Default: one process, one tape.",
)
@click.option(
    "--bayeux-path",
    "bayeux_paths",
    multiple=True,
    help=f"Path of the Bayeux endpoint (repeat; default {' and '.join(DEFAULT_BAYEUX_PATHS)}).",
)
@click.option(
    "--session-cookie",
    default="JSESSIONID",
    show_default=True,
    help="The cookie that ties a client's REST calls to its Bayeux session.",
)
@click.option("--label", "labels", multiple=True, metavar="KEY=VALUE", help="Label sessions.")
@privacy_options
def proxy_command(
    upstream: str,
    listen: str,
    output: Path,
    append: bool,
    overwrite: bool,
    rotation: Rotation | None,
    workers: int | None,
    bayeux_paths: tuple[str, ...],
    session_cookie: str,
    labels: tuple[str, ...],
    privacy: Privacy,
) -> None:
    """Forward clients to --upstream unchanged, recording every HTTP exchange and WebSocket
    frame both ways; each client becomes its own tape session. Ctrl-C stops it."""
    if upstream.startswith("https://"):
        raise click.BadParameter(
            "TLS upstreams are not supported; point --upstream at the plain-HTTP side",
            param_hint="--upstream",
        )
    if not upstream.startswith("http://") or len(upstream) <= len("http://"):
        raise click.BadParameter(
            f"{upstream!r} is not an http://host:port URL", param_hint="--upstream"
        )
    parts = urlsplit(upstream)
    try:
        parts.port  # noqa: B018 - it raises ValueError for a port that is not a number
    except ValueError as exc:
        raise click.BadParameter(f"{upstream!r}: {exc}", param_hint="--upstream") from None
    if not parts.hostname:
        raise click.BadParameter(f"{upstream!r} names no host", param_hint="--upstream")
    options = ProxyOptions(
        upstream=upstream,
        bayeux_paths=bayeux_paths or DEFAULT_BAYEUX_PATHS,
        cookie=session_cookie,
        labels=_pairs(labels, "=", "KEY=VALUE"),
    )
    host, port = listen_address(listen)
    if workers is not None:
        folder = set_folder(output)
        claim = claim_set(folder, append=append, overwrite=overwrite, keep_old_until_done=True)
        serve_set(options, folder, host, port, workers, claim, privacy, rotation)
        return
    segments = None
    if rotation is not None:
        output = set_folder(output)
        segments = Segments(rotation)
        claim = claim_set(output, append=append, overwrite=overwrite, keep_old_until_done=True)
    else:
        claim = claim_tape(output, append=append, overwrite=overwrite, keep_old_until_done=True)
    run(_serve(options, output, host, port, claim=claim, privacy=privacy, segments=segments))


async def _serve(
    options: ProxyOptions,
    output: Path,
    host: str,
    port: int,
    *,
    claim: TapeClaim,
    privacy: Privacy | None = None,
    segments: Segments | None = None,
) -> None:
    writer = ProcessTapeWriter(output, privacy=privacy, segments=segments)
    proxy = CaptureProxy(options, writer)
    try:
        await proxy.start(host, port)
    except OSError as exc:
        writer.close()
        claim.give_up()  # nothing was recorded: no empty tape left, a replaced one put back
        raise click.ClickException(
            f"cannot listen on {host}:{port}: {exc.strerror or exc}"
        ) from None
    claim.keep()
    click.echo(f"proxy {proxy.origin} -> {options.upstream}, recording into {output}", err=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    reporter = loop.create_task(_status(proxy, stop))
    await stop.wait()
    reporter.cancel()
    await proxy.stop()
    try:
        writer.close()
    except TapeError as exc:
        raise click.ClickException(str(exc)) from None
    if proxy.tape_error is not None:
        raise click.ClickException(f"recording failed, so the proxy stopped: {proxy.tape_error}")
    click.echo(f"\nstopped: {_summary(proxy.totals())}; tape: {output}", err=True)


def run(main: Coroutine[Any, Any, None]) -> None:
    settle_gc()
    run_loop(main)


def _summary(stats: Stats) -> str:
    exchanges, frames, sessions, errors, _ = stats
    return (
        f"{exchanges} HTTP exchanges, {frames} WebSocket frames, {sessions} sessions, "
        f"{errors} upstream errors"
    )


def _status_line(stats: Stats) -> str:
    exchanges, frames, sessions, errors, size = stats
    return (
        f"{time.strftime('%H:%M:%S')} {exchanges} exchanges, {frames} ws frames, "
        f"{sessions} sessions, {errors} upstream errors, {size / 1e6:.1f} MB"
    )


def _show(line: str, tty: bool) -> None:
    click.echo(("\r\x1b[2K" + line) if tty else line, err=True, nl=not tty)


async def _status(proxy: CaptureProxy, stop: asyncio.Event) -> None:
    tty = sys.stderr.isatty()
    ticks = 0
    while True:
        await asyncio.sleep(1)
        if proxy.tape_error is not None:
            stop.set()  # forwarding without recording is not what was asked for
            return
        ticks += 1
        if tty or not ticks % 5:
            _show(_status_line(proxy.totals()), tty)


# --- a tape set: N workers ------------------------------------------------------------------


@dataclass
class Worker:
    number: int
    process: BaseProcess
    conn: Connection
    ready: bool = False
    stats: Stats = (0, 0, 0, 0, 0)
    stopped: bool = False  # it said so: its tape is closed
    ended: bool = False  # its process has exited
    error: str | None = None


def serve_set(
    options: ProxyOptions,
    folder: Path,
    host: str,
    port: int,
    count: int,
    claim: TapeClaim,
    privacy: Privacy,
    rotation: Rotation | None = None,
) -> None:
    """Start `count` workers on host:port, then wait for a signal or a worker's end."""
    try:
        port = _probe(host, port)
    except click.ClickException:
        claim.give_up()
        raise
    asked: list[int] = []

    def on_signal(signum: int, _: FrameType | None) -> None:
        asked.append(signum)

    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, on_signal)
    woken, waker = socket.socketpair()  # a signal ends the wait at once (set_wakeup_fd)
    woken.setblocking(False)
    waker.setblocking(False)
    signal.set_wakeup_fd(waker.fileno(), warn_on_full_buffer=False)
    context = multiprocessing.get_context("spawn")  # never fork a process with threads
    workers = []
    for number in range(1, count + 1):
        ours, theirs = context.Pipe()
        process = context.Process(
            target=serve_worker,
            args=(options, folder, Segments(rotation, f"w{number}-"), host, port, privacy, theirs),
            name=f"proxy-w{number}",
        )
        process.start()
        theirs.close()
        workers.append(Worker(number, process, ours))
    started = time.monotonic()
    while not all(w.ready for w in workers) and not asked and not _failed(workers):
        _listen(workers, 0.2, woken)
        if time.monotonic() - started > START_S:
            for w in workers:
                if not w.ready:
                    w.error = w.error or f"not ready after {START_S} s"
    if not all(w.ready for w in workers) or asked:
        _stop_all(workers)
        claim.give_up()
        problem = _failed(workers)
        if problem is not None:
            raise click.ClickException(problem)
        raise click.ClickException("stopped before every worker had started")
    claim.keep()
    origin = f"http://{f'[{host}]' if ':' in host else host}:{port}"
    click.echo(
        f"proxy {origin} -> {options.upstream}, recording into {folder} ({count} workers)",
        err=True,
    )
    tty, ticks = sys.stderr.isatty(), 0
    while not asked and _failed(workers) is None:
        _listen(workers, 1.0, woken)
        ticks += 1
        if tty or not ticks % 5:
            _show(_status_line(_total(workers)), tty)
    _stop_all(workers)
    problem = _failed(workers)
    if problem is not None:
        raise click.ClickException(f"{problem}; the proxy stopped (tapes in {folder})")
    click.echo(f"\nstopped: {_summary(_total(workers))}; tape set: {folder}", err=True)


def _probe(host: str, port: int) -> int:
    """The port to share, refused now if anything else listens on it (a socket without
    SO_REUSEPORT cannot bind where another listens, with it or not)."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
        family, kind, proto, _, address = infos[0]
        with socket.socket(family, kind, proto) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            probe.bind(address)
            return int(probe.getsockname()[1])
    except OSError as exc:
        raise click.ClickException(
            f"cannot listen on {host}:{port}: {exc.strerror or exc}"
        ) from None


def _listen(workers: list[Worker], timeout: float, woken: socket.socket | None = None) -> None:
    """Take what the workers say (or that they ended) for up to `timeout` seconds, or until a
    signal wakes `woken`."""
    waited: dict[Any, Worker | None] = {woken: None} if woken is not None else {}
    for worker in workers:
        if not worker.conn.closed:
            waited[worker.conn] = worker
        if not worker.ended:
            waited[worker.process.sentinel] = worker
    for ready in wait(list(waited), timeout):
        w = waited[ready]
        if w is None:
            with contextlib.suppress(OSError):
                woken.recv(64)  # type: ignore[union-attr]  # the signal's byte
        elif ready is w.conn:
            _hear(w)
        else:
            w.ended = True
            w.process.join(1)
            while not w.conn.closed and w.conn.poll():
                _hear(w)
            if not w.stopped and w.error is None:
                w.error = f"exited (code {w.process.exitcode})"


def _hear(w: Worker) -> None:
    try:
        what, detail = w.conn.recv()
    except (EOFError, OSError):
        w.conn.close()
        return
    if what == "ready":
        w.ready = True
    elif what == "stats":
        w.stats = detail
    elif what == "stopped":
        w.stats, w.stopped = detail, True
    elif what == "failed":
        w.error = w.error or str(detail)


def _failed(workers: list[Worker]) -> str | None:
    return next((f"worker {w.number}: {w.error}" for w in workers if w.error), None)


def _total(workers: list[Worker]) -> Stats:
    exchanges, frames, sessions, errors, size = (
        sum(column) for column in zip(*(w.stats for w in workers), strict=True)
    )
    return exchanges, frames, sessions, errors, size


def _stop_all(workers: list[Worker]) -> None:
    """Tell every worker to stop, and wait until each has closed its tape (or ended)."""
    for w in workers:
        with contextlib.suppress(OSError, ValueError):
            w.conn.send("stop")
    deadline = time.monotonic() + STOP_S
    while not all(w.ended for w in workers) and time.monotonic() < deadline:
        _listen(workers, 0.2)
    for w in workers:
        if w.process.exitcode is None:
            w.process.kill()
            w.error = w.error or f"did not stop within {STOP_S} s"
        w.process.join(5)
