-- request_latency: one row per request, joined to the first ack that answers it (see acks).
-- Times in milliseconds: http_ms = request -> HTTP response; ack_ms = request -> ack receipt, as
-- the client saw it; server_ms = serverProcessingTimeTotalMs; node_ms = nodeProcessingTimeNanos
-- / 1e6; rest_ms = ack_ms - server_ms. ack_as_expected: the ack's notificationType is the one
-- DESIGN.md expects for the operation.
CREATE OR REPLACE VIEW request_latency AS
WITH expected(operation_name, expected_ack) AS (
    {{tape.gws.EXPECTED_ACK}}
), first_ack AS (
    SELECT * FROM acks WHERE request_seq IS NOT NULL AND NOT duplicate
)
SELECT r.session_id, r.seq, r.method, r.path, r.operation_name, r.reference_id,
       r.record_handle, r.campaign_name, r.calling_list, r.application_id, r.status,
       r.status_code, a.notification_type,
       e.expected_ack,
       a.notification_type IS NOT DISTINCT FROM e.expected_ack AS ack_as_expected,
       r.request_ns, r.response_ns, a.ack_ns, a.server_generation_ts,
       (r.response_ns - r.request_ns) / 1e6 AS http_ms,
       (a.ack_ns - r.request_ns) / 1e6 AS ack_ms,
       a.server_processing_ms AS server_ms,
       a.node_processing_ns / 1e6 AS node_ms,
       (a.ack_ns - r.request_ns) / 1e6 - a.server_processing_ms AS rest_ms
FROM requests r
LEFT JOIN first_ack a ON a.request_session_id = r.session_id AND a.request_seq = r.seq
LEFT JOIN expected e ON e.operation_name = r.operation_name;
