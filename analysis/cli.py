"""`cometd-tape analyze`: latency and SQL over tapes (the rest of issue 5 is not built yet)."""

from __future__ import annotations

import csv
import sys
from pathlib import Path

import click
import orjson

from analysis.latency import GROUPS, STATS, LatencyRow, latency
from analysis.views import open_tapes

_TAPES = click.argument(
    "tapes", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path)
)


@click.group("analyze")
def analyze_group() -> None:
    """Analyse tapes: request -> acknowledgement latency, and plain SQL."""


@analyze_group.command("latency")
@_TAPES
@click.option(
    "--by",
    "by",
    multiple=True,
    type=click.Choice(sorted(GROUPS)),
    default=("operation",),
    show_default=True,
    help="Group by (repeat to nest).",
)
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["table", "csv", "json"]),
    default="table",
    show_default=True,
    help="Output format.",
)
def latency_command(tapes: tuple[Path, ...], by: tuple[str, ...], fmt: str) -> None:
    """Request -> ack latency: count, p50, p90, p99, p99.9, max, mean per part (ms).

    Parts: http_ms (request -> HTTP response), ack_ms (request -> ack, as the client saw it),
    server_ms (serverProcessingTimeTotalMs), node_ms (nodeProcessingTimeNanos / 1e6), and
    rest_ms (ack_ms - server_ms). Percentiles interpolate linearly, as numpy's default.
    """
    conn = open_tapes(list(tapes))
    rows = latency(conn, by)
    if fmt == "json":
        click.echo(orjson.dumps([_record(r, by) for r in rows], option=orjson.OPT_INDENT_2))
    elif fmt == "csv":
        writer = csv.writer(sys.stdout)
        writer.writerow([*by, "part", *STATS])
        writer.writerows([*r.group, r.part, *r.values] for r in rows)
    else:
        click.echo(_table(rows, by))


@analyze_group.command("sql")
@click.argument("tape", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.argument("query")
def sql_command(tape: Path, query: str) -> None:
    """Run SQL over a tape and its views (requests, acks, request_latency); - reads stdin."""
    conn = open_tapes([tape])
    text = sys.stdin.read() if query == "-" else query
    result = conn.execute(text)
    names = [d[0] for d in result.description or []]
    click.echo("\t".join(names))
    for row in result.fetchall():
        click.echo("\t".join("" if v is None else str(v) for v in row))


def _record(row: LatencyRow, by: tuple[str, ...]) -> dict[str, object]:
    return {
        **dict(zip(by, row.group, strict=False)),
        "part": row.part,
        **dict(zip(STATS, row.values, strict=True)),
    }


def _table(rows: list[LatencyRow], by: tuple[str, ...]) -> str:
    head = [*by, "part", *STATS]
    body = [[*(str(g) for g in r.group), r.part, *(_num(v) for v in r.values)] for r in rows]
    widths = [max(len(x) for x in col) for col in zip(head, *body, strict=False)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(head, widths, strict=True))]
    lines += [
        "  ".join(
            c.rjust(w) if i >= len(by) + 1 else c.ljust(w)
            for i, (c, w) in enumerate(zip(line, widths, strict=True))
        )
        for line in body
    ]
    return "\n".join(lines)


def _num(value: float | int | None) -> str:
    if value is None:
        return "-"
    return str(value) if isinstance(value, int) else f"{value:.3f}"
