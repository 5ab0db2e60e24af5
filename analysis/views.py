"""Open one or more tapes for analysis: attached read-only to an in-memory DuckDB, with the
tables unioned across tapes and the SQL views of analysis/sql/ defined on top."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

import duckdb

from tape.schema import TapeError, check_version, connect

BASE_TABLES = ("frames", "messages", "sessions")


def sql_files() -> list[str]:
    folder = resources.files("analysis") / "sql"
    names = sorted(p.name for p in folder.iterdir() if p.name.endswith(".sql"))
    return [(folder / name).read_text() for name in names]


def open_tapes(paths: list[Path]) -> duckdb.DuckDBPyConnection:
    """Every tape attached read-only; `frames`, `messages`, `sessions` span them all."""
    if not paths:
        raise TapeError("give at least one tape")
    conn = duckdb.connect()
    for n, path in enumerate(paths):
        _check(path)
        conn.execute(f"ATTACH '{_quoted(path)}' AS tape{n} (READ_ONLY)")
    for table in BASE_TABLES:
        union = " UNION ALL ".join(f"SELECT * FROM tape{n}.{table}" for n in range(len(paths)))
        conn.execute(f"CREATE TEMP VIEW {table} AS {union}")
    for sql in sql_files():
        conn.execute(sql.replace("CREATE OR REPLACE VIEW", "CREATE OR REPLACE TEMP VIEW"))
    return conn


def _check(path: Path) -> None:
    probe = connect(path, read_only=True)
    try:
        check_version(probe, path)
    finally:
        probe.close()


def _quoted(path: Path) -> str:
    return str(path).replace("'", "''")
