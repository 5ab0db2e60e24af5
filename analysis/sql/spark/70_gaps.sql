-- gaps, in Spark SQL: the same rows as ../70_gaps.sql (read it for the rules); from_json for
-- DuckDB's json_transform, a join and min_by for its correlated first(... ORDER BY ...), and
-- bround where DuckDB's cast to BIGINT rounds (half to even).
CREATE OR REPLACE VIEW gaps AS
WITH events AS (
    SELECT session_id, seq, t_wall_ns, e.event AS event, e.gap_ms AS gap_ms, e.reason AS reason
    FROM (
        SELECT session_id, seq, t_wall_ns,
               from_json(CAST(raw AS STRING), 'event STRING, gap_ms DOUBLE, reason STRING') AS e
        FROM frames
        WHERE kind = 'lifecycle')
), lost AS (
    SELECT * FROM events WHERE event IN ('disconnected', 'reconnecting')
), closed AS (
    SELECT e.session_id, e.seq, e.t_wall_ns, e.gap_ms, e.event,
           lag(e.t_wall_ns) OVER (PARTITION BY e.session_id ORDER BY e.seq) AS previous_close_ns
    FROM events e
    WHERE e.event IN ('gap', 'rehandshake') AND e.gap_ms IS NOT NULL
), closed_rows AS (
    SELECT c.session_id, c.t_wall_ns - CAST(bround(c.gap_ms * 1e6, 0) AS BIGINT) AS start_ns,
           c.t_wall_ns AS end_ns, c.gap_ms AS duration_ms, c.event AS resolved_by,
           min_by(l.reason, l.seq) AS reason
    FROM closed c
    LEFT JOIN lost l
      ON l.session_id = c.session_id AND l.seq < c.seq
     AND l.t_wall_ns > coalesce(c.previous_close_ns, -1)
    GROUP BY c.session_id, c.seq, c.t_wall_ns, c.gap_ms, c.event
), last_close AS (
    SELECT session_id, max(seq) AS seq FROM events
    WHERE event IN ('gap', 'rehandshake', 'connected') GROUP BY session_id
), open_start AS (
    SELECT l.session_id, min(l.seq) AS seq
    FROM lost l LEFT JOIN last_close c ON c.session_id = l.session_id
    WHERE l.seq > coalesce(c.seq, 0)
    GROUP BY l.session_id
), session_end AS (
    SELECT session_id, max(t_wall_ns) AS end_ns FROM frames GROUP BY session_id
), open_rows AS (
    SELECT l.session_id, l.t_wall_ns AS start_ns,
           coalesce(s.ended_ns, e.end_ns) AS end_ns,
           (coalesce(s.ended_ns, e.end_ns) - l.t_wall_ns) / 1e6 AS duration_ms,
           CAST(NULL AS STRING) AS resolved_by, l.reason
    FROM open_start o
    JOIN lost l ON l.session_id = o.session_id AND l.seq = o.seq
    LEFT JOIN sessions s ON s.session_id = l.session_id
    LEFT JOIN session_end e ON e.session_id = l.session_id
)
SELECT session_id, start_ns, end_ns, duration_ms, resolved_by, reason FROM closed_rows
UNION ALL
SELECT session_id, start_ns, end_ns, duration_ms, resolved_by, reason FROM open_rows;
