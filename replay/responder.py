"""Reactive replay: REST requests answered from the tape, and the Bayeux messages they caused
delivered again with the recorded delay, carrying the new request's referenceId and handle.

A recorded exchange is an http-request frame, its http-response, and its follow-ups: the ack
that answered it (the first inbound message carrying its referenceId after it, in the same
session) and the messages of the same event (in the ack's frame with the same record handle,
or, when the metrics came in a later frame, the nearest one within 5 s with the same handle
and GSW_USER_EVENT), each with its delay after the request.

Matching is vcrpy's idea: small matcher functions, each comparing one aspect of an incoming
request with a recorded one and returning why they differ (or None). By default: method,
path pattern (numeric and id-like segments, and the record handle, are wildcards) and
operationName; `body_field(name)` adds any JSON body field. Of the recorded exchanges that
match, the first not yet served is used, in recorded order; once all have been served, the
last one repeats. A request nothing matches gets 404 with the closest recorded request and the
differences.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

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
_ID_SEGMENT = re.compile(r"^(?:\d+|[0-9a-fA-F-]{16,})$")
_WILD_AFTER = ("outbound-records",)


@dataclass(frozen=True, slots=True)
class FollowUp:
    delay_s: float  # after the request, as recorded
    channel: str
    data: bytes  # the recorded `data` JSON
    key: tuple[str, int, int]  # (session_id, seq, idx): left out of the timeline


@dataclass(frozen=True, slots=True)
class RecordedExchange:
    session_id: str
    seq: int
    method: str
    path: str
    body: dict[str, Any] | None
    status: int
    response: bytes
    headers: tuple[tuple[str, str], ...]
    follow_ups: tuple[FollowUp, ...]

    @property
    def operation(self) -> Any:
        return None if self.body is None else self.body.get("operationName")

    @property
    def reference_id(self) -> Any:
        return None if self.body is None else self.body.get("referenceId")

    @property
    def handle(self) -> str | None:
        return record_handle(self.path)

    def describe(self) -> dict[str, Any]:
        return {
            "method": self.method,
            "path": self.path,
            "operationName": self.operation,
            "session_id": self.session_id,
            "seq": self.seq,
        }


@dataclass(frozen=True, slots=True)
class Incoming:
    method: str
    path: str
    body: dict[str, Any] | None

    @property
    def operation(self) -> Any:
        return None if self.body is None else self.body.get("operationName")

    def describe(self) -> dict[str, Any]:
        return {"method": self.method, "path": self.path, "operationName": self.operation}


Matcher = Callable[[Incoming, RecordedExchange], str | None]


def method(incoming: Incoming, recorded: RecordedExchange) -> str | None:
    if incoming.method.upper() == recorded.method.upper():
        return None
    return f"method: got {incoming.method}, recorded {recorded.method}"


def path(incoming: Incoming, recorded: RecordedExchange) -> str | None:
    if path_pattern(incoming.path) == path_pattern(recorded.path):
        return None
    return (
        f"path: got {incoming.path} ({path_pattern(incoming.path)}), "
        f"recorded {recorded.path} ({path_pattern(recorded.path)})"
    )


def operation(incoming: Incoming, recorded: RecordedExchange) -> str | None:
    if incoming.operation == recorded.operation:
        return None
    return f"operationName: got {incoming.operation!r}, recorded {recorded.operation!r}"


def body_field(name: str) -> Matcher:
    """A matcher on one JSON body field, e.g. body_field("campaignName")."""

    def matcher(incoming: Incoming, recorded: RecordedExchange) -> str | None:
        got = None if incoming.body is None else incoming.body.get(name)
        want = None if recorded.body is None else recorded.body.get(name)
        return None if got == want else f"{name}: got {got!r}, recorded {want!r}"

    matcher.__name__ = f"body_field({name!r})"
    return matcher


DEFAULT_MATCHERS: tuple[Matcher, ...] = (method, path, operation)


def path_pattern(raw: str) -> str:
    """`/api/v2/me/outbound-records/13?x=1` -> `/api/v2/me/outbound-records/*`."""
    segments = raw.split("?", 1)[0].rstrip("/").split("/")
    out = []
    for n, segment in enumerate(segments):
        wild = _ID_SEGMENT.match(segment) or (n > 0 and segments[n - 1] in _WILD_AFTER)
        out.append("*" if wild else segment)
    return "/".join(out)


def record_handle(raw: str) -> str | None:
    segments = raw.split("?", 1)[0].rstrip("/").split("/")
    for n, segment in enumerate(segments[:-1]):
        if segment in _WILD_AFTER:
            return segments[n + 1]
    return None


@dataclass
class Unmatched:
    request: dict[str, Any]
    closest: dict[str, Any] | None
    differences: list[str]

    def as_json(self) -> dict[str, Any]:
        return {
            "error": "cometd-tape replay: no recorded request matches "
            f"{self.request['method']} {self.request['path']}",
            "request": self.request,
            "closest": self.closest,
            "differences": self.differences,
        }


@dataclass
class Served:
    exchange: RecordedExchange
    follow_ups: list[tuple[float, str, bytes]]  # (delay_s, channel, data with substitutions)


@dataclass
class Responder:
    exchanges: list[RecordedExchange]
    matchers: Sequence[Matcher] = DEFAULT_MATCHERS
    unmatched: list[Unmatched] = field(default_factory=list)
    served: int = 0
    _used: set[int] = field(default_factory=set)

    def answer(self, incoming: Incoming) -> Served | Unmatched:
        candidates = [
            n
            for n, recorded in enumerate(self.exchanges)
            if all(m(incoming, recorded) is None for m in self.matchers)
        ]
        if not candidates:
            miss = self._miss(incoming)
            self.unmatched.append(miss)
            return miss
        chosen = next((n for n in candidates if n not in self._used), candidates[-1])
        self._used.add(chosen)
        self.served += 1
        recorded = self.exchanges[chosen]
        new_ref = None if incoming.body is None else incoming.body.get("referenceId")
        new_handle = record_handle(incoming.path)
        follow = [
            (f.delay_s, f.channel, substitute(f.data, recorded, new_ref, new_handle))
            for f in recorded.follow_ups
        ]
        return Served(recorded, follow)

    def _miss(self, incoming: Incoming) -> Unmatched:
        if not self.exchanges:
            return Unmatched(incoming.describe(), None, ["the tape has no recorded requests"])
        scored = [
            (sum(d is not None for d in diffs), n, diffs)
            for n, recorded in enumerate(self.exchanges)
            for diffs in [[m(incoming, recorded) for m in self.matchers]]
        ]
        _, best, diffs = min(scored, key=lambda s: (s[0], s[1]))
        return Unmatched(
            incoming.describe(),
            self.exchanges[best].describe(),
            [d for d in diffs if d is not None],
        )

    @property
    def follow_up_keys(self) -> frozenset[tuple[str, int, int]]:
        return frozenset(f.key for e in self.exchanges for f in e.follow_ups)


def substitute(
    data: bytes, recorded: RecordedExchange, new_ref: Any, new_handle: str | None
) -> bytes:
    """The recorded data with the recorded referenceId and record handle replaced by the new
    request's (keys referenceId, recordHandle and GSW_RECORD_HANDLE, at any depth)."""
    old_ref, old_handle = recorded.reference_id, recorded.handle
    if (new_ref is None or new_ref == old_ref) and (new_handle in (None, old_handle)):
        return data
    tree = orjson.loads(data)

    def walk(node: Any) -> Any:
        if isinstance(node, dict):
            out = {}
            for key, value in node.items():
                if key == "referenceId" and new_ref is not None and value == old_ref:
                    value = new_ref
                elif (
                    key in ("recordHandle", "GSW_RECORD_HANDLE")
                    and new_handle is not None
                    and str(value) == old_handle
                ):
                    value = (
                        int(new_handle)
                        if isinstance(value, int)
                        and new_handle.isascii()
                        and new_handle.isdecimal()
                        else new_handle
                    )
                out[key] = walk(value)
            return out
        if isinstance(node, list):
            return [walk(v) for v in node]
        return node

    return orjson.dumps(walk(tree))


def load_exchanges(tape: Path) -> list[RecordedExchange]:
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
