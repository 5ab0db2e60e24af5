-- latency_parts: request_latency narrowed to what latency statistics group and filter by, one
-- row per request. `analyze latency` reads (and caches) this rather than the wide view: storing
-- 5M rows of request_latency took ~10 s here, these columns a fraction of it.
CREATE OR REPLACE VIEW latency_parts AS
SELECT session_id, request_ns, operation_name, notification_type, campaign_name,
       http_ms, ack_ms, server_ms, node_ms, rest_ms
FROM request_latency;
