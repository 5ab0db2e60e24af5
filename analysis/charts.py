"""Inline SVG charts for the HTML report: line charts over time and histograms, with nice
ticks, axis labels, coloured legends and no text outside the drawing.

Every chart has a viewBox and no fixed size, so the page's CSS makes it follow the page's
width. Text widths are estimated (no font metrics without a browser), generously, and every
label is kept inside the viewBox by that estimate; the report's browser test measures them.
"""

from __future__ import annotations

import datetime as dt
import html
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

WIDE, NARROW = 960, 480  # viewBox widths: time charts span the page, histograms half of it
PLOT_HEIGHT = 200
LEFT, RIGHT = 64, 28
TITLE_X, TITLE_Y, SUBTITLE_LINE, LEGEND_ROW, BOTTOM = 12, 20, 16, 18, 46
CHAR_WIDTH = 7.0  # an 11 px sans-serif character is ~6 px wide: a generous estimate
COLOURS = ("#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2")
DASHES = ("", "7 4", "2 3", "10 3 2 3", "4 2", "1 4", "12 4")
MARKERS_UP_TO = 60  # points per series drawn with a marker at each point
# Tick spacings on a time axis, in seconds.
TIME_STEPS = (
    *(m * 10.0**e for e in (-3, -2, -1) for m in (1, 2, 5)),
    *(1.0, 2.0, 5.0, 10.0, 15.0, 30.0),
    *(60.0 * m for m in (1, 2, 5, 10, 15, 30)),
    *(3600.0 * h for h in (1, 2, 3, 6, 12, 24, 48, 168)),
)
GAP_FILL = "#f4a6a6"
GAP_TEXT = "#c0392b"

Scale = Callable[[float], float]


@dataclass(frozen=True, slots=True)
class Series:
    name: str
    points: list[tuple[float, float]]  # (x, y); x is seconds since the epoch for time charts
    colour: str | None = None  # default: by position
    dash: str | None = None  # stroke-dasharray; default: by position


# --- ticks ----------------------------------------------------------------------------------


def nice_step(raw: float) -> float:
    """The smallest 1, 2 or 5 x 10^n at least `raw` (> 0)."""
    magnitude = 10.0 ** math.floor(math.log10(raw))
    for m in (1, 2, 5, 10):
        if m * magnitude >= raw * (1 - 1e-9):
            return m * magnitude
    return 10 * magnitude  # pragma: no cover: the loop always returns


def value_ticks(top: float, *, integer: bool = False, most: int = 6) -> list[float]:
    """Ticks from 0 in regular 1/2/5 x 10^n steps, the last at or above `top`."""
    top = top if top > 0 else 1.0
    step = nice_step(top / (most - 1))
    if integer:
        step = max(step, 1.0)
    count = math.ceil(top / step - 1e-9)
    return [i * step for i in range(count + 1)]


def number(value: float, step: float) -> str:
    """`value` with as many decimals as the tick step needs, thousands as k from 10k up."""
    if step >= 1000 and abs(value) >= 10_000:
        return number(value / 1000, step / 1000) + "k"
    decimals = max(0, -math.floor(math.log10(step) + 1e-9))
    return f"{value:.{decimals}f}"


def time_ticks(t0: float, t1: float, most: int) -> tuple[float, list[float]]:
    """A tick spacing for the span [t0, t1] (seconds) with at most `most` ticks, and the ticks
    in it: multiples of the spacing in UTC, so they read as round times."""
    span = max(t1 - t0, 1e-3)
    step = next((s for s in TIME_STEPS if span / s <= most - 1), None)
    if step is None:
        step = 86400.0 * math.ceil(span / (most - 1) / 86400)
    # Whole microseconds: float multiples of 0.001 would drift and repeat labels.
    unit = round(step * 1e6)
    first = -(-round(t0 * 1e6) // unit) * unit
    ticks = []
    k = first
    while k <= round(t1 * 1e6):
        ticks.append(k / 1e6)
        k += unit
    return step, ticks


def clock(t: float, step: float, span: float) -> str:
    """A time-of-day label precise enough to tell ticks `step` apart."""
    moment = dt.datetime.fromtimestamp(t, dt.UTC)
    if span >= 86400:
        return moment.strftime("%m-%d %H:%M")
    if step >= 60:
        return moment.strftime("%H:%M")
    if step >= 1:
        return moment.strftime("%H:%M:%S")
    decimals = max(1, -math.floor(math.log10(step) + 1e-9))
    return moment.strftime("%H:%M:%S.%f")[: 9 + decimals]


def text_width(text: str) -> float:
    return len(text) * CHAR_WIDTH


# --- charts ---------------------------------------------------------------------------------


def line_chart(
    title: str,
    series: Sequence[Series],
    *,
    y_label: str,
    subtitle: str = "",
    span: tuple[float, float] | None = None,
    gaps: Sequence[tuple[float, float]] = (),
    integer: bool = False,
    empty: str = "no data",
) -> str:
    """Series over time (x in seconds since the epoch) across `span` (default: the data's),
    gaps shaded; `empty` says why when there is nothing to draw."""
    points = [p for s in series for p in s.points]
    if not points:
        return empty_chart(title, empty)
    x0, x1 = min(p[0] for p in points), max(p[0] for p in points)
    if span is not None:
        x0, x1 = min(x0, span[0]), max(x1, span[1])
    for start, end in gaps:
        x0, x1 = min(x0, start), max(x1, end)
    if x1 - x0 < 1e-3:
        x0, x1 = x0 - 0.5, x1 + 0.5
    items = [
        _LegendItem(
            s.name + _same_as(series, n),
            s.colour or COLOURS[n % len(COLOURS)],
            DASHES[n % len(DASHES)] if s.dash is None else s.dash,
            n,
        )
        for n, s in enumerate(series)
    ]
    if gaps:
        items.append(_LegendItem("gap (recorder outage)", GAP_TEXT, None, None))
    heading, head = _title(title, subtitle, WIDE)
    legend, legend_rows = _legend(items, WIDE, head)
    top = head + 10 + legend_rows * LEGEND_ROW
    height = top + PLOT_HEIGHT + BOTTOM
    y_ticks = value_ticks(max(p[1] for p in points), integer=integer)
    sx = _scale(x0, x1, LEFT, WIDE - RIGHT)
    sy = _scale(0, y_ticks[-1], top + PLOT_HEIGHT, top)
    parts = [*heading, legend]
    for start, end in gaps:
        a, b = sx(start), sx(end)
        parts.append(
            f'<rect class="gap" x="{a:.1f}" y="{top}" width="{max(b - a, 2):.1f}" '
            f'height="{PLOT_HEIGHT}"><title>gap {html.escape(duration(end - start))}</title>'
            "</rect>"
        )
    parts += _y_axis(y_ticks, sy, WIDE, top, y_label)
    most = max(2, int((WIDE - LEFT - RIGHT) // (text_width("00:00:00.000") + 24)))
    step, ticks = time_ticks(x0, x1, most)
    labels = [(sx(t), clock(t, step, x1 - x0)) for t in ticks]
    day = dt.datetime.fromtimestamp(x0, dt.UTC).strftime("%Y-%m-%d")
    parts += _x_axis(labels, WIDE, top, f"time (UTC, {day})")
    for item, s in zip(items, series, strict=False):
        parts.append(_polyline(s, item, sx, sy))
    return _svg(parts, WIDE, height, "line")


def histogram(
    title: str,
    counts: Sequence[int],
    bin_width: float,
    *,
    x_label: str,
    y_label: str,
    subtitle: str = "",
) -> str:
    """Bars of `bin_width` from 0; x ticks in regular steps of the value."""
    heading, head = _title(title, subtitle, NARROW)
    top = head + 12
    height = top + PLOT_HEIGHT + BOTTOM
    y_ticks = value_ticks(max(counts, default=0), integer=True)
    end = len(counts) * bin_width
    sx = _scale(0, end, LEFT, NARROW - RIGHT)
    sy = _scale(0, y_ticks[-1], top + PLOT_HEIGHT, top)
    parts = [*heading, *_y_axis(y_ticks, sy, NARROW, top, y_label)]
    for b, count in enumerate(counts):
        x, w = sx(b * bin_width), sx((b + 1) * bin_width) - sx(b * bin_width)
        lo, hi = number(b * bin_width, bin_width), number((b + 1) * bin_width, bin_width)
        parts.append(
            f'<rect class="bar" x="{x:.2f}" y="{sy(count):.1f}" width="{max(w - 1, 0.5):.2f}" '
            f'height="{sy(0) - sy(count):.1f}"><title>{lo} to {hi}: {count}</title></rect>'
        )
    most = max(2, int((NARROW - LEFT - RIGHT) // (text_width(number(end, bin_width)) + 20)))
    step = nice_step(end / (most - 1))
    step = max(step, bin_width)
    ticks = [i * step for i in range(int(end / step + 1e-9) + 1)]
    labels = [(sx(t), number(t, step)) for t in ticks]
    parts += _x_axis(labels, NARROW, top, x_label)
    return _svg(parts, NARROW, height, "histogram")


def empty_chart(title: str, why: str, width: int = WIDE) -> str:
    height = TITLE_Y + 12 + 60
    return _svg(
        [
            *_title(title, "", width)[0],
            f'<text class="empty" x="{width / 2}" y="{TITLE_Y + 48}" text-anchor="middle">'
            f"{html.escape(why)}</text>",
        ],
        width,
        height,
        "empty",
    )


def duration(seconds: float) -> str:
    if seconds < 1:
        return f"{seconds * 1000:.4g} ms"
    if seconds < 60:
        return f"{seconds:.4g} s"
    if seconds < 3600:
        return f"{seconds / 60:.4g} min"
    return f"{seconds / 3600:.4g} h"


# --- parts ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _LegendItem:
    name: str
    colour: str
    dash: str | None  # None: a filled square swatch (the gap shading)
    series: int | None  # the series' index, tying the swatch to its line


def _same_as(series: Sequence[Series], n: int) -> str:
    """' (same as X)' when an earlier series has exactly these points: its line is hidden."""
    for earlier in series[:n]:
        if earlier.points == series[n].points:
            return f" (same as {earlier.name})"
    return ""


def _legend(items: Sequence[_LegendItem], width: int, head: int) -> tuple[str, int]:
    """Legend entries in rows under the title: a swatch drawn like the line, the name in the
    line's colour (a style attribute: the page's CSS must not grey it)."""
    out, x, row = [], float(LEFT), 0
    for item in items:
        size = 22 + text_width(item.name) + 18
        if x > LEFT and x + size > width - RIGHT:
            x, row = float(LEFT), row + 1
        y = head + 10 + row * LEGEND_ROW + 8
        tag = f' data-series="{item.series}"' if item.series is not None else ""
        if item.dash is None:
            swatch = (
                f'<rect class="swatch" x="{x:.1f}" y="{y - 5}" width="16" height="10" '
                f'style="fill:{GAP_FILL}"/>'
            )
        else:
            swatch = (
                f'<line class="swatch" x1="{x:.1f}" y1="{y}" x2="{x + 16:.1f}" y2="{y}" '
                f'style="stroke:{item.colour};stroke-width:2.5;'
                f'stroke-dasharray:{item.dash or "none"}"/>'
            )
        out.append(
            f'<g class="legend"{tag}>{swatch}<text x="{x + 22:.1f}" y="{y + 4}" '
            f'style="fill:{item.colour}">{html.escape(item.name)}</text></g>'
        )
        x += size
    return "".join(out), row + 1


def _polyline(s: Series, item: _LegendItem, sx: Scale, sy: Scale) -> str:
    width = 2.5 if item.series == 0 else 1.75
    dash = f";stroke-dasharray:{item.dash}" if item.dash else ""
    path = " ".join(f"{sx(x):.1f},{sy(y):.1f}" for x, y in s.points)
    out = [
        f'<g class="series" data-series="{item.series}">'
        f'<polyline fill="none" style="stroke:{item.colour};stroke-width:{width}{dash}" '
        f'points="{path}"/>'
    ]
    if len(s.points) <= MARKERS_UP_TO:
        r = 3.2 if item.series == 0 else 2.2
        out += [
            f'<circle cx="{sx(x):.1f}" cy="{sy(y):.1f}" r="{r}" style="fill:{item.colour}"/>'
            for x, y in s.points
        ]
    return "".join(out) + "</g>"


def _title(title: str, subtitle: str, width: int) -> tuple[list[str], int]:
    """The title, and the subtitle wrapped (by the estimated width) to fit; the parts, and the
    baseline of their last line."""
    out = [f'<text class="title" x="{TITLE_X}" y="{TITLE_Y}">{html.escape(title)}</text>']
    y = TITLE_Y
    for line in _wrap(subtitle, width - 2 * TITLE_X):
        y += SUBTITLE_LINE
        out.append(f'<text class="subtitle" x="{TITLE_X}" y="{y}">{html.escape(line)}</text>')
    return out, y


def _wrap(text: str, width: float) -> list[str]:
    lines: list[str] = []
    for word in text.split():
        if lines and text_width(f"{lines[-1]} {word}") <= width:
            lines[-1] += f" {word}"
        else:
            lines.append(word)
    return lines


def _y_axis(ticks: Sequence[float], sy: Scale, width: int, top: int, label: str) -> list[str]:
    step = ticks[1] - ticks[0] if len(ticks) > 1 else 1.0
    out = [
        f'<line class="axis" x1="{LEFT}" y1="{top}" x2="{LEFT}" y2="{top + PLOT_HEIGHT}"/>',
        f'<text class="axislabel" transform="translate(14 {top + PLOT_HEIGHT / 2}) rotate(-90)" '
        f'text-anchor="middle">{html.escape(label)}</text>',
    ]
    for v in ticks:
        y = sy(v)
        out.append(
            f'<line class="grid" x1="{LEFT}" y1="{y:.1f}" x2="{width - RIGHT}" y2="{y:.1f}"/>'
            f'<text class="tick y" x="{LEFT - 6}" y="{y + 4:.1f}" text-anchor="end">'
            f"{number(v, step)}</text>"
        )
    return out


def _x_axis(labels: Sequence[tuple[float, str]], width: int, top: int, label: str) -> list[str]:
    base = top + PLOT_HEIGHT
    out = [f'<line class="axis" x1="{LEFT}" y1="{base}" x2="{width - RIGHT}" y2="{base}"/>']
    for x, text in labels:
        # Centred on its tick, unless that would cross the drawing's edge.
        half = text_width(text) / 2
        anchor, at = "middle", x
        if x + half > width - 2:
            anchor, at = "end", width - 2
        elif x - half < 2:
            anchor, at = "start", 2
        out.append(
            f'<line class="axis" x1="{x:.1f}" y1="{base}" x2="{x:.1f}" y2="{base + 4}"/>'
            f'<text class="tick x" x="{at:.1f}" y="{base + 17}" text-anchor="{anchor}">'
            f"{html.escape(text)}</text>"
        )
    out.append(
        f'<text class="axislabel" x="{(LEFT + width - RIGHT) / 2}" y="{base + 36}" '
        f'text-anchor="middle">{html.escape(label)}</text>'
    )
    return out


def _svg(parts: list[str], width: int, height: int, kind: str) -> str:
    return (
        f'<figure class="{kind}"><svg class="chart" xmlns="http://www.w3.org/2000/svg" '
        f'viewBox="0 0 {width} {height}" preserveAspectRatio="xMinYMin meet">'
        f"{''.join(parts)}</svg></figure>"
    )


def _scale(d0: float, d1: float, r0: float, r1: float) -> Scale:
    span = (d1 - d0) or 1.0
    return lambda v: r0 + (v - d0) / span * (r1 - r0)
