"""`cometd-tape simulate`: a GWS simulator to point clients, the recorder or the proxy at."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Callable
from typing import Any, TypeVar

import click

from replay.simulator import Simulator, SimulatorOptions
from tape.cli import listen_address, run_loop
from tape.runtime import settle_gc

F = TypeVar("F", bound=Callable[..., Any])


def _user(value: tuple[str, ...]) -> dict[str, str]:
    users = {}
    for item in value:
        name, sep, password = item.partition(":")
        if not sep or not name:
            raise click.BadParameter(f"{item!r} is not NAME:PASSWORD", param_hint="--user")
        users[name] = password
    return users or {"agent": "agent"}


def latency_options(command: F) -> F:
    """--median-ms and --p99-ms: the simulator's lognormal request -> ack delay."""
    command = click.option(
        "--p99-ms",
        type=click.FloatRange(min=0, min_open=True),
        default=80.0,
        show_default=True,
        help="99th percentile of the request -> ack delay (lognormal).",
    )(command)
    return click.option(
        "--median-ms",
        type=click.FloatRange(min=0, min_open=True),
        default=20.0,
        show_default=True,
        help="Median request -> ack delay.",
    )(command)


def check_latency(median_ms: float, p99_ms: float) -> None:
    if p99_ms < median_ms:
        raise click.BadParameter("--p99-ms must be at least --median-ms", param_hint="--p99-ms")


@click.command("simulate")
@click.option(
    "--listen",
    default="127.0.0.1:8090",
    show_default=True,
    help="HOST:PORT to serve on (port 0 picks a free one).",
)
@latency_options
@click.option("--seed", type=int, help="Seed for delays and errors (default: random).")
@click.option(
    "--error-rate",
    type=click.FloatRange(0, 1),
    default=0.0,
    show_default=True,
    help="Fraction of requests refused with statusCode 1 (no ack).",
)
@click.option(
    "--missing-ack-rate",
    type=click.FloatRange(0, 1),
    default=0.0,
    show_default=True,
    help="Fraction answered statusCode 0 but never acked.",
)
@click.option(
    "--user",
    "users",
    multiple=True,
    metavar="NAME:PASSWORD",
    help="An account for basic auth (repeat; default agent:agent).",
)
def simulate_command(
    listen: str,
    median_ms: float,
    p99_ms: float,
    seed: int | None,
    error_rate: float,
    missing_ack_rate: float,
    users: tuple[str, ...],
) -> None:
    """Serve a simulated GWS: login with CSRF, the Outbound API, and its acks over Bayeux
    (long-polling, and WebSocket, which real GWS lacks) on /api/v2/notifications."""
    check_latency(median_ms, p99_ms)
    options = SimulatorOptions(
        median_ms=median_ms,
        p99_ms=p99_ms,
        seed=seed,
        error_rate=error_rate,
        missing_ack_rate=missing_ack_rate,
        users=_user(users),
    )
    host, port = listen_address(listen)
    run_loop(_serve(Simulator(options), host, port))


async def _serve(simulator: Simulator, host: str, port: int) -> None:
    await simulator.start(host, port)
    settle_gc()
    click.echo(
        f"GWS simulator on {simulator.origin} (login: GET {simulator.url('/api/v2/me')}; "
        f"notifications: {simulator.url()})"
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await simulator.stop()
    s = simulator.stats
    click.echo(
        f"served {s.requests} requests: {s.acked} acked, {s.refused} refused, "
        f"{s.unacked} never acked; {s.rejected} rejected (400/401/403)",
        err=True,
    )
