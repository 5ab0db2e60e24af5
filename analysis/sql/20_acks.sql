-- acks: inbound /v2/me/outbound messages, each with
--   * the /me/internal eventProcessing metrics of the same event. Rule: a metrics message in the
--     SAME FRAME with the same record handle and GSW_USER_EVENT = notificationType wins; else the
--     nearest such message in the same session within 5 s either side; else none (NULLs).
--   * the request it answers: the latest request in the same session with the same referenceId
--     sent at or before the ack (request_seq; NULL for an ack with no request: an orphan).
--   * duplicate: TRUE for every ack after the first one that answers the same request.
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
), candidates AS (
    SELECT ack.*, metric.seq AS metric_seq, metric.server_generation_ts,
           metric.node_processing_ns, metric.server_processing_ms,
           row_number() OVER (
               PARTITION BY ack.session_id, ack.seq, ack.idx
               ORDER BY (metric.seq <> ack.seq), abs(metric.t_wall_ns - ack.t_wall_ns),
                        metric.seq, metric.idx
           ) AS rank
    FROM ack
    LEFT JOIN metric
      ON metric.session_id = ack.session_id
     AND metric.record_handle = ack.record_handle
     AND metric.user_event = ack.notification_type
     AND abs(metric.t_wall_ns - ack.t_wall_ns) <= 5000000000
), with_metrics AS (
    SELECT * EXCLUDE (rank) FROM candidates WHERE rank = 1
), req AS (
    SELECT session_id, seq, request_ns, reference_id, campaign_name
    FROM requests
    WHERE reference_id IS NOT NULL
), answered AS (
    SELECT a.*, r.seq AS request_seq, r.campaign_name
    FROM with_metrics a
    ASOF LEFT JOIN req r
      ON r.session_id = a.session_id AND r.reference_id = a.reference_id
     AND a.t_wall_ns >= r.request_ns
)
SELECT session_id, seq, idx, t_wall_ns AS ack_ns, notification_type, reference_id,
       record_handle, request_seq, campaign_name,
       request_seq IS NOT NULL AND row_number() OVER (
           PARTITION BY session_id, request_seq ORDER BY t_wall_ns, seq, idx
       ) > 1 AS duplicate,
       server_generation_ts, node_processing_ns, server_processing_ms,
       metric_seq = seq AS metrics_in_same_frame
FROM answered;
