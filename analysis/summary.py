"""`analyze summary`: what is in the tapes and how well requests were answered.

Sections, each a small table: sessions; messages per channel; requests (count, acked, match
rate, acked with the expected notificationType, unmatched by reason); acks (duplicates, acks
with no request); errors (undecodable frames, unsuccessful meta replies, HTTP >= 400, non-zero
statusCode); gaps; clock offsets.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from analysis.latency import Connection


@dataclass(slots=True)
class Section:
    title: str
    columns: list[str]
    rows: list[tuple[Any, ...]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # said below the table


# The views the summary reads (the ones `analyze summary` caches).
SUMMARY_READS = (
    "requests",
    "acks",
    "request_latency",
    "unmatched_requests",
    "gaps",
    "clock_offsets",
)

QUERIES: dict[str, tuple[str, str]] = {
    "sessions": (
        "Sessions",
        """
        SELECT s.session_id, s.mode, s.transport,
               make_timestamp(s.started_ns // 1000) AS started,
               round((coalesce(s.ended_ns, f.last_ns) - s.started_ns) / 1e9, 3) AS duration_s,
               s.end_reason, coalesce(f.frames, 0) AS frames
        FROM sessions s
        LEFT JOIN (SELECT session_id, count(*) AS frames, max(t_wall_ns) AS last_ns
                   FROM frames GROUP BY session_id) f USING (session_id)
        ORDER BY s.started_ns, s.session_id
        """,
    ),
    "channels": (
        "Messages per channel",
        """
        SELECT channel, direction, count(*) AS messages,
               round(count(*) / greatest((max(t_wall_ns) - min(t_wall_ns)) / 1e9, 1), 3)
                   AS per_second
        FROM messages GROUP BY ALL ORDER BY messages DESC, channel, direction
        """,
    ),
    "requests": (
        "Requests",
        """
        SELECT count(*) AS requests,
               count(ack_ns) AS acked,
               round(100.0 * count(ack_ns) / nullif(count(*), 0), 2) AS match_pct,
               count(*) FILTER (WHERE ack_as_expected AND ack_ns IS NOT NULL) AS as_expected,
               count(*) FILTER (WHERE ack_ns IS NOT NULL AND NOT ack_as_expected)
                   AS unexpected_ack_type,
               count(*) FILTER (WHERE reference_id IS NULL) AS without_reference_id
        FROM request_latency
        """,
    ),
    "unmatched": (
        "Unmatched requests by reason",
        "SELECT reason, count(*) AS requests FROM unmatched_requests GROUP BY reason "
        "ORDER BY requests DESC, reason",
    ),
    "acks": (
        "Acks",
        """
        SELECT count(*) AS acks,
               count(*) FILTER (WHERE duplicate) AS duplicates,
               count(*) FILTER (WHERE request_seq IS NULL) AS without_request,
               count(server_generation_ts) AS with_metrics,
               count(*) FILTER (WHERE metrics_in_same_frame) AS metrics_same_frame
        FROM acks
        """,
    ),
    "errors": (
        "Errors",
        """
        SELECT 'undecodable frame' AS kind, parse_error AS detail, count(*) AS count
        FROM frames WHERE parse_error IS NOT NULL GROUP BY ALL
        UNION ALL
        SELECT 'unsuccessful ' || channel, coalesce(error, '(no error string)'), count(*)
        FROM messages WHERE successful = false GROUP BY ALL
        UNION ALL
        SELECT 'HTTP error', 'HTTP ' || http_status, count(*)
        FROM frames WHERE kind = 'http-response' AND http_status >= 400 GROUP BY ALL
        UNION ALL
        SELECT 'GWS statusCode', 'statusCode ' || status_code, count(*)
        FROM requests WHERE coalesce(status_code, 0) <> 0 GROUP BY ALL
        ORDER BY count DESC, kind, detail
        """,
    ),
    "gaps": (
        "Gaps",
        """
        SELECT session_id, make_timestamp(start_ns // 1000) AS start, duration_ms,
               coalesce(resolved_by, 'still down at the end') AS resolved_by, reason
        FROM gaps ORDER BY start_ns
        """,
    ),
    "clock": (
        "Clock offset (server - recorder)",
        "SELECT session_id, method, samples, offset_ms, uncertainty_ms FROM clock_offsets "
        "ORDER BY session_id",
    ),
}


def summary(conn: Connection) -> dict[str, Section]:
    sections = {}
    for key, (title, sql) in QUERIES.items():
        result = conn.execute(sql)
        columns = [d[0] for d in result.description or []]
        sections[key] = Section(title, columns, result.fetchall())
    return sections
