"""Latency statistics over the latency_parts view (request_latency, narrowed): count, p50,
p90, p99, p99.9, max, mean for each part. Percentiles are DuckDB's quantile_cont: linear
interpolation between the two nearest ranks, the same as numpy.percentile's default method
("linear")."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import duckdb

PARTS = ("http_ms", "ack_ms", "server_ms", "node_ms", "rest_ms")
GROUPS = {
    "operation": "operation_name",
    "notification": "notification_type",
    "campaign": "campaign_name",
    "minute": "strftime(make_timestamp(request_ns // 1000), '%Y-%m-%d %H:%M')",
}
STATS = ("count", "p50", "p90", "p99", "p99.9", "max", "mean")


@dataclass(frozen=True, slots=True)
class LatencyRow:
    group: tuple[Any, ...]
    part: str
    values: tuple[float | int | None, ...]  # in STATS order


def latency(
    conn: duckdb.DuckDBPyConnection, by: tuple[str, ...] = ("operation",)
) -> list[LatencyRow]:
    """One row per group and part, groups in order, parts in PARTS order."""
    keys = [GROUPS[b] for b in by] or ["'all'"]
    width = len(keys)
    select_keys = ", ".join(f"{k} AS g{i}" for i, k in enumerate(keys))
    # One query, so the view (which joins requests to acks when not cached) is read once.
    group_keys = ", ".join(f"g{i}" for i in range(width))
    stats = ", ".join(
        f"count({p}), quantile_cont({p}, [0.5, 0.9, 0.99, 0.999]), max({p}), favg({p})"
        for p in PARTS
    )
    sql = (
        f"SELECT {group_keys}, {stats} FROM (SELECT {select_keys}, {', '.join(PARTS)} "
        f"FROM latency_parts) GROUP BY {group_keys} "
        f"ORDER BY {group_keys} NULLS LAST"
    )
    rows: list[LatencyRow] = []
    for record in conn.execute(sql).fetchall():
        group = tuple(record[:width])
        for n, part in enumerate(PARTS):
            count, quantiles, top, mean = record[width + 4 * n : width + 4 * n + 4]
            quantiles = quantiles or [None] * 4
            rows.append(LatencyRow(group, part, (count, *quantiles, top, mean)))
    return rows
