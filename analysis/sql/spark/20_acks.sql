-- acks, in Spark SQL: the same rows as ../20_acks.sql (read it for the rules), by joins and
-- window functions where DuckDB uses ASOF joins, which Spark lacks; without DuckDB's fast
-- paths, which choose between two ways to the same rows. The metrics are joined last, once:
-- Spark computes a CTE again wherever it is read.
--   * metrics: every metrics message of the ack's session, record handle and event within 5 s
--     either side, ranked: the ack's own frame first (then idx), then the nearest, ties to the
--     lowest (seq, idx);
--   * the request: the latest of the ack's session with its referenceId sent at or before it;
--   * an ack with none there (an orphan): the latest open request with its referenceId from
--     another session sent at most 60 s before it, or the latest up to 5 s after it when that
--     one is another capture point's. A join bounded to that window, ranked.
CREATE OR REPLACE VIEW acks AS
WITH ack AS (
    SELECT session_id, seq, idx, t_wall_ns, notification_type, reference_id, record_handle
    FROM messages
    WHERE channel = '/v2/me/outbound' AND direction = 'in'
), metric AS (
    SELECT session_id, seq, idx, t_wall_ns, record_handle, user_event,
           server_generation_ts, node_processing_ns, server_processing_ms
    FROM messages
    WHERE channel = '/me/internal' AND direction = 'in' AND server_generation_ts IS NOT NULL
), metric_ranked AS (
    SELECT a.session_id, a.seq, a.idx, m.seq AS metric_seq, m.server_generation_ts,
           m.node_processing_ns, m.server_processing_ms,
           row_number() OVER (
               PARTITION BY a.session_id, a.seq, a.idx
               ORDER BY CASE WHEN m.seq = a.seq THEN 0 ELSE 1 END,
                        abs(m.t_wall_ns - a.t_wall_ns), m.seq, m.idx
           ) AS rank
    FROM ack a
    JOIN metric m
      ON m.session_id = a.session_id AND m.record_handle = a.record_handle
     AND m.user_event = a.notification_type
     AND m.t_wall_ns BETWEEN a.t_wall_ns - 5000000000 AND a.t_wall_ns + 5000000000
), chosen_metric AS (
    SELECT * FROM metric_ranked WHERE rank = 1
), req AS (
    SELECT session_id, seq, t_wall_ns AS request_ns, reference_id,
           coalesce(campaign_name,
                    nullif(regexp_extract(http_path, '/outbound-campaigns/([^/?]+)', 1), ''))
               AS campaign_name
    FROM http_fields
    WHERE kind = 'http-request' AND direction = 'out'
      AND coalesce(http_method, 'POST') NOT IN ('GET', 'HEAD', 'OPTIONS')
      AND reference_id IS NOT NULL
), latest AS (
    SELECT a.session_id, a.seq, a.idx, r.seq AS request_seq, r.campaign_name,
           row_number() OVER (
               PARTITION BY a.session_id, a.seq, a.idx ORDER BY r.request_ns DESC, r.seq DESC
           ) AS rank
    FROM ack a
    JOIN req r
      ON r.session_id = a.session_id AND r.reference_id = a.reference_id
     AND r.request_ns <= a.t_wall_ns
), answered AS (
    SELECT a.*, l.request_seq, l.campaign_name,
           l.request_seq IS NOT NULL AND row_number() OVER (
               PARTITION BY a.session_id, l.request_seq ORDER BY a.t_wall_ns, a.seq, a.idx
           ) > 1 AS duplicate
    FROM ack a
    LEFT JOIN (SELECT * FROM latest WHERE rank = 1) l USING (session_id, seq, idx)
), orphan AS (
    SELECT a.session_id, a.seq, a.idx, a.t_wall_ns, a.notification_type, a.reference_id,
           a.record_handle, coalesce(c.capture, '') AS capture
    FROM answered a
    LEFT JOIN capture_points c USING (session_id)
    WHERE a.request_seq IS NULL AND a.reference_id IS NOT NULL
), open_req AS (
    SELECT r.*, coalesce(c.capture, '') AS capture
    FROM req r
    LEFT JOIN capture_points c USING (session_id)
    LEFT ANTI JOIN (SELECT DISTINCT session_id, request_seq FROM answered) a
      ON a.session_id = r.session_id AND a.request_seq = r.seq
), near AS (
    SELECT o.session_id, o.seq, o.idx, o.t_wall_ns, o.capture AS o_capture,
           r.session_id AS r_session, r.seq AS r_seq, r.campaign_name AS r_campaign,
           r.request_ns AS r_ns, r.capture AS r_capture
    FROM orphan o
    JOIN open_req r
      ON r.reference_id = o.reference_id
     AND r.request_ns BETWEEN o.t_wall_ns - 60000000000 AND o.t_wall_ns + 5000000000
), before AS (
    SELECT * FROM (
        SELECT *, row_number() OVER (
                      PARTITION BY session_id, seq, idx
                      ORDER BY r_ns DESC, r_session DESC, r_seq DESC) AS rank
        FROM near WHERE r_ns <= t_wall_ns)
    WHERE rank = 1
), after AS (
    SELECT * FROM (
        SELECT *, row_number() OVER (
                      PARTITION BY session_id, seq, idx
                      ORDER BY r_ns DESC, r_session DESC, r_seq DESC) AS rank
        FROM near)
    WHERE rank = 1 AND r_ns > t_wall_ns AND r_capture <> o_capture
), across AS (
    SELECT o.session_id, o.seq, o.idx, o.t_wall_ns, o.notification_type, o.reference_id,
           o.record_handle,
           coalesce(f.r_session, b.r_session) AS request_session_id,
           coalesce(f.r_seq, b.r_seq) AS request_seq,
           coalesce(f.r_campaign, b.r_campaign) AS campaign_name
    FROM orphan o
    LEFT JOIN before b USING (session_id, seq, idx)
    LEFT JOIN after f USING (session_id, seq, idx)
), resolved AS (
    SELECT session_id, seq, idx, t_wall_ns, notification_type, reference_id, record_handle,
           CASE WHEN request_seq IS NOT NULL THEN session_id END AS request_session_id,
           request_seq, campaign_name, duplicate
    FROM answered
    WHERE NOT (request_seq IS NULL AND reference_id IS NOT NULL)
    UNION ALL
    SELECT *,
           request_session_id IS NOT NULL AND row_number() OVER (
               PARTITION BY request_session_id, request_seq
               ORDER BY t_wall_ns, session_id, seq, idx
           ) > 1 AS duplicate
    FROM across
)
SELECT r.session_id, r.seq, r.idx, r.t_wall_ns AS ack_ns, r.notification_type, r.reference_id,
       r.record_handle, r.request_session_id, r.request_seq, r.campaign_name, r.duplicate,
       m.server_generation_ts, m.node_processing_ns, m.server_processing_ms,
       m.metric_seq = r.seq AS metrics_in_same_frame
FROM resolved r
LEFT JOIN chosen_metric m USING (session_id, seq, idx);
