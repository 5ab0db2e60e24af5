"""The tape writer: writer threads own DuckDB cursors and commit Arrow batches in order.

Callers enqueue frames and return at once; the writer threads commit every <= 200 ms or
<= 8,192 rows, so a DuckDB checkpoint stall (0.4-0.75 s measured here) delays only the writer,
never the thread receiving from the network (DESIGN.md, "Writing").
"""

from __future__ import annotations

import contextlib
import itertools
import operator
import os
import sys
import threading
from collections import deque
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, NamedTuple, Protocol, cast

import duckdb
import numpy as np
import pyarrow as pa

from tape.frame import FRAME_COLUMNS, SESSION_COLUMNS, Direction, Frame, Kind, ReceivedRun, Session
from tape.prepare import clean_deliveries, prepare_frame, prepare_session
from tape.privacy import REDACT_ONLY, Privacy
from tape.projection import HTTP_KINDS, PROJECTION_SQL, project, project_http
from tape.schema import TapeError, finalize, open_for_writing

FRAMES_SCHEMA = pa.schema(
    [
        ("session_id", pa.string()),
        ("seq", pa.int64()),
        ("t_wall_ns", pa.int64()),
        ("t_mono_ns", pa.int64()),
        ("direction", pa.string()),
        ("transport", pa.string()),
        ("kind", pa.string()),
        ("raw", pa.binary()),
        ("exchange_id", pa.string()),
        ("http_method", pa.string()),
        ("http_path", pa.string()),
        ("http_status", pa.int32()),
        ("headers", pa.string()),
        ("parse_error", pa.string()),
    ]
)

_RAW = FRAMES_SCHEMA.names.index("raw")
_BINARY, _INT64 = pa.binary(), pa.int64()
BATCH_ROWS = 8_192
# The tape's row groups (DuckDB's default: 122,880). A transaction that fills one is written
# straight to the file, compressed ("optimistic write"), not to the WAL and again at the next
# checkpoint: with a full batch filling exactly one (and the two writer threads), ingest went
# from 26-34k to 45-58k frames/s validated and 82-88k pre-validated here, for ~40% more bytes on
# disk (~210 against ~150 B a frame). 2,048 made the writer's memory grow with the tape.
ROW_GROUP_ROWS = BATCH_ROWS
SCAN_CHUNK_ROWS = 1_024
# A commit's Arrow batch is at most this big: room for BATCH_ROWS frames of ~1 kB. With two
# batches in flight, 16 MB put the recorder at 10 messages a frame at 332 MB peak RSS; 8 MB
# batches and a 24 MB queue, 284-299 MB at 57-88k msg/s (one thread and 16 MB: 53-65k).
BATCH_BYTES = 8 * 2**20
QUEUE_BYTES = 24 * 2**20  # bound memory too: 50k frames of 5 kB would otherwise be 250 MB
COMMIT_INTERVAL_S = 0.2
MEMORY_MB = 96  # DuckDB's buffer limit: 64 MB cost 30% throughput here, 128 MB 35 MB more RSS
# Once a frame of 1 MB or more has come (a long-poll reply carrying a server's backlog), the
# limit stays raised by this much per MB of the largest such frame, for the rest of the tape.
# At 96 MB, replies of 0.1-6 MB from a busy server (600k messages, 300 MB) failed the writer in
# 3 runs of 3: the other writer thread's open transaction held the room DuckDB's checkpoint
# needed to pin a big value, and a failed checkpoint invalidates the database.
BIG_FRAME_MB_PER_MB = 24
WORKERS = 2  # threads that build and insert batches at once; commits stay in order
# The second writer thread takes batches only while this many full batches wait: a stream one
# thread keeps up with is written by one. Against Faye over WebSocket (~35-45k msg/s), two
# threads always at work cost Faye's publish loop, on the same two cores, ~20% of its rate:
# ours 41.4k against 33.6k msg/s (medians, 10 alternating pairs, 8 faster, 1 slower, 1 tied).
BACKLOG_BATCHES = 2
# DuckDB's own threads: one, as the writer threads are the parallelism. Against one per core,
# measured here in alternating runs: ingest 76k, 67k, 82k against 60k, 52k, 58k frames/s
# (pre-validated; 38k against 34k validated), the close's checkpoint 0.5-0.7 against 1.5-1.7 s,
# the recorder at one message a frame 49k, 53k against 49k, 48k msg/s; at ten, 85k, 91k
# against 90k, 100k msg/s but ~18 MB less peak RSS (280 against 298-300 MB).
DUCKDB_THREADS = 1
CHECKPOINT_MB = 16
# The most a close spends storing what analysis derives from the tape (5M REST requests: ~12 s
# here); well inside the 300 s a writer process's parent waits for its close.
FINALIZE_BUDGET_S = 120.0
# The interpreter's switch interval once a writer opens (Python's default: 5 ms). Every
# DuckDB call takes the GIL back several times (a trivial SELECT, 6-7 times), and a thread that
# asks for it waits out the holder's interval: with another thread busy in Python, a writer's
# 8,192-frame insert, projection and commit took 29 against 8 us a frame, nearly all of it
# waiting. At 1 ms, measured here in alternating runs: the ingest producer waited 0.2-0.5
# against 2.1 s of 6-10 s for room in the queue (59k, 64k against 49k, 56k frames/s); the
# recorder from Faye over WebSocket was faster in 5 pairs of 5 (median 37.6k against 35.6k).
SWITCH_INTERVAL_S = 0.001
QUEUE_SIZE = 50_000  # >1.5 s of headroom at 30k frames/s (a checkpoint stalls <0.75 s), ~50 MB


class FrameSink(Protocol):
    """What every tape form accepts: frames, session rows, and a durable flush."""

    def write(self, frame: Frame) -> None: ...
    def put_session(self, session: Session) -> None: ...
    def check(self) -> None: ...
    def flush(self) -> None: ...
    def close(self) -> None: ...


class _Flush:
    __slots__ = ("done",)

    def __init__(self) -> None:
        self.done = threading.Event()


def frames_table(frames: list[Frame]) -> pa.Table:
    """Build one Arrow batch, column by column (never a per-row INSERT)."""
    return _columns_table(list(zip(*frames, strict=True)))


def _columns_table(columns: list[tuple[Any, ...]]) -> pa.Table:
    """The Arrow batch of frames given as columns (Frame's fields, transposed)."""
    columns = columns[: len(FRAME_COLUMNS)]
    arrays = [
        _column(col, t) for col, t in zip(columns, FRAMES_SCHEMA.types, strict=True) if t != _BINARY
    ]
    arrays.insert(_RAW, binary_array(columns[_RAW]))
    return _scan_chunks(pa.Table.from_arrays(arrays, names=FRAMES_SCHEMA.names))


def _scan_chunks(table: pa.Table) -> pa.Table:
    # DuckDB scans an Arrow table one record batch per thread: 1,024-row slices (zero-copy) let
    # the projection's JSON parsing run on every core; one 10,000-row batch ran on one.
    return pa.Table.from_batches(table.to_batches(max_chunksize=SCAN_CHUNK_ROWS))


def _column(values: tuple[object, ...], kind: pa.DataType) -> pa.Array:
    """One column, taking the shortcuts most batches allow: in a recording, session_id,
    direction, transport and kind rarely change within a batch and the HTTP columns of Bayeux
    frames are all NULL. Measured on 10,000 frames: 1.3 us a frame, against 3.5 us for
    pa.array() on every column; this runs in the writer thread under the GIL, beside the loop."""
    n = len(values)
    first = values[0] if n else None
    if values.count(first) == n:  # a C loop; equal strings are mostly the same object
        return pa.nulls(n, kind) if first is None else pa.repeat(pa.scalar(first, kind), n)
    if kind == _INT64 and None not in values:
        return pa.array(np.fromiter(values, dtype=np.int64, count=n))
    return pa.array(values, type=kind)


def binary_array(values: Sequence[bytes]) -> pa.Array:
    """One copy into an Arrow buffer: 5x faster than pa.array() over bytes objects."""
    data = b"".join(values)
    large = len(data) >= 2**31  # 32-bit offsets cannot address more
    offsets = np.zeros(len(values) + 1, dtype=np.int64 if large else np.int32)
    np.cumsum(
        np.fromiter(map(len, values), dtype=offsets.dtype, count=len(values)), out=offsets[1:]
    )
    kind = pa.large_binary() if large else pa.binary()
    buffers = [None, pa.py_buffer(offsets), pa.py_buffer(data)]
    return pa.Array.from_buffers(kind, len(values), buffers)


def _ram_mb() -> int:
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") >> 20
    except (ValueError, OSError, AttributeError):  # not on every platform
        return 8192


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


class TapeWriter:
    """Append-only writer for a DuckDB tape file. Thread-safe `write`; `workers` writer threads.

    The hand-off is a deque, not a queue.Queue: `deque.append` is atomic and ~20x cheaper than
    Queue.put's lock and condition, which measured as the largest per-frame cost at 50k+/s.

    Each writer thread takes the next batch in queue order with a ticket, builds it and inserts
    it in its own transaction, and commits in ticket order: two batches are built and projected
    at once (one thread's Python beside the other's DuckDB work), while commits stay in the
    order the frames came, so a crash never leaves a gap in `seq`.
    """

    _privacy: Privacy = REDACT_ONLY

    def __init__(
        self,
        path: Path | str,
        *,
        batch_rows: int = BATCH_ROWS,
        commit_interval: float = COMMIT_INTERVAL_S,
        queue_size: int = QUEUE_SIZE,
        queue_bytes: int = QUEUE_BYTES,
        threads: int = DUCKDB_THREADS,
        workers: int = WORKERS,
        privacy: Privacy | None = None,
    ) -> None:
        """`threads`: DuckDB's worker threads; `workers`: writer threads; `privacy`: what is
        redacted and masked before frames are stored (default: the default pattern redacted,
        nothing masked)."""
        self.path = Path(path)
        self._privacy = privacy or REDACT_ONLY
        # pyarrow's first conversion may import pandas (~1 s, see tape.runtime): pay that here,
        # not when the first commit is due
        pa.array([0])
        sys.setswitchinterval(min(sys.getswitchinterval(), SWITCH_INTERVAL_S))
        self._conn = open_for_writing(self.path, row_group_size=ROW_GROUP_ROWS)
        self._conn.execute(f"SET threads = {int(threads)}")
        # Full batches skip the WAL (see ROW_GROUP_ROWS); what goes through it (batches of a
        # slower stream) is checkpointed every 16 MB, in the writer's time, rather than at the
        # close: against 256 MB, the close after 200k messages from Faye took 0.03-0.04 against
        # 0.7 s, the Faye WebSocket run 35-39k against 34k msg/s, peak RSS 222-230 against 255 MB.
        self._conn.execute(f"SET checkpoint_threshold = '{CHECKPOINT_MB}MB'")
        self._memory_mb = 0
        self._base_mb = MEMORY_MB  # the limit between big batches; raised by big frames
        self._memory_lock = threading.Lock()
        self._set_memory(MEMORY_MB)
        # Rows are read back by session and seq (ORDER BY), never by position, so DuckDB may
        # append a batch's slices in parallel: ~25% less writer time, measured here.
        self._conn.execute("SET preserve_insertion_order = false")
        self._batch_rows = batch_rows
        self._interval = commit_interval
        self._limit = queue_size
        self._byte_limit = queue_bytes
        self._pending_bytes = 0
        self._pending_rows = 0  # frames and session rows (a run counts its frames)
        self._pending: deque[object] = deque()
        self._wake = threading.Event()
        self._backlog = threading.Event()  # the queue holds BACKLOG_BATCHES batches or more
        self._drained = threading.Condition()
        self._error: BaseException | None = None
        self._closed = False
        self._stopping = False
        # Makes "not closed, so append" atomic against close(); uncontended it costs ~0.1 us.
        self._gate = threading.Lock()
        self._take_lock = threading.Lock()  # a batch and its ticket are taken together
        self._next_ticket = 0
        self._serving = 0  # the ticket whose commit is next
        self._turn = threading.Condition()
        self.committed_frames = 0
        self._late_sessions: dict[str, Session] = {}  # rows put after a failure, see close()
        catalog = self._conn.execute("SELECT current_database()").fetchall()[0][0]
        self._cursors = [self._conn.cursor() for _ in range(max(1, workers))]
        for cursor in self._cursors:
            cursor.execute(f'USE "{catalog}"')
        self._threads = [
            threading.Thread(target=self._run, args=(c, i), name=f"tape-writer-{i}", daemon=True)
            for i, c in enumerate(self._cursors)
        ]
        for thread in self._threads:
            thread.start()

    def write(self, frame: Frame) -> None:
        self._put(frame)

    def write_many(self, frames: list[Frame]) -> None:
        """write() for each of `frames`, in order, under one lock."""
        pending = self._pending
        size = sum(map(len, map(_RAW_OF, frames)))
        with self._gate:
            if self._error is not None or self._closed:
                self._check()
            pending.extend(frames)
            self._pending_bytes += size
            self._pending_rows += len(frames)
        self._after_put()

    def write_run(self, run: ReceivedRun) -> None:
        """write_many(run.frames()), without the Frames: a batch of runs becomes Arrow columns
        straight from theirs (see _runs_batch)."""
        with self._gate:
            if self._error is not None or self._closed:
                self._check()
            self._pending.append(run)
            self._pending_bytes += run.size
            self._pending_rows += len(run.raws)
        self._after_put()

    def put_session(self, session: Session) -> None:
        session = prepare_session(session, self._privacy)
        if self._error is not None and not self._closed:
            # The writer has failed (a full disk): keep the session's latest row for close(),
            # which stores it if the database still can, so its end_reason says why it ended.
            self._late_sessions[session.session_id] = session
            return
        self._put(session)

    def _put(self, item: object) -> None:
        # write_many()'s body again for one item, on purpose: one shared helper taking a tuple
        # measured 75k and 78k against 81k frames/s (ingest, pre-validated), on the path every
        # appended frame takes.
        pending = self._pending
        size = len(item.raw) if isinstance(item, Frame) else 0
        with self._gate:
            if self._error is not None or self._closed:
                self._check()
            pending.append(item)
            self._pending_bytes += size
            self._pending_rows += 1
        self._after_put()

    def _after_put(self) -> None:
        if self._pending_rows >= self._batch_rows or self._pending_bytes >= self._byte_limit // 4:
            if not self._wake.is_set():  # set() takes a lock: a behind writer saw it per frame
                self._wake.set()
            if self._backlogged() and not self._backlog.is_set():
                self._backlog.set()
            if self._full():
                self._wait_for_room()

    def _backlogged(self) -> bool:
        return (
            self._pending_rows >= BACKLOG_BATCHES * self._batch_rows
            or self._pending_bytes >= BACKLOG_BATCHES * BATCH_BYTES
        )

    def _full(self) -> bool:
        return self._pending_rows >= self._limit or self._pending_bytes >= self._byte_limit

    def _alive(self) -> bool:
        return self._error is None and any(t.is_alive() for t in self._threads)

    def _wait_for_room(self) -> None:
        """Back-pressure: only when the writer is a whole queue behind (never in a checkpoint)."""
        with self._drained:
            while self._full() and self._alive():
                self._drained.wait(0.1)

    def flush(self) -> None:
        """Block until everything enqueued so far is committed."""
        self._check()
        marker = _Flush()
        self._pending.append(marker)
        self._wake.set()
        while not marker.done.wait(0.5):
            if not self._alive():
                break
        self._check()

    def close(self, *, finalize: bool = True) -> None:
        """Commit everything and close; then (unless `finalize` is false: a tape about to be
        discarded) store what analysis derives from the finished tape, see _finalize."""
        with self._gate:
            if self._closed:
                return
            self._closed = True
        self._stopping = True
        self._wake.set()
        self._backlog.set()
        for thread in self._threads:
            thread.join()
        for cursor in self._cursors:
            cursor.close()
        try:
            if self._error is None and finalize:
                self._finalize()
            elif self._error is not None:
                self._store_late_sessions()
        finally:
            self._conn.close()
        if self._error is not None:
            raise TapeError(
                f"writing {self.path} failed: {self._error}; the tape keeps the "
                f"{self.committed_frames} frames committed before that"
            ) from self._error

    def _store_late_sessions(self) -> None:
        """After a failure, store the session rows put since (their end time and end_reason)
        in one small transaction, if the database can still take it: a full disk often leaves
        room for a row that a batch of frames did not find."""
        if not self._late_sessions:
            return
        try:
            self._conn.execute("BEGIN")
            for session in self._late_sessions.values():
                upsert_session(self._conn, session)
            self._conn.execute("COMMIT")
        except duckdb.Error:
            with contextlib.suppress(duckdb.Error):
                self._conn.execute("ROLLBACK")

    def _finalize(self) -> None:
        """Store what analysis derives from the finished tape (tape.schema.finalize): for 5M
        REST requests ~12 s, for a tape with none ~0.05 s. The frames are committed and
        checkpointed first, within the writer's memory limit. The rest runs on every core
        with room to join millions of rows, up to half the RAM (DuckDB spills beyond that)
        and for at most FINALIZE_BUDGET_S. A failure or an interrupt only means analysis
        computes what was not stored, so it is reported, not raised: it never costs a frame."""
        late = threading.Event()

        def stop() -> None:
            late.set()
            self._conn.interrupt()

        timer = threading.Timer(FINALIZE_BUDGET_S, stop)
        try:
            # The close's checkpoint of what the frames left in the WAL, within the writer's
            # memory limit: with DuckDB's own, recording 1M messages at 10 a frame peaked at
            # 643 against 285 MB.
            self._conn.execute("CHECKPOINT")
            self._conn.execute("RESET threads")
            self._conn.execute(f"SET memory_limit = '{max(MEMORY_MB, _ram_mb() // 2)}MB'")
            timer.start()
            finalize(self._conn)
        except Exception as exc:  # an interrupt is a RuntimeError; a plugin may raise anything
            reason = f"it took over {FINALIZE_BUDGET_S:g} s" if late.is_set() else str(exc)
            sys.stderr.write(
                f"warning: {self.path}: request -> ack latency was not stored for analysis "
                f"({reason}); every frame is in the tape, and analysis will compute it instead\n"
            )
        finally:
            timer.cancel()

    def __enter__(self) -> TapeWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def check(self) -> None:
        """Raise TapeError if the writer thread has failed (a recorder then stops)."""
        self._check()

    def _check(self) -> None:
        if self._error is not None:
            raise TapeError(f"writing {self.path} failed: {self._error}") from self._error
        if self._closed:
            raise TapeError(f"{self.path}: writer is closed")

    def _run(self, conn: duckdb.DuckDBPyConnection, index: int) -> None:
        try:
            while self._error is None:
                stopping = self._stopping
                if index and not stopping and not self._backlogged():
                    # The other writer threads help only once the first falls behind (see
                    # BACKLOG_BATCHES); they wait on their own event, not on every put's wake.
                    self._backlog.wait(self._interval)
                    self._backlog.clear()
                    continue
                job = self._take()
                if job is not None:
                    self._commit(conn, *job)
                    with self._drained:
                        self._drained.notify_all()
                    continue
                if stopping:
                    return
                self._wake.wait(self._interval)
                self._wake.clear()
        except BaseException as exc:  # surfaced to callers by _check/close
            if self._error is None:
                self._error = exc
            with self._turn:
                self._turn.notify_all()
            with self._drained:
                self._drained.notify_all()

    def _take(self) -> _Job | None:
        """The next batch in queue order, at most `batch_rows` frames, and its ticket."""
        frames: list[Frame | ReceivedRun] = []
        sessions: list[Session] = []
        markers: list[_Flush] = []
        size = rows = taken = 0
        with self._take_lock:
            pending = self._pending
            if not pending:
                return None
            while pending and rows < self._batch_rows and size < BATCH_BYTES:
                item = pending.popleft()
                if type(item) is ReceivedRun:
                    run, rest = _fit(item, self._batch_rows - rows, BATCH_BYTES - size)
                    if rest is not None:  # the rest is next in the queue
                        pending.appendleft(rest)
                    frames.append(run)
                    rows += len(run.raws)
                    taken += len(run.raws)
                    size += run.size
                elif isinstance(item, Frame):
                    frames.append(item)
                    rows += 1
                    taken += 1
                    size += len(item.raw)
                elif isinstance(item, Session):
                    sessions.append(item)
                    taken += 1
                elif isinstance(item, _Flush):
                    markers.append(item)
            ticket = self._next_ticket
            self._next_ticket += 1
        with self._gate:
            self._pending_bytes -= size
            self._pending_rows -= taken
        return _Job(ticket, frames, sessions, markers)

    @contextlib.contextmanager
    def _turn_of(self, ticket: int) -> Iterator[None]:
        """Wait until every earlier ticket has committed; then this one commits."""
        with self._turn:
            while self._error is None and self._serving != ticket:
                self._turn.wait(0.1)
            if self._error is not None:
                raise _AbandonedError("another writer thread failed")
        try:
            yield
        except BaseException as exc:
            # The turn is never passed on after a failure: a later batch, inserted already,
            # must not commit past this one and leave a gap.
            with self._turn:
                if self._error is None:
                    self._error = exc
                self._turn.notify_all()
            raise
        with self._turn:
            self._serving = ticket + 1
            self._turn.notify_all()

    def _raise_base(self, mb: int, conn: duckdb.DuckDBPyConnection) -> None:
        """Raise the limit kept between big batches (never lowered: see BIG_FRAME_MB_PER_MB)
        before this batch is inserted, so the other writer thread has the room too."""
        self._set_memory(min(mb, _ram_mb() * 4 // 5), conn, base=True)

    def _set_memory(
        self,
        mb: int,
        conn: duckdb.DuckDBPyConnection | None = None,
        *,
        base: bool = False,
        lower: bool = False,
    ) -> None:
        """Set DuckDB's buffer limit, the database's, on `conn`: the calling writer thread's
        cursor (a DuckDB connection is not for two threads at once), else the writer's own.
        `base`: `mb` is the new limit between batches. The limit never goes below that, nor
        (unless `lower`) below where it is: one lock around the decision and the SET, so two
        threads raising it cannot leave it at the smaller of their two values."""
        with self._memory_lock:
            if base:
                self._base_mb = max(self._base_mb, mb)
            target = max(mb, self._base_mb) if lower else max(mb, self._base_mb, self._memory_mb)
            if target != self._memory_mb:
                (conn or self._conn).execute(f"SET memory_limit = '{target}MB'")
                self._memory_mb = target

    def _commit(
        self,
        conn: duckdb.DuckDBPyConnection,
        ticket: int,
        frames: list[Frame | ReceivedRun],
        sessions: list[Session],
        markers: list[_Flush],
    ) -> None:
        batch = None
        memory = MEMORY_MB
        if frames:
            # DuckDB holds a value in one block, and parsing a frame's JSON took up to 4.5x its
            # size: a long-poll reply carrying a 100 MB backlog must not fail for want of room.
            # The raised base (BIG_FRAME_MB_PER_MB) covers 8x already; 8x stays as the floor.
            # A recording's batches are runs of received frames (see ReceivedRun); anything
            # else, or a batch mixing both, goes as Frames.
            runs = all(type(f) is ReceivedRun for f in frames)
            if runs:
                raws = clean_deliveries(
                    list(itertools.chain.from_iterable(cast(ReceivedRun, r).raws for r in frames)),
                    self._privacy,
                )
            else:
                flat = _flatten(frames)
                columns = list(zip(*flat, strict=True))
                raws = columns[_RAW]
            largest = max(map(len, raws)) >> 20
            if largest:
                self._raise_base(MEMORY_MB + BIG_FRAME_MB_PER_MB * largest, conn)
            memory = min(max(self._base_mb, 8 * largest), _ram_mb() * 4 // 5)
            if runs:
                batch = _runs_batch(cast(list[ReceivedRun], frames), raws)
            else:
                batch = _prepared_batch(flat, columns, self._privacy)
                del columns, flat
            del raws
            # Let the frames go (the caller's list is this one): their bytes are in the table
            # now, and holding both through the commit put up to BATCH_BYTES more on the peak
            # RSS. The rare paths below read the frames back from the table.
            frames.clear()
        inserted = False
        if batch is not None and memory == self._base_mb:
            # The common case, beside the other thread: insert now, commit in turn.
            try:
                conn.execute("BEGIN")
                self._insert(conn, batch)
                inserted = True
            except duckdb.Error:  # done again alone, in turn, where a batch can be split
                with contextlib.suppress(duckdb.Error):
                    conn.execute("ROLLBACK")
        with self._turn_of(ticket):
            if inserted and batch is not None:
                if sessions:
                    # Before the frames, on the connection no thread inserts on: a crash in
                    # between then leaves no committed frame without its session row. (In
                    # this thread's open transaction the upsert could conflict with the
                    # other thread's, committed since it began.)
                    self._transact(self._conn, None, sessions)
                    sessions = []
                try:
                    conn.execute("COMMIT")
                    self.committed_frames += batch.table.num_rows
                    batch = None
                except duckdb.Error:
                    with contextlib.suppress(duckdb.Error):  # COMMIT itself may have ended it
                        conn.execute("ROLLBACK")
            if batch is not None:
                self._set_memory(memory, conn)
            self._commit_batch(conn, batch, sessions, markers)

    def _commit_batch(
        self,
        conn: duckdb.DuckDBPyConnection,
        batch: _Batch | None,
        sessions: list[Session],
        markers: list[_Flush],
    ) -> None:
        if batch is not None or sessions:
            self._transact(conn, batch, sessions)
        if self._memory_mb > self._base_mb:
            # A checkpoint pins the big value whole: take it while the room is there. The
            # batch is committed already; if this fails, the next commit tries again.
            with contextlib.suppress(duckdb.Error):
                conn.execute("CHECKPOINT")
                self._set_memory(self._base_mb, conn, lower=True)
        for marker in markers:
            marker.done.set()

    def _transact(
        self, conn: duckdb.DuckDBPyConnection, batch: _Batch | None, sessions: list[Session]
    ) -> None:
        """Commit a batch and session rows in one transaction, or in several: a batch too big
        to project within the buffer limit is committed in halves, each its own."""
        conn.execute("BEGIN")
        try:
            if batch is not None:
                self._insert(conn, batch)
            for session in _latest(sessions):
                upsert_session(conn, session)
            conn.execute("COMMIT")
        except duckdb.OutOfMemoryException:
            if batch is None or batch.table.num_rows < 2:
                raise
            # A full batch of frames holding many messages each can need more than the buffer
            # limit to project (a 16 MB batch of 11-93 kB GWS frames did): split it rather than
            # fail the writer. The limit raised for the batch's largest frame holds throughout.
            with contextlib.suppress(duckdb.Error):  # COMMIT itself may have ended it
                conn.execute("ROLLBACK")
            half = batch.table.num_rows // 2
            self._transact(conn, batch._replace(table=batch.table.slice(0, half)), [])
            self._transact(conn, batch._replace(table=batch.table.slice(half)), sessions)
            return
        self.committed_frames += 0 if batch is None else batch.table.num_rows

    def _insert(self, conn: duckdb.DuckDBPyConnection, batch: _Batch) -> None:
        """Insert frames and their messages; a frame the projection chokes on is kept raw."""
        try:
            _insert_batch(conn, batch)
        except duckdb.Error as exc:
            if isinstance(exc, duckdb.OutOfMemoryException):
                if batch.table.num_rows > 1:
                    raise  # the batch is too big, not a frame bad: _transact splits it
            elif isinstance(exc, _NOT_A_FRAME):
                # The disk or the database, not a frame: checking 8,192 frames one by one
                # first took ~20 s here before the writer could say so.
                raise
            # Rare: JSON orjson accepts but DuckDB reads differently. Never lose the batch or
            # the recording for it: find the frames at fault and store them with the reason.
            conn.execute("ROLLBACK")
            # outside a transaction: each alone
            checked = [_isolate(conn, f) for f in frames_of(batch.table)]
            conn.execute("BEGIN")
            _insert_batch(conn, _Batch(frames_table(checked), *_projected(checked)))


# What no frame's bytes can make the projection raise: I/O (a full disk), transactions, a
# database already invalidated. Anything else may be a frame DuckDB reads otherwise than orjson.
_NOT_A_FRAME = (duckdb.OperationalError, duckdb.FatalException)


class _Job(NamedTuple):
    ticket: int
    frames: list[Frame | ReceivedRun]
    sessions: list[Session]
    markers: list[_Flush]


class _AbandonedError(Exception):
    """A writer thread stops waiting for its turn: another one failed first."""


def frames_of(table: pa.Table) -> list[Frame]:
    """The frames of a `frames_table` batch, back as Frame tuples."""
    columns = [table.column(name).to_pylist() for name in FRAME_COLUMNS]
    return [Frame(*row) for row in zip(*columns, strict=True)]


class _Batch(NamedTuple):
    """Frames on their way into the tape: the Arrow table, and which projections they feed."""

    table: pa.Table
    bayeux: bool  # a Bayeux frame that decoded: `messages` rows
    http: bool  # a REST request or response: `http_fields` rows


_CHECKED = Frame._fields.index("checked")
_RAW_OF = operator.itemgetter(Frame._fields.index("raw"))
_HEADERS, _PATH = FRAME_COLUMNS.index("headers"), FRAME_COLUMNS.index("http_path")
_KIND, _DIRECTION = FRAME_COLUMNS.index("kind"), FRAME_COLUMNS.index("direction")
_ERROR = FRAME_COLUMNS.index("parse_error")


def _prepared_batch(
    frames: list[Frame], columns: list[tuple[Any, ...]], privacy: Privacy = REDACT_ONLY
) -> _Batch:
    """The batch of `frames` after prepare_frame, as Arrow. A batch only of frames received
    and decoded already (the bulk of any recording, which prepare_frame passes unchanged) is
    recognised column by column, in C: ~0.6 us a frame less of the writer's Python, which
    holds the GIL the event loop needs."""
    n = len(frames)
    if (
        columns[_CHECKED].count(True) == n
        and columns[_HEADERS].count(None) == n
        and columns[_PATH].count(None) + columns[_PATH].count("") == n
        and columns[_KIND].count(Kind.BAYEUX) == n
        and columns[_DIRECTION].count(Direction.IN) == n
    ):
        columns[_RAW] = tuple(clean_deliveries(columns[_RAW], privacy))
        return _Batch(_columns_table(columns), columns[_ERROR].count(None) > 0, False)
    prepared = [prepare_frame(f, privacy) for f in frames]
    return _Batch(frames_table(prepared), *_projected(prepared))


def _fit(run: ReceivedRun, rows: int, size: int) -> tuple[ReceivedRun, ReceivedRun | None]:
    """What of `run` a batch with room for `rows` frames and `size` bytes takes, and the rest
    (None: all of it). Frames are taken while the batch is under both, as _take takes Frames
    (at least one)."""
    if len(run.raws) <= rows and run.size <= size:
        return run, None
    k = total = 0
    for length in map(len, run.raws):
        if k >= rows or total >= size:
            break
        total += length
        k += 1
    # Its last frame may be the one that crosses `size`: then the batch takes it whole, and
    # no empty rest goes back into the queue (a batch of none would fail the writer).
    return (run, None) if k == len(run.raws) else run.split(k)


def _flatten(items: list[Frame | ReceivedRun]) -> list[Frame]:
    out: list[Frame] = []
    for item in items:
        if type(item) is ReceivedRun:
            out.extend(item.frames())
        else:
            out.append(cast(Frame, item))
    return out


def _runs_batch(runs: list[ReceivedRun], raws: Sequence[bytes]) -> _Batch:
    """The Arrow batch of received runs, built from their columns: what _prepared_batch makes
    of the same frames as Frames (prepare_frame passes such frames unchanged)."""
    n = len(raws)
    chain = itertools.chain.from_iterable
    errors = list(chain(r.errors for r in runs))
    arrays = [
        _per_run(runs, "session_id"),
        pa.array(
            np.concatenate(
                [np.arange(r.first_seq, r.first_seq + len(r.raws), dtype=np.int64) for r in runs]
            )
        ),
        pa.array(np.fromiter(chain(r.walls for r in runs), dtype=np.int64, count=n)),
        pa.array(np.fromiter(chain(r.monos for r in runs), dtype=np.int64, count=n)),
        pa.repeat(pa.scalar(str(Direction.IN), pa.string()), n),
        _per_run(runs, "transport"),
        pa.repeat(pa.scalar(str(Kind.BAYEUX), pa.string()), n),
        binary_array(raws),
        *(pa.nulls(n, t) for t in FRAMES_SCHEMA.types[_RAW + 1 : _ERROR]),
        _column(tuple(errors), pa.string()),
    ]
    # names, not the schema: `raw` may be large_binary (a batch of 2 GB or more), as in
    # _columns_table
    table = pa.Table.from_arrays(arrays, names=FRAMES_SCHEMA.names)
    return _Batch(_scan_chunks(table), errors.count(None) > 0, False)


def _per_run(runs: list[ReceivedRun], field: str) -> pa.Array:
    """A string column constant within each run (session_id, transport), through _column."""
    values = itertools.chain.from_iterable(
        itertools.repeat(getattr(r, field), len(r.raws)) for r in runs
    )
    return _column(tuple(values), pa.string())


def _projected(frames: list[Frame]) -> tuple[bool, bool]:
    # Planning a projection costs ~12 ms a batch, measured here: it is skipped when nothing in
    # the batch would be projected (a proxy's REST traffic, lifecycle frames).
    return (
        any(f.kind == Kind.BAYEUX and f.parse_error is None for f in frames),
        any(f.kind in HTTP_KINDS for f in frames),
    )


def _insert_batch(conn: duckdb.DuckDBPyConnection, batch: _Batch) -> None:
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


def _isolate(conn: duckdb.DuckDBPyConnection, frame: Frame) -> Frame:
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


def _latest(sessions: list[Session]) -> list[Session]:
    """Only the last update of each session in a batch needs writing."""
    return list({s.session_id: s for s in sessions}.values())
