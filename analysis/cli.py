"""`cometd-tape analyze`: latency, summary, unmatched requests, SQL, exports, an HTML report and
generated tapes, over one or more tapes (DuckDB or JSONL) or Parquet export folders analysed as
one (DuckDB, or Spark over a Parquet lake)."""

from __future__ import annotations

import datetime as dt
import functools
import re
import sys
from collections.abc import Callable, Collection
from pathlib import Path
from typing import Any, TypeVar

import click
import duckdb
import orjson

from analysis.cache import BASE_TABLES
from analysis.definitions import view_names
from analysis.export import export
from analysis.generate import generate_command
from analysis.lake import export_to_lake
from analysis.latency import GROUPS, STATS, Connection, latency
from analysis.output import FORMATS, render
from analysis.recorder import capture_notes, has_requests, notes, recorder_latency, section
from analysis.report import build_report
from analysis.spark import DEFAULT_MASTER, SparkConnection, export_spark, open_lake
from analysis.summary import SUMMARY_READS, summary
from analysis.views import Filters, open_tapes, repeated_sources
from tape.outputs import claim_folder, claim_output, overwrite_option
from tape.source import is_text_tape, readable_all
from tape.tapeset import MANIFESTS, expand, named_tapes

F = TypeVar("F", bound=Callable[..., Any])

_TAPES = click.argument(
    "tapes", nargs=-1, required=True, type=click.Path(path_type=Path), callback=named_tapes
)
SQL_EXAMPLE = 'cometd-tape analyze sql shift.duckdb "select count(*) from requests"'
_FORMAT = click.option(
    "--format",
    "fmt",
    type=click.Choice(FORMATS),
    default="table",
    show_default=True,
    help="Output format.",
)


def _moment(ctx: click.Context, param: click.Parameter, value: str | None) -> int | None:
    """An ISO 8601 date or time (UTC unless it names a zone) -> ns since the epoch."""
    if value is None:
        return None
    try:
        moment = dt.datetime.fromisoformat(value)
    except ValueError:
        raise click.BadParameter(
            f"{value!r} is not an ISO 8601 time; write e.g. 2026-11-26 or 2026-11-26T09:30:00Z"
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=dt.UTC)
    return int(moment.timestamp() * 1_000_000) * 1000


Reads = Callable[[dict[str, Any]], Collection[str] | None]


def _filters(reads: Reads, *, engines: bool = False) -> Callable[[F], F]:
    """--since/--until/--session/--campaign and --no-cache: the command gets `conn`, the
    tapes opened as one with the filters applied. `reads(kwargs)` names the views the command
    will read (None: every one), the ones worth caching. `engines`: --engine and --master too
    (Spark over a lake; the command gets analysis/spark.py's connection)."""

    def decorate(command: F) -> F:
        wrapped = _with_filters(command, reads)
        if not engines:
            return wrapped
        wrapped = click.option(
            "--master",
            help=f"With --engine spark: the Spark master ({DEFAULT_MASTER} by default: every "
            "core here; local[N], spark://HOST:PORT, yarn).",
        )(wrapped)
        return click.option(
            "--engine",
            type=click.Choice(["duckdb", "spark"]),
            default="duckdb",
            show_default=True,
            help="DuckDB on this machine, or Apache Spark over a Parquet lake "
            "(pip install 'cometd-tape[spark]' and Java). docs/scale-out.md",
        )(wrapped)

    return decorate


def _reads(*views: str) -> Reads:
    return lambda kwargs: views


def _sql_reads(kwargs: dict[str, Any]) -> Collection[str]:
    """The views a query names; reads the query from stdin first when it is `-`."""
    if kwargs["query"] == "-":
        kwargs["query"] = sys.stdin.read()
    words = set(re.findall(r"\w+", kwargs["query"].lower()))
    return [v for v in view_names() if v in words]


def _with_filters(command: F, reads: Reads) -> F:

    @click.option("--since", callback=_moment, help="Only from this time (ISO 8601, UTC default).")
    @click.option("--until", callback=_moment, help="Only before this time (ISO 8601).")
    @click.option("--session", "sessions", multiple=True, help="Only this session (repeatable).")
    @click.option("--campaign", help="Only requests (and their acks) of this campaign.")
    @click.option(
        "--no-cache",
        is_flag=True,
        help=(
            "Compute the views afresh from the frames: neither read nor write the cache, "
            "nor read the latency the tape stored when it closed."
        ),
    )
    @functools.wraps(command)
    def wrapper(
        since: int | None,
        until: int | None,
        sessions: tuple[str, ...],
        campaign: str | None,
        no_cache: bool,
        tapes: tuple[Path, ...],
        engine: str = "duckdb",
        master: str | None = None,
        **kwargs: Any,
    ) -> Any:
        if master is not None and engine != "spark":
            raise click.UsageError("--master is Spark's: give --engine spark with it")
        if since is not None and until is not None and since >= until:
            raise click.BadParameter("--since must be before --until", param_hint="--since")
        filters = Filters(since, until, sessions, campaign)
        if kwargs.get("lake") is not None and filters != Filters():
            raise click.UsageError(
                "--to adds whole tapes to a lake (a tape is replaced whole when exported "
                "again); filter when you read the lake: drop --since, --until, --session and "
                "--campaign here"
            )
        views = reads(kwargs)
        # A JSONL tape is imported into a temporary one for the command's run; not cached
        # (the cache is keyed by path, and its path is new every run).
        given = expand(tapes)
        for note in given.notes:
            click.echo(note, err=True)
        tapes = given.tapes
        if engine == "spark":
            if kwargs.get("lake") is not None:
                raise click.UsageError("--to adds tapes to a lake with DuckDB; drop --engine spark")
            where = {name: filters.where(name) for name in (*BASE_TABLES, *view_names())}
            if views is not None:  # and what a tape with no REST requests is analysed by
                views = {*views, "delivery_latency", "clock_offsets", "capture_offsets"}
            spark = open_lake(tapes, where, master=master or DEFAULT_MASTER, views=views)
            for note in spark.notes:
                click.echo(note, err=True)
            try:
                return _run(command, spark, tapes, sessions, kwargs)
            finally:
                spark.close()
        with readable_all(tapes) as sources:
            cache = not no_cache and not any(map(is_text_tape, tapes))
            conn = open_tapes(sources, filters, cache=cache, views=views)
            try:
                return _run(command, conn, tapes, sessions, kwargs)
            finally:
                conn.close()

    return wrapper  # type: ignore[return-value]


def _run(
    command: Callable[..., Any],
    conn: Connection,
    tapes: tuple[Path, ...],
    sessions: tuple[str, ...],
    kwargs: dict[str, Any],
) -> Any:
    repeats: dict[tuple[int, int], list[str]] = {}
    for source, earlier, session in repeated_sources(conn):
        repeats.setdefault((source, earlier), []).append(session)
    for (source, earlier), ids in repeats.items():
        shown = ", ".join(ids[:5]) + (" ..." if len(ids) > 5 else "")
        click.echo(
            f"warning: {tapes[source]} repeats frames of {tapes[earlier]} (session {shown}: "
            "a tape given twice, or with its own export?); they are read once",
            err=True,
        )
    if sessions:
        _check_sessions(conn, sessions)
    return command(conn=conn, tapes=tapes, **kwargs)


@click.group("analyze")
def analyze_group() -> None:
    """Analyse tapes: request -> ack latency, summaries, SQL, exports and an HTML report.

    Every command takes several tapes, or folders written by `analyze export --format
    parquet`, and analyses them as one.
    """


@analyze_group.command("latency")
@_TAPES
@click.option(
    "--by",
    "by",
    multiple=True,
    type=click.Choice(sorted(GROUPS)),
    help=(
        "Group by (repeat to nest). Default: operation; notification on tapes with no REST "
        "requests."
    ),
)
@_FORMAT
@_filters(_reads("latency_parts"), engines=True)
def latency_command(
    conn: Connection, tapes: tuple[Path, ...], by: tuple[str, ...], fmt: str
) -> None:
    """Request -> ack latency: count, p50, p90, p99, p99.9, max, mean per part (ms).

    Parts: http_ms (request -> HTTP response), ack_ms (request -> ack, as the client saw it),
    server_ms (serverProcessingTimeTotalMs), node_ms (nodeProcessingTimeNanos / 1e6), and
    rest_ms (ack_ms - server_ms). Percentiles interpolate linearly between the two nearest
    ranks, as numpy.percentile's default method.

    On tapes with no REST requests (a `record` tape): delivery_ms (receipt -
    serverGenerationTimestamp, the estimated clock offset removed), server_ms and node_ms, by
    notification type unless --by says otherwise; the clock offset and what is missing are
    said below the table (on stderr for csv and json).
    """
    rows = latency(conn, by or ("operation",))
    if rows or has_requests(conn):
        columns = [*(by or ("operation",)), "part", *STATS]
        click.echo(render(columns, [(*r.group, r.part, *r.values) for r in rows], fmt))
        _notes(capture_notes(conn), fmt)
        return
    by = by or ("notification",)
    rows = recorder_latency(conn, by)
    columns = [*by, "part", *STATS]
    click.echo(render(columns, [(*r.group, r.part, *r.values) for r in rows], fmt))
    _notes(notes(conn), fmt)


def _notes(lines: list[str], fmt: str) -> None:
    """Notes below a table; on stderr for csv and json, whose stdout a program reads."""
    if not lines:
        return
    if fmt == "table":
        click.echo("\n" + "\n".join(f"note: {line}" for line in lines))
    else:
        for line in lines:
            click.echo(f"note: {line}", err=True)


@analyze_group.command("summary")
@_TAPES
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["table", "json"]),
    default="table",
    show_default=True,
    help="Output format.",
)
@_filters(_reads(*SUMMARY_READS), engines=True)
def summary_command(conn: Connection, tapes: tuple[Path, ...], fmt: str) -> None:
    """Sessions, messages per channel, request/ack match rate, errors, gaps, clock offset; on
    tapes with no REST requests, delivery and server processing by notification too (as
    `analyze latency` prints them there)."""
    sections = summary(conn)
    if not has_requests(conn):
        sections["delivery"] = section(conn)
    if fmt == "json":
        data: dict[str, Any] = {
            key: [dict(zip(s.columns, row, strict=True)) for row in s.rows]
            for key, s in sections.items()
        }
        if "delivery" in sections:
            data["delivery_notes"] = sections["delivery"].notes
        click.echo(orjson.dumps(data, option=orjson.OPT_INDENT_2, default=str))
        return
    parts = []
    for found in sections.values():
        text = render(found.columns, found.rows, "table") if found.rows else "  none"
        text += "".join(f"\nnote: {line}" for line in found.notes)
        parts.append(f"{found.title}\n{text}")
    click.echo("\n\n".join(parts))


@analyze_group.command("unmatched")
@_TAPES
@_FORMAT
@_filters(_reads("unmatched_requests"), engines=True)
def unmatched_command(conn: Connection, tapes: tuple[Path, ...], fmt: str) -> None:
    """Requests with no ack, an HTTP error or a non-zero statusCode, and why."""
    _query(
        conn,
        "SELECT session_id, seq, make_timestamp(request_ns // 1000) AS sent, operation_name, "
        "reference_id, record_handle, campaign_name, status, status_code, reason "
        "FROM unmatched_requests ORDER BY request_ns, session_id, seq",
        fmt,
    )


def _query_given(command: F) -> F:
    """`analyze sql` with one argument: say what is missing (click would say TAPES)."""

    @functools.wraps(command)
    def wrapper(tapes: tuple[Path, ...], query: str | None, **kwargs: Any) -> Any:
        if query is None:
            raise click.UsageError(f"give the tapes, then the SQL query; e.g. {SQL_EXAMPLE}")
        if not tapes:
            if Path(query).exists():
                raise click.UsageError(
                    f"the SQL query is missing after the tape {query}; e.g. {SQL_EXAMPLE}"
                )
            raise click.UsageError(f"give a tape before the SQL query; e.g. {SQL_EXAMPLE}")
        return command(tapes=tapes, query=query, **kwargs)

    return wrapper  # type: ignore[return-value]


@analyze_group.command("sql")
@click.argument(
    "tapes", nargs=-1, metavar="TAPES...", type=click.Path(path_type=Path), callback=named_tapes
)
@click.argument("query", required=False, metavar="QUERY")
@_FORMAT
@_query_given
@_filters(_sql_reads)
def sql_command(
    conn: duckdb.DuckDBPyConnection, tapes: tuple[Path, ...], query: str, fmt: str
) -> None:
    """Run SQL over the tapes and their views; QUERY `-` reads it from stdin. E.g.

    cometd-tape analyze sql shift.duckdb "select count(*) from requests"

    Tables: frames, messages, http_fields, sessions. Views: requests, acks, request_latency,
    latency_parts, unmatched_requests, clock_offsets, delivery_latency, channel_rates, gaps,
    capture_points, capture_offsets, message_data (each message's data, from frames.raw).
    """
    text = query
    if not text.strip():
        raise click.BadParameter("the query is empty", param_hint="QUERY")
    try:
        result = conn.execute(text)
        columns = [d[0] for d in result.description or []]
        rows = result.fetchall() if result.description else []
    except duckdb.Error as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise click.ClickException(f"the query failed: {first}") from None
    click.echo(render(columns, rows, fmt))


@analyze_group.command("export")
@_TAPES
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["parquet", "csv", "json"]),
    default="parquet",
    show_default=True,
    help="File format.",
)
@click.option(
    "-o",
    "--output",
    type=click.Path(file_okay=False, path_type=Path),
    help="Folder to write into.",
)
@click.option(
    "--to",
    "lake",
    type=click.Path(file_okay=False, path_type=Path),
    help="Add each tape's frames, messages, http_fields and sessions to this Parquet lake "
    "(created if new; a tape exported again replaces its earlier export). docs/scale-out.md",
)
@click.option("--overwrite", is_flag=True, help="Replace an earlier export the folder holds.")
@_filters(lambda kwargs: () if kwargs.get("lake") else None, engines=True)
def export_command(
    conn: Connection,
    tapes: tuple[Path, ...],
    fmt: str,
    output: Path | None,
    lake: Path | None,
    overwrite: bool,
) -> None:
    """Write frames, messages, http_fields, sessions and every view (Parquet: Hive-partitioned
    by date), or add the tapes to a Parquet lake (--to)."""
    if (output is None) == (lake is None):
        raise click.UsageError("give -o FOLDER for an export, or --to LAKE to add to a lake")
    if lake is not None:
        assert isinstance(conn, duckdb.DuckDBPyConnection)  # --engine spark refused --to
        _to_lake(conn, tapes, lake, fmt)
        return
    assert output is not None
    claim_folder(output, overwrite=overwrite, owned=_exported)
    if isinstance(conn, SparkConnection):
        counts = export_spark(conn, output, fmt)
    else:
        assert isinstance(conn, duckdb.DuckDBPyConnection)
        counts = export(conn, output, fmt)
    width = max(len(n) for n in counts)
    for name, count in counts.items():
        click.echo(f"{name.ljust(width)}  {count:>10} rows")
    click.echo(f"wrote {fmt} to {output}")


def _to_lake(
    conn: duckdb.DuckDBPyConnection, tapes: tuple[Path, ...], lake: Path, fmt: str
) -> None:
    if fmt != "parquet":
        raise click.BadParameter("a lake is Parquet", param_hint="--format")
    if lake.exists() and any(lake.iterdir()) and not (lake / MANIFESTS).is_dir():
        raise click.ClickException(
            f"{lake} holds files but is not a Parquet lake (no {MANIFESTS}/): give a new or "
            "empty folder, or a lake"
        )
    for done in export_to_lake(conn, lake, tapes):
        rows = ", ".join(f"{count} {table}" for table, count in done.rows.items())
        again = f", replacing its earlier export ({done.replaced} files)" if done.replaced else ""
        click.echo(f"{done.tape}: {rows} (tape {done.tape_id}, capture {done.capture}){again}")
    click.echo(f"added {len(tapes)} tape(s) to the lake {lake}")


@analyze_group.command("report")
@_TAPES
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False, path_type=Path),
    required=True,
    help="The HTML file to write.",
)
@overwrite_option
@_filters(_reads(*SUMMARY_READS, "latency_parts"))
def report_command(
    conn: duckdb.DuckDBPyConnection, tapes: tuple[Path, ...], output: Path, overwrite: bool
) -> None:
    """One self-contained HTML file (no scripts, no CDN): charts and the summary tables."""
    claim_output(output, overwrite=overwrite)
    title = "cometd-tape report: " + ", ".join(p.name for p in tapes)
    output.write_text(build_report(conn, title), encoding="utf-8")
    click.echo(f"wrote {output}")


analyze_group.add_command(generate_command)


def _exported(entry: Path) -> bool:
    """A file or folder `analyze export` writes: a relation's name, with a format's suffix."""
    return entry.name.split(".")[0] in (*BASE_TABLES, *view_names())


analyse_alias = click.Group(
    "analyse",
    commands=analyze_group.commands,
    hidden=True,
    help="The same as `analyze` (British spelling): see `cometd-tape analyze --help`.",
)


def _check_sessions(conn: Connection, wanted: tuple[str, ...]) -> None:
    rows = conn.execute("SELECT DISTINCT session_id FROM session_ids").fetchall()
    known = {r[0] for r in rows}
    missing = [s for s in wanted if s not in known]
    if missing:
        shown = ", ".join(sorted(known)[:10]) or "none"
        raise click.BadParameter(
            f"no session {', '.join(missing)} in these tapes; they hold: {shown}",
            param_hint="--session",
        )


def _query(conn: Connection, sql: str, fmt: str) -> None:
    result = conn.execute(sql)
    columns = [d[0] for d in result.description or []]
    click.echo(render(columns, result.fetchall(), fmt))
