"""The writer's DuckDB statements: settings, a batch's rows and projections, sessions, finalize."""

from __future__ import annotations

import contextlib
import sys
import threading
from pathlib import Path

import duckdb
import msgspec

from tape.batches import Batch, big_raw, frames_of, frames_table, projected
from tape.frame import SESSION_COLUMNS, Frame, Session
from tape.memory import CHECKPOINT_MB, finalize_mb
from tape.prepare import prepare_session
from tape.projection import PROJECTION_SQL, project, project_http
from tape.schema import finalize

# DuckDB's own threads: one, as the writer threads are the parallelism (more cost ingest and
# the recorder up to a quarter of their rate, and the close's checkpoint took 3x as long).
DUCKDB_THREADS = 1
# What no frame's bytes can make the projection raise: I/O (a full disk), transactions, a
# database already invalidated. Anything else may be a frame DuckDB reads otherwise than orjson.
NOT_A_FRAME = (duckdb.OperationalError, duckdb.FatalException)


def configure(conn: duckdb.DuckDBPyConnection, threads: int = DUCKDB_THREADS) -> None:
    """The settings of a writer's connection (its buffer limit is tape.memory's)."""
    conn.execute(f"SET threads = {int(threads)}")
    conn.execute(f"SET checkpoint_threshold = '{CHECKPOINT_MB}MB'")
    # Rows are read back by session and seq (ORDER BY), never by position, so DuckDB may
    # append a batch's slices in parallel: ~25% less writer time.
    conn.execute("SET preserve_insertion_order = false")


def insert(conn: duckdb.DuckDBPyConnection, batch: Batch) -> None:
    """Insert frames and their messages; a frame the projection chokes on is kept raw."""
    try:
        insert_batch(conn, batch)
    except duckdb.Error as exc:
        if isinstance(exc, duckdb.OutOfMemoryException):
            if batch.table.num_rows > 1:
                raise  # the batch is too big, not a frame bad: the writer splits it
        elif isinstance(exc, NOT_A_FRAME):
            # The disk or the database, not a frame: checking 8,192 frames one by one first
            # took ~20 s before the writer could say so.
            raise
        # Rare: JSON orjson accepts but DuckDB reads differently. Never lose the batch or
        # the recording for it: find the frames at fault and store them with the reason.
        conn.execute("ROLLBACK")
        # outside a transaction: each alone
        checked = [isolate(conn, f) for f in frames_of(batch.table)]
        conn.execute("BEGIN")
        insert_batch(conn, Batch(frames_table(checked), *projected(checked)))


def insert_batch(conn: duckdb.DuckDBPyConnection, batch: Batch) -> None:
    raw = big_raw(batch.table) if batch.bayeux and not batch.http else None
    if raw is not None and _insert_big(conn, batch, raw):
        return
    conn.register("_batch", batch.table)
    try:
        conn.execute("INSERT INTO frames BY NAME SELECT * FROM _batch")
        if batch.bayeux:
            project(conn, "_batch")
        if batch.http:
            project_http(conn, "_batch")
    finally:
        with contextlib.suppress(duckdb.Error):  # in an aborted transaction: keep its error
            conn.unregister("_batch")


# A big frame's messages are projected this many bytes of them at a time: parsing a 70 MB
# long-poll reply whole took ~250 MB of DuckDB's memory beside the frame (and a 256 MB block).
PIECE_BYTES = 8 << 20
_SPANS = msgspec.json.Decoder(list[msgspec.Raw])
_PIECE = (
    "(SELECT $session_id AS session_id, $seq::BIGINT AS seq, $wall::BIGINT AS t_wall_ns,"
    " $mono::BIGINT AS t_mono_ns, $direction AS direction, 'bayeux' AS kind,"
    " NULL::VARCHAR AS parse_error, $piece::BLOB AS raw)"
)
# The rows of messages first..first+n-1 of the frame, from a piece that holds only those
PIECE_SQL = (
    "INSERT INTO messages SELECT * REPLACE ((idx + $first)::INTEGER AS idx) FROM ("
    + PROJECTION_SQL.replace("__SOURCE__", _PIECE)
    + ") AS p(session_id, seq, idx)"
)


def _insert_big(conn: duckdb.DuckDBPyConnection, batch: Batch, raw: memoryview) -> bool:
    """insert_batch() for a batch of one big Bayeux frame (a JSON array: else False, and nothing
    done): the frame's row, then its messages projected from pieces of about PIECE_BYTES (the
    same rows, each message parsed alone). The table is not registered: DuckDB would hold it,
    and the frame's bytes with it, until the commit."""
    try:
        spans = _SPANS.decode(raw)
    except (msgspec.MsgspecError, RecursionError):
        return False
    table = batch.table
    row = table.drop_columns(["raw"]).to_pylist()[0]
    frame = conn.from_arrow(table)  # read by its name below
    conn.execute("INSERT INTO frames BY NAME SELECT * FROM frame")
    del frame, table
    known = {"session_id": row["session_id"], "seq": row["seq"], "direction": row["direction"]}
    known |= {"wall": row["t_wall_ns"], "mono": row["t_mono_ns"]}
    first = 0
    while first < len(spans):
        last, size = first, 0
        while last < len(spans) and size < PIECE_BYTES:
            size += len(spans[last])
            last += 1
        piece = b"[" + b",".join(spans[first:last]) + b"]"
        conn.execute(PIECE_SQL, {**known, "first": first, "piece": piece})
        first = last
    return True


def commit_alone(conn: duckdb.DuckDBPyConnection, threshold_mb: int) -> None:
    """COMMIT a transaction with no other open beside it (a big frame's), as a checkpoint rather
    than a write to the WAL: DuckDB's WAL write of a 70 MB value took ~200 MB on top of it
    (with another transaction open, it writes the WAL after all). Then DuckDB's checkpoint
    threshold is `threshold_mb` again."""
    conn.execute("SET auto_checkpoint_skip_wal_threshold = 0")
    conn.execute("SET checkpoint_threshold = '0B'")
    try:
        conn.execute("COMMIT")
    finally:
        conn.execute(f"SET checkpoint_threshold = '{threshold_mb}MB'")
        conn.execute("RESET auto_checkpoint_skip_wal_threshold")


def isolate(conn: duckdb.DuckDBPyConnection, frame: Frame) -> Frame:
    """Project one frame alone into a scratch table; on failure, flag it instead."""
    if frame.parse_error is not None:
        return frame
    conn.register("_one", frames_table([frame]))
    try:
        conn.execute(f"SELECT count(*) FROM ({PROJECTION_SQL.replace('__SOURCE__', '_one')})")
        conn.fetchall()
        return frame
    except duckdb.Error as exc:
        return frame.with_changes(parse_error=f"unprojectable: {exc}")
    finally:
        conn.unregister("_one")


def upsert_session(conn: duckdb.DuckDBPyConnection, session: Session) -> None:
    session = prepare_session(session)
    values = [getattr(session, name) for name in SESSION_COLUMNS]
    values[5] = list(session.channels)
    labels = values.pop()
    placeholders = ", ".join(["?"] * len(values))
    conn.execute(
        f"INSERT OR REPLACE INTO sessions VALUES ({placeholders}, map(?::VARCHAR[], ?::VARCHAR[]))",
        [*values, list(labels.keys()), list(labels.values())],
    )


def latest(sessions: list[Session]) -> list[Session]:
    """Only the last update of each session in a batch needs writing."""
    return list({s.session_id: s for s in sessions}.values())


def try_upsert_sessions(conn: duckdb.DuckDBPyConnection, sessions: list[Session]) -> None:
    """Store session rows in one small transaction if the database can still take it (after
    a failure: a full disk often leaves room for a row that a batch of frames did not find)."""
    try:
        conn.execute("BEGIN")
        for session in sessions:
            upsert_session(conn, session)
        conn.execute("COMMIT")
    except duckdb.Error:
        with contextlib.suppress(duckdb.Error):
            conn.execute("ROLLBACK")


def finalize_tape(conn: duckdb.DuckDBPyConnection, path: Path, budget_s: float) -> None:
    """Store what analysis derives from the finished tape (tape.schema.finalize): for 5M
    REST requests ~12 s, for a tape with none ~0.05 s. The frames are committed and
    checkpointed first, within the writer's memory limit (with DuckDB's own, a close after
    1M messages peaked at more than twice the RSS). The rest runs on every core with room to
    join millions of rows, up to half the RAM (DuckDB spills beyond that) and for at most
    `budget_s`. A failure or an interrupt only means analysis computes what was not stored,
    so it is reported, not raised: it never costs a frame."""
    late = threading.Event()

    def stop() -> None:
        late.set()
        conn.interrupt()

    timer = threading.Timer(budget_s, stop)
    try:
        conn.execute("CHECKPOINT")
        conn.execute("RESET threads")
        conn.execute(f"SET memory_limit = '{finalize_mb()}MB'")
        timer.start()
        finalize(conn)
    except Exception as exc:  # an interrupt is a RuntimeError; a plugin may raise anything
        reason = f"it took over {budget_s:g} s" if late.is_set() else str(exc)
        sys.stderr.write(
            f"warning: {path}: request -> ack latency was not stored for analysis "
            f"({reason}); every frame is in the tape, and analysis will compute it instead\n"
        )
    finally:
        timer.cancel()
