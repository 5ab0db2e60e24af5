"""The tape's tables, its schema version, and opening a tape file safely.

A tape is one DuckDB file that any DuckDB client can open (docs/tape.md).
"""

from __future__ import annotations

import getpass
import os
import time
from importlib import metadata
from pathlib import Path

import duckdb

from tape.projection import MESSAGE_DATA_VIEW, project_http

# v2 added the `http_fields` projection; a v1 tape is migrated when opened for writing, and
# analysis derives the projection on the fly from a v1 tape it only reads.
SCHEMA_VERSION = 2

# ZSTD, not DuckDB's default FSST, for the JSON-bearing columns: measured here on GWS-shaped
# frames it stores ~10x smaller and checkpoints ~4x faster.
FRAMES_DDL = """
CREATE TABLE IF NOT EXISTS frames (
    session_id  VARCHAR NOT NULL,
    seq         BIGINT NOT NULL,
    t_wall_ns   BIGINT NOT NULL,
    t_mono_ns   BIGINT NOT NULL,
    direction   VARCHAR NOT NULL,
    transport   VARCHAR NOT NULL,
    kind        VARCHAR NOT NULL,
    exchange_id VARCHAR,
    http_method VARCHAR,
    http_path   VARCHAR,
    http_status INTEGER,
    headers     VARCHAR USING COMPRESSION zstd,
    raw         BLOB USING COMPRESSION zstd NOT NULL,
    parse_error VARCHAR
)"""

MESSAGES_DDL = """
CREATE TABLE IF NOT EXISTS messages (
    session_id           VARCHAR NOT NULL,
    seq                  BIGINT NOT NULL,
    idx                  INTEGER NOT NULL,
    t_wall_ns            BIGINT NOT NULL,
    t_mono_ns            BIGINT NOT NULL,
    direction            VARCHAR NOT NULL,
    channel              VARCHAR NOT NULL,
    id                   VARCHAR,
    client_id            VARCHAR,
    successful           BOOLEAN,
    error                VARCHAR,
    subscription         VARCHAR,
    message_type         VARCHAR,
    notification_type    VARCHAR,
    reference_id         VARCHAR,
    record_handle        VARCHAR,
    operation_name       VARCHAR,
    user_event           VARCHAR,
    server_generation_ts BIGINT,
    node_processing_ns   BIGINT,
    server_processing_ms DOUBLE,
    ext                  JSON USING COMPRESSION zstd,
    advice               JSON USING COMPRESSION zstd
)"""

SESSIONS_DDL = """
CREATE TABLE IF NOT EXISTS sessions (
    session_id       VARCHAR PRIMARY KEY,
    mode             VARCHAR,
    endpoint         VARCHAR,
    transport        VARCHAR,
    client_id        VARCHAR,
    channels         VARCHAR[],
    started_ns       BIGINT,
    ended_ns         BIGINT,
    end_reason       VARCHAR,
    recorder_version VARCHAR,
    labels           MAP(VARCHAR, VARCHAR)
)"""

HTTP_FIELDS_DDL = """
CREATE TABLE IF NOT EXISTS http_fields (
    session_id     VARCHAR NOT NULL,
    seq            BIGINT NOT NULL,
    t_wall_ns      BIGINT NOT NULL,
    direction      VARCHAR NOT NULL,
    kind           VARCHAR NOT NULL,
    exchange_id    VARCHAR,
    http_method    VARCHAR,
    http_path      VARCHAR,
    http_status    INTEGER,
    operation_name VARCHAR,
    reference_id   VARCHAR,
    campaign_name  VARCHAR,
    calling_list   VARCHAR,
    application_id BIGINT,
    status_code    BIGINT
)"""

META_DDL = "CREATE TABLE IF NOT EXISTS tape_meta (key VARCHAR PRIMARY KEY, value VARCHAR)"


class TapeError(Exception):
    """A tape cannot be opened or used; the message says why and what to do."""


def package_version() -> str:
    try:
        return metadata.version("cometd-tape")
    except metadata.PackageNotFoundError:  # pragma: no cover - running from a bare checkout
        return "0+unknown"


def connect(
    path: Path | str, *, read_only: bool = False, row_group_size: int | None = None
) -> duckdb.DuckDBPyConnection:
    """Open a DuckDB file, turning DuckDB's errors into ones a user can act on."""
    path = Path(path)
    if read_only and not path.exists():
        raise TapeError(f"{path}: no such tape file")
    try:
        if row_group_size is None:
            conn = duckdb.connect(str(path), read_only=read_only)
        else:
            conn = _attach(path, row_group_size)
    except duckdb.IOException as exc:
        text = str(exc)
        if "lock" in text.lower():
            raise TapeError(
                f"{path} is open for writing by another process (a recorder or proxy?). "
                "Analyse it once that has stopped, or a copy taken with `cometd-tape snapshot "
                f"{path} COPY.duckdb` (a plain cp misses the frames still in its .wal); a "
                "recording made with --rotate can be analysed as it runs (give its folder)"
            ) from exc
        raise TapeError(f"{path} is not a tape (DuckDB could not open it: {text})") from exc
    except duckdb.Error as exc:
        if "already attached" in str(exc):
            raise TapeError(
                f"{path} is open for writing in this process already; close that writer first"
            ) from exc
        raise TapeError(f"{path} is not a tape (DuckDB could not open it: {exc})") from exc
    # No progress bar: a long statement (a migration, a rebuild) would print one into the
    # output of whatever command opened the tape.
    conn.execute("SET enable_progress_bar = false")
    return conn


def _attach(path: Path, row_group_size: int) -> duckdb.DuckDBPyConnection:
    """The file attached as the default catalog with its own row group size (a per-attach
    setting). The spill folder is the one DuckDB gives a file it opens directly."""
    conn = duckdb.connect()
    try:
        conn.execute("SET temp_directory = ?", [f"{path}.tmp"])
        conn.execute(f"ATTACH ? AS tape (ROW_GROUP_SIZE {int(row_group_size)})", [str(path)])
        conn.execute("USE tape")
    except BaseException:
        conn.close()
        raise
    return conn


def reattach(conn: duckdb.DuckDBPyConnection, path: Path, row_group_size: int) -> None:
    """Attach the tape `_attach` opened anew, with no transaction open on it: DuckDB keeps
    metadata for every row group of an attached file, outside its memory limit, until then."""
    conn.execute("CHECKPOINT")
    conn.execute("USE memory")
    conn.execute("DETACH tape")
    conn.execute(f"ATTACH ? AS tape (ROW_GROUP_SIZE {int(row_group_size)})", [str(path)])
    conn.execute("USE tape")


def schema_version(conn: duckdb.DuckDBPyConnection) -> int | None:
    tables = {r[0] for r in conn.execute("SELECT table_name FROM duckdb_tables()").fetchall()}
    if "tape_meta" not in tables:
        return None
    rows = conn.execute("SELECT value FROM tape_meta WHERE key = 'schema_version'").fetchall()
    return int(rows[0][0]) if rows else None


def check_version(conn: duckdb.DuckDBPyConnection, path: Path | str) -> int:
    """Refuse tapes from a newer schema; older ones would be migrated here."""
    version = schema_version(conn)
    if version is None:
        if not _has_user_tables(conn) and not Path(f"{path}.wal").exists():
            raise TapeError(
                f"{path} is an empty DuckDB file, without the .wal a tape being written keeps "
                "its latest frames in: if it is a copy of a live tape, copy its .wal with it, "
                "or take the copy with `cometd-tape snapshot LIVE COPY`"
            )
        raise TapeError(f"{path} is a DuckDB file but not a tape (it has no tape_meta table)")
    if version > SCHEMA_VERSION:
        raise TapeError(
            f"{path} has tape schema v{version}, but this cometd-tape ({package_version()}) "
            f"reads up to v{SCHEMA_VERSION}. Upgrade cometd-tape to open it."
        )
    return version


def create(conn: duckdb.DuckDBPyConnection) -> None:
    """Create every table of an empty tape, and stamp who made it."""
    for ddl in (FRAMES_DDL, MESSAGES_DDL, HTTP_FIELDS_DDL, SESSIONS_DDL, META_DDL):
        conn.execute(ddl)
    conn.execute(MESSAGE_DATA_VIEW)
    install_views(conn)
    meta = {
        "schema_version": str(SCHEMA_VERSION),
        "created_by": f"cometd-tape {package_version()} ({_user()}@{os.uname().nodename})",
        "created_ns": str(time.time_ns()),
    }
    for key, value in meta.items():
        conn.execute("INSERT OR IGNORE INTO tape_meta VALUES (?, ?)", [key, value])


def migrate(conn: duckdb.DuckDBPyConnection, version: int) -> None:
    """Bring a tape of an older schema up to SCHEMA_VERSION, in one transaction."""
    if version >= SCHEMA_VERSION:
        return
    conn.execute("BEGIN")
    if version < 2:
        conn.execute(HTTP_FIELDS_DDL)
        project_http(conn, "frames")
    conn.execute(
        "UPDATE tape_meta SET value = ? WHERE key = 'schema_version'", [str(SCHEMA_VERSION)]
    )
    conn.execute("COMMIT")
    install_views(conn)


def install_views(conn: duckdb.DuckDBPyConnection) -> None:
    """Define in the tape the views other packages provide (entry point group
    `cometd_tape.views`: analysis's latency views), so any DuckDB client can query them."""
    for entry in metadata.entry_points(group="cometd_tape.views"):
        entry.load()(conn)


def finalize(conn: duckdb.DuckDBPyConnection) -> None:
    """Store in a tape what other packages derive from a finished tape (entry point group
    `cometd_tape.finalize`: analysis stores request -> ack latency, see analysis/stored.py).
    Every writer runs it as it closes, and `rebuild` after deriving the projections."""
    for entry in metadata.entry_points(group="cometd_tape.finalize"):
        entry.load()(conn)


def open_for_writing(
    path: Path | str, *, row_group_size: int | None = None
) -> duckdb.DuckDBPyConnection:
    conn = connect(path, row_group_size=row_group_size)
    try:
        if schema_version(conn) is None:
            if _has_user_tables(conn):
                raise TapeError(f"{path} is a DuckDB file but not a tape; choose another path")
            create(conn)
        migrate(conn, check_version(conn, path))
    except BaseException:
        conn.close()
        raise
    return conn


def open_for_reading(path: Path | str) -> duckdb.DuckDBPyConnection:
    conn = connect(path, read_only=True)
    try:
        check_version(conn, path)
    except BaseException:
        conn.close()
        raise
    return conn


def _has_user_tables(conn: duckdb.DuckDBPyConnection) -> bool:
    rows = conn.execute("SELECT count(*) FROM duckdb_tables()").fetchall()
    return bool(rows[0][0])


def _user() -> str:
    try:
        return getpass.getuser()
    except Exception:  # no passwd entry in some containers
        return "unknown"
