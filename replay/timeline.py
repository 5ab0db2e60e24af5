"""The timeline: the recorded deliveries of a tape, as offsets from a start, ready to re-emit.

Each message keeps its recorded `data` bytes (an orjson.Fragment), so clients receive exactly
what was recorded; only the envelope (channel, a fresh id) is rebuilt.
"""

from __future__ import annotations

import contextlib
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import orjson

from replay.spans import elements, member
from tape.channel import matches
from tape.jsonl import JsonlReader
from tape.reader import TapeReader
from tape.schema import TapeError
from tape.tapeio import import_items

_DELIVERIES = """
SELECT m.session_id, m.seq, m.idx, m.t_mono_ns, m.t_wall_ns, m.channel, f.raw
FROM messages m JOIN frames f USING (session_id, seq)
WHERE m.direction = 'in' AND NOT starts_with(m.channel, '/meta/')
  AND NOT starts_with(m.channel, '/service/') {where}
ORDER BY m.session_id, m.seq, m.idx
"""


@dataclass(frozen=True, slots=True)
class Emission:
    offset: float  # seconds after the timeline's start, at speed 1
    channel: str
    message: dict[str, Any]  # wire form; `data` is the recorded bytes


@dataclass(frozen=True, slots=True)
class TimelineOptions:
    session: str | None = None  # None: the first session with deliveries; "all": every one
    channels: tuple[str, ...] = ()  # patterns; empty means every channel
    start: float | None = None  # --from, seconds
    end: float | None = None  # --to, seconds
    from_session_start: bool = False


@contextlib.contextmanager
def as_duckdb(path: Path) -> Iterator[Path]:
    """The tape as a DuckDB file: itself, or a JSONL tape imported into a temporary one."""
    if path.suffix != ".jsonl":
        yield path
        return
    with tempfile.TemporaryDirectory() as tmp:
        tape = Path(tmp) / "tape.duckdb"
        import_items(JsonlReader(path).items(), tape)
        yield tape


def load(
    path: Path,
    options: TimelineOptions,
    *,
    skip: frozenset[tuple[str, int, int]] = frozenset(),
    allow_empty: bool = False,
    shown: Path | None = None,
) -> list[Emission]:
    """Read the deliveries of a tape (DuckDB, or JSONL imported on the fly), less `skip`
    ((session_id, seq, idx) of messages that reactive replay delivers instead)."""
    with as_duckdb(path) as tape:
        return _load(tape, options, shown or path, skip, allow_empty)


def _load(
    tape: Path,
    options: TimelineOptions,
    path: Path,
    skip: frozenset[tuple[str, int, int]],
    allow_empty: bool,
) -> list[Emission]:
    with TapeReader(tape) as reader:
        rows = _rows(reader, options.session)
    rows = [r for r in rows if (r[0], r[1], r[2]) not in skip]
    if not rows and allow_empty:
        return []
    if not rows:
        raise TapeError(
            f"{path} has no recorded deliveries to replay"
            + (f" in session {options.session}" if options.session else "")
        )
    emissions = _emissions(rows, options.from_session_start)
    shift = options.start or 0.0  # --from 30 starts emitting at once, not after 30 s
    kept = [replace(e, offset=e.offset - shift) for e in emissions if _kept(e, options)]
    if not kept:
        raise TapeError(
            f"none of the {len(emissions)} recorded deliveries in {path} is left after the "
            "--channel/--from/--to filters; widen them"
        )
    return kept


def _rows(reader: TapeReader, session: str | None) -> list[tuple[Any, ...]]:
    if session in (None, "all"):
        rows = reader.conn.execute(_DELIVERIES.format(where="")).fetchall()
        if session is None and rows:
            first = rows[0][0]
            rows = [r for r in rows if r[0] == first]
        return rows
    return reader.conn.execute(
        _DELIVERIES.format(where="AND m.session_id = ?"), [session]
    ).fetchall()


def _emissions(rows: list[tuple[Any, ...]], from_session_start: bool) -> list[Emission]:
    """Offsets on one clock. Several sessions ("all") keep their places on the wall clock,
    so sessions recorded one after another play one after another."""
    base: dict[str, int] = {}
    several = len({row[0] for row in rows}) > 1
    first_wall = min(row[4] for row in rows)
    out = []
    for session_id, _seq, idx, t_mono_ns, t_wall_ns, channel, raw in rows:
        if several:
            offset_ns = t_wall_ns - first_wall
        else:
            offset_ns = t_mono_ns - (
                0 if from_session_start else base.setdefault(session_id, t_mono_ns)
            )
        out.append(Emission(offset_ns / 1e9, channel, _message(bytes(raw), idx, channel)))
    out.sort(key=lambda e: e.offset)  # stable: recorded order is kept for equal offsets
    return out


def _message(raw: bytes, idx: int, channel: str) -> dict[str, Any]:
    span = elements(raw)[idx]
    message: dict[str, Any] = {"channel": channel}
    for key in (b"data", b"ext"):
        found = member(raw, span, key)
        if found is not None:
            message[key.decode()] = orjson.Fragment(raw[found[0] : found[1]])
    return message


def _kept(emission: Emission, options: TimelineOptions) -> bool:
    if options.start is not None and emission.offset < options.start:
        return False
    if options.end is not None and emission.offset > options.end:
        return False
    return not options.channels or any(matches(p, emission.channel) for p in options.channels)
