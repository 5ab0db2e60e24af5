"""Latency statistics over the request_latency view: count, p50, p90, p99, p99.9, max, mean
for each part. Percentiles are DuckDB's quantile_cont: linear interpolation, the same as
numpy.percentile's default method."""

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
    keys = [GROUPS[b] for b in by]
    select_keys = ", ".join(f"{k} AS g{i}" for i, k in enumerate(keys)) or "'all' AS g0"
    rows: list[LatencyRow] = []
    for part in PARTS:
        stats = (
            f"count({part}), quantile_cont({part}, 0.5), quantile_cont({part}, 0.9), "
            f"quantile_cont({part}, 0.99), quantile_cont({part}, 0.999), max({part}), "
            f"avg({part})"
        )
        sql = f"SELECT {select_keys}, {stats} FROM request_latency GROUP BY ALL ORDER BY ALL"
        width = max(len(keys), 1)
        for record in conn.execute(sql).fetchall():
            rows.append(LatencyRow(tuple(record[:width]), part, tuple(record[width:])))
    return rows
