"""The SQL views of analysis/sql/: their text, their names, and installing them in a tape."""

from __future__ import annotations

import hashlib
import re
from importlib import resources

import duckdb

from tape.gws import EXPECTED_ACK
from tape.projection import HTTP_FIELDS_SQL

_VIEW = re.compile(r"CREATE OR REPLACE VIEW (\w+) AS", re.IGNORECASE)


# The time of each relation's rows (nanoseconds since the epoch, an expression over its
# columns): what --since/--until filter on (analysis/views.py; `sessions` by the span from
# started_ns to ended_ns instead) and the UTC date `analyze export` partitions Parquet by
# (analysis/export.py). clock_offsets has no time of its own.
TIME_COLUMN = {
    "frames": "t_wall_ns",
    "messages": "t_wall_ns",
    "http_fields": "t_wall_ns",
    "sessions": "started_ns",
    "requests": "request_ns",
    "acks": "ack_ns",
    "request_latency": "request_ns",
    "latency_parts": "request_ns",
    "unmatched_requests": "request_ns",
    "delivery_latency": "receipt_ns",
    "channel_rates": "epoch_ns(second)",
    "gaps": "start_ns",
}
# Where a view's SQL takes tape.gws.EXPECTED_ACK, as a VALUES list of (operation, ack).
EXPECTED_ACK_MARK = "{{tape.gws.EXPECTED_ACK}}"


def sql_files() -> list[str]:
    """The view definitions, in dependency order (file name order), with the tables of
    tape.gws written in."""
    folder = resources.files("analysis") / "sql"
    names = sorted(p.name for p in folder.iterdir() if p.name.endswith(".sql"))
    return [
        (folder / name).read_text().replace(EXPECTED_ACK_MARK, expected_ack_values())
        for name in names
    ]


def expected_ack_values() -> str:
    """tape.gws.EXPECTED_ACK as a SQL VALUES list (one pair a line, aligned under the first)."""
    rows = [f"({sql_literal(op)}, {sql_literal(ack)})" for op, ack in EXPECTED_ACK.items()]
    return "VALUES " + ",\n           ".join(rows)


def view_names() -> list[str]:
    return [m.group(1) for sql in sql_files() for m in _VIEW.finditer(sql)]


def install(conn: duckdb.DuckDBPyConnection) -> None:
    """Define every view in a tape's own database, so any DuckDB client can query them."""
    for sql in sql_files():
        conn.execute(sql)


def fingerprint() -> str:
    """Changes whenever any view's SQL does, or the http_fields projection's (a v1 tape's
    views derive it on the fly)."""
    text = "\n".join([*sql_files(), HTTP_FIELDS_SQL])
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def sql_literal(text: str) -> str:
    """`text` as a SQL string literal (paths, session ids, campaign names)."""
    return "'" + text.replace("'", "''") + "'"
