-- acks: inbound /v2/me/outbound messages, each with
--   * the /me/internal eventProcessing metrics of the same event. Rule: a metrics message in the
--     SAME FRAME with the same record handle and GSW_USER_EVENT = notificationType wins; else the
--     nearest such message in the same session within 5 s either side (ties: the lowest seq,
--     then idx); else none (NULLs).
--   * the request it answers: the latest request in the same session with the same referenceId
--     sent at or before the ack; else one of another session (see `orphan` below)
--     (request_session_id, request_seq; NULL for an ack with no request: an orphan).
--   * duplicate: TRUE for every ack after the first one that answers the same request.
-- How: when no referenceId is sent twice in a session, a hash join pairs every ack with every
-- request it could answer (same session and referenceId, sent at or before it). When that
-- pairing is also one-to-one (no request answered by two acks: then acks + requests = pairs +
-- rows of the full join), each pair is the answer and no ack is a duplicate. Otherwise (a
-- referenceId reused, a duplicate ack) the latest request is found by an ASOF join and
-- duplicates are ranked, and the other branch is empty. Both give the same rows; the first
-- skips the ASOF join and the ranking, ~40% of a first analysis of 5M requests (16 -> 10.5 s).
-- Metrics likewise: when each (session, record handle, event) has one metrics message at most,
-- one hash join finds every ack's; otherwise the same-frame one is found by an equality join,
-- and the nearest for the rest by two ASOF joins. (A join on the handle alone paired every ack
-- with every metric of its handle: 10k acks of one record handle took 1.8 s against 0.08 s,
-- 20k took 21 s and 5.9 GB.)
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
), unique_keys AS (
    -- one metrics message per (session, record handle, event) at most: then an ack has one
    -- candidate or none, and a hash join finds it; otherwise (a load test acking one record
    -- handle over and over) that join would pair every such ack with every such metric
    SELECT count(*) = count(DISTINCT (session_id, record_handle, user_event)) AS yes FROM metric
), by_key AS (
    SELECT ack.*, metric.seq AS metric_seq, metric.server_generation_ts,
           metric.node_processing_ns, metric.server_processing_ms
    FROM (SELECT * FROM ack WHERE (SELECT yes FROM unique_keys)) ack
    LEFT JOIN metric
      ON metric.session_id = ack.session_id
     AND metric.record_handle = ack.record_handle
     AND metric.user_event = ack.notification_type
     AND abs(metric.t_wall_ns - ack.t_wall_ns) <= 5000000000
), same_frame AS (
    -- else: the metrics message in the ack's own frame (the first, if several) ...
    SELECT ack.*, metric.seq AS metric_seq, metric.server_generation_ts,
           metric.node_processing_ns, metric.server_processing_ms,
           row_number() OVER (PARTITION BY ack.session_id, ack.seq, ack.idx ORDER BY metric.idx)
               AS rank
    FROM (SELECT * FROM ack WHERE NOT (SELECT yes FROM unique_keys)) ack
    LEFT JOIN metric
      ON metric.session_id = ack.session_id AND metric.seq = ack.seq
     AND metric.record_handle = ack.record_handle
     AND metric.user_event = ack.notification_type
), lonely AS (
    -- ... and for an ack with none there, the nearest within 5 s either side, ties to the
    -- lowest (seq, idx): two ASOF joins (the latest at or before, the earliest at or after),
    -- on keys that order a metric by time, then by (seq, idx)
    SELECT session_id, seq, idx, t_wall_ns, notification_type, reference_id, record_handle,
           t_wall_ns::HUGEINT * 18446744073709551616 AS k_after,
           t_wall_ns::HUGEINT * 18446744073709551616 + 18446744073709551615 AS k_before
    FROM same_frame
    WHERE rank = 1 AND metric_seq IS NULL
), keyed AS (
    SELECT *,
           t_wall_ns::HUGEINT * 18446744073709551616 + seq::HUGEINT * 1048576 + idx AS k_after,
           t_wall_ns::HUGEINT * 18446744073709551616
               + (18446744073709551615 - (seq::HUGEINT * 1048576 + idx)) AS k_before
    FROM metric
    WHERE NOT (SELECT yes FROM unique_keys)
), nearest AS (
    SELECT a.session_id, a.seq, a.idx, abs(m.t_wall_ns - a.t_wall_ns) AS distance,
           m.seq AS m_seq, m.idx AS m_idx, m.server_generation_ts, m.node_processing_ns,
           m.server_processing_ms
    FROM lonely a
    ASOF JOIN keyed m
      ON m.session_id = a.session_id AND m.record_handle = a.record_handle
     AND m.user_event = a.notification_type AND m.k_before <= a.k_before
    UNION ALL
    SELECT a.session_id, a.seq, a.idx, abs(m.t_wall_ns - a.t_wall_ns), m.seq, m.idx,
           m.server_generation_ts, m.node_processing_ns, m.server_processing_ms
    FROM lonely a
    ASOF JOIN keyed m
      ON m.session_id = a.session_id AND m.record_handle = a.record_handle
     AND m.user_event = a.notification_type AND a.k_after <= m.k_after
), chosen AS (
    SELECT * FROM (
        SELECT *, row_number() OVER (
                      PARTITION BY session_id, seq, idx ORDER BY distance, m_seq, m_idx
                  ) AS rank
        FROM nearest
        WHERE distance <= 5000000000
    )
    WHERE rank = 1
), with_metrics AS MATERIALIZED (
    SELECT * FROM by_key
    UNION ALL
    SELECT * EXCLUDE (rank) FROM same_frame WHERE rank = 1 AND metric_seq IS NOT NULL
    UNION ALL
    SELECT a.session_id, a.seq, a.idx, a.t_wall_ns, a.notification_type, a.reference_id,
           a.record_handle, c.m_seq, c.server_generation_ts, c.node_processing_ns,
           c.server_processing_ms
    FROM lonely a
    LEFT JOIN chosen c USING (session_id, seq, idx)
), req AS MATERIALIZED (
    -- the rows of the requests view that have a referenceId (its WHERE, its campaign_name),
    -- read from http_fields: their HTTP responses are not needed here
    SELECT session_id, seq, t_wall_ns AS request_ns, reference_id,
           coalesce(campaign_name,
                    nullif(regexp_extract(http_path, '/outbound-campaigns/([^/?]+)', 1), ''))
               AS campaign_name
    FROM http_fields
    WHERE kind = 'http-request' AND direction = 'out'
      AND coalesce(http_method, 'POST') NOT IN ('GET', 'HEAD', 'OPTIONS')
      AND reference_id IS NOT NULL
), unique_refs AS (
    -- each referenceId sent once in its session: only then may requests and acks be paired
    -- by a plain join (a referenceId reused n times would pair ~n^2/2 rows, not n)
    SELECT count(*) = count(DISTINCT (session_id, reference_id)) AS yes FROM req
), pairs AS MATERIALIZED (
    -- seq is never NULL in a row of either side: a NULL one marks the side a row lacks
    SELECT a.*, r.seq AS request_seq, r.campaign_name
    FROM with_metrics a
    FULL JOIN (SELECT * FROM req WHERE (SELECT yes FROM unique_refs)) r
      ON r.session_id = a.session_id AND r.reference_id = a.reference_id
     AND a.t_wall_ns >= r.request_ns
), one_to_one AS (
    SELECT (SELECT yes FROM unique_refs)
           AND (SELECT count(*) FROM with_metrics) + (SELECT count(*) FROM req)
               = count(*) + count(*) FILTER (WHERE seq IS NOT NULL AND request_seq IS NOT NULL)
           AS yes
    FROM pairs
), answered AS (
    SELECT *, FALSE AS duplicate
    FROM pairs
    WHERE seq IS NOT NULL AND (SELECT yes FROM one_to_one)
    UNION ALL
    SELECT *,
           request_seq IS NOT NULL AND row_number() OVER (
               PARTITION BY session_id, request_seq ORDER BY t_wall_ns, seq, idx
           ) > 1 AS duplicate
    FROM (
        SELECT a.*, r.seq AS request_seq, r.campaign_name
        FROM (SELECT * FROM with_metrics WHERE NOT (SELECT yes FROM one_to_one)) a
        ASOF LEFT JOIN (SELECT * FROM req WHERE NOT (SELECT yes FROM one_to_one)) r
          ON r.session_id = a.session_id AND r.reference_id = a.reference_id
         AND a.t_wall_ns >= r.request_ns
    )
), orphan AS MATERIALIZED (
    -- Across sessions: an ack with no request in its own session answers the latest request
    -- with its referenceId that no ack of that request's own session answers, sent at most
    -- 60 s before it (the window) -- or up to 5 s after it when the two were recorded by
    -- different capture points, whose clocks may differ (a proxy's tape of REST requests and
    -- a recorder's tape of acks). A request answered this way by two acks: the later one is a
    -- duplicate.
    SELECT a.* EXCLUDE (request_seq, campaign_name, duplicate), coalesce(c.capture, '') AS capture
    FROM answered a
    LEFT JOIN capture_points c USING (session_id)
    WHERE a.request_seq IS NULL AND a.reference_id IS NOT NULL
), open_req AS (
    SELECT r.*, coalesce(c.capture, '') AS capture
    FROM req r
    LEFT JOIN capture_points c USING (session_id)
    WHERE (SELECT count(*) FROM orphan) > 0
      AND NOT EXISTS (SELECT 1 FROM answered a
                      WHERE a.session_id = r.session_id AND a.request_seq = r.seq)
), before AS (
    -- the latest such request sent at or before the ack, from any capture point ...
    SELECT o.session_id, o.seq, o.idx, r.session_id AS r_session, r.seq AS r_seq,
           r.campaign_name AS r_campaign, r.request_ns AS r_ns
    FROM orphan o
    ASOF JOIN open_req r
      ON r.reference_id = o.reference_id AND o.t_wall_ns >= r.request_ns
), after AS (
    -- ... and the latest up to 5 s after it, taken instead when it is another capture
    -- point's and sent after the ack (that capture point's clock may run ahead)
    SELECT o.session_id, o.seq, o.idx, r.session_id AS r_session, r.seq AS r_seq,
           r.campaign_name AS r_campaign, r.request_ns AS r_ns
    FROM orphan o
    ASOF JOIN open_req r
      ON r.reference_id = o.reference_id AND o.t_wall_ns + 5000000000 >= r.request_ns
    WHERE r.request_ns > o.t_wall_ns AND r.capture <> o.capture
), across AS (
    SELECT o.* EXCLUDE (capture),
           CASE WHEN coalesce(f.r_ns, b.r_ns) >= o.t_wall_ns - 60000000000
                THEN coalesce(f.r_session, b.r_session) END AS request_session_id,
           coalesce(f.r_seq, b.r_seq) AS candidate_seq,
           coalesce(f.r_campaign, b.r_campaign) AS candidate_campaign,
           coalesce(f.r_ns, b.r_ns) AS request_ns
    FROM orphan o
    LEFT JOIN before b USING (session_id, seq, idx)
    LEFT JOIN after f USING (session_id, seq, idx)
), across_ranked AS (
    SELECT * EXCLUDE (candidate_seq, candidate_campaign, request_ns),
           CASE WHEN request_session_id IS NOT NULL THEN candidate_seq END AS request_seq,
           CASE WHEN request_session_id IS NOT NULL THEN candidate_campaign END AS campaign_name,
           request_session_id IS NOT NULL AND row_number() OVER (
               PARTITION BY request_session_id, candidate_seq ORDER BY t_wall_ns, session_id, seq, idx
           ) > 1 AS duplicate
    FROM across
), resolved AS (
    SELECT *, CASE WHEN request_seq IS NOT NULL THEN session_id END AS request_session_id
    FROM answered
    WHERE NOT (request_seq IS NULL AND reference_id IS NOT NULL)
    UNION ALL BY NAME
    SELECT * FROM across_ranked
)
SELECT session_id, seq, idx, t_wall_ns AS ack_ns, notification_type, reference_id,
       record_handle, request_session_id, request_seq, campaign_name, duplicate,
       server_generation_ts, node_processing_ns, server_processing_ms,
       metric_seq = seq AS metrics_in_same_frame
FROM resolved;
