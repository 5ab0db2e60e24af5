"""`analyze export`: frames, messages, http_fields, sessions and every view, as Parquet, CSV
or JSON.

Parquet is written Hive-partitioned by the UTC date of each row's time (DIR/frames/date=.../),
except clock_offsets, which has no time of its own (one file). Such a folder can be analysed
again, alone or with tapes. CSV and JSON (newline-delimited) are one file per relation; there
`raw` is text when it is valid UTF-8, else base64 with raw_base64 = true, as in JSONL tapes.
"""

from __future__ import annotations

from pathlib import Path

import duckdb

from analysis.cache import BASE_TABLES
from analysis.definitions import TIME_COLUMN, sql_literal, view_names


def export(conn: duckdb.DuckDBPyConnection, folder: Path, fmt: str) -> dict[str, int]:
    """Write every relation; returns the row count of each."""
    folder.mkdir(parents=True, exist_ok=True)
    counts = {}
    for name in (*BASE_TABLES, *view_names()):
        select = f"SELECT * FROM {name}"
        if name == "frames" and fmt != "parquet":
            select = (
                "SELECT * REPLACE (coalesce(try(decode(raw)), to_base64(raw)) AS raw), "
                "try(decode(raw)) IS NULL AS raw_base64 FROM frames"
            )
        rows = conn.execute(f"SELECT count(*) FROM ({select})").fetchall()
        counts[name] = int(rows[0][0])
        if fmt == "parquet":
            _parquet(conn, folder, name, select, empty=not counts[name])
        else:
            target = sql_literal(str(folder / f"{name}.{fmt}"))
            options = "FORMAT csv, HEADER" if fmt == "csv" else "FORMAT json"
            conn.execute(f"COPY ({select}) TO {target} ({options})")
    return counts


def _parquet(
    conn: duckdb.DuckDBPyConnection, folder: Path, name: str, select: str, *, empty: bool
) -> None:
    target = folder / name
    if name in TIME_COLUMN:
        time_us = f"{TIME_COLUMN[name]} // 1000"
        date = f"coalesce(strftime(make_timestamp({time_us}), '%Y-%m-%d'), 'none')"
    else:
        target.mkdir(exist_ok=True)
        path = sql_literal(str(target / f"{name}.parquet"))
        conn.execute(f"COPY ({select}) TO {path} (FORMAT parquet)")
        return
    if empty:  # a partitioned COPY of no rows writes no file; keep the columns readable
        (target / "date=none").mkdir(parents=True, exist_ok=True)
        path = sql_literal(str(target / "date=none" / "empty.parquet"))
        conn.execute(f"COPY (SELECT * FROM ({select}) LIMIT 0) TO {path} (FORMAT parquet)")
        return
    conn.execute(
        f"COPY (SELECT *, {date} AS date FROM ({select})) TO {sql_literal(str(target))} "
        "(FORMAT parquet, PARTITION_BY (date), OVERWRITE_OR_IGNORE, COMPRESSION zstd)"
    )
