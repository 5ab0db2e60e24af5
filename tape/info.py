"""What a tape holds, in brief: the `info` command's data and its text rendering."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import duckdb

from tape.frame import Session
from tape.reader import read_sessions
from tape.schema import SCHEMA_VERSION, schema_version


@dataclass(frozen=True, slots=True)
class TapeInfo:
    schema_version: int
    created_by: str | None
    sessions: list[Session]
    frames_by_session: dict[str, int]
    frames_by_kind: list[tuple[str, str, int]]
    messages_by_channel: list[tuple[str, str, int]]
    parse_errors: int
    first_ns: int | None
    last_ns: int | None


def tape_info(conn: duckdb.DuckDBPyConnection) -> TapeInfo:
    span = _one(conn, "SELECT min(t_wall_ns), max(t_wall_ns) FROM frames")
    created = _one(conn, "SELECT value FROM tape_meta WHERE key = 'created_by'")
    return TapeInfo(
        schema_version=schema_version(conn) or SCHEMA_VERSION,
        created_by=created[0] if created else None,
        sessions=read_sessions(conn),
        frames_by_session=dict(
            conn.execute("SELECT session_id, count(*) FROM frames GROUP BY 1").fetchall()
        ),
        frames_by_kind=conn.execute(
            "SELECT kind, direction, count(*) FROM frames GROUP BY ALL ORDER BY ALL"
        ).fetchall(),
        messages_by_channel=conn.execute(
            "SELECT channel, direction, count(*) FROM messages GROUP BY ALL ORDER BY 3 DESC, 1, 2"
        ).fetchall(),
        parse_errors=int(
            _one(conn, "SELECT count(*) FROM frames WHERE parse_error IS NOT NULL")[0]
        ),
        first_ns=span[0] if span else None,
        last_ns=span[1] if span else None,
    )


def _one(conn: duckdb.DuckDBPyConnection, sql: str) -> tuple[Any, ...]:
    # fetchall: DuckDB 2 refuses new work on a connection with a half-read result
    rows = conn.execute(sql).fetchall()
    return tuple(rows[0]) if rows else ()


def render_info(info: TapeInfo, path: Path) -> str:
    lines = [f"tape {path}  (schema v{info.schema_version}, created by {info.created_by})"]
    lines.append(f"time span  {_span(info.first_ns, info.last_ns)}")
    lines.append(f"sessions   {len(info.sessions)}")
    for s in info.sessions:
        frames = info.frames_by_session.get(s.session_id, 0)
        ended = f"ended: {s.end_reason}" if s.end_reason else "open"
        where = s.endpoint or "-"
        lines.append(
            f"  {s.session_id}  {s.mode:<7} {s.transport or '-':<12} {frames:>9} frames  "
            f"{where}  client {s.client_id or '-'}  ({ended})"
        )
    lines.append(f"frames     {sum(n for *_, n in info.frames_by_kind)}")
    lines.extend(f"  {kind:<14} {d:<4} {n:>10}" for kind, d, n in info.frames_by_kind)
    lines.append(f"  parse errors   {info.parse_errors:>15}")
    lines.append(f"messages   {sum(n for *_, n in info.messages_by_channel)}")
    lines.extend(f"  {ch:<30} {d:<4} {n:>10}" for ch, d, n in info.messages_by_channel)
    return "\n".join(lines)


def _span(first: int | None, last: int | None) -> str:
    if first is None or last is None:
        return "empty"
    start = dt.datetime.fromtimestamp(first / 1e9, dt.UTC).isoformat(timespec="milliseconds")
    end = dt.datetime.fromtimestamp(last / 1e9, dt.UTC).isoformat(timespec="milliseconds")
    return f"{start} .. {end}  ({(last - first) / 1e9:.3f} s)"
