"""The recorded REST exchanges of a tape, each with the Bayeux messages that followed it."""

from __future__ import annotations

from pathlib import Path

import orjson

from replay.exchange import FollowUp, RecordedExchange
from tape.reader import TapeReader

_EXCHANGES = """
WITH req AS (
    SELECT session_id, seq, exchange_id, t_mono_ns, t_wall_ns, http_method, http_path, raw,
           try(json_extract_string(decode(raw), '$.referenceId')) AS reference_id
    FROM frames WHERE kind = 'http-request' AND direction = 'out'
), resp AS (
    SELECT session_id, exchange_id, http_status, headers, raw
    FROM frames WHERE kind = 'http-response' AND direction = 'in'
), events AS (
    SELECT session_id, seq, idx, t_mono_ns, t_wall_ns, channel, reference_id, record_handle,
           user_event, notification_type
    FROM messages
    WHERE direction = 'in' AND NOT starts_with(channel, '/meta/')
), answered AS (
    SELECT e.*, r.seq AS request_seq
    FROM (SELECT * FROM events WHERE reference_id IS NOT NULL) e
    ASOF JOIN (SELECT * FROM req WHERE reference_id IS NOT NULL) r
      ON r.session_id = e.session_id AND r.reference_id = e.reference_id
     AND e.t_wall_ns >= r.t_wall_ns
    QUALIFY row_number() OVER (PARTITION BY e.session_id, r.seq ORDER BY e.seq, e.idx) = 1
), same_frame AS (
    -- the ack, and the messages of the same event in its frame: same record handle, and no
    -- referenceId of their own (another request's ack may share the frame and the handle)
    SELECT a.request_seq, e.session_id, e.seq, e.idx
    FROM answered a JOIN events e
      ON e.session_id = a.session_id AND e.seq = a.seq
     AND (e.idx = a.idx OR (e.record_handle = a.record_handle
          AND (e.reference_id IS NULL OR e.reference_id = a.reference_id)
          AND (e.user_event IS NULL OR e.user_event = a.notification_type)))
), later_frame AS (
    SELECT a.request_seq, e.session_id, e.seq, e.idx
    FROM answered a JOIN events e
      ON e.session_id = a.session_id AND e.seq > a.seq
     AND e.record_handle = a.record_handle AND e.user_event = a.notification_type
     AND e.t_wall_ns - a.t_wall_ns <= 5000000000
    WHERE NOT EXISTS (  -- no metrics of this event in the ack's own frame (as same_frame)
        SELECT 1 FROM events s WHERE s.session_id = a.session_id AND s.seq = a.seq
          AND s.idx <> a.idx AND s.record_handle = a.record_handle
          AND (s.reference_id IS NULL OR s.reference_id = a.reference_id)
          AND (s.user_event IS NULL OR s.user_event = a.notification_type)
    )
    QUALIFY row_number() OVER (PARTITION BY a.session_id, a.request_seq ORDER BY e.seq, e.idx) = 1
), follow AS (
    SELECT * FROM same_frame UNION ALL SELECT * FROM later_frame
)
SELECT req.session_id, req.seq, req.t_mono_ns, req.http_method, req.http_path, req.raw,
       resp.http_status, resp.headers, resp.raw, req.t_wall_ns,
       list(struct_pack(seq := f.seq, idx := f.idx, t_mono_ns := e.t_mono_ns,
                        channel := e.channel, raw := fr.raw) ORDER BY f.seq, f.idx)
           FILTER (WHERE f.seq IS NOT NULL) AS follow
FROM req
LEFT JOIN resp ON resp.session_id = req.session_id AND resp.exchange_id = req.exchange_id
LEFT JOIN follow f ON f.session_id = req.session_id AND f.request_seq = req.seq
LEFT JOIN events e ON e.session_id = f.session_id AND e.seq = f.seq AND e.idx = f.idx
LEFT JOIN frames fr ON fr.session_id = f.session_id AND fr.seq = f.seq
GROUP BY ALL
ORDER BY req.t_wall_ns, req.session_id, req.seq
"""

# Response headers worth replaying; cookies and the like were redacted when recorded.
REPLAYED_HEADERS = frozenset({"content-type", "x-csrf-header", "x-csrf-token", "location"})


def load_exchanges(tape: Path) -> list[RecordedExchange]:
    """Every http-request frame of `tape`, with its http-response and its follow-ups: the ack
    that answered it (the first inbound message carrying its referenceId after it, in the same
    session) and the messages of the same event (in the ack's frame with the same record
    handle, or, when the metrics came in a later frame, the nearest one within 5 s with the
    same handle and GSW_USER_EVENT), each with its delay after the request."""
    from replay.spans import elements, member  # the recorded data bytes, untouched

    with TapeReader(tape) as reader:
        rows = reader.conn.execute(_EXCHANGES).fetchall()
    out = []
    for (
        session_id,
        seq,
        t_mono,
        http_method,
        http_path,
        raw,
        status,
        headers,
        response,
        _,
        follow,
    ) in rows:
        follow_ups = []
        for item in follow or []:
            frame = bytes(item["raw"])
            span = elements(frame)[item["idx"]]
            found = member(frame, span, b"data")
            data = frame[found[0] : found[1]] if found else b"null"
            follow_ups.append(
                FollowUp(
                    (item["t_mono_ns"] - t_mono) / 1e9,
                    item["channel"],
                    data,
                    (session_id, item["seq"], item["idx"]),
                )
            )
        try:
            body = orjson.loads(bytes(raw)) if raw else None
        except orjson.JSONDecodeError:
            body = None
        pairs = tuple(
            (str(k), str(v))
            for k, v in (orjson.loads(headers) if headers else [])
            if str(k).lower() in REPLAYED_HEADERS
        )
        out.append(
            RecordedExchange(
                session_id,
                seq,
                http_method or "GET",
                http_path or "/",
                body if isinstance(body, dict) else None,
                int(status) if status is not None else 502,
                bytes(response) if response is not None else b"",
                pairs,
                tuple(follow_ups),
            )
        )
    return out
