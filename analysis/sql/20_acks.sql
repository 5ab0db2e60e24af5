-- acks: /v2/me/outbound messages, each joined to the /me/internal eventProcessing metrics of the
-- same event. Rule: first a metrics message in the same frame with the same record handle and
-- GSW_USER_EVENT = notificationType; else the nearest such message in the same session within
-- 5 s either side.
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
               ORDER BY (metric.seq <> ack.seq), abs(metric.t_wall_ns - ack.t_wall_ns), metric.idx
           ) AS rank
    FROM ack
    LEFT JOIN metric
      ON metric.session_id = ack.session_id
     AND metric.record_handle IS NOT DISTINCT FROM ack.record_handle
     AND metric.user_event IS NOT DISTINCT FROM ack.notification_type
     AND abs(metric.t_wall_ns - ack.t_wall_ns) <= 5000000000
)
SELECT session_id, seq, idx, t_wall_ns AS ack_ns, notification_type, reference_id,
       record_handle, server_generation_ts, node_processing_ns, server_processing_ms,
       metric_seq = seq AS metrics_in_same_frame
FROM candidates
WHERE rank = 1;
