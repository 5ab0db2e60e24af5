"""DuckDB's buffer limit while a tape is written: a base between batches, raised for big frames."""

from __future__ import annotations

import contextlib
import os
import threading

import duckdb

MEMORY_MB = 96  # the base: 64 MB cost 30% of the throughput, 128 MB ~35 MB more RSS
# While a frame of 1 MB or more (a long-poll reply carrying a server's backlog) is being written
# and until it is checkpointed, the base is raised by this much per MB of the largest such frame:
# the other writer thread's open transaction may hold the room a checkpoint needs to pin a big
# value, and a failed checkpoint invalidates the database. Once no big frame is in flight and a
# checkpoint has taken them all, the base goes back to MEMORY_MB (and DuckDB frees its buffers).
BIG_FRAME_MB_PER_MB = 24


def ram_mb() -> int:
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") >> 20
    except (ValueError, OSError, AttributeError):  # not on every platform
        return 8192


def finalize_mb() -> int:
    """The limit for a close's finalize: room to join millions of rows (DuckDB spills beyond)."""
    return max(MEMORY_MB, ram_mb() // 2)


class MemoryLimit:
    """DuckDB's buffer limit, the database's, as the writer threads set it: `base` between
    batches (raised while big frames are in flight or not yet checkpointed, see settle),
    `current` as set."""

    def __init__(self, conn: duckdb.DuckDBPyConnection) -> None:
        self._conn = conn
        self.current = 0
        self.base = MEMORY_MB
        self._big = 0  # batches with a big frame taken (for_batch) and not yet settled
        self._lock = threading.Lock()
        self.set(MEMORY_MB)

    def for_batch(self, largest_mb: int, conn: duckdb.DuckDBPyConnection) -> int:
        """The limit a batch whose largest frame has `largest_mb` MB needs. DuckDB holds a value
        in one block, and parsing a frame's JSON took up to 4.5x its size: 8x is the floor.
        A big frame raises the base first, before the batch is inserted, so that the other
        writer thread has the room too; it holds until settle(conn, big=True) for this batch."""
        if largest_mb:
            with self._lock:
                self._big += 1
            raised = MEMORY_MB + BIG_FRAME_MB_PER_MB * largest_mb
            self.set(min(raised, ram_mb() * 4 // 5), conn, base=True)
        return min(max(self.base, 8 * largest_mb), ram_mb() * 4 // 5)

    def set(
        self,
        mb: int,
        conn: duckdb.DuckDBPyConnection | None = None,
        *,
        base: bool = False,
        lower: bool = False,
    ) -> None:
        """Set the limit on `conn`: the calling writer thread's cursor (a DuckDB connection is
        not for two threads at once), else the writer's own. `base`: `mb` is the new limit
        between batches. The limit never goes below that, nor (unless `lower`) below where it
        is: one lock around the decision and the SET, so two threads raising it cannot leave
        it at the smaller of their two values."""
        with self._lock:
            if base:
                self.base = max(self.base, mb)
            target = max(mb, self.base) if lower else max(mb, self.base, self.current)
            if target != self.current:
                (conn or self._conn).execute(f"SET memory_limit = '{target}MB'")
                self.current = target

    def settle(self, conn: duckdb.DuckDBPyConnection, *, big: bool = False) -> None:
        """After a commit (`big`: of a batch for_batch raised the base for). A checkpoint pins
        a big value whole, so take it while the room is there, then go back down: to the base,
        and once no big batch is in flight, the base itself back to MEMORY_MB. If the
        checkpoint fails (another thread's transaction is open), the next commit tries again."""
        with self._lock:
            if big:
                self._big -= 1
            unraise = self._big == 0 and self.base > MEMORY_MB
        if self.current > self.base or unraise:
            with contextlib.suppress(duckdb.Error):
                conn.execute("CHECKPOINT")
                with self._lock:
                    if self._big == 0:
                        self.base = MEMORY_MB
                self.set(self.base, conn, lower=True)
