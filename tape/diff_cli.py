"""`cometd-tape diff A B`: compare two tapes' traffic and print a unified diff of messages.
Exit 0 when the same, 1 when different, 2 for a usage error (a bad option, a tape that does not
exist or cannot be read), as diff(1) does. Thin over tape/diff_core.py."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click
import duckdb

from tape.diff_core import DiffOptions, compare
from tape.diff_report import render
from tape.diff_rules import DEFAULT_IGNORES, RuleError, Rules, rules_for
from tape.diff_source import read_traffic
from tape.diff_timing import Timing
from tape.schema import TapeError
from tape.tapeset import named_tapes


class _Trouble(click.ClickException):
    """A tape that cannot be read: one `Error:` line and exit 2, since 1 means "different"."""

    exit_code = 2


def _timing(ctx: click.Context, param: click.Parameter, value: str | None) -> Timing | None:
    try:
        return None if value is None else Timing.parse(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None


def _checked_rule(ctx: click.Context, param: click.Parameter, value: tuple[str, ...]) -> Any:
    try:
        Rules.parse(value)
    except RuleError as exc:
        raise click.BadParameter(str(exc)) from None
    return value


_TAPE = click.Path(path_type=Path)


@click.command("diff")
@click.argument("a", type=_TAPE, callback=named_tapes)
@click.argument("b", type=_TAPE, callback=named_tapes)
@click.option("--session-a", metavar="ID", help="Compare only this session of A.")
@click.option("--session-b", metavar="ID", help="Compare only this session of B.")
@click.option(
    "--ignore",
    multiple=True,
    metavar="PATH",
    callback=_checked_rule,
    help="A JSONPath whose values may differ ($.data.id, $.a[*].b, $..timestamp), rooted at "
    "each delivered message and each REST body; repeatable, added to the defaults: "
    + ", ".join(DEFAULT_IGNORES)
    + " (pii:* = masked values).",
)
@click.option("--no-default-ignores", is_flag=True, help="Compare what the defaults ignore.")
@click.option(
    "--timing",
    metavar="TOL",
    callback=_timing,
    help="Also compare when each delivery came, after its session's first one: B within TOL "
    "of A (10%, 50ms, or 10%+50ms). Default: order only.",
)
@click.option(
    "--deliveries-only",
    is_flag=True,
    help="Leave the REST exchanges out (e.g. a proxy's tape against a recorder's).",
)
@click.option(
    "-U",
    "--context",
    type=click.IntRange(min=0),
    default=3,
    show_default=True,
    help="Lines of context around each change.",
)
@click.option("-q", "--quiet", is_flag=True, help="Print the summary line alone.")
def diff_command(
    a: Path,
    b: Path,
    session_a: str | None,
    session_b: str | None,
    ignore: tuple[str, ...],
    no_default_ignores: bool,
    timing: Timing | None,
    deliveries_only: bool,
    context: int,
    quiet: bool,
) -> None:
    """Compare the traffic of two tapes: the messages delivered on each channel, in order,
    and (for proxy tapes) the REST exchanges, less what legitimately changes between two
    recordings (--ignore). Prints a unified diff of messages, one JSON line each, then a
    summary; exits 0 when the same, 1 when different, 2 on a usage error.

    A and B are DuckDB tapes, JSONL tapes, HAR files or tape sets (a folder or a glob)."""
    options = DiffOptions(
        rules=rules_for(ignore, default_ignores=not no_default_ignores),
        timing=timing,
        exchanges=not deliveries_only,
        context=context,
    )
    try:
        traffic_a = read_traffic(a, session_a)
        traffic_b = read_traffic(b, session_b)
    except (TapeError, duckdb.Error, OSError) as exc:
        raise _Trouble(str(exc)) from None
    diff = compare(traffic_a, traffic_b, options)
    click.echo(render(diff, quiet=quiet))
    if not diff.equal:
        raise click.exceptions.Exit(1)
