-- clock_offsets: per session, the estimated offset of the server's clock from the recorder's
-- (offset_ms = server clock - recorder clock), from the data alone:
--   * every message stamped with serverGenerationTimestamp S and received at R (recorder
--     clock) bounds it from below: the event was made before it arrived, so offset >= S - R;
--   * every request sent at Q (recorder clock) whose ack carries S bounds it from above: the
--     ack was made after the request was sent, so offset <= S - Q.
-- With both bounds, the estimate is their midpoint and uncertainty_ms is half the interval
-- (method 'request-bracket'). With only the lower bound (no matched requests, or bounds that
-- cross because a clock stepped), the estimate is the lower bound: the fastest delivery is
-- taken to have taken 0 ms (method 'min-one-way-delay'). S has 1 ms resolution.
CREATE OR REPLACE VIEW clock_offsets AS
WITH low AS (
    SELECT session_id, max(server_generation_ts::HUGEINT * 1000000 - t_wall_ns) / 1e6 AS low_ms, count(*) AS samples
    FROM messages
    WHERE direction = 'in' AND server_generation_ts IS NOT NULL
    GROUP BY session_id
), high AS (
    SELECT session_id, min(server_generation_ts::HUGEINT * 1000000 - request_ns) / 1e6 AS high_ms
    FROM request_latency
    WHERE server_generation_ts IS NOT NULL
    GROUP BY session_id
)
SELECT low.session_id, low.samples, low.low_ms, high.high_ms,
       CASE WHEN high.high_ms >= low.low_ms THEN (low.low_ms + high.high_ms) / 2
            ELSE low.low_ms END AS offset_ms,
       CASE WHEN high.high_ms >= low.low_ms THEN (high.high_ms - low.low_ms) / 2 END
           AS uncertainty_ms,
       CASE WHEN high.high_ms >= low.low_ms THEN 'request-bracket'
            ELSE 'min-one-way-delay' END AS method
FROM low LEFT JOIN high USING (session_id);

-- delivery_latency: serverGenerationTimestamp -> receipt for every inbound message that carries
-- one. raw_ms mixes in the clock offset (recorder clock - server clock); delivery_ms removes the
-- session's estimated offset (clock_offsets), which is also given, never silently mixed in.
CREATE OR REPLACE VIEW delivery_latency AS
SELECT m.session_id, m.seq, m.idx, m.channel, m.user_event, m.record_handle,
       m.server_generation_ts, m.t_wall_ns AS receipt_ns,
       (m.t_wall_ns - m.server_generation_ts::HUGEINT * 1000000) / 1e6 AS raw_ms,
       o.offset_ms, o.method AS offset_method,
       (m.t_wall_ns - m.server_generation_ts::HUGEINT * 1000000) / 1e6 + o.offset_ms AS delivery_ms
FROM messages m
JOIN clock_offsets o USING (session_id)
WHERE m.direction = 'in' AND m.server_generation_ts IS NOT NULL;
