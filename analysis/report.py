"""`analyze report`: ONE self-contained HTML file, no scripts, no CDN: it opens offline.

First what the tape can measure and the key latency table: request -> ack by operation when the
tape holds the REST requests (a `proxy` tape), else delivery and server processing by event (a
`record` tape: acks and events only). Then charts (inline SVG, analysis/charts.py): latency
histograms, latency over time, messages per second by channel, gaps shaded; then the summary
tables.
"""

from __future__ import annotations

import datetime as dt
import html
import math
from collections.abc import Sequence
from dataclasses import dataclass

import duckdb

from analysis.charts import GAP_FILL, Series, duration, histogram, line_chart, nice_step, number
from analysis.latency import STATS, latency
from analysis.output import cell
from analysis.summary import summary

BINS = 30  # at most, over 0 .. p99.9
BUCKETS = 30  # at most, on the time charts
BUCKET_SECONDS = (
    0.1, 0.2, 0.5, 1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 21600, 86400,
)  # fmt: skip
SERVER, DELIVERY = "#1f77b4", "#2ca02c"
PARTS_NOTE = (
    "http_ms: request → HTTP response; ack_ms: request → ack received; server_ms: the ack's "
    "serverProcessingTimeTotalMs; node_ms: its nodeProcessingTimeNanos; rest_ms = ack_ms - "
    "server_ms (network, queues, the client)."
)


@dataclass(frozen=True, slots=True)
class Facts:
    """What the tape holds, which decides what can be measured and shown."""

    requests: int  # REST requests that act (the `requests` view)
    acked: int  # of those, answered by an ack
    acks: int  # acks received, with or without a request
    stamped: int  # inbound messages with a serverGenerationTimestamp (delivery latency)
    server_timed: int  # acks with serverProcessingTimeTotalMs
    first_ns: int
    last_ns: int


def build_report(conn: duckdb.DuckDBPyConnection, title: str) -> str:
    facts = _facts(conn)
    step = _bucket_seconds((facts.last_ns - facts.first_ns) / 1e9)
    gaps = [
        (s / 1e9, e / 1e9)
        for s, e in conn.execute(
            "SELECT start_ns, end_ns FROM gaps WHERE end_ns IS NOT NULL ORDER BY start_ns"
        ).fetchall()
    ]
    delivery = _delivery_table(conn) if facts.stamped or facts.server_timed else ""
    first: list[str] = []
    later: list[str] = []
    histograms: list[str] = []
    over_time: list[str] = []
    if facts.requests:
        first.append(_latency_table(conn))
        later.append(delivery)
    else:
        first.append(delivery)
    if facts.acked:
        histograms += _ack_histograms(conn)
        over_time.append(_ack_latency_over_time(conn, facts, step, gaps))
    elif facts.stamped or facts.server_timed:
        histograms += _delivery_histograms(conn, facts)
        over_time += _delivery_over_time(conn, facts, step, gaps)
    over_time.append(_rates_over_time(conn, facts, step, gaps))
    tables = [_table(s.title, s.columns, s.rows) for s in summary(conn).values()]
    period = f"{_iso(facts.first_ns)} to {_iso(facts.last_ns)} (UTC)" if facts.first_ns else ""
    return _PAGE.format(
        title=html.escape(title),
        period=html.escape(period or "no frames"),
        note=_note(facts),
        first="\n".join(t for t in first if t),
        histograms="\n".join(histograms),
        over_time="\n".join(over_time),
        tables="\n".join([*(t for t in later if t), *tables]),
        gap_fill=GAP_FILL,
    )


def _facts(conn: duckdb.DuckDBPyConnection) -> Facts:
    row = conn.execute(
        """SELECT (SELECT count(*) FROM latency_parts), (SELECT count(ack_ms) FROM latency_parts),
                  (SELECT count(*) FROM acks), (SELECT count(*) FROM delivery_latency),
                  (SELECT count(server_processing_ms) FROM acks),
                  (SELECT min(t_wall_ns) FROM frames), (SELECT max(t_wall_ns) FROM frames)"""
    ).fetchall()[0]
    return Facts(*(int(v or 0) for v in row))


def _note(facts: Facts) -> str:
    """What the tape can and cannot measure, said before any figure."""
    if facts.requests:
        if facts.acked:
            return ""
        text = (
            f"{facts.requests} requests were sent and none was acknowledged: see "
            "“Unmatched requests by reason” below."
        )
    elif facts.acks or facts.stamped:
        text = (
            f"This tape holds {facts.acks} acks and {facts.stamped} server-stamped messages, "
            "but no REST requests: request → ack latency needs the requests, which "
            "<code>cometd-tape proxy</code> captures (<code>record</code> sees only what the "
            "server delivers). Shown instead: delivery latency (serverGenerationTimestamp → "
            "receipt) and the server's own processing time (serverProcessingTimeTotalMs)."
        )
        return f'<p class="note">{text}</p>'
    else:
        text = "This tape holds no REST requests, no acks and no server-stamped messages."
    return f'<p class="note">{html.escape(text)}</p>'


# --- tables ---------------------------------------------------------------------------------


def _latency_table(conn: duckdb.DuckDBPyConnection) -> str:
    rows = [(r.group[0], r.part, *r.values) for r in latency(conn, ("operation",))]
    return _table(
        "Latency by operation (ms)", ["operation", "part", *STATS], rows, caption=PARTS_NOTE
    )


def _delivery_table(conn: duckdb.DuckDBPyConnection) -> str:
    stats = "count(v), quantile_cont(v, [0.5, 0.9, 0.99, 0.999]), max(v), avg(v)"
    found = conn.execute(
        f"""WITH parts AS (
            SELECT coalesce(user_event, channel) AS event, 1 AS n, 'delivery_ms' AS part,
                   delivery_ms AS v FROM delivery_latency
            UNION ALL
            SELECT coalesce(notification_type, '(none)'), 2, 'server_ms', server_processing_ms
            FROM acks WHERE server_processing_ms IS NOT NULL
            UNION ALL
            SELECT coalesce(notification_type, '(none)'), 3, 'node_ms', node_processing_ns / 1e6
            FROM acks WHERE node_processing_ns IS NOT NULL)
        SELECT event, part, {stats} FROM parts GROUP BY event, n, part ORDER BY event, n"""
    ).fetchall()
    rows = [
        (event, part, n, *(q or [None] * 4), top, mean) for event, part, n, q, top, mean in found
    ]
    methods = [m for (m,) in conn.execute("SELECT DISTINCT method FROM clock_offsets").fetchall()]
    offset = (
        "relative to the fastest delivery (no request brackets the clock offset: method "
        "min-one-way-delay)"
        if "request-bracket" not in methods
        else "with the clock offset estimated from request → ack brackets (see Clock offset)"
    )
    caption = (
        f"delivery_ms: serverGenerationTimestamp → receipt, {offset}; server_ms: "
        "serverProcessingTimeTotalMs of the ack's metrics; node_ms: its nodeProcessingTimeNanos."
    )
    return _table(
        "Delivery and server processing by event (ms)",
        ["event", "part", *STATS],
        rows,
        caption=caption,
    )


def _table(
    title: str, columns: Sequence[str], rows: Sequence[Sequence[object]], caption: str = ""
) -> str:
    head = "".join(f"<th>{html.escape(c)}</th>" for c in columns)
    if not rows:
        body = f'<tr><td colspan="{len(columns)}" class="none">none</td></tr>'
    else:
        body = "".join(
            "<tr>" + "".join(f"<td{_numeric(v)}>{html.escape(cell(v))}</td>" for v in row) + "</tr>"
            for row in rows
        )
    note = f'<p class="caption">{html.escape(caption)}</p>' if caption else ""
    return (
        f"<section><h2>{html.escape(title)}</h2>{note}<table><thead><tr>{head}</tr></thead>"
        f"<tbody>{body}</tbody></table></section>"
    )


def _numeric(value: object) -> str:
    number = isinstance(value, int | float) and not isinstance(value, bool)
    return ' class="num"' if number else ""


# --- histograms -----------------------------------------------------------------------------


def _ack_histograms(conn: duckdb.DuckDBPyConnection) -> list[str]:
    ops = conn.execute(
        "SELECT DISTINCT coalesce(operation_name, '(none)') AS op FROM latency_parts "
        "WHERE ack_ms IS NOT NULL ORDER BY op"
    ).fetchall()
    return [
        _histogram(
            conn,
            f"Request → ack, {op}",
            "SELECT ack_ms AS v FROM latency_parts "
            "WHERE ack_ms IS NOT NULL AND coalesce(operation_name, '(none)') = ?",
            [op],
            x_label="request → ack (ms)",
            y_label="requests",
            counted="acked",
        )
        for (op,) in ops
    ]


def _delivery_histograms(conn: duckdb.DuckDBPyConnection, facts: Facts) -> list[str]:
    out = []
    if facts.stamped:
        out.append(
            _histogram(
                conn,
                "Delivery latency",
                "SELECT delivery_ms AS v FROM delivery_latency",
                [],
                x_label="serverGenerationTimestamp → receipt (ms)",
                y_label="messages",
                counted="stamped messages",
            )
        )
    if facts.server_timed:
        out.append(
            _histogram(
                conn,
                "Server processing",
                "SELECT server_processing_ms AS v FROM acks WHERE server_processing_ms IS NOT NULL",
                [],
                x_label="serverProcessingTimeTotalMs (ms)",
                y_label="acks",
                counted="acks",
                whole=True,
            )
        )
    return out


def _histogram(
    conn: duckdb.DuckDBPyConnection,
    title: str,
    values: str,
    params: list[object],
    *,
    x_label: str,
    y_label: str,
    counted: str,
    whole: bool = False,
) -> str:
    """Bins of a regular width (1/2/5 x 10^n; at least 1 for `whole` values) from 0 up to the
    99.9th percentile; the last bin also holds whatever lies beyond it."""
    top, highest, count = conn.execute(
        f"SELECT quantile_cont(v, 0.999), max(v), count(v) FROM ({values})", params
    ).fetchall()[0]
    width = nice_step(max(float(top or 0), 1e-3) / BINS)
    if whole:
        width = max(width, 1.0)
    bins = max(1, math.floor(float(top or 0) / width) + 1)
    found = dict(
        conn.execute(
            f"SELECT greatest(least(floor(v / {width})::BIGINT, {bins - 1}), 0) AS b, count(*) "
            f"FROM ({values}) WHERE v IS NOT NULL GROUP BY b",
            params,
        ).fetchall()
    )
    counts = [int(found.get(b, 0)) for b in range(bins)]
    beyond = float(highest or 0) >= bins * width
    last = number((bins - 1) * width, width)
    tail = f"; last bar: {last} to {float(highest):.4g} ms" if beyond else ""
    return histogram(
        title,
        counts,
        width,
        x_label=x_label,
        y_label=y_label,
        subtitle=f"{count} {counted}, bins of {width:g} ms{tail}",
    )


# --- over time ------------------------------------------------------------------------------


def _bucket_sql(column: str, facts: Facts, step: float) -> str:
    """The midpoint (seconds since the epoch) of the bucket `column` falls in; buckets start at
    the first frame, so only the last one can be partial, and a partial one's midpoint is the
    middle of the part the recording covered."""
    step_ns = round(step * 1e9)
    start = f"({facts.first_ns} + ({column} - {facts.first_ns}) // {step_ns} * {step_ns})"
    return f"({start} + least({start} + {step_ns}, {facts.last_ns})) / 2e9"


def _p50_p99_chart(
    conn: duckdb.DuckDBPyConnection,
    facts: Facts,
    step: float,
    gaps: list[tuple[float, float]],
    *,
    value: str,
    source: str,
    time_ns: str,
    name: str,
    colour: str | None,
    title: str,
    counted: str,
) -> str:
    """A line chart of `value`'s p50 (solid) and p99 (dashed) over time, per `step` bucket of
    `time_ns`, from the rows of `source` (a view, with its WHERE); `colour` None: by position."""
    t = _bucket_sql(time_ns, facts, step)
    rows = conn.execute(
        f"SELECT {t} AS t, quantile_cont({value}, 0.5), quantile_cont({value}, 0.99) "
        f"FROM {source} GROUP BY t ORDER BY t"
    ).fetchall()
    series = [
        Series(f"{name}p50", [(float(t), float(a)) for t, a, _ in rows], colour, ""),
        Series(f"{name}p99", [(float(t), float(b)) for t, _, b in rows], colour, "7 4"),
    ]
    return line_chart(
        title,
        series,
        subtitle=f"p50 and p99 of the {counted} in each {duration(step)}",
        y_label="ms",
        span=_span(facts),
        gaps=gaps,
    )


def _ack_latency_over_time(
    conn: duckdb.DuckDBPyConnection, facts: Facts, step: float, gaps: list[tuple[float, float]]
) -> str:
    return _p50_p99_chart(
        conn,
        facts,
        step,
        gaps,
        value="ack_ms",
        source="latency_parts WHERE ack_ms IS NOT NULL",
        time_ns="request_ns",
        name="ack ",
        colour=None,
        title="Request → ack latency over time",
        counted="requests sent",
    )


def _delivery_over_time(
    conn: duckdb.DuckDBPyConnection, facts: Facts, step: float, gaps: list[tuple[float, float]]
) -> list[str]:
    """Server processing and delivery apart: their scales differ by orders of magnitude."""
    charts = []
    if facts.server_timed:
        charts.append(
            _p50_p99_chart(
                conn,
                facts,
                step,
                gaps,
                value="server_processing_ms",
                source="acks WHERE server_processing_ms IS NOT NULL",
                time_ns="ack_ns",
                name="server ",
                colour=SERVER,
                title="Server processing over time (serverProcessingTimeTotalMs)",
                counted="acks received",
            )
        )
    if facts.stamped:
        charts.append(
            _p50_p99_chart(
                conn,
                facts,
                step,
                gaps,
                value="delivery_ms",
                source="delivery_latency",
                time_ns="receipt_ns",
                name="delivery ",
                colour=DELIVERY,
                title="Delivery latency over time (serverGenerationTimestamp → receipt)",
                counted="messages received",
            )
        )
    return charts


def _span(facts: Facts) -> tuple[float, float]:
    return facts.first_ns / 1e9, facts.last_ns / 1e9


def _rates_over_time(
    conn: duckdb.DuckDBPyConnection, facts: Facts, step: float, gaps: list[tuple[float, float]]
) -> str:
    """Messages per second, per bucket. The last bucket, when the recording ended inside it,
    is rated over the part recorded, or left out when that is under half a bucket (a few
    messages over a sliver of time would spike or dip)."""
    step_ns = round(step * 1e9)
    start = f"{facts.first_ns} + (t_wall_ns - {facts.first_ns}) // {step_ns} * {step_ns}"
    rows = conn.execute(
        f"SELECT channel, {start} AS b, count(*) FROM messages "
        "WHERE direction = 'in' AND NOT starts_with(channel, '/meta/') "
        "GROUP BY ALL ORDER BY channel, b"
    ).fetchall()
    counts: dict[str, dict[int, int]] = {}
    for channel, b, count in rows:
        counts.setdefault(channel, {})[b] = count
    # Every bucket of the recording, a channel's empty ones at 0 messages per second.
    buckets = range(facts.first_ns, facts.last_ns + 1, step_ns)
    left_out = 0.0
    rated: list[tuple[int, float]] = []  # (bucket start, seconds of it recorded)
    for b in buckets:
        covered = min(step_ns, facts.last_ns - b)
        if covered < step_ns / 2 and b > facts.first_ns:
            left_out = covered / 1e9
            continue
        rated.append((b, max(covered, 1) / 1e9))
    series = [
        Series(c, [((b + s * 5e8) / 1e9, per.get(b, 0) / s) for b, s in rated])
        for c, per in sorted(counts.items(), key=lambda kv: (-sum(kv[1].values()), kv[0]))
    ]
    tail = f"; the last {duration(left_out)}, too short to rate, left out" if left_out else ""
    shown = f"the {len(series[:7])} busiest of {len(series)} channels" if len(series) > 7 else ""
    return line_chart(
        "Messages per second by channel",
        series[:7],
        subtitle="; ".join(x for x in (f"per {duration(step)}{tail}", shown) if x),
        y_label="messages / s",
        span=_span(facts),
        gaps=gaps,
        empty="no messages received outside the /meta/ channels",
    )


def _bucket_seconds(span: float) -> float:
    for step in BUCKET_SECONDS:
        if span / step <= BUCKETS:
            return float(step)
    return float(math.ceil(span / BUCKETS / 86400) * 86400)


def _iso(ns: int) -> str:
    return dt.datetime.fromtimestamp(ns / 1e9, dt.UTC).isoformat(timespec="milliseconds")


_PAGE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title}</title>
<style>
body {{ font: 14px/1.4 system-ui, sans-serif; margin: 24px auto; padding: 0 16px;
       max-width: 1180px; color: #222; }}
h1 {{ font-size: 20px; margin: 0 0 4px; }} h2 {{ font-size: 16px; margin: 24px 0 6px; }}
.period {{ color: #666; margin-bottom: 12px; }}
.note {{ background: #fff8e1; border-left: 4px solid #f0b429; padding: 8px 12px; }}
.caption {{ color: #555; margin: 0 0 6px; font-size: 13px; }}
figure {{ margin: 0; }}
#histograms {{ display: grid; grid-template-columns: repeat(auto-fit, minmax(440px, 1fr));
              gap: 12px; margin: 12px 0; }}
#over-time figure {{ margin: 12px 0; }}
svg.chart {{ display: block; width: 100%; height: auto; border: 1px solid #ddd;
            background: #fff; }}
svg text {{ font-size: 11px; fill: #333; }}
svg text.title {{ font-size: 13px; font-weight: 600; }}
svg text.axislabel {{ fill: #555; }} svg text.empty {{ fill: #888; }}
svg .axis {{ stroke: #888; }} svg .grid {{ stroke: #eee; }}
svg .bar {{ fill: #1f77b4; }} svg .gap {{ fill: {gap_fill}; opacity: 0.6; }}
table {{ border-collapse: collapse; margin: 4px 0; }}
th, td {{ border: 1px solid #ddd; padding: 2px 8px; text-align: left; }}
td.num {{ text-align: right; font-variant-numeric: tabular-nums; }}
th {{ background: #f5f5f5; }} td.none {{ color: #888; }}
</style></head>
<body>
<h1>{title}</h1>
<div class="period">{period}</div>
{note}
{first}
<section id="charts">
<div id="histograms">
{histograms}
</div>
<div id="over-time">
{over_time}
</div>
</section>
{tables}
</body></html>
"""
