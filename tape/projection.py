"""The `messages` projection: one row per Bayeux message inside a frame, derived in SQL.

The writer runs this over each committed batch and `rebuild` runs it over all of `frames`, so
both produce the same rows by construction. DuckDB parses the JSON in C++ across cores, which is
what lets ingest keep up with the wire (DESIGN.md: ~300k rows/s against ~190k in Python).
"""

from __future__ import annotations

import duckdb

# Non-strict json_transform never throws: a value of the wrong type becomes NULL or is cast.
# Frames reach this only when orjson accepted them (parse_error is NULL or names a field/shape
# problem), and DuckDB's JSON reader is more lenient than orjson, so parsing here cannot fail.
_ENVELOPE = (
    '{"channel":"VARCHAR","id":"VARCHAR","clientId":"VARCHAR","successful":"BOOLEAN",'
    '"error":"VARCHAR","subscription":"JSON","data":"JSON","ext":"JSON","advice":"JSON"}'
)
_GWS = (
    '{"messageType":"VARCHAR","notificationType":"VARCHAR","referenceId":"VARCHAR",'
    '"operationName":"VARCHAR","recordHandle":"VARCHAR","record":{"recordHandle":"VARCHAR"},'
    '"userData":{"GSW_RECORD_HANDLE":"VARCHAR","GSW_USER_EVENT":"VARCHAR"},'
    '"metrics":{"eventProcessing":{"serverGenerationTimestamp":"BIGINT",'
    '"nodeProcessingTimeNanos":"BIGINT","serverProcessingTimeTotalMs":"DOUBLE"}}}'
)

PROJECTION_SQL = f"""
WITH f AS (
    SELECT session_id, seq, t_wall_ns, t_mono_ns, direction, try(decode(raw))::JSON AS j
    FROM __SOURCE__
    WHERE kind = 'bayeux'
      AND (parse_error IS NULL OR NOT starts_with(parse_error, 'invalid JSON'))
), l AS (
    SELECT *, CASE json_type(j) WHEN 'ARRAY' THEN json_extract(j, '$[*]') ELSE [j] END AS msgs
    FROM f WHERE j IS NOT NULL
), u AS (
    SELECT session_id, seq, t_wall_ns, t_mono_ns, direction,
           unnest(msgs) AS msg, unnest(range(len(msgs))) AS idx
    FROM l
), e AS (
    SELECT * EXCLUDE (msg), json_transform(msg, '{_ENVELOPE}') AS m
    FROM u WHERE json_type(msg) = 'OBJECT' AND json_type(msg, '$.channel') = 'VARCHAR'
), g AS (
    SELECT *, json_transform(m.data, '{_GWS}') AS d FROM e
)
SELECT session_id, seq, idx::INTEGER, t_wall_ns, t_mono_ns, direction,
       m.channel, m.id, m.clientId, m.successful, m.error,
       CASE json_type(m.subscription) WHEN 'VARCHAR' THEN m.subscription->>'$'
            ELSE m.subscription::VARCHAR END,
       d.messageType, d.notificationType, d.referenceId,
       coalesce(d.record.recordHandle, d.recordHandle, d.userData.GSW_RECORD_HANDLE),
       d.operationName, d.userData.GSW_USER_EVENT,
       d.metrics.eventProcessing.serverGenerationTimestamp,
       d.metrics.eventProcessing.nodeProcessingTimeNanos,
       d.metrics.eventProcessing.serverProcessingTimeTotalMs,
       m.data, m.ext, m.advice
FROM g
ORDER BY session_id, seq, idx
"""


def project(conn: duckdb.DuckDBPyConnection, source: str) -> None:
    """Append to `messages` the rows derived from the frames in relation `source`."""
    conn.execute(f"INSERT INTO messages {PROJECTION_SQL.replace('__SOURCE__', source)}")


def rebuild(conn: duckdb.DuckDBPyConnection) -> int:
    """Drop the projection and derive it again from `frames`; returns the message count."""
    conn.execute("BEGIN")
    conn.execute("DELETE FROM messages")
    project(conn, "frames")
    conn.execute("COMMIT")
    row = conn.execute("SELECT count(*) FROM messages").fetchone()
    return int(row[0]) if row else 0
