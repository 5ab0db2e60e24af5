"""The Parquet lake: the base tables of many tapes, from many capture points, under one folder
that every capture point's export appends to (`analyze export TAPE... --to LAKE`).

The layout is a contract (docs/scale-out.md): `LAKE/TABLE/date=YYYY-MM-DD/capture=HOST/
TAPEID-EXPORTNS-N.parquet`, for TABLE in frames, messages, http_fields and sessions, with the
tape's own columns; and `LAKE/_manifests/TAPEID.json`, written last, naming the files of the
tape's latest export. Files are immutable: exporting a tape again writes new files, swaps its
manifest, then removes the old files. Readers read only what manifests name, so they never see
a half-written export, and a tape exported twice is read once.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import duckdb

from analysis.cache import BASE_TABLES
from analysis.definitions import TIME_COLUMN, sql_literal
from tape.schema import TapeError
from tape.tapeset import MANIFESTS, is_manifest

LAKE_VERSION = 1


@dataclass(frozen=True, slots=True)
class Exported:
    """One tape's export into the lake."""

    tape: Path
    tape_id: str
    capture: str
    rows: dict[str, int]
    replaced: int  # files of an earlier export of the same tape removed


def export_to_lake(
    conn: duckdb.DuckDBPyConnection, lake: Path, tapes: tuple[Path, ...]
) -> list[Exported]:
    """Add each source tape's base tables to the lake (see the module docstring)."""
    (lake / MANIFESTS).mkdir(parents=True, exist_ok=True)
    captures = dict(conn.execute("SELECT source, capture FROM main.source_captures").fetchall())
    return [
        _export_one(conn, lake, n, tape, captures.get(n) or "unknown")
        for n, tape in enumerate(tapes)
    ]


def tape_id(conn: duckdb.DuckDBPyConnection, n: int, tape: Path) -> str:
    """A tape's identity, the same at every export: who made it and when (a DuckDB tape, or a
    copy of it), the id in a lake's manifest, else the bytes of the file (JSONL, HAR)."""
    if is_manifest(tape):
        return str(manifest_field(tape, "tape_id"))
    try:
        rows = conn.execute(
            f"SELECT key, value FROM tape{n}.main.tape_meta "
            "WHERE key IN ('created_by', 'created_ns') ORDER BY key"
        ).fetchall()
    except duckdb.Error:
        rows = []
    if tape.suffix == ".duckdb" and len(rows) == 2:
        seed = "\0".join(str(v) for _k, v in rows).encode()
    elif tape.is_file():
        seed = tape.read_bytes()
    else:
        seed = str(tape.resolve()).encode()
    return hashlib.sha256(seed).hexdigest()[:16]


def partition_value(capture: str) -> str:
    """A capture point's name as a path segment: letters, digits, `.`, `_` and `-` only."""
    return re.sub(r"[^A-Za-z0-9._-]", "_", capture) or "unknown"


def _export_one(
    conn: duckdb.DuckDBPyConnection, lake: Path, n: int, tape: Path, capture: str
) -> Exported:
    ident = tape_id(conn, n, tape)
    stamp = f"{ident}-{time.time_ns()}"
    files: dict[str, list[str]] = {}
    rows: dict[str, int] = {}
    for table in BASE_TABLES:
        select = f"SELECT * FROM source{n}.{table}"
        rows[table] = int(conn.execute(f"SELECT count(*) FROM ({select})").fetchall()[0][0])
        where = partition_value(capture)
        files[table] = _write(conn, lake, table, select, where, stamp, empty=not rows[table])
    manifest = {
        "lake_version": LAKE_VERSION,
        "tape_id": ident,
        "tape": tape.name,
        "capture": capture,
        "exported_ns": int(stamp.rsplit("-", 1)[1]),
        "rows": rows,
        "files": files,
    }
    path = lake / MANIFESTS / f"{ident}.json"
    old = _files(path) if path.exists() else set()
    work = path.with_name(f".{ident}.{os.getpid()}.tmp")
    work.write_text(json.dumps(manifest, indent=1))
    os.replace(work, path)  # the export is complete for readers from here on
    stale = old - {f for names in files.values() for f in names}
    for name in stale:
        (lake / name).unlink(missing_ok=True)
    return Exported(tape, ident, capture, rows, len(stale))


def _write(
    conn: duckdb.DuckDBPyConnection,
    lake: Path,
    table: str,
    select: str,
    capture: str,
    stamp: str,
    *,
    empty: bool,
) -> list[str]:
    """The table's rows as new files under its partitions; their paths, relative to the lake."""
    target = lake / table
    if empty:  # no rows: one empty file keeps the columns readable
        folder = target / "date=none" / f"capture={capture}"
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"{stamp}-0.parquet"
        conn.execute(f"COPY (SELECT * FROM ({select}) LIMIT 0) TO {_q(path)} (FORMAT parquet)")
        return [path.relative_to(lake).as_posix()]
    time_us = f"{TIME_COLUMN[table]} // 1000"
    date = f"coalesce(strftime(make_timestamp({time_us}), '%Y-%m-%d'), 'none')"
    conn.execute(
        f"COPY (SELECT *, {date} AS date, {sql_literal(capture)} AS capture FROM ({select})) "
        f"TO {_q(target)} (FORMAT parquet, PARTITION_BY (date, capture), APPEND, "
        f"FILENAME_PATTERN {sql_literal(stamp + '-{uuid}')}, COMPRESSION zstd)"
    )
    return sorted(p.relative_to(lake).as_posix() for p in target.rglob(f"{stamp}-*.parquet"))


def _q(path: Path) -> str:
    return sql_literal(str(path))


def manifest_field(manifest: Path, name: str) -> Any:
    """One field of a lake's manifest; TapeError when it is not one."""
    try:
        return json.loads(manifest.read_text())[name]
    except (OSError, ValueError, KeyError) as exc:
        raise TapeError(f"{manifest} is not a lake manifest ({exc})") from None


def _files(manifest: Path) -> set[str]:
    named = manifest_field(manifest, "files")
    return {f for names in named.values() for f in names}


def manifest_select(manifest: Path, table: str) -> str:
    """A table of one tape in a lake: the files its manifest names, minus the partition keys."""
    lake = manifest.parent.parent
    named = manifest_field(manifest, "files").get(table, [])
    if not named:
        raise TapeError(f"{manifest} names no {table} files: export the tape to the lake again")
    files = ", ".join(_q(lake / name) for name in named)
    return (
        f"SELECT * EXCLUDE (date, capture) FROM read_parquet([{files}], hive_partitioning = true)"
    )


def manifest_capture(manifest: Path) -> str:
    return str(manifest_field(manifest, "capture"))
