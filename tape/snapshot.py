"""A consistent copy of a tape that a recorder or proxy is still writing.

DuckDB will not open a tape another process writes, not even read-only (the writer holds the
file's lock), so analysing a live tape means analysing a copy. A tape is two files while it is
written: the database and its write-ahead log (`.wal`) holding what was committed since the
last checkpoint. A copy without the .wal lacks those frames (a young tape: every table);
copying both while a checkpoint moves the log into the database can pair a database and a log
that do not belong together. So: copy the database, then the log, and keep the pair only if
the database did not change meanwhile (a checkpoint, or rows written ahead of their commit,
both change it); else copy again. A log copied while it grows ends in a torn last commit,
which DuckDB drops as it replays the log. The copy is then opened, which replays the log, and
checkpointed into one file.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import time
from pathlib import Path

import duckdb

from tape.schema import TapeError, check_version, connect

ATTEMPTS = 50


def wal_of(path: Path) -> Path:
    return path.with_name(path.name + ".wal")


def snapshot(live: Path, copy: Path, *, attempts: int = ATTEMPTS) -> tuple[int, int]:
    """Copy the tape `live` (written or not) to `copy`, a new single-file tape; returns its
    (frames, sessions). `copy` must not exist."""
    if not _is_duckdb(live):
        raise TapeError(f"{live} is not a tape (not a DuckDB file)")
    partial = copy.with_name(copy.name + ".partial")
    last = ""
    try:
        for attempt in range(attempts):
            _remove(partial)
            before = _state(live)
            shutil.copyfile(live, partial)
            with contextlib.suppress(FileNotFoundError):
                shutil.copyfile(wal_of(live), wal_of(partial))
            if _state(live) != before:
                last = "the tape was checkpointed while it was copied"
                time.sleep(0.01 * attempt)
                continue
            try:
                counts = _settle(partial, live)
            except _TornError as exc:
                last = str(exc)
                continue
            os.replace(partial, copy)
            return counts
    finally:
        _remove(partial)
    raise TapeError(
        f"could not take a consistent copy of {live} in {attempts} attempts ({last}); "
        "try again, or once its writer has stopped"
    )


class _TornError(Exception):
    """The copied database and log do not open together: copy again."""


def _state(path: Path) -> tuple[int, int, int]:
    info = path.stat()
    return info.st_ino, info.st_size, info.st_mtime_ns


def _settle(partial: Path, live: Path) -> tuple[int, int]:
    """Open the copy (DuckDB replays its log), check it is a tape, fold the log in."""
    try:
        conn = connect(partial)
    except TapeError as exc:
        raise _TornError(str(exc.__cause__ or exc)) from exc
    try:
        check_version(conn, live)
        conn.execute("CHECKPOINT")
        frames = int(conn.execute("SELECT count(*) FROM frames").fetchall()[0][0])
        sessions = int(conn.execute("SELECT count(*) FROM sessions").fetchall()[0][0])
    except duckdb.Error as exc:
        raise _TornError(str(exc)) from exc
    finally:
        conn.close()
    return frames, sessions


def _is_duckdb(path: Path) -> bool:
    with open(path, "rb") as stream:
        return stream.read(12)[8:12] == b"DUCK"


def _remove(path: Path) -> None:
    for leftover in (path, wal_of(path)):
        leftover.unlink(missing_ok=True)
