"""A tape's traffic for `cometd-tape diff`: the messages its clients received on non-meta
channels, and its REST exchanges (a proxy's tapes have them), read from a DuckDB tape, a JSONL
tape, a HAR file or a tape set, one session or all of them in the order they began."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import duckdb

from tape.diff_core import Delivery, Exchange, Traffic, is_delivery
from tape.diff_rules import loads
from tape.reader import TapeReader
from tape.schema import TapeError
from tape.source import readable

UNREADABLE = "(unreadable frame)"
_FETCH_ROWS = 10_000

_SESSIONS = """
SELECT session_id FROM frames GROUP BY session_id ORDER BY min(t_wall_ns), session_id
"""
_RECEIVED = """
SELECT t_mono_ns, raw FROM frames
WHERE session_id = ? AND kind = 'bayeux' AND direction = 'in' ORDER BY seq
"""
_HTTP = """
SELECT kind, exchange_id, http_method, http_path, http_status, raw FROM frames
WHERE session_id = ? AND kind IN ('http-request', 'http-response') ORDER BY seq
"""


def read_traffic(path: Path | str, session: str | None = None) -> Traffic:
    """The traffic of the tape at `path` (every session, one after another, or `session`).
    Raises TapeError for a tape that cannot be read or has no such session."""
    path = Path(path)
    with readable(path) as tape, TapeReader(tape) as reader:
        sessions = [row[0] for row in reader.conn.execute(_SESSIONS).fetchall()]
        if session is not None and session not in sessions:
            known = ", ".join(sessions[:5]) + (", ..." if len(sessions) > 5 else "")
            raise TapeError(f"{path} has no session {session!r}; its sessions: {known or 'none'}")
        chosen = sessions if session is None else [session]
        deliveries = [d for s in chosen for d in _deliveries(reader.conn, s)]
        exchanges = [e for s in chosen for e in _exchanges(reader.conn, s)]
    name = str(path) if session is None else f"{path} (session {session})"
    return Traffic(name, tuple(deliveries), tuple(exchanges))


def _deliveries(conn: duckdb.DuckDBPyConnection, session: str) -> Iterator[Delivery]:
    """The session's deliveries, with offsets from its first delivery."""
    first: int | None = None
    for t_mono_ns, raw in _rows(conn, _RECEIVED, session):
        for message in _messages(bytes(raw)):
            if first is None:
                first = t_mono_ns
            yield Delivery(message["channel"], message, (t_mono_ns - first) / 1e9)


def _messages(raw: bytes) -> list[Any]:
    """A received frame's deliveries; a frame that is not JSON is one of its own, on a channel
    named for what it is, so that a client that got garbage is told from one that did not."""
    try:
        value = loads(raw)
    except ValueError:
        text = raw.decode("utf-8", "replace")
        return [{"channel": UNREADABLE, "data": text}]
    batch = value if isinstance(value, list) else [value]
    return [m for m in batch if is_delivery(m)]


def _exchanges(conn: duckdb.DuckDBPyConnection, session: str) -> list[Exchange]:
    """The session's REST exchanges in the order of their requests; a response is paired
    with its request by exchange_id."""
    requests: dict[str | None, dict[str, Any]] = {}
    order: list[dict[str, Any]] = []
    for kind, exchange_id, method, http_path, status, raw in _rows(conn, _HTTP, session):
        body = _body(bytes(raw))
        if kind == "http-request":
            requests[exchange_id] = {"method": method, "path": http_path, "request": body}
            order.append(requests[exchange_id])
            continue
        if exchange_id not in requests:  # a response whose request the tape lacks
            requests[exchange_id] = {"method": None, "path": None, "request": None}
            order.append(requests[exchange_id])
        requests.pop(exchange_id).update(status=status, response=body)
    return [_exchange(found) for found in order]


def _exchange(found: dict[str, Any]) -> Exchange:
    return Exchange(
        found["method"],
        found["path"],
        found.get("status"),
        found["request"],
        found.get("response"),
    )


def _body(raw: bytes) -> Any:
    """A body as JSON, or as text when it is not JSON; None when empty."""
    if not raw.strip():
        return None
    try:
        return loads(raw)
    except ValueError:
        return raw.decode("utf-8", "replace")


def _rows(conn: duckdb.DuckDBPyConnection, select: str, session: str) -> Iterator[tuple[Any, ...]]:
    cursor = conn.cursor()
    try:
        cursor.execute(select, [session])
        while rows := cursor.fetchmany(_FETCH_ROWS):
            yield from rows
    finally:
        cursor.close()
