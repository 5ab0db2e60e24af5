"""`analyze report`: ONE self-contained HTML file, no scripts, no CDN: it opens offline.

Charts are inline SVG drawn here: an ack latency histogram per operation, ack_ms p50/p99 over
time, messages per channel over time, with every gap shaded on the time charts; then the
summary tables and the latency table.
"""

from __future__ import annotations

import datetime as dt
import html
import math
from collections.abc import Sequence
from dataclasses import dataclass

import duckdb

from analysis.latency import STATS, latency
from analysis.output import cell
from analysis.summary import summary

WIDTH, HEIGHT = 720, 260
LEFT, RIGHT, TOP, BOTTOM = 64, 16, 28, 40
COLOURS = ("#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2")
NICE_SECONDS = (1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 21600, 86400)
BINS = 30


@dataclass(frozen=True, slots=True)
class Series:
    name: str
    points: list[tuple[float, float]]  # (x, y); x is seconds since the epoch for time charts


def build_report(conn: duckdb.DuckDBPyConnection, title: str) -> str:
    span = conn.execute("SELECT min(t_wall_ns), max(t_wall_ns) FROM frames").fetchall()[0]
    first, last = (span[0] or 0), (span[1] or 0)
    step = _bucket_seconds((last - first) / 1e9)
    gaps = [
        (s / 1e9, e / 1e9)
        for s, e in conn.execute(
            "SELECT start_ns, end_ns FROM gaps WHERE end_ns IS NOT NULL"
        ).fetchall()
    ]
    charts = [
        *_histograms(conn),
        _latency_over_time(conn, step, gaps),
        _rates_over_time(conn, step, gaps),
    ]
    sections = summary(conn)
    tables = [_table_html(s.title, s.columns, s.rows) for s in sections.values()]
    rows = latency(conn, ("operation",))
    tables.append(
        _table_html(
            "Latency by operation (ms)",
            ["operation", "part", *STATS],
            [(r.group[0], r.part, *r.values) for r in rows],
        )
    )
    period = f"{_iso(first)} to {_iso(last)}" if first else "no frames"
    return _PAGE.format(
        title=html.escape(title),
        period=html.escape(period),
        charts="\n".join(charts),
        tables="\n".join(tables),
    )


# --- charts ----------------------------------------------------------------------------------


def _histograms(conn: duckdb.DuckDBPyConnection) -> list[str]:
    ops = conn.execute(
        "SELECT coalesce(operation_name, '(none)') AS op, quantile_cont(ack_ms, 0.999), count(*) "
        "FROM latency_parts WHERE ack_ms IS NOT NULL GROUP BY op ORDER BY op"
    ).fetchall()
    if not ops:
        return [_empty_chart("Ack latency histogram", "no request was acknowledged")]
    charts = []
    for op, top, count in ops:
        width = max(float(top or 0) / BINS, 1e-3)
        bins = dict(
            conn.execute(
                f"SELECT least(floor(ack_ms / {width})::BIGINT, {BINS - 1}) AS b, count(*) "
                "FROM latency_parts WHERE ack_ms IS NOT NULL "
                "AND coalesce(operation_name, '(none)') = ? GROUP BY b",
                [op],
            ).fetchall()
        )
        counts = [int(bins.get(b, 0)) for b in range(BINS)]
        charts.append(
            _bars(
                f"Ack latency, {op} ({count} acked; last bar holds the slowest 0.1%+)",
                counts,
                width,
            )
        )
    return charts


def _latency_over_time(
    conn: duckdb.DuckDBPyConnection, step: float, gaps: list[tuple[float, float]]
) -> str:
    rows = conn.execute(
        f"SELECT (request_ns // {int(step * 1e9)}) * {step} AS t, "
        "quantile_cont(ack_ms, 0.5), quantile_cont(ack_ms, 0.99) FROM latency_parts "
        "WHERE ack_ms IS NOT NULL GROUP BY t ORDER BY t"
    ).fetchall()
    series = [
        Series("p50", [(float(t), float(p50)) for t, p50, _ in rows]),
        Series("p99", [(float(t), float(p99)) for t, _, p99 in rows]),
    ]
    return _lines(f"Ack latency over time (ms, per {_duration(step)})", series, gaps)


def _rates_over_time(
    conn: duckdb.DuckDBPyConnection, step: float, gaps: list[tuple[float, float]]
) -> str:
    rows = conn.execute(
        f"SELECT channel, (t_wall_ns // {int(step * 1e9)}) * {step} AS t, count(*) / {step} "
        "FROM messages WHERE direction = 'in' AND NOT starts_with(channel, '/meta/') "
        "GROUP BY ALL ORDER BY channel, t"
    ).fetchall()
    by_channel: dict[str, list[tuple[float, float]]] = {}
    for channel, t, rate in rows:
        by_channel.setdefault(channel, []).append((float(t), float(rate)))
    series = [Series(c, p) for c, p in sorted(by_channel.items(), key=lambda kv: -len(kv[1]))]
    return _lines(f"Messages per second by channel (per {_duration(step)})", series[:7], gaps)


def _lines(title: str, series: list[Series], gaps: list[tuple[float, float]]) -> str:
    points = [p for s in series for p in s.points]
    if not points:
        return _empty_chart(title, "no data")
    x0, x1 = min(p[0] for p in points), max(p[0] for p in points)
    for start, end in gaps:
        x0, x1 = min(x0, start), max(x1, end)
    if x1 == x0:
        x1 = x0 + 1
    y1 = max(p[1] for p in points) * 1.1 or 1.0
    sx = _scale(x0, x1, LEFT, WIDTH - RIGHT)
    sy = _scale(0, y1, HEIGHT - BOTTOM, TOP)
    parts = [_frame(title)]
    for start, end in gaps:
        a, b = sx(start), sx(end)
        parts.append(
            f'<rect class="gap" x="{a:.1f}" y="{TOP}" width="{max(b - a, 2):.1f}" '
            f'height="{HEIGHT - TOP - BOTTOM}"><title>gap {_duration(end - start)}</title></rect>'
        )
    parts += _y_axis(y1, sy)
    for i in range(5):
        t = x0 + (x1 - x0) * i / 4
        parts.append(
            f'<text x="{sx(t):.1f}" y="{HEIGHT - BOTTOM + 16}" text-anchor="middle">'
            f"{html.escape(_clock(t, x1 - x0))}</text>"
        )
    for n, s in enumerate(series):
        colour = COLOURS[n % len(COLOURS)]
        path = " ".join(f"{sx(x):.1f},{sy(y):.1f}" for x, y in s.points)
        parts.append(
            f'<polyline fill="none" stroke="{colour}" stroke-width="1.5" points="{path}"/>'
        )
        if len(s.points) == 1:
            x, y = s.points[0]
            parts.append(f'<circle cx="{sx(x):.1f}" cy="{sy(y):.1f}" r="3" fill="{colour}"/>')
        parts.append(
            f'<text x="{LEFT + 8 + 150 * n}" y="{HEIGHT - 6}" fill="{colour}">'
            f"\u25a0 {html.escape(s.name)}</text>"
        )
    if gaps:
        parts.append(
            f'<text x="{WIDTH - RIGHT}" y="{HEIGHT - 6}" text-anchor="end" class="gaplabel">'
            "\u25a0 gap</text>"
        )
    return _svg(parts)


def _bars(title: str, counts: Sequence[int], width: float) -> str:
    top = max(counts) * 1.1 or 1.0
    sx = _scale(0, len(counts), LEFT, WIDTH - RIGHT)
    sy = _scale(0, top, HEIGHT - BOTTOM, TOP)
    parts = [_frame(title), *_y_axis(top, sy)]
    for b, count in enumerate(counts):
        x, w = sx(b), sx(b + 1) - sx(b) - 1
        parts.append(
            f'<rect class="bar" x="{x:.1f}" y="{sy(count):.1f}" width="{w:.1f}" '
            f'height="{sy(0) - sy(count):.1f}"><title>{b * width:.3f}-{(b + 1) * width:.3f} ms: '
            f"{count}</title></rect>"
        )
    for b in range(0, len(counts) + 1, 5):
        parts.append(
            f'<text x="{sx(b):.1f}" y="{HEIGHT - BOTTOM + 16}" text-anchor="middle">'
            f"{b * width:.1f}</text>"
        )
    parts.append(
        f'<text x="{(WIDTH + LEFT) / 2}" y="{HEIGHT - 6}" text-anchor="middle">ack_ms</text>'
    )
    return _svg(parts)


def _empty_chart(title: str, why: str) -> str:
    return _svg(
        [
            _frame(title),
            f'<text x="{WIDTH / 2}" y="{HEIGHT / 2}" text-anchor="middle">'
            f"{html.escape(why)}</text>",
        ]
    )


def _frame(title: str) -> str:
    return (
        f'<text class="title" x="{LEFT}" y="18">{html.escape(title)}</text>'
        f'<line class="axis" x1="{LEFT}" y1="{HEIGHT - BOTTOM}" x2="{WIDTH - RIGHT}" '
        f'y2="{HEIGHT - BOTTOM}"/><line class="axis" x1="{LEFT}" y1="{TOP}" x2="{LEFT}" '
        f'y2="{HEIGHT - BOTTOM}"/>'
    )


def _y_axis(top: float, sy: object) -> list[str]:
    assert callable(sy)
    out = []
    for i in range(5):
        v = top * i / 4
        out.append(
            f'<text x="{LEFT - 6}" y="{sy(v) + 4:.1f}" text-anchor="end">{_short(v)}</text>'
            f'<line class="grid" x1="{LEFT}" y1="{sy(v):.1f}" x2="{WIDTH - RIGHT}" '
            f'y2="{sy(v):.1f}"/>'
        )
    return out


def _svg(parts: list[str]) -> str:
    body = "".join(parts)
    return (
        f'<figure><svg class="chart" xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" '
        f'height="{HEIGHT}" viewBox="0 0 {WIDTH} {HEIGHT}">{body}</svg></figure>'
    )


def _scale(d0: float, d1: float, r0: float, r1: float):  # type: ignore[no-untyped-def]
    span = (d1 - d0) or 1.0
    return lambda v: r0 + (v - d0) / span * (r1 - r0)


# --- tables and text ------------------------------------------------------------------------


def _table_html(title: str, columns: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    head = "".join(f"<th>{html.escape(c)}</th>" for c in columns)
    if not rows:
        body = f'<tr><td colspan="{len(columns)}" class="none">none</td></tr>'
    else:
        body = "".join(
            "<tr>" + "".join(f"<td>{html.escape(cell(v))}</td>" for v in row) + "</tr>"
            for row in rows
        )
    return (
        f"<section><h2>{html.escape(title)}</h2><table><thead><tr>{head}</tr></thead>"
        f"<tbody>{body}</tbody></table></section>"
    )


def _bucket_seconds(span: float) -> float:
    for step in NICE_SECONDS:
        if span / step <= 120:
            return float(step)
    return float(math.ceil(span / 120 / 86400) * 86400)


def _duration(seconds: float) -> str:
    if seconds < 1:
        return f"{seconds * 1000:.0f} ms"
    if seconds < 60:
        return f"{seconds:g} s"
    if seconds < 3600:
        return f"{seconds / 60:g} min"
    return f"{seconds / 3600:g} h"


def _clock(t: float, span: float) -> str:
    moment = dt.datetime.fromtimestamp(t, dt.UTC)
    return moment.strftime("%H:%M:%S" if span < 86400 else "%m-%d %H:%M")


def _iso(ns: int) -> str:
    return dt.datetime.fromtimestamp(ns / 1e9, dt.UTC).isoformat(timespec="seconds")


def _short(v: float) -> str:
    if v >= 1000:
        return f"{v / 1000:.3g}k"
    return f"{v:.3g}"


_PAGE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<title>{title}</title>
<style>
body {{ font: 14px/1.4 system-ui, sans-serif; margin: 24px; color: #222; }}
h1 {{ font-size: 20px; margin: 0 0 4px; }} h2 {{ font-size: 16px; margin: 24px 0 6px; }}
.period {{ color: #666; margin-bottom: 16px; }}
figure {{ margin: 12px 0; }}
svg.chart {{ border: 1px solid #ddd; background: #fff; }}
svg text {{ font-size: 11px; fill: #333; }} svg text.title {{ font-size: 13px; font-weight: 600; }}
svg .axis {{ stroke: #888; }} svg .grid {{ stroke: #eee; }}
svg .bar {{ fill: #1f77b4; }} svg .gap {{ fill: #f4a6a6; opacity: 0.6; }}
svg .gaplabel {{ fill: #e06666; }}
table {{ border-collapse: collapse; margin: 4px 0; }}
th, td {{ border: 1px solid #ddd; padding: 2px 8px; text-align: left; }}
th {{ background: #f5f5f5; }} td.none {{ color: #888; }}
</style></head>
<body>
<h1>{title}</h1>
<div class="period">{period} (UTC)</div>
<section id="charts">
{charts}
</section>
{tables}
</body></html>
"""
