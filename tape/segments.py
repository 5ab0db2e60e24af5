"""A recording cut into segments (`--rotate`): one tape set, a folder of DuckDB files written
one after another, each closed (committed, checkpointed, readable by anyone) when it reaches a
size or an age.

Layout (docs/tape.md, "Tape sets"): `-o shift.duckdb --rotate 1h` writes `shift/0001.duckdb`,
`shift/0002.duckdb`, ...; a capture proxy's worker K writes `shift/wK-0001.duckdb`, ... . A
session's seq runs on across segments (the recorder numbers frames, not the segment), and every
segment a session has frames in holds its `sessions` row as it stood then; the set's reader
(tape/tapeset.py) keeps the latest and lists the segments.

The next segment is opened ahead, by a watcher thread, once the current one is due; the
producer's next write swaps it in (a reference and the session rows) and a closer thread closes
the old one, so a rotation never waits on DuckDB in the producer's thread.
"""

from __future__ import annotations

import contextlib
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

from tape.frame import Frame, ReceivedRun, Session
from tape.privacy import Privacy
from tape.schema import TapeError

if TYPE_CHECKING:  # the writer (DuckDB, Arrow) loads when a segment opens, not with the CLI
    from tape.writer import TapeWriter

WATCH_S = 0.1  # how often the watcher looks at the current segment's size and age
_SIZE = re.compile(r"(\d+(?:\.\d+)?)\s*(b|kb|mb|gb|tb|kib|mib|gib|tib)", re.IGNORECASE)
_TIME = re.compile(r"(\d+(?:\.\d+)?)\s*(ms|s|m|min|h|d)", re.IGNORECASE)
_UNITS = {
    "b": 1,
    "kb": 10**3,
    "mb": 10**6,
    "gb": 10**9,
    "tb": 10**12,
    "kib": 2**10,
    "mib": 2**20,
    "gib": 2**30,
    "tib": 2**40,
}
_SECONDS = {"ms": 0.001, "s": 1, "m": 60, "min": 60, "h": 3600, "d": 86400}


@dataclass(frozen=True, slots=True)
class Rotation:
    """When a segment is closed: at `max_bytes` on disk (the file and its WAL), or
    `max_seconds` after it was opened, whichever comes first (None: never by that)."""

    max_bytes: int | None = None
    max_seconds: float | None = None

    def describe(self) -> str:
        parts = []
        if self.max_bytes is not None:
            parts.append(f"{self.max_bytes / 1e6:g} MB")
        if self.max_seconds is not None:
            parts.append(f"{self.max_seconds:g} s")
        return " or ".join(parts)


def parse_rotation(values: tuple[str, ...] | list[str]) -> Rotation | None:
    """`--rotate` values (`500MB`, `1h`, `500MB,1h`, repeatable) -> a Rotation; None for none.
    Raises ValueError with what was wrong and an example."""
    size: int | None = None
    age: float | None = None
    for value in values:
        for part in filter(None, (p.strip() for p in value.split(","))):
            if m := _SIZE.fullmatch(part):
                size = int(float(m.group(1)) * _UNITS[m.group(2).lower()])
            elif m := _TIME.fullmatch(part):
                age = float(m.group(1)) * _SECONDS[m.group(2).lower()]
            else:
                raise ValueError(
                    f"{part!r} is neither a size nor a time; write e.g. 500MB, 2GiB, 30m or 1h "
                    "(both: 500MB,1h)"
                )
    if size is not None and size < 1_000_000:
        raise ValueError(f"a segment of {size} bytes is too small; give 1MB or more")
    if age is not None and age < 1:
        raise ValueError(f"a segment of {age:g} s is too short; give 1s or more")
    if size is None and age is None:
        return None
    return Rotation(size, age)


def set_folder(output: Path) -> Path:
    """The folder a rotated recording to `output` goes to: `shift.duckdb` -> `shift/`."""
    return output.with_suffix("") if output.suffix == ".duckdb" else output


def segment_name(prefix: str, number: int) -> str:
    return f"{prefix}{number:04d}.duckdb"


def next_number(folder: Path, prefix: str = "") -> int:
    """The number after the highest segment of `prefix` in `folder` (1 for none)."""
    pattern = re.compile(re.escape(prefix) + r"(\d{4,})\.duckdb")
    numbers = [int(m.group(1)) for p in folder.glob("*.duckdb") if (m := pattern.fullmatch(p.name))]
    return max(numbers, default=0) + 1


Opener = Callable[[Path], "TapeWriter"]


class SegmentedWriter:
    """A FrameSink writing segment after segment into `folder` (see the module docstring).

    One producer thread: write/put_session/flush come from one thread at a time (the
    recorder's event loop, a writer process's reading loop), since the swap happens there.
    """

    def __init__(
        self,
        folder: Path,
        rotation: Rotation | None,
        *,
        prefix: str = "",
        privacy: Privacy | None = None,
        opener: Opener | None = None,
    ) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        self.folder = folder
        self._rotation = rotation or Rotation()
        self._prefix = prefix
        self._open = opener or partial(_open_writer, privacy=privacy)
        self._number = next_number(folder, prefix)
        self._current = self._open(self._path(self._number))
        self._opened = time.monotonic()
        self._sessions: dict[str, Session] = {}
        self._next: TapeWriter | None = None
        self._due = False
        self._error: BaseException | None = None
        self._failed = "closing a segment failed"  # what _error is about
        self._closers: list[threading.Thread] = []
        self._stop = threading.Event()
        self.committed_before = 0  # frames committed in the segments already closed
        self._count_lock = threading.Lock()
        self.rotations: list[tuple[str, float]] = []  # (segment closed, swap seconds)
        self._watcher = threading.Thread(target=self._watch, name="tape-segments", daemon=True)
        if rotation is not None:
            self._watcher.start()

    @property
    def path(self) -> Path:
        """The segment being written."""
        return self._current.path

    @property
    def committed_frames(self) -> int:
        return self.committed_before + self._current.committed_frames

    def segments(self) -> list[Path]:
        """Every segment written so far, the current one last."""
        return [self._path(n) for n in range(self._first_number(), self._number + 1)]

    # --- FrameSink --------------------------------------------------------------------------

    def write(self, frame: Frame) -> None:
        if self._due:
            self._rotate()
        self._current.write(frame)

    def write_many(self, frames: list[Frame]) -> None:
        if self._due:
            self._rotate()
        self._current.write_many(frames)

    def write_run(self, run: ReceivedRun) -> None:
        if self._due:
            self._rotate()
        self._current.write_run(run)

    def put_session(self, session: Session) -> None:
        self._sessions[session.session_id] = session
        self._current.put_session(session)

    def check(self) -> None:
        self.check_closed()
        self._current.check()

    def flush(self) -> None:
        """Everything written so far committed: the current segment flushed, the ones closing
        closed."""
        self._current.flush()
        for closer in self._closers:
            closer.join()
        self.check()

    def close(self, *, finalize: bool = True) -> None:
        """Close the current segment and wait for those closing; the last segment alone is
        not finalized (a segment's own stored latency would miss its neighbours' frames)."""
        self._stop.set()
        if self._watcher.is_alive():
            self._watcher.join()
        spare, self._next = self._next, None
        try:
            self._current.close(finalize=False)
        finally:
            for closer in self._closers:
                closer.join()
            if spare is not None:  # opened ahead, never written: leaves no empty segment
                spare.close(finalize=False)
                for leftover in (spare.path, spare.path.with_name(spare.path.name + ".wal")):
                    leftover.unlink(missing_ok=True)
        self.check_closed()

    def check_closed(self) -> None:
        if self._error is not None:
            raise TapeError(f"{self._failed}: {self._error}") from self._error

    def __enter__(self) -> SegmentedWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- rotation ---------------------------------------------------------------------------

    def _path(self, number: int) -> Path:
        return self.folder / segment_name(self._prefix, number)

    def _first_number(self) -> int:
        return self._number - len(self.rotations)

    def _watch(self) -> None:
        """Open the next segment once the current one is due, then flag the swap."""
        while not self._stop.wait(WATCH_S):
            if self._due or not self._is_due():
                continue
            try:
                self._next = self._open(self._path(self._number + 1))
            except BaseException as exc:  # the recording stops: check() raises it
                self._error = exc
                self._failed = f"opening segment {self._number + 1} failed"
                return
            self._due = True

    def _is_due(self) -> bool:
        rotation = self._rotation
        if (
            rotation.max_seconds is not None
            and time.monotonic() - self._opened >= rotation.max_seconds
        ):
            return True
        if rotation.max_bytes is not None:
            return _size(self._current.path) >= rotation.max_bytes
        return False

    def _rotate(self) -> None:
        started = time.perf_counter()
        fresh, self._next = self._next, None
        if fresh is None:
            self._due = False
            return
        # The open sessions' rows go ahead of their frames; an ended one stays behind.
        for sid, session in list(self._sessions.items()):
            if session.ended_ns is None:
                fresh.put_session(session)
            else:
                del self._sessions[sid]
        old, self._current = self._current, fresh
        self._number += 1
        self._opened = time.monotonic()
        self._due = False
        self.rotations.append((old.path.name, time.perf_counter() - started))
        closer = threading.Thread(target=self._close_old, args=(old,), name="tape-segment-close")
        closer.start()
        self._closers = [c for c in self._closers if c.is_alive()] + [closer]

    def _close_old(self, old: TapeWriter) -> None:
        try:
            old.close(finalize=False)
        except BaseException as exc:
            self._error = exc
        with self._count_lock:
            self.committed_before += old.committed_frames


def _open_writer(path: Path, *, privacy: Privacy | None) -> TapeWriter:
    from tape.writer import TapeWriter

    return TapeWriter(path, privacy=privacy)


def _size(path: Path) -> int:
    total = 0
    for part in (path, path.with_name(path.name + ".wal")):
        with contextlib.suppress(FileNotFoundError):
            total += part.stat().st_size
    return total
