"""`cometd-tape proxy`: a capture proxy in front of a CometD/GWS server."""

from __future__ import annotations

import asyncio
import signal
import sys
import time
from collections.abc import Coroutine
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import click

from recorder.cli import _pairs
from recorder.proxy import DEFAULT_BAYEUX_PATHS, CaptureProxy, ProxyOptions
from tape.cli import (
    TapeClaim,
    claim_tape,
    listen_address,
    listen_option,
    output_tape_options,
    run_loop,
)
from tape.privacy import Privacy, privacy_options
from tape.process_writer import ProcessTapeWriter
from tape.runtime import settle_gc
from tape.schema import TapeError


@click.command("proxy")
@click.option("--upstream", required=True, help="The server to forward to: http://host:port.")
@listen_option
@output_tape_options
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
    claim = claim_tape(output, append=append, overwrite=overwrite, keep_old_until_done=True)
    run(_serve(options, output, host, port, claim=claim, privacy=privacy))


async def _serve(
    options: ProxyOptions,
    output: Path,
    host: str,
    port: int,
    *,
    claim: TapeClaim,
    privacy: Privacy | None = None,
) -> None:
    writer = ProcessTapeWriter(output, privacy=privacy)
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
    s = proxy.stats
    click.echo(
        f"\nstopped: {s.exchanges} HTTP exchanges, {s.ws_frames} WebSocket frames, "
        f"{proxy.sessions} sessions, {s.upstream_errors} upstream errors; tape: {output}",
        err=True,
    )


def run(main: Coroutine[Any, Any, None]) -> None:
    settle_gc()
    run_loop(main)


async def _status(proxy: CaptureProxy, stop: asyncio.Event) -> None:
    tty = sys.stderr.isatty()
    ticks = 0
    while True:
        await asyncio.sleep(1)
        if proxy.tape_error is not None:
            stop.set()  # forwarding without recording is not what was asked for
            return
        ticks += 1
        if not tty and ticks % 5:
            continue
        s = proxy.stats
        line = (
            f"{time.strftime('%H:%M:%S')} {s.exchanges} exchanges, {s.ws_frames} ws frames, "
            f"{proxy.sessions} sessions, {s.upstream_errors} upstream errors, "
            f"{(s.bytes_up + s.bytes_down) / 1e6:.1f} MB"
        )
        click.echo(("\r\x1b[2K" + line) if tty else line, err=True, nl=not tty)
