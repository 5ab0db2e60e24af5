"""What a read command was given, as the tapes to read: files, folders (a tape set: the segments
of a rotated recording, a proxy's workers' tapes) and globs, in order; a segment that a recorder
is still writing is skipped with a note saying up to when the others run.

A folder holding `_manifests/` is a Parquet lake (analyze export --to): one source per tape
exported into it, each named by its manifest. A folder holding `frames/` is a Parquet export
(analyze export --format parquet), read as one source; any other folder stands for the DuckDB
tapes in it, in name order (`0001.duckdb`, `0002.duckdb`, ..., `w1-0001.duckdb`, ...).
"""

from __future__ import annotations

import datetime as dt
import glob
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import duckdb

from tape.schema import TapeError

_LOCKED = re.compile(r"lock", re.IGNORECASE)
_SEGMENT = re.compile(r"\d+\.duckdb$")  # a segment's number: what is left names its writer
MANIFESTS = "_manifests"  # a Parquet lake's folder of manifests, one per tape exported into it


def is_manifest(path: Path) -> bool:
    """Whether `path` is a lake's manifest of one exported tape (read as that tape)."""
    return path.suffix == ".json" and path.parent.name == MANIFESTS


@dataclass(frozen=True, slots=True)
class TapeSet:
    """The tapes to read (`tapes`), the segments skipped as still being written (`live`),
    and one line per skip to show the user (`notes`)."""

    tapes: tuple[Path, ...]
    live: tuple[Path, ...] = ()
    notes: tuple[str, ...] = ()


def expand(arguments: Sequence[Path | str]) -> TapeSet:
    """The tapes `arguments` name, see the module docstring. Raises TapeError for an argument
    that names nothing, a folder with no tapes, or nothing left to read."""
    tapes: list[Path] = []
    live: list[Path] = []
    notes: list[str] = []
    for argument in arguments:
        for path in _named(Path(argument)):
            if not _in_set(path, argument) or path.is_dir() or not _being_written(path):
                tapes.append(path)  # a tape named alone that is being written: the reader says so
            else:
                live.append(path)
                notes.append(_skip_note(path))
    if not tapes:
        raise TapeError(
            "every tape given is still being written; wait for the first segment to close"
        )
    return TapeSet(tuple(tapes), tuple(live), tuple(notes))


def named_tapes(ctx: object, param: object, value: Any) -> Any:
    """A click callback for tape arguments: each must exist, unless it is a glob (a usage
    error, exit 2, as click's own exists=True gives)."""
    import click

    for path in value if isinstance(value, tuple) else (value,):
        if path is not None and not Path(path).exists() and not _is_glob(str(path)):
            raise click.BadParameter(f"{str(path)!r} does not exist")
    return value


def is_set(argument: Path | str) -> bool:
    """Whether an argument names several tapes (a folder of tapes, or a glob)."""
    path = Path(argument)
    lake = (path / MANIFESTS).is_dir()
    return (path.is_dir() and (lake or not (path / "frames").is_dir())) or _is_glob(str(argument))


def _named(path: Path) -> list[Path]:
    if path.is_dir():
        if (path / MANIFESTS).is_dir():
            found = sorted((path / MANIFESTS).glob("*.json"))
            if not found:
                raise TapeError(f"{path} is a Parquet lake with no tape exported into it yet")
            return found
        if (path / "frames").is_dir():
            return [path]
        found = sorted(path.glob("*.duckdb"), key=_in_order)
        if not found:
            raise TapeError(
                f"{path} is a folder with no tapes (*.duckdb) in it, and not a Parquet export"
            )
        return found
    if path.exists():
        return [path]
    if _is_glob(str(path)):
        found = sorted(
            (Path(p) for p in glob.glob(str(path)) if Path(p).is_file() and _not_a_side_file(p)),
            key=_in_order,
        )
        if not found:
            raise TapeError(f"no tape matches {str(path)!r}")
        return found
    raise TapeError(f"{path} does not exist")


def _in_order(path: Path) -> tuple[str, int, str]:
    """Segments in number order (0999 before 1000, 9999 before 10000), per writer prefix."""
    found = _SEGMENT.search(path.name)
    if found is None:
        return (path.name, 0, "")
    return (path.name[: found.start()], int(found.group(0).split(".")[0]), path.name)


def _not_a_side_file(name: str) -> bool:
    """A glob's match that is a tape, not its WAL or spill folder."""
    return not name.endswith((".wal", ".tmp"))


def _is_glob(text: str) -> bool:
    return any(c in text for c in "*?[")


def _in_set(path: Path, argument: Path | str) -> bool:
    return Path(argument) != path


def _being_written(path: Path) -> bool:
    """Whether another process holds the tape open for writing (DuckDB's file lock)."""
    if path.suffix != ".duckdb":
        return False
    try:
        duckdb.connect(str(path), read_only=True).close()
    except duckdb.IOException as exc:
        return bool(_LOCKED.search(str(exc)))
    except duckdb.Error:
        return False  # not a tape, or a damaged one: the reader says which
    return False


def _skip_note(path: Path) -> str:
    """`path` is skipped: say so, and up to when the set's closed segments before it run."""
    prefix = _SEGMENT.sub("", path.name)
    before = [
        p
        for p in sorted(path.parent.glob("*.duckdb"))
        if _in_order(p) < _in_order(path) and _SEGMENT.sub("", p.name) == prefix
    ]
    until = _last_frame(before[-1]) if before else None
    upto = f"; the analysis runs up to {until} (the end of {before[-1].name})" if until else ""
    return f"note: {path} is being written (skipped){upto}"


def _last_frame(path: Path) -> str | None:
    try:
        conn = duckdb.connect(str(path), read_only=True)
    except duckdb.Error:
        return None
    try:
        rows = conn.execute("SELECT max(t_wall_ns) FROM frames").fetchall()
    except duckdb.Error:
        return None
    finally:
        conn.close()
    if not rows or rows[0][0] is None:
        return None
    moment = dt.datetime.fromtimestamp(rows[0][0] / 1e9, dt.UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")
