"""Latency from a recorder alone: what a tape with acks and no REST requests (a `record` tape)
can measure.

Request -> ack latency needs the requests, which `record` never sees. Its tape still tells how
long the server took (the ack's metrics: `serverProcessingTimeTotalMs` as server_ms,
`nodeProcessingTimeNanos` / 1e6 as node_ms) and how long each event took to reach the
subscriber (delivery_ms: receipt - `serverGenerationTimestamp`, the session's estimated clock
offset removed; the `delivery_latency` and `clock_offsets` views). The same statistics as
analysis/latency.py, grouped the same way; the `analyze report` delivery table reads the same
views.
"""

from __future__ import annotations

from dataclasses import dataclass

from analysis.latency import STATS, Connection, LatencyRow, stats
from analysis.summary import Section

PARTS = ("delivery_ms", "server_ms", "node_ms")
NEEDS_REQUESTS = (
    "request → ack latency needs the REST requests, which these tapes do not hold: capture them "
    "with `cometd-tape proxy` (or a browser's HAR file) and read that tape with these "
    "(`analyze latency proxy.duckdb record.duckdb`): requests meet their acks by referenceId"
)
# Group keys over delivery_latency (d) and acks (a). Operation and campaign come from the
# requests: NULL here.
GROUPS = {
    "operation": ("NULL", "NULL"),
    "notification": ("coalesce(user_event, channel)", "coalesce(notification_type, '(none)')"),
    "campaign": ("NULL", "campaign_name"),
    "minute": (
        "strftime(make_timestamp(receipt_ns // 1000), '%Y-%m-%d %H:%M')",
        "strftime(make_timestamp(ack_ns // 1000), '%Y-%m-%d %H:%M')",
    ),
}


@dataclass(frozen=True, slots=True)
class Offset:
    session_id: str
    method: str
    samples: int
    offset_ms: float
    uncertainty_ms: float | None

    def describe(self) -> str:
        """One line: the estimate and how sure it is."""
        head = f"clock offset (server - recorder) of session {self.session_id}: "
        if self.uncertainty_ms is not None:
            return (
                f"{head}{self.offset_ms:+.3f} ms ± {self.uncertainty_ms:.3f} ms "
                f"({self.method}, {self.samples} stamped messages)"
            )
        return (
            f"{head}{self.offset_ms:+.3f} ms, the fastest of {self.samples} deliveries taken "
            f"as 0 ms ({self.method}): delivery_ms is relative to it, ± 1 ms (stamp "
            "resolution); only requests could bound it from above"
        )


def has_requests(conn: Connection) -> bool:
    """Whether the tapes hold any REST request that acts (as the `requests` view counts them),
    whatever the filters."""
    row = conn.execute(
        "SELECT EXISTS (SELECT 1 FROM tape_all.http_fields "
        "WHERE kind = 'http-request' AND direction = 'out' "
        "AND coalesce(http_method, 'POST') NOT IN ('GET', 'HEAD', 'OPTIONS'))"
    ).fetchall()
    return bool(row[0][0])


def recorder_latency(conn: Connection, by: tuple[str, ...] = ("notification",)) -> list[LatencyRow]:
    """One row per group and part present, groups in order, parts in PARTS order; values in
    analysis.latency.STATS order (percentiles: quantile_cont, as there)."""
    keys = [GROUPS[b] for b in by] or [("'all'", "'all'")]
    width = len(keys)
    delivery = ", ".join(f"{d} AS g{i}" for i, (d, _) in enumerate(keys))
    ack = ", ".join(f"{a} AS g{i}" for i, (_, a) in enumerate(keys))
    wide = f"""
        SELECT {delivery}, delivery_ms::DOUBLE AS p0, NULL::DOUBLE AS p1, NULL::DOUBLE AS p2
        FROM delivery_latency
        UNION ALL
        SELECT {ack}, NULL, server_processing_ms::DOUBLE, node_processing_ns / 1e6 FROM acks
        WHERE server_processing_ms IS NOT NULL OR node_processing_ns IS NOT NULL"""
    found = stats(conn, wide, [(0, "p0"), (1, "p1"), (2, "p2")], width)
    # A part with no value in a group has no row (its NULLs are only the other parts').
    return [LatencyRow(group, PARTS[n], values) for group, n, values in found if values[0]]


def offsets(conn: Connection) -> list[Offset]:
    found = conn.execute(
        "SELECT session_id, method, samples, offset_ms, uncertainty_ms FROM clock_offsets "
        "ORDER BY session_id"
    ).fetchall()
    return [Offset(*row) for row in found]


def notes(conn: Connection, shown: int = 5) -> list[str]:
    """What the numbers rest on: the clock offsets (at most `shown` sessions), then what is
    missing."""
    found = offsets(conn)
    lines = [o.describe() for o in found[:shown]]
    if len(found) > shown:
        lines.append(
            f"... and {len(found) - shown} more sessions (`analyze summary` lists every one)"
        )
    return [*lines, NEEDS_REQUESTS]


def capture_notes(conn: Connection) -> list[str]:
    """When the tapes come from more than one capture point (host), how far their clocks are
    apart, from the server's timestamps (the capture_offsets view): request -> ack times
    across two capture points include that difference."""
    captures = conn.execute("SELECT count(DISTINCT capture) FROM capture_points").fetchall()
    if captures[0][0] < 2:  # one clock: nothing to say, and nothing to compute
        return []
    rows = conn.execute(
        "SELECT capture, offset_ms, method, requests, deliveries FROM capture_offsets "
        "WHERE offset_ms IS NOT NULL ORDER BY requests DESC, capture"
    ).fetchall()
    if len(rows) < 2:
        return []
    base, base_ms, base_method, *_ = rows[0]
    lines = []
    for capture, offset_ms, method, _, deliveries in rows[1:]:
        exact = base_method == method == "request-bracket"
        size = "" if exact else "at most "
        lines.append(
            f"the clock of capture point {capture or '(unnamed)'} is {size}"
            f"{base_ms - offset_ms:+.1f} ms from {base or '(unnamed)'}'s "
            f"(server timestamps: {deliveries} deliveries, the fastest taken as 0 ms); "
            "request -> ack times across the two include it"
        )
    return lines


def section(conn: Connection) -> Section:
    """`analyze summary`'s section for a tape with no REST requests: recorder_latency by
    notification, with its notes."""
    rows = [(*r.group, r.part, *r.values) for r in recorder_latency(conn, ("notification",))]
    return Section(
        "Delivery and server processing by notification (ms)",
        ["notification", "part", *STATS],
        rows,
        notes(conn),
    )
