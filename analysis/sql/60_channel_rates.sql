-- channel_rates: messages per channel per second (of the recorder's wall clock, UTC), by
-- session and direction. Seconds with no messages have no row.
CREATE OR REPLACE VIEW channel_rates AS
SELECT session_id, direction, channel,
       make_timestamp((t_wall_ns // 1000000000) * 1000000) AS second,
       count(*) AS messages
FROM messages
GROUP BY ALL;
