"""The tape writer: callers enqueue frames and return; writer threads commit batches in order.

Writer threads commit every <= 200 ms or <= 8,192 rows, so a DuckDB checkpoint stall (0.4-0.75 s)
delays only the writer, never the thread receiving from the network (docs/architecture.md).
"""

from __future__ import annotations

import contextlib
import itertools
import operator
import sys
import threading
from collections import deque
from collections.abc import Iterator
from pathlib import Path
from typing import NamedTuple, cast

import duckdb
import pyarrow as pa

from tape.batches import RAW, Batch, flatten, prepared_batch, runs_batch, take
from tape.batches import Flush as _Flush
from tape.frame import Frame, ReceivedRun, Session
from tape.memory import MemoryLimit
from tape.prepare import clean_deliveries, prepare_session
from tape.privacy import REDACT_ONLY, Privacy
from tape.schema import TapeError, open_for_writing, reattach
from tape.store import (
    DUCKDB_THREADS,
    commit_alone,
    configure,
    finalize_tape,
    insert,
    latest,
    try_upsert_sessions,
    upsert_session,
)

BATCH_ROWS = 8_192
# The tape's row groups: a transaction that fills one is written straight to the file,
# compressed, not to the WAL and again at the next checkpoint.
ROW_GROUP_ROWS = BATCH_ROWS
# A batch's bytes at most (BATCH_ROWS frames of ~1 kB), and the queue's: memory stays bounded.
BATCH_BYTES = 8 * 2**20
QUEUE_BYTES = 24 * 2**20
QUEUE_SIZE = 50_000  # >1.5 s of headroom at 30k frames/s (a checkpoint stalls <0.75 s)
COMMIT_INTERVAL_S = 0.2
WORKERS = 2  # threads that build and insert batches at once; commits stay in order
# The second writer thread takes batches only while this many full batches wait: a stream one
# thread keeps up with is written by one, leaving the other core to the producer.
BACKLOG_BATCHES = 2
# The most a close spends storing what analysis derives from the tape (5M REST requests: ~12 s);
# well inside the 300 s a writer process's parent waits for its close.
FINALIZE_BUDGET_S = 120.0
# The interpreter's switch interval once a writer opens (Python's default: 5 ms). A DuckDB call
# takes the GIL back several times, each time waiting out the holder's interval: at 5 ms, a
# writer beside a busy Python thread spent most of its time waiting.
SWITCH_INTERVAL_S = 0.001
REATTACH_FRAMES = 1_000_000
_RAW_OF = operator.itemgetter(Frame._fields.index("raw"))


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
    _bigs = 0  # batches of a big frame taken and not yet committed (see _take)
    _checkpoint_due = False  # tape.memory.MemoryLimit.checkpoint_due, as of the last commit
    _reattach_at = REATTACH_FRAMES  # committed frames at which the database is attached anew
    reattached = 0  # how many times it was

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
        configure(self._conn, threads)
        self._memory = MemoryLimit(self._conn, ROW_GROUP_ROWS, Path(f"{self.path}.wal"))
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
        straight from theirs (see tape.batches.runs_batch)."""
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
        # write_many()'s body again for one item, on purpose: a shared helper cost ~5% of ingest
        # on the path every appended frame takes.
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
            if self._error is None:  # the close's checkpoint may rewrite big frames
                self._memory.set(self._memory.for_checkpoint())
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
        """After a failure, store the session rows put since (their end time and end_reason),
        if the database can still take them."""
        if self._late_sessions:
            try_upsert_sessions(self._conn, list(self._late_sessions.values()))

    def _finalize(self) -> None:
        """Store what analysis derives from the finished tape, see tape.store.finalize_tape."""
        finalize_tape(self._conn, self.path, FINALIZE_BUDGET_S)

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
        with self._take_lock:
            if not self._pending:
                return None
            got = take(self._pending, self._batch_rows, BATCH_BYTES)
            ticket = self._next_ticket
            self._next_ticket += 1
            # No transaction is opened beside a big frame's, or beside a checkpoint that is due:
            # a batch taken after it is inserted in its turn, not at once (see _commit).
            due = self.committed_frames >= self._reattach_at
            alone = self._bigs > 0 or got.big or self._checkpoint_due or due
            self._bigs += got.big
        with self._gate:
            self._pending_bytes -= got.size
            self._pending_rows -= got.taken
        markers = cast(list[_Flush], got.markers)
        return _Job(ticket, got.frames, got.sessions, markers, got.big, alone)

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

    def _commit(
        self,
        conn: duckdb.DuckDBPyConnection,
        ticket: int,
        frames: list[Frame | ReceivedRun],
        sessions: list[Session],
        markers: list[_Flush],
        big: bool = False,
        alone: bool = False,
    ) -> None:
        batch = None
        memory = self._memory.base
        big_mb = 0
        if frames:
            # A recording's batches are runs of received frames (see ReceivedRun); anything
            # else, or a batch mixing both, goes as Frames.
            runs = all(type(f) is ReceivedRun for f in frames)
            if runs:
                raws = clean_deliveries(
                    list(itertools.chain.from_iterable(cast(ReceivedRun, r).raws for r in frames)),
                    self._privacy,
                )
            else:
                flat = flatten(frames)
                columns = list(zip(*flat, strict=True))
                raws = columns[RAW]
            big_mb = -(-max(map(len, raws)) >> 20) if big else 0  # a big frame's MB, rounded up
            memory = self._memory.for_batch(big_mb)
            if runs:
                batch = runs_batch(cast(list[ReceivedRun], frames), raws)
            else:
                batch = prepared_batch(flat, columns, self._privacy)
                del columns, flat
            del raws
            # Let the frames go (the caller's list is this one): their bytes are in the table
            # now, and holding both through the commit put up to BATCH_BYTES more on the peak
            # RSS. The rare paths below read the frames back from the table.
            frames.clear()
        inserted = False
        if batch is not None and not alone:
            # The common case, beside the other thread: insert now, commit in turn.
            try:
                conn.execute("BEGIN")
                self._insert(conn, batch)
                inserted = True
            except duckdb.Error:  # done again alone, in turn, where a batch can be split
                with contextlib.suppress(duckdb.Error):
                    conn.execute("ROLLBACK")
        try:
            with self._turn_of(ticket):
                if alone and self.committed_frames >= self._reattach_at and self._memory.idle():
                    # No transaction is open (see _take): let DuckDB drop what it keeps per
                    # row group of an attached file (~9-13 MB per million frames, beyond its
                    # memory limit) by attaching the file anew.
                    reattach(self._conn, self.path, ROW_GROUP_ROWS)
                    self._reattach_at = self.committed_frames + REATTACH_FRAMES
                    self.reattached += 1
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
                        self._committed(batch.table.num_rows)
                        batch = None
                    except duckdb.Error:
                        with contextlib.suppress(duckdb.Error):  # COMMIT itself may have ended it
                            conn.execute("ROLLBACK")
                if batch is not None:
                    self._memory.set(memory, conn)
                if big and batch is not None:
                    held, batch = [batch], None
                    self._transact_alone(conn, held, sessions, big_mb)
                    sessions = []
                if batch is not None or sessions:
                    self._transact(conn, batch, sessions)
                self._memory.settle(conn)
                self._checkpoint_due = self._memory.checkpoint_due
                for marker in markers:
                    marker.done.set()
        finally:
            if big:
                with self._take_lock:
                    self._bigs -= 1

    def _transact(
        self, conn: duckdb.DuckDBPyConnection, batch: Batch | None, sessions: list[Session]
    ) -> None:
        """Commit a batch and session rows in one transaction, or in several: a batch too big
        to project within the buffer limit is committed in halves, each its own."""
        conn.execute("BEGIN")
        try:
            if batch is not None:
                self._insert(conn, batch)
            for session in latest(sessions):
                upsert_session(conn, session)
            conn.execute("COMMIT")
        except duckdb.OutOfMemoryException:
            if batch is None or batch.table.num_rows < 2:
                raise
            # A full batch of frames holding many messages each can need more than the buffer
            # limit to project (a 16 MB batch of 11-93 kB GWS frames did): split it rather than
            # fail the writer.
            with contextlib.suppress(duckdb.Error):  # COMMIT itself may have ended it
                conn.execute("ROLLBACK")
            half = batch.table.num_rows // 2
            self._transact(conn, batch._replace(table=batch.table.slice(0, half)), [])
            self._transact(conn, batch._replace(table=batch.table.slice(half)), sessions)
            return
        self._committed(0 if batch is None else batch.table.num_rows)

    def _committed(self, rows: int, big_mb: int = 0) -> None:
        self.committed_frames += rows
        self._memory.committed(rows, big_mb)

    def _transact_alone(
        self,
        conn: duckdb.DuckDBPyConnection,
        held: list[Batch],
        sessions: list[Session],
        big_mb: int,
    ) -> None:
        """_transact for a batch of one big frame, with no other transaction open (see _take):
        the batch is let go once inserted (DuckDB has the frame's bytes), and the commit is a
        checkpoint rather than a write to the WAL (tape.store.commit_alone)."""
        rows = held[0].table.num_rows
        conn.execute("BEGIN")
        self._insert(conn, held.pop())
        for session in latest(sessions):
            upsert_session(conn, session)
        commit_alone(conn, self._memory.threshold_mb)
        self._committed(rows, big_mb)

    def _insert(self, conn: duckdb.DuckDBPyConnection, batch: Batch) -> None:
        """Insert frames and their messages (tape.store.insert)."""
        insert(conn, batch)


class _Job(NamedTuple):
    ticket: int
    frames: list[Frame | ReceivedRun]
    sessions: list[Session]
    markers: list[_Flush]
    big: bool = False  # one big frame (tape.batches.BIG_FRAME_BYTES), committed alone
    alone: bool = False  # inserted in its turn: no transaction beside a big frame's


class _AbandonedError(Exception):
    """A writer thread stops waiting for its turn: another one failed first."""
