"""DuckDB's buffer limit and checkpoints while a tape is written: a base between batches, raised
for a big frame's batch and for the checkpoints that rewrite big frames."""

from __future__ import annotations

import contextlib
import ctypes
import math
import os
import threading
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import cast

import duckdb

MEMORY_MB = 96  # the base: 64 MB cost 30% of the throughput, 128 MB ~35 MB more RSS
# What goes through the WAL (the batches of a slower stream: full ones skip it) is checkpointed
# every so many MB, in the writer's time, rather than all at the close.
CHECKPOINT_MB = 16
# A batch of one big frame (a long-poll reply carrying a server's backlog, tape.batches) runs at
# the base plus this much per MB of the frame: its value, a part of its messages being projected
# (tape.store: parsing a message's JSON took up to 4.5x its size, and a frame may be one
# message), and the checkpoint that commits it. DuckDB takes only what it needs of it.
BIG_FRAME_MB_PER_MB = 8
# Once rows are appended to a row group, DuckDB's checkpoint rewrites its columns whole, holding
# every value of a column at once: each big frame in the frames table's open row group needs
# this much room at every checkpoint until the row group is full (short of it, the checkpoint
# fails, and a failed checkpoint invalidates the database). Such checkpoints are taken by the
# writer (settle), with the limit raised for them only: DuckDB keeps the buffers a limit
# allows, and a limit left raised held ~500 MB of RSS through a recording.
PINNED_MB_PER_MB = 1.5
_NEVER_MB = 1 << 20  # DuckDB's own checkpoints while big frames are open: none


def ram_mb() -> int:
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") >> 20
    except (ValueError, OSError, AttributeError):  # not on every platform
        return 8192


def finalize_mb() -> int:
    """The limit for a close's finalize: room to join millions of rows (DuckDB spills beyond)."""
    return max(MEMORY_MB, ram_mb() // 2)


class MemoryLimit:
    """DuckDB's buffer limit, the database's, as the writer threads set it (`base` between
    batches, `current` as set), and the big frames (tape.batches) a checkpoint may rewrite:
    those committed in the frames table's open row group (for all this writer knows, the last
    `row_group_rows` frames), or in one filled since the last checkpoint."""

    def __init__(self, conn: duckdb.DuckDBPyConnection, row_group_rows: int, wal: Path) -> None:
        self._conn = conn
        self.current = 0
        self.base = MEMORY_MB
        self._lock = threading.Lock()
        self._row_group_rows = row_group_rows
        self._wal = wal
        self._rows = 0  # frames committed
        self._open: deque[tuple[int, int]] = deque()  # (_rows once committed, MB) of big frames
        self.threshold_mb = CHECKPOINT_MB  # DuckDB's checkpoint_threshold, as set
        # settle's checkpoint failed (another transaction was open): the writer opens no
        # transaction beside the next batch's, so the next commit's checkpoint can be taken
        self.checkpoint_due = False
        self.set(MEMORY_MB)

    def idle(self) -> bool:
        """No big frame in the open row group, no checkpoint of the writer's own due."""
        return not self._open and not self.checkpoint_due

    def pinned_mb(self) -> int:
        """What a checkpoint needs beyond the base for the big frames in the open row group."""
        return math.ceil(PINNED_MB_PER_MB * sum(mb for _, mb in self._open))

    def for_batch(self, largest_mb: int) -> int:
        """The limit a batch whose largest frame has `largest_mb` MB needs: the base, or for a
        big frame (1 MB or more) room for it and for its commit's checkpoint."""
        if not largest_mb:
            return self.base
        return self._capped(self.base + BIG_FRAME_MB_PER_MB * largest_mb + self.pinned_mb())

    def for_checkpoint(self) -> int:
        return self._capped(self.base + self.pinned_mb())

    def _capped(self, mb: int) -> int:
        return min(mb, max(self.base, ram_mb() * 4 // 5))

    def set(
        self, mb: int, conn: duckdb.DuckDBPyConnection | None = None, *, lower: bool = False
    ) -> None:
        """Set the limit on `conn`: the calling writer thread's cursor (a DuckDB connection is
        not for two threads at once), else the writer's own. The limit never goes below the
        base, nor (unless `lower`) below where it is: one lock around the decision and the SET,
        so two threads raising it cannot leave it at the smaller of their two values."""
        with self._lock:
            target = max(mb, self.base) if lower else max(mb, self.base, self.current)
            if target != self.current:
                (conn or self._conn).execute(f"SET memory_limit = '{target}MB'")
                self.current = target

    def committed(self, rows: int, big_mb: int = 0) -> None:
        """`rows` frames were committed (in queue order), the last of them `big_mb` MB big."""
        with self._lock:
            self._rows += rows
            if big_mb:
                self._open.append((self._rows, big_mb))

    def settle(self, conn: duckdb.DuckDBPyConnection) -> None:
        """After a commit, in the committing thread's turn. While big frames are in the open
        row group, DuckDB is to take no checkpoint of its own: one is taken here, with the limit
        raised for it, once the WAL has CHECKPOINT_MB or a row group with big frames is full
        (its last rows are in no checkpoint yet: the next one rewrites it all, and after that
        none does). Then the limit is back at the base, and DuckDB frees what it held beyond.
        If the checkpoint fails (another thread's transaction is open), the next commit tries
        again (see checkpoint_due). (A big frame's commit was a checkpoint already,
        tape.store.commit_alone.)"""
        wanted = _NEVER_MB if self._open else CHECKPOINT_MB
        if wanted != self.threshold_mb:
            conn.execute(f"SET checkpoint_threshold = '{wanted}MB'")
            self.threshold_mb = wanted
        raised = self.current > self.base
        full = sum(1 for at, _ in self._open if self._rows - at >= self._row_group_rows)
        self.checkpoint_due = bool(full or (self._open and _size_mb(self._wal) >= CHECKPOINT_MB))
        if self.checkpoint_due:
            with contextlib.suppress(duckdb.Error):
                self.set(self.for_checkpoint(), conn)
                conn.execute("CHECKPOINT")
                self.checkpoint_due = False
                with self._lock:
                    for _ in range(full):
                        self._open.popleft()
        if self.current > self.base:
            self.set(self.base, conn, lower=True)
        if raised:
            release_freed()


def release_freed() -> None:
    """Hand the C heap's free memory back to the system (glibc's malloc_trim; elsewhere,
    nothing): a big frame's buffers, freed by DuckDB and Python, stayed resident otherwise
    (glibc returns only the top of a heap), ~40-80 MB of RSS after each 40-70 MB reply."""
    if _TRIM is not None:
        _TRIM(0)


def _malloc_trim() -> Callable[[int], int] | None:
    try:
        return cast("Callable[[int], int]", ctypes.CDLL(None).malloc_trim)
    except (OSError, AttributeError):  # not glibc
        return None


_TRIM = _malloc_trim()


def _size_mb(path: Path) -> int:
    try:
        return path.stat().st_size >> 20
    except OSError:  # no WAL: nothing to checkpoint
        return 0
