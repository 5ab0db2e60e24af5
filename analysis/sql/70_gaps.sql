-- gaps: the outages the recorder lived through, from its lifecycle frames. A closed outage ends
-- with a 'gap' (reconnected) or 'rehandshake' event carrying gap_ms, measured on the monotonic
-- clock; it started gap_ms earlier. An outage still open when the recording ended (a
-- 'disconnected' or 'reconnecting' with no recovery after it) runs to the session's end, and
-- resolved_by is NULL.
CREATE OR REPLACE VIEW gaps AS
WITH life AS (
    SELECT session_id, seq, t_wall_ns,
           try(json_transform(decode(raw), '{"event": "VARCHAR", "gap_ms": "DOUBLE",
               "reason": "VARCHAR"}')) AS e
    FROM frames
    WHERE kind = 'lifecycle'
), events AS (
    SELECT session_id, seq, t_wall_ns, e.event AS event, e.gap_ms AS gap_ms, e.reason AS reason
    FROM life
), lost AS (
    SELECT * FROM events WHERE event IN ('disconnected', 'reconnecting')
), closed AS (
    SELECT e.session_id, e.seq, e.t_wall_ns, e.gap_ms, e.event,
           lag(e.t_wall_ns) OVER (PARTITION BY e.session_id ORDER BY e.seq) AS previous_close_ns
    FROM events e
    WHERE e.event IN ('gap', 'rehandshake') AND e.gap_ms IS NOT NULL
), closed_rows AS (
    SELECT c.session_id, c.t_wall_ns - CAST(c.gap_ms * 1e6 AS BIGINT) AS start_ns,
           c.t_wall_ns AS end_ns, c.gap_ms AS duration_ms, c.event AS resolved_by,
           (SELECT first(l.reason ORDER BY l.seq) FROM lost l
             WHERE l.session_id = c.session_id AND l.seq < c.seq
               AND l.t_wall_ns > coalesce(c.previous_close_ns, -1)) AS reason
    FROM closed c
), last_close AS (
    SELECT session_id, max(seq) AS seq FROM events
    WHERE event IN ('gap', 'rehandshake', 'connected') GROUP BY session_id
), open_start AS (
    SELECT l.session_id, min(l.seq) AS seq
    FROM lost l LEFT JOIN last_close c USING (session_id)
    WHERE l.seq > coalesce(c.seq, 0)
    GROUP BY l.session_id
), session_end AS (
    SELECT session_id, max(t_wall_ns) AS end_ns FROM frames GROUP BY session_id
), open_rows AS (
    SELECT l.session_id, l.t_wall_ns AS start_ns,
           coalesce(s.ended_ns, e.end_ns) AS end_ns,
           (coalesce(s.ended_ns, e.end_ns) - l.t_wall_ns) / 1e6 AS duration_ms,
           NULL AS resolved_by, l.reason
    FROM open_start o
    JOIN lost l ON l.session_id = o.session_id AND l.seq = o.seq
    LEFT JOIN sessions s ON s.session_id = l.session_id
    LEFT JOIN session_end e ON e.session_id = l.session_id
)
SELECT session_id, start_ns, end_ns, duration_ms, resolved_by, reason FROM closed_rows
UNION ALL
SELECT session_id, start_ns, end_ns, duration_ms, resolved_by, reason FROM open_rows;
