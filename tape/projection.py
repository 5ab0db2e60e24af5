"""The projections, derived in SQL from frames: `messages` (one row per Bayeux message inside
a frame) and `http_fields` (one row per REST request or response, with the Outbound API fields
of its JSON body).

The writer runs them over each committed batch and `rebuild` runs them over all of `frames`, so
both produce the same rows by construction. DuckDB parses the JSON in C++ across cores, which is
what lets ingest keep up with the wire (~300k rows/s against ~190k in Python, measured).
"""

from __future__ import annotations

import duckdb

# Only frames the codec accepted (parse_error IS NULL) are projected, so every message is an
# object with a string channel and well-typed envelope fields; the rest stay raw in `frames`.
# One json_transform parses each frame once, straight into the GWS fields of `data`.
# `data` itself is not copied into `messages`: a second copy of every payload in the WAL halved
# ingest throughput here. The `message_data` view reads it from `frames.raw` on demand.
_GWS = (
    '{"messageType":"VARCHAR","notificationType":"VARCHAR","referenceId":"VARCHAR",'
    '"operationName":"VARCHAR","recordHandle":"VARCHAR","record":{"recordHandle":"VARCHAR"},'
    '"userData":{"GSW_RECORD_HANDLE":"VARCHAR","GSW_USER_EVENT":"VARCHAR"},'
    '"metrics":{"eventProcessing":{"serverGenerationTimestamp":"BIGINT",'
    '"nodeProcessingTimeNanos":"BIGINT","serverProcessingTimeTotalMs":"DOUBLE"}}}'
)
_MESSAGE = (
    '{"channel":"VARCHAR","id":"VARCHAR","clientId":"VARCHAR","successful":"BOOLEAN",'
    f'"error":"VARCHAR","subscription":"JSON","data":{_GWS},"ext":"JSON","advice":"JSON"}}'
)

PROJECTION_SQL = f"""
SELECT session_id, seq, idx::INTEGER, t_wall_ns, t_mono_ns, direction,
       m.channel, m.id, m.clientId, m.successful, m.error,
       CASE json_type(m.subscription) WHEN 'VARCHAR' THEN m.subscription->>'$'
            ELSE m.subscription::VARCHAR END,
       m.data.messageType, m.data.notificationType, m.data.referenceId,
       coalesce(m.data.record.recordHandle, m.data.recordHandle,
                m.data.userData.GSW_RECORD_HANDLE),
       m.data.operationName, m.data.userData.GSW_USER_EVENT,
       m.data.metrics.eventProcessing.serverGenerationTimestamp,
       m.data.metrics.eventProcessing.nodeProcessingTimeNanos,
       m.data.metrics.eventProcessing.serverProcessingTimeTotalMs,
       m.ext, m.advice
FROM (
    SELECT session_id, seq, t_wall_ns, t_mono_ns, direction,
           unnest(msgs) AS m, unnest(range(len(msgs))) AS idx
    FROM (
        -- A single-object frame is read as a one-message array: one json_transform to plan
        -- rather than two (DuckDB plans this statement for every batch, ~10 ms each).
        SELECT session_id, seq, t_wall_ns, t_mono_ns, direction,
               json_transform(CASE WHEN starts_with(j, '[')
                                        OR starts_with(ltrim(j, E' \t\n\r'), '[') THEN j
                                   ELSE '[' || j || ']' END, '[{_MESSAGE}]') AS msgs
        FROM (SELECT session_id, seq, t_wall_ns, t_mono_ns, direction, decode(raw) AS j
              FROM __SOURCE__
              WHERE kind = 'bayeux' AND parse_error IS NULL)
    )
)
-- orjson keeps the last of duplicate keys, DuckDB the first: never let that become a NULL
-- channel (a NOT NULL violation would fail the whole batch).
WHERE m.channel IS NOT NULL
"""


# The REST side: what analysis needs from a request or response body, parsed once at ingest
# rather than on every analysis (reading and parsing `raw` was ~60% of a cold `analyze`). A
# body that is not a JSON object, or not UTF-8, leaves the fields NULL.
_BODY = (
    '{"operationName":"VARCHAR","referenceId":"VARCHAR","campaignName":"VARCHAR",'
    '"callingList":"VARCHAR","applicationId":"VARCHAR","statusCode":"VARCHAR"}'
)
HTTP_KINDS = ("http-request", "http-response")

HTTP_FIELDS_SQL = f"""
WITH h AS (
    SELECT session_id, seq, t_wall_ns, direction, kind, exchange_id, http_method, http_path,
           http_status, try(json_transform(decode(raw), '{_BODY}')) AS b
    FROM __SOURCE__
    WHERE kind IN {HTTP_KINDS}
)
SELECT session_id, seq, t_wall_ns, direction, kind, exchange_id, http_method, http_path,
       http_status, b.operationName AS operation_name, b.referenceId AS reference_id,
       b.campaignName AS campaign_name, b.callingList AS calling_list,
       TRY_CAST(b.applicationId AS BIGINT) AS application_id,
       TRY_CAST(b.statusCode AS BIGINT) AS status_code
FROM h
"""


def http_fields_select(source: str) -> str:
    """The `http_fields` rows of the frames in relation `source`, as a SELECT."""
    return HTTP_FIELDS_SQL.replace("__SOURCE__", source)


MESSAGE_DATA_VIEW = """
CREATE OR REPLACE VIEW message_data AS
SELECT m.session_id, m.seq, m.idx, m.channel,
       CASE WHEN starts_with(ltrim(decode(f.raw), E' \t\n\r'), '[')
            THEN json_extract(decode(f.raw), '$[' || m.idx || '].data')
            ELSE json_extract(decode(f.raw), '$.data') END AS data
FROM messages m JOIN frames f USING (session_id, seq)
"""


def project(conn: duckdb.DuckDBPyConnection, source: str) -> None:
    """Append to `messages` the rows derived from the frames in relation `source`."""
    conn.execute(f"INSERT INTO messages {PROJECTION_SQL.replace('__SOURCE__', source)}")


def project_http(conn: duckdb.DuckDBPyConnection, source: str) -> None:
    """Append to `http_fields` the rows derived from the frames in relation `source`."""
    conn.execute(f"INSERT INTO http_fields {http_fields_select(source)}")


def rebuild(conn: duckdb.DuckDBPyConnection) -> int:
    """Drop the projections and derive them again from `frames`; returns the message count."""
    conn.execute("BEGIN")
    conn.execute("DELETE FROM messages")
    project(conn, "frames")
    conn.execute("DELETE FROM http_fields")
    project_http(conn, "frames")
    # What other packages stored from the old projections (tape.schema.finalize) no longer
    # describes them: their tape_meta stamps start with `stored_`.
    conn.execute("DELETE FROM tape_meta WHERE starts_with(key, 'stored_')")
    conn.execute("COMMIT")
    rows = conn.execute("SELECT count(*) FROM messages").fetchall()
    return int(rows[0][0])
