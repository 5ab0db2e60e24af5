-- unmatched_requests: requests that did not get what they asked for. reason is the first that
-- applies: 'no response' (no HTTP response recorded), 'HTTP <status>' (status >= 400),
-- 'statusCode <n>' (GWS refused it: a non-zero statusCode), 'no referenceId' (the body has none,
-- so no ack can be tied to it), 'no ack' (no ack with its referenceId arrived).
CREATE OR REPLACE VIEW unmatched_requests AS
SELECT *,
       CASE
           WHEN response_ns IS NULL THEN 'no response'
           WHEN status >= 400 THEN 'HTTP ' || status
           WHEN coalesce(status_code, 0) <> 0 THEN 'statusCode ' || status_code
           WHEN reference_id IS NULL THEN 'no referenceId'
           ELSE 'no ack'
       END AS reason
FROM request_latency
WHERE ack_ns IS NULL OR coalesce(status_code, 0) <> 0 OR status >= 400 OR response_ns IS NULL;
