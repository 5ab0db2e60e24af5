"""Request -> ack latency stored in the tape itself when its writer closes.

Pairing requests with their acks and metrics takes four hash joins over millions of rows: 5M
requests cost ~5-7 s on this 2-core machine, more than any query a user then runs on the
result. A tape's frames never change once written, so the writer does that work once, when it
closes, and stores the result in the tape as a table (`stored_latency_parts`, the rows of the
`latency_parts` view). Every analysis after it, the first included, reads that table.

The stored rows are used only while they describe the tape as it is: tape_meta's
`stored_latency` holds the views' SQL fingerprint and the frame count they were computed from,
and `rebuild`, which re-derives the projections they come from, drops it (with every tape_meta
key starting `stored_`) in the same transaction. A tape whose writer never closed (killed), or
that gained frames after, or an analysis by a cometd-tape whose view SQL differs, computes the
view as before (and caches it, see cache.py). `analyze ... --no-cache` ignores them too.

A tape with no REST requests that act (GET, HEAD and OPTIONS only read) stores an empty table
at no cost, as latency_parts has one row per request: the recorder's own tapes, which hold only
Bayeux traffic, close as fast as before.
"""

from __future__ import annotations

import contextlib

import duckdb

from analysis.definitions import fingerprint, install, sql_literal

STORED = {"latency_parts": "stored_latency_parts"}
META_KEY = "stored_latency"


def store(conn: duckdb.DuckDBPyConnection) -> None:
    """Compute and store the views of STORED in the tape `conn` has open for writing (entry
    point `cometd_tape.finalize`, run by every writer as it closes, and by `rebuild`)."""
    install(conn)  # this version's views: what the fingerprint describes
    # A request as the `requests` view counts them (GET, HEAD and OPTIONS read; nothing acks them)
    requests = conn.execute(
        "SELECT count(*) FROM (SELECT 1 FROM http_fields "
        "WHERE kind = 'http-request' AND direction = 'out' "
        "AND coalesce(http_method, 'POST') NOT IN ('GET', 'HEAD', 'OPTIONS') LIMIT 1)"
    ).fetchall()[0][0]
    conn.execute("BEGIN")
    try:
        conn.execute(f"DELETE FROM tape_meta WHERE key = {sql_literal(META_KEY)}")
        for view, table in STORED.items():
            limit = "" if requests else " LIMIT 0"
            conn.execute(f"CREATE OR REPLACE TABLE {table} AS SELECT * FROM {view}{limit}")
        conn.execute("INSERT INTO tape_meta VALUES (?, ?)", [META_KEY, _stamp(conn, "")])
        conn.execute("COMMIT")
    except BaseException:
        with contextlib.suppress(duckdb.Error):  # a failed COMMIT may have ended it already
            conn.execute("ROLLBACK")
        raise


def stored(conn: duckdb.DuckDBPyConnection, database: str) -> dict[str, str]:
    """The views of the tape attached as `database` whose stored rows are current, each with
    the SELECT that reads them; {} when there are none."""
    meta = f"{database}.main.tape_meta"
    try:
        rows = conn.execute(
            f"SELECT value FROM {meta} WHERE key = {sql_literal(META_KEY)}"
        ).fetchall()
        tables = conn.execute(
            "SELECT count(*) FROM duckdb_tables() WHERE database_name = ? AND table_name IN "
            f"({', '.join(sql_literal(t) for t in STORED.values())})",
            [database],
        ).fetchall()[0][0]
    except duckdb.Error:
        return {}
    if not rows or tables != len(STORED) or rows[0][0] != _stamp(conn, f"{database}.main."):
        return {}
    return {view: f"SELECT * FROM {database}.main.{table}" for view, table in STORED.items()}


def _stamp(conn: duckdb.DuckDBPyConnection, prefix: str) -> str:
    """What the stored rows were computed from; `prefix` qualifies the tape's tables."""
    frames = conn.execute(f"SELECT count(*) FROM {prefix}frames").fetchall()[0][0]
    return f"{fingerprint()}|{frames}"
