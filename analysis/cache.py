"""A per-tape cache of the analysis views, materialized as tables.

Matching requests to acks joins millions of rows; doing it on every `analyze` command would
make each one cost seconds per million requests. So the first command that reads a view of a
tape computes it and stores the result as a table, in a DuckDB file of its own (one per tape and
view); the commands after it read that table. Only the views a command reads are stored (see
_build). The tape itself is never written to.

A cache entry is valid while the tape file (and its WAL, if any) keeps its size and mtime, and
the views' SQL is unchanged. Entries live in $COMETD_TAPE_CACHE, else
$XDG_CACHE_HOME/cometd-tape, else ~/.cache/cometd-tape. If that folder cannot be written,
analysis goes on without a cache. `--no-cache` on any analyze command skips it.

The folder is bounded: after a command stores entries, the least recently used ones are removed
until it holds at most $COMETD_TAPE_CACHE_MB megabytes (DEFAULT_LIMIT_MB); the entries the
command itself uses are kept even beyond it. An entry's mtime is when it was last used.
`cometd-tape cache info` shows what it holds, `cometd-tape cache clear` empties it.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from pathlib import Path

import duckdb

from analysis.definitions import fingerprint, sql_literal, view_names
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


def attached_select(database: str, table: str) -> str:
    """The SELECT of a table of an attached tape."""
    return f"SELECT * FROM {database}.main.{table}"


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


DEFAULT_LIMIT_MB = 2048
LIMIT_ENV = "COMETD_TAPE_CACHE_MB"
_SUFFIXES = (".duckdb", ".duckdb.wal", ".building", ".building.wal")


def limit_bytes() -> int:
    """The folder's bound: $COMETD_TAPE_CACHE_MB megabytes, else DEFAULT_LIMIT_MB."""
    text = os.environ.get(LIMIT_ENV, "").strip()
    try:
        megabytes = float(text) if text else DEFAULT_LIMIT_MB
    except ValueError:
        megabytes = DEFAULT_LIMIT_MB
    return int(max(megabytes, 0) * 1_000_000)


@dataclass(frozen=True, slots=True)
class Entry:
    """One file of the cache."""

    path: Path
    size: int  # bytes, with its .wal if any
    used_ns: int  # when it was last used (its mtime)


def entries() -> list[Entry]:
    """Every file of the cache, least recently used first (none when there is no folder)."""
    found = []
    with contextlib.suppress(FileNotFoundError, NotADirectoryError):
        for path in cache_dir().iterdir():
            if not path.name.endswith(_SUFFIXES) or path.name.endswith(".wal"):
                continue
            with contextlib.suppress(FileNotFoundError):
                info = path.stat()
                size = info.st_size
                with contextlib.suppress(FileNotFoundError):
                    size += path.with_name(path.name + ".wal").stat().st_size
                found.append(Entry(path, size, info.st_mtime_ns))
    return sorted(found, key=lambda e: (e.used_ns, e.path.name))


def describe(entry: Entry) -> tuple[str | None, str | None]:
    """(the tape, the view) a cache file holds; (None, None) for one that cannot be read."""
    try:
        conn = duckdb.connect(str(entry.path), read_only=True)
    except duckdb.Error:
        return None, None
    try:
        rows = conn.execute("SELECT value FROM cache_meta WHERE key = 'tape'").fetchall()
        tables = conn.execute(
            "SELECT table_name FROM duckdb_tables() WHERE table_name <> 'cache_meta'"
        ).fetchall()
    except duckdb.Error:
        return None, None
    finally:
        conn.close()
    return (str(rows[0][0]) if rows else None), (str(tables[0][0]) if tables else None)


def evict(keep: Collection[Path] = (), limit: int | None = None) -> list[Entry]:
    """Remove the least recently used files until the cache holds at most `limit` bytes
    (limit_bytes()); never those in `keep`. Returns what was removed."""
    limit = limit_bytes() if limit is None else limit
    found = entries()
    total = sum(e.size for e in found)
    kept = {p.resolve() for p in keep}
    removed = []
    for entry in found:
        if total <= limit:
            break
        if entry.path.resolve() in kept:
            continue
        _unlink(entry.path)
        total -= entry.size
        removed.append(entry)
    return removed


def clear() -> list[Entry]:
    """Remove every file of the cache, then the folder if nothing else is in it."""
    found = entries()
    for entry in found:
        _unlink(entry.path)
    with contextlib.suppress(OSError):
        cache_dir().rmdir()
    return found


def _unlink(path: Path) -> None:
    for leftover in (path, path.with_name(path.name + ".wal")):
        with contextlib.suppress(FileNotFoundError):
            leftover.unlink()


def _key(tapes: Sequence[Path]) -> str:
    text = "\n".join(str(t.resolve()) for t in tapes)
    return hashlib.sha256(text.encode()).hexdigest()[:24]


def entry_path(tapes: Sequence[Path], view: str) -> Path:
    return cache_dir() / f"{_key(tapes)}.{view}.duckdb"


def stamp(tapes: Sequence[Path]) -> str:
    parts = [fingerprint()]
    for tape in tapes:
        for path in (tape, tape.with_name(tape.name + ".wal")):
            with contextlib.suppress(FileNotFoundError):
                info = path.stat()
                parts.append(f"{path}:{info.st_size}:{info.st_mtime_ns}")
    return "|".join(parts)


Connect = Callable[[], duckdb.DuckDBPyConnection]


def materialized(
    tapes: Sequence[Path], views: Collection[str], connect: Connect
) -> dict[str, Path]:
    """The cache file of each of `views` of `tapes` (read as one), holding it as a table;
    those not cached yet are computed (together, in one pass, on the connection `connect`
    opens: the views live in its schema tape_all) and stored first. A view missing from the
    result could not be cached (the cache folder cannot be written)."""
    want = stamp(tapes)
    found = {}
    for view in views:
        path = entry_path(tapes, view)
        if _stamp_of(path) == want:
            found[view] = path
    for path in found.values():  # used now: the last to be evicted
        with contextlib.suppress(OSError):
            os.utime(path)
    missing = [v for v in view_names() if v in views and v not in found]
    if missing:
        with contextlib.suppress(OSError, duckdb.IOException):
            cache_dir().mkdir(parents=True, exist_ok=True)
            found.update(_build(tapes, missing, want, connect))
        evict(keep=found.values())
    return found


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


def _build(tapes: Sequence[Path], views: list[str], want: str, connect: Connect) -> dict[str, Path]:
    """Compute `views` (in dependency order) over the tapes, each into a file of its own.

    Only what was asked for is stored: writing a table costs more than computing it (1M
    requests: ~1.3 s to write the requests view, ~0.25 s to compute what a count needs), so a
    view read only through another is computed in passing, not kept.
    """
    conn = connect()
    built: dict[str, Path] = {}
    try:
        for n, view in enumerate(views):
            entry = entry_path(tapes, view)
            tmp = entry.with_name(f"{entry.stem}.{os.getpid()}.building")
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
            built[view] = tmp
            conn.execute(f"ATTACH {sql_literal(str(tmp))} AS out{n}")
            conn.execute(f"CREATE TABLE out{n}.main.{view} AS SELECT * FROM tape_all.{view}")
            conn.execute(f"CREATE TABLE out{n}.main.cache_meta (key VARCHAR, value VARCHAR)")
            conn.execute(
                f"INSERT INTO out{n}.main.cache_meta VALUES ('stamp', ?), ('tape', ?)",
                [want, ", ".join(map(str, tapes))],
            )
            # Views after it read the stored table by name, so each is computed once.
            conn.execute(
                f"CREATE OR REPLACE VIEW tape_all.{view} AS SELECT * FROM out{n}.main.{view}"
            )
        for n in range(len(views)):
            conn.execute(f"DETACH out{n}")
    except BaseException:
        conn.close()
        for tmp in built.values():
            for leftover in (tmp, tmp.with_name(tmp.name + ".wal")):
                with contextlib.suppress(FileNotFoundError):
                    leftover.unlink()
        raise
    conn.close()
    final = {}
    try:
        for view, tmp in built.items():
            final[view] = entry_path(tapes, view)
            os.replace(tmp, final[view])
    finally:
        for tmp in built.values():
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()  # only those a failure left behind
    return final
