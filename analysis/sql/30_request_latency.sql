-- request_latency: one row per request, matched to the first ack with its referenceId that
-- arrived after it in the same session. Times in milliseconds.
CREATE OR REPLACE VIEW request_latency AS
WITH expected(operation_name, expected_ack) AS (
    VALUES ('DoNotCallRecord', 'DoNotCallAcknowledge'),
           ('CompleteRecord', 'RecordProcessedAcknowledge'),
           ('RescheduleRecord', 'ScheduledRecordRescheduleAcknowledge'),
           ('RejectRecord', 'RecordRejectAcknowledge'),
           ('UpdateRecord', 'UpdateCallCompletionStatsAcknowledge'),
           ('GetPreviewRecord', 'PreviewRecord')
), matched AS (
    SELECT r.*, a.ack_ns, a.notification_type, a.server_processing_ms, a.node_processing_ns,
           row_number() OVER (PARTITION BY r.session_id, r.seq ORDER BY a.ack_ns) AS rank
    FROM requests r
    LEFT JOIN acks a
      ON a.session_id = r.session_id AND a.reference_id = r.reference_id
     AND a.ack_ns >= r.request_ns
)
SELECT m.session_id, m.seq, m.method, m.path, m.operation_name, m.reference_id,
       m.record_handle, m.campaign_name, m.calling_list, m.application_id, m.status,
       m.status_code, m.notification_type,
       e.expected_ack,
       m.notification_type IS NOT DISTINCT FROM e.expected_ack AS ack_as_expected,
       m.request_ns,
       (m.response_ns - m.request_ns) / 1e6 AS http_ms,
       (m.ack_ns - m.request_ns) / 1e6 AS ack_ms,
       m.server_processing_ms AS server_ms,
       m.node_processing_ns / 1e6 AS node_ms,
       (m.ack_ns - m.request_ns) / 1e6 - m.server_processing_ms AS rest_ms
FROM matched m
LEFT JOIN expected e USING (operation_name)
WHERE m.rank = 1;
