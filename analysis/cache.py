"""A per-tape cache of the analysis views, materialized as tables.

Matching requests to acks joins millions of rows; doing it on every `analyze` command would
make each one cost seconds per million requests. So the first analysis of a tape computes
every view once and stores the results in a DuckDB file of their own; the commands after it
read those tables. The tape itself is never written to.

A cache entry is valid while the tape file (and its WAL, if any) keeps its size and mtime,
and the views' SQL is unchanged. Entries live in $COMETD_TAPE_CACHE, else
$XDG_CACHE_HOME/cometd-tape, else ~/.cache/cometd-tape. If that folder cannot be written,
analysis goes on without a cache. `--no-cache` on any analyze command skips it.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
from collections.abc import Callable
from pathlib import Path

import duckdb

from analysis.definitions import fingerprint, sql_files, view_names
from tape.projection import http_fields_select

BASE_TABLES = ("frames", "messages", "http_fields", "sessions")


def base_selects(select_of: Callable[[str], str], have: set[str]) -> dict[str, str]:
    """A SELECT for each base table, given how to select a table of the source and the tables
    it has. A tape of schema v1 (or an export made from one) has no http_fields: it is then
    derived from the frames on the fly, by the same SQL the writer uses."""
    selects = {}
    for table in BASE_TABLES:
        if table == "http_fields" and table not in have:
            selects[table] = http_fields_select(f"({select_of('frames')})")
        else:
            selects[table] = select_of(table)
    return selects


def tables_of(conn: duckdb.DuckDBPyConnection, database: str) -> set[str]:
    rows = conn.execute(
        "SELECT table_name FROM duckdb_tables() WHERE database_name = ?", [database]
    ).fetchall()
    return {str(r[0]) for r in rows}


def cache_dir() -> Path:
    explicit = os.environ.get("COMETD_TAPE_CACHE")
    if explicit:
        return Path(explicit)
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "cometd-tape"


def entry_path(tape: Path) -> Path:
    key = hashlib.sha256(str(tape.resolve()).encode()).hexdigest()[:24]
    return cache_dir() / f"{key}.duckdb"


def stamp(tape: Path) -> str:
    parts = [fingerprint()]
    for path in (tape, tape.with_name(tape.name + ".wal")):
        with contextlib.suppress(FileNotFoundError):
            info = path.stat()
            parts.append(f"{path.name}:{info.st_size}:{info.st_mtime_ns}")
    return "|".join(parts)


def materialized(tape: Path) -> Path | None:
    """The cache file holding every view of `tape` as a table, built if need be; None when
    the cache folder cannot be written."""
    path = entry_path(tape)
    want = stamp(tape)
    if _stamp_of(path) == want:
        return path
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f"{path.stem}.{os.getpid()}.building")
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        _build(tape, tmp, want)
        os.replace(tmp, path)
    except OSError:
        return None
    return path


def _stamp_of(path: Path) -> str | None:
    if not path.exists():
        return None
    try:
        conn = duckdb.connect(str(path), read_only=True)
    except duckdb.Error:
        return None
    try:
        rows = conn.execute("SELECT value FROM cache_meta WHERE key = 'stamp'").fetchall()
    except duckdb.Error:
        return None
    finally:
        conn.close()
    return str(rows[0][0]) if rows else None


def _build(tape: Path, target: Path, want: str) -> None:
    conn = duckdb.connect(str(target))
    try:
        literal = "'" + str(tape).replace("'", "''") + "'"
        conn.execute(f"ATTACH {literal} AS tape (READ_ONLY)")
        selects = base_selects(lambda t: f"SELECT * FROM tape.main.{t}", tables_of(conn, "tape"))
        for table, select in selects.items():
            conn.execute(f"CREATE VIEW {table} AS {select}")
        done = set()
        for sql in sql_files():
            conn.execute(sql)
            for name in view_names():
                if name in done or not _is_view(conn, name):
                    continue
                # Later views bind to the table by name, so each is computed once.
                conn.execute(f"CREATE TABLE {name}__t AS SELECT * FROM {name}")
                conn.execute(f"DROP VIEW {name}")
                conn.execute(f"ALTER TABLE {name}__t RENAME TO {name}")
                done.add(name)
        for table in BASE_TABLES:
            conn.execute(f"DROP VIEW {table}")
        conn.execute("CREATE TABLE cache_meta (key VARCHAR PRIMARY KEY, value VARCHAR)")
        conn.execute("INSERT INTO cache_meta VALUES ('stamp', ?), ('tape', ?)", [want, str(tape)])
        conn.execute("DETACH tape")
        conn.execute("CHECKPOINT")
    finally:
        conn.close()


def _is_view(conn: duckdb.DuckDBPyConnection, name: str) -> bool:
    rows = conn.execute(
        "SELECT count(*) FROM duckdb_views() WHERE view_name = ? AND database_name = "
        "current_database()",
        [name],
    ).fetchall()
    return bool(rows[0][0])
