"""The CLI root. Subcommands come from the `cometd_tape.commands` entry points, so `tape`
imports none of the other packages and the dependency arrows stay one-way (docs/architecture.md).
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any, TypeVar

import click
import duckdb

from tape.schema import TapeError, package_version

ENTRY_POINT_GROUP = "cometd_tape.commands"


class CommandGroup(click.Group):
    """Finds commands through entry points and turns known errors into one-line messages."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        names = {ep.name for ep in entry_points(group=ENTRY_POINT_GROUP)}
        return sorted(names | set(self.commands))

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name in self.commands:
            return self.commands[cmd_name]
        for ep in entry_points(group=ENTRY_POINT_GROUP, name=cmd_name):
            command = ep.load()
            if isinstance(command, click.Command):
                return command
        return None

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except TapeError as exc:
            raise click.ClickException(str(exc)) from None
        except BrokenPipeError:  # `cometd-tape export TAPE | head` is fine
            sys.stderr.close()
            sys.exit(0)
        except OSError as exc:
            raise click.ClickException(_os_error(exc)) from None
        except duckdb.Error as exc:
            raise click.ClickException(f"the tape could not be read: {exc}") from None


T = TypeVar("T")


def run_loop(main: Coroutine[Any, Any, T]) -> T:
    """Run `main` on uvloop's event loop where it exists: it measured ~20% more proxy
    throughput here, and less of the recorder's and replayer's time per message."""
    try:
        import uvloop
    except ImportError:  # pragma: no cover - Windows
        return asyncio.run(main)
    return uvloop.run(main)


def listen_address(value: str) -> tuple[str, int]:
    """A --listen HOST:PORT value (IPv6 in brackets) -> (host, port), or a usage error."""
    host, _, port = value.rpartition(":")
    if not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise click.BadParameter(
            f"{value!r} is not HOST:PORT with a port from 0 to 65535", param_hint="--listen"
        )
    return host.strip("[]"), int(port)


def listen_option(command: Callable[..., Any]) -> Callable[..., Any]:
    """`--listen HOST:PORT` (default 127.0.0.1:8080), for a command that serves: parse the
    value with listen_address."""
    return click.option(
        "--listen",
        default="127.0.0.1:8080",
        show_default=True,
        help="HOST:PORT to listen on (port 0 picks a free one).",
    )(command)


def existing_tape_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """`--append` and `--overwrite`: what to do when the output tape exists (see claim_tape)."""
    command = click.option(
        "--overwrite", is_flag=True, help="Replace the output tape if it exists."
    )(command)
    return click.option(
        "--append", is_flag=True, help="Add to the output tape if it exists (a new session)."
    )(command)


def output_tape_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """`-o/--output TAPE` (required) with `--append` and `--overwrite`: the tape a command
    records or imports into (see claim_tape)."""
    command = existing_tape_options(command)
    return click.option(
        "-o",
        "--output",
        type=click.Path(dir_okay=False, path_type=Path),
        required=True,
        help="The tape to write (see --append and --overwrite if it exists).",
    )(command)


@dataclass(slots=True)
class TapeClaim:
    """An output tape made ready by claim_tape. `created`: this run makes the file. With
    `--overwrite`, the old tape is moved aside (`NAME.replaced`) until the run keeps its own
    (keep) or gives it up (give_up, which puts the old one back): a run that fails at once
    must not cost the user the tape it was to replace."""

    path: Path
    created: bool
    aside: list[tuple[Path, Path]] = field(default_factory=list)

    def keep(self) -> None:
        for _, moved in self.aside:
            moved.unlink(missing_ok=True)
        self.aside = []

    def give_up(self) -> None:
        """Remove what this run created, and put back what it moved aside."""
        if self.created:
            remove_tape(self.path)
        for original, moved in self.aside:
            moved.replace(original)
        self.aside = []


def claim_tape(
    path: Path, *, append: bool, overwrite: bool, keep_old_until_done: bool = False
) -> TapeClaim:
    """Make `path` ready to be written as the user said.

    A tape that exists is refused unless `append` (added to) or `overwrite`: removed at once,
    or with `keep_old_until_done` moved aside until the caller keeps or gives up (TapeClaim)."""
    if append and overwrite:
        raise click.UsageError("--append and --overwrite exclude each other; give one")
    wal = path.with_name(path.name + ".wal")
    if not path.exists():
        wal.unlink(missing_ok=True)  # a WAL without its database is a crashed run's leftover
        return TapeClaim(path, created=True)
    if overwrite:
        claim = TapeClaim(path, created=True)
        for original in (path, wal):
            if original.exists():
                moved = original.with_name(original.name + ".replaced")
                original.replace(moved)
                claim.aside.append((original, moved))
        if not keep_old_until_done:
            claim.keep()
        return claim
    if not append:
        raise click.ClickException(
            f"{path} exists; add --append to add to it, --overwrite to replace it, "
            "or choose another -o"
        )
    return TapeClaim(path, created=False)


def remove_tape(path: Path) -> None:
    """Remove a tape this run created and is giving up (with its WAL)."""
    for leftover in (path, path.with_name(path.name + ".wal")):
        leftover.unlink(missing_ok=True)


def _os_error(exc: OSError) -> str:
    where = f"{exc.filename}: " if exc.filename else ""
    return f"{where}{exc.strerror or exc}"


@click.group(cls=CommandGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_version(), prog_name="cometd-tape")
def cli() -> None:
    """Record, replay and analyse CometD (Bayeux) traffic.

    A tape is one DuckDB file holding every frame seen on the wire. Open it with any DuckDB
    client, or with the commands below.
    """


def main() -> None:
    try:
        cli.main(prog_name="cometd-tape")
    except KeyboardInterrupt:
        click.echo("interrupted", err=True)
        sys.exit(130)
