"""Readers: iterate a tape's sessions, frames and messages in order (per session, by seq)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import duckdb

from tape.frame import FRAME_COLUMNS, SESSION_COLUMNS, Frame, Session
from tape.schema import open_for_reading

_FETCH_ROWS = 10_000


@dataclass(frozen=True, slots=True)
class MessageRow:
    """One row of the `messages` projection."""

    session_id: str
    seq: int
    idx: int
    t_wall_ns: int
    t_mono_ns: int
    direction: str
    channel: str
    id: str | None
    client_id: str | None
    successful: bool | None
    error: str | None
    subscription: str | None
    message_type: str | None
    notification_type: str | None
    reference_id: str | None
    record_handle: str | None
    operation_name: str | None
    user_event: str | None
    server_generation_ts: int | None
    node_processing_ns: int | None
    server_processing_ms: float | None
    ext: str | None
    advice: str | None


class TapeReader:
    """Read-only view of a DuckDB tape file."""

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        self.conn = open_for_reading(self.path)

    def close(self) -> None:
        self.conn.close()

    def __enter__(self) -> TapeReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def sessions(self) -> list[Session]:
        return read_sessions(self.conn)

    def frames(self, session_id: str | None = None) -> Iterator[Frame]:
        cols = ", ".join(FRAME_COLUMNS)
        for row in _rows(self.conn, f"SELECT {cols} FROM frames", session_id):
            yield Frame(**dict(zip(FRAME_COLUMNS, row, strict=True)))

    def messages(self, session_id: str | None = None) -> Iterator[MessageRow]:
        for row in _rows(self.conn, "SELECT * FROM messages", session_id, order="seq, idx"):
            yield MessageRow(*row)


def read_sessions(conn: duckdb.DuckDBPyConnection) -> list[Session]:
    cols = ", ".join(SESSION_COLUMNS)
    rows = conn.execute(f"SELECT {cols} FROM sessions ORDER BY started_ns, session_id").fetchall()
    return [_session(row) for row in rows]


def _session(row: tuple[Any, ...]) -> Session:
    values = dict(zip(SESSION_COLUMNS, row, strict=True))
    values["channels"] = tuple(values["channels"] or ())
    values["labels"] = dict(values["labels"] or {})
    return Session(**values)


def _rows(
    conn: duckdb.DuckDBPyConnection, select: str, session_id: str | None, order: str = "seq"
) -> Iterator[tuple[Any, ...]]:
    where = " WHERE session_id = ?" if session_id is not None else ""
    params = [session_id] if session_id is not None else []
    cursor = conn.cursor()
    try:
        cursor.execute(f"{select}{where} ORDER BY session_id, {order}", params)
        while rows := cursor.fetchmany(_FETCH_ROWS):
            yield from rows
    finally:
        cursor.close()
