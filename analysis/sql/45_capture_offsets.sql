-- capture_offsets: per capture point (capture_points: the machine whose clock stamped a
-- session's frames), the estimated offset of the server's clock from that capture point's
-- (offset_ms = server clock - capture clock), by clock_offsets' rule over all its sessions:
-- messages received with a serverGenerationTimestamp bound it from below, requests sent from
-- it whose ack carries one bound it from above (the ack may be another capture point's). Two
-- capture points' clocks differ by the difference of their offsets: a proxy's and a
-- recorder's tapes read together get request -> ack times across both clocks, and the
-- analysis reports that difference (analysis/recorder.py).
CREATE OR REPLACE VIEW capture_offsets AS
WITH low AS (
    SELECT coalesce(c.capture, '') AS capture,
           max(m.server_generation_ts::HUGEINT * 1000000 - m.t_wall_ns) / 1e6 AS low_ms,
           count(*) AS deliveries
    FROM messages m
    LEFT JOIN capture_points c USING (session_id)
    WHERE m.direction = 'in' AND m.server_generation_ts IS NOT NULL
    GROUP BY ALL
), high AS (
    SELECT coalesce(c.capture, '') AS capture,
           min(r.server_generation_ts::HUGEINT * 1000000 - r.request_ns) / 1e6 AS high_ms,
           count(*) AS requests
    FROM request_latency r
    LEFT JOIN capture_points c USING (session_id)
    WHERE r.server_generation_ts IS NOT NULL
    GROUP BY ALL
)
SELECT capture, coalesce(deliveries, 0) AS deliveries, coalesce(requests, 0) AS requests,
       low_ms, high_ms,
       CASE WHEN high_ms >= low_ms THEN (low_ms + high_ms) / 2
            ELSE coalesce(low_ms, high_ms) END AS offset_ms,
       CASE WHEN high_ms >= low_ms THEN (high_ms - low_ms) / 2 END AS uncertainty_ms,
       CASE WHEN high_ms >= low_ms THEN 'request-bracket'
            WHEN low_ms IS NOT NULL THEN 'min-one-way-delay'
            ELSE 'min-request-to-ack' END AS method
FROM low FULL JOIN high USING (capture);
