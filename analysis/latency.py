"""Latency statistics over the latency_parts view (request_latency, narrowed): count, p50,
p90, p99, p99.9, max, mean for each part.

Percentiles are exact, with DuckDB's quantile_cont's linear interpolation between the two
nearest ranks (numpy.percentile's default method, "linear"). The mean is exact for values
truncated to 2^-30 ms (about 1e-12 s): their whole and fractional parts are summed as
integers, divided here; so it does not depend on the order of the additions, which no
engine fixes. On Spark (analysis/spark.py) the
ranks come from a window, and the interpolation is the one DuckDB does (x86-64 build:
lo * (1 - d) + hi * d, fused), so both engines give the same numbers to the last bit
(tests/analysis/test_latency_stats.py checks it against DuckDB's own quantile_cont).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal
from fractions import Fraction
from typing import Any, Protocol

PARTS = ("http_ms", "ack_ms", "server_ms", "node_ms", "rest_ms")
GROUPS = {
    "operation": "operation_name",
    "notification": "notification_type",
    "campaign": "campaign_name",
    "minute": "strftime(make_timestamp(request_ns // 1000), '%Y-%m-%d %H:%M')",
}
STATS = ("count", "p50", "p90", "p99", "p99.9", "max", "mean")
QUANTILES = (0.5, 0.9, 0.99, 0.999)


class Result(Protocol):
    @property
    def description(self) -> Any: ...

    def fetchall(self) -> list[Any]: ...


class Connection(Protocol):
    """What the analysis reads through: a DuckDB connection, or analysis/spark.py's."""

    def execute(self, query: str) -> Result: ...


@dataclass(frozen=True, slots=True)
class LatencyRow:
    group: tuple[Any, ...]
    part: str
    values: tuple[float | int | None, ...]  # in STATS order


def latency(conn: Connection, by: tuple[str, ...] = ("operation",)) -> list[LatencyRow]:
    """One row per group and part, groups in order, parts in PARTS order."""
    keys = [GROUPS[b] for b in by] or ["'all'"]
    select_keys = ", ".join(f"{k} AS g{i}" for i, k in enumerate(keys))
    # One scan of the view (which joins requests to acks when not cached), every part a row.
    parts = (
        f"SELECT {select_keys}, {', '.join(PARTS)} FROM latency_parts",
        [(n, part) for n, part in enumerate(PARTS)],
    )
    rows = []
    for group, n, values in stats(conn, *parts, len(keys)):
        rows.append(LatencyRow(group, PARTS[n], values))
    return rows


def stats(
    conn: Connection, wide: str, parts: Sequence[tuple[int, str]], width: int
) -> list[tuple[tuple[Any, ...], int, tuple[float | int | None, ...]]]:
    """(group, part number, STATS values) for each group (columns g0.. of `wide`) and part
    (a column of `wide`, by number), groups in order (NULL last), then parts."""
    keys = ", ".join(f"g{i}" for i in range(width))
    # Every part a row, in one pass (Spark would compute `wide` again for each UNION branch).
    pairs = ", ".join(f"{{'n': {n}, 'v': CAST({column} AS DOUBLE)}}" for n, column in parts)
    long = f"SELECT {keys}, p.n AS n, p.v AS v FROM (SELECT {keys}, unnest([{pairs}]) AS p FROM w)"
    spark = getattr(conn, "dialect", "duckdb") == "spark"
    sql = _spark_sql(keys, long, wide) if spark else _duckdb_sql(keys, long, wide)
    found = []
    for record in conn.execute(sql).fetchall():
        group = tuple(record[:width])
        n, count, top, whole, fraction, *ranks = record[width:]
        if spark:
            quantiles = [_interpolate(count, q, lo, hi) for q, lo, hi in _pairs(ranks)]
        else:
            quantiles = list(ranks[0] or [None] * len(QUANTILES))
        found.append((group, int(n), (count, *quantiles, top, mean(whole, fraction, count))))
    return found


# The sum of each value's whole part and of its fraction in units of 2^-30, both exact
# integers (power-of-two scaling and floor are exact in IEEE doubles); NULL (no mean) when a
# value is too large for that, infinite or NaN (4e18 ms and more: hostile input).
SUMS = (
    "CASE WHEN max(abs(v)) < 4e18 THEN sum(CAST(CAST(CASE WHEN abs(v) < 4e18 THEN floor(v) END "
    "AS BIGINT) AS DECIMAL(38, 0))) END, "
    "sum(CAST(CAST(CASE WHEN abs(v) < 4e18 THEN floor((v - floor(v)) * 1073741824.0) END "
    "AS BIGINT) AS DECIMAL(38, 0)))"
)


def _duckdb_sql(keys: str, long: str, wide: str) -> str:
    listed = ", ".join(map(str, QUANTILES))
    return (
        f"WITH w AS ({wide}), parts AS ({long}) "
        f"SELECT {keys}, n, count(v), max(v), {SUMS}, "
        f"quantile_cont(v, [{listed}]) FROM parts "
        f"GROUP BY {keys}, n ORDER BY {keys} NULLS LAST, n"
    )


def _spark_sql(keys: str, long: str, wide: str) -> str:
    """The two ranks around each quantile's position, by a window (Spark has no exact
    percentile with DuckDB's rounding: `percentile` interpolates in another order)."""
    ranks = []
    for q in QUANTILES:
        position = f"(c - 1) * CAST({q!r} AS DOUBLE)"
        ranks.append(f"max(CASE WHEN r = floor({position}) THEN v END)")
        ranks.append(f"max(CASE WHEN r = ceil({position}) THEN v END)")
    return (
        f"WITH w AS ({wide}), parts AS ({long}), ranked AS ("
        f"SELECT {keys}, n, v, row_number() OVER (PARTITION BY {keys}, n ORDER BY v) - 1 AS r, "
        f"count(v) OVER (PARTITION BY {keys}, n) AS c FROM parts) "
        f"SELECT {keys}, n, c, max(v), {SUMS}, {', '.join(ranks)} "
        f"FROM ranked GROUP BY {keys}, n, c ORDER BY {keys} NULLS LAST, n"
    )


def _pairs(ranks: Sequence[Any]) -> list[tuple[float, Any, Any]]:
    return [(q, ranks[2 * i], ranks[2 * i + 1]) for i, q in enumerate(QUANTILES)]


def _interpolate(count: int, q: float, lo: float | None, hi: float | None) -> float | None:
    """quantile_cont's value at q from the values at the two nearest ranks, as DuckDB computes
    it: position (n - 1) * q, lo * (1 - d) + hi * d with the addition fused (one rounding)."""
    if not count or lo is None or hi is None:
        return None
    position = (count - 1) * q
    if math.floor(position) == math.ceil(position):
        return lo
    d = position - math.floor(position)
    if not (math.isfinite(lo) and math.isfinite(hi * d) and math.isfinite(lo * (1.0 - d))):
        return lo * (1.0 - d) + hi * d  # infinities and NaN come out the same, unfused
    return float(Fraction(lo) * Fraction(1.0 - d) + Fraction(hi * d))


def mean(whole: Decimal | None, fraction: Decimal | None, count: int) -> float | None:
    """The mean from the exact sums of the values' whole parts and fractions (see SUMS),
    rounded once."""
    if whole is None or fraction is None or not count:
        return None
    return float((int(whole) + Fraction(int(fraction), 2**30)) / count)
