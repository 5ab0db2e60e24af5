"""A tape a read command is given: a DuckDB tape as it is, or a JSONL tape (or a HAR file)
imported into a temporary DuckDB tape first, so every read command takes all three."""

from __future__ import annotations

import contextlib
import sys
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path

from tape.frame import Frame, Session
from tape.har import har_items, is_har
from tape.jsonl import JsonlError, JsonlReader
from tape.reader import TapeReader
from tape.schema import TapeError
from tape.tapeio import import_items
from tape.tapeset import expand, is_manifest, is_set

_SNIFF_BYTES = 64


def is_text_tape(path: Path) -> bool:
    """True for a JSONL tape or a HAR file: JSON text, not a DuckDB file (judged by the name's
    .jsonl/.ndjson/.har, else by a first character of `{` and no DuckDB magic). A folder is
    neither."""
    if path.is_dir() or is_manifest(path):
        return False
    if path.suffix.lower() in (".jsonl", ".ndjson") or is_har(path):
        return True
    try:
        with open(path, "rb") as stream:
            head = stream.read(_SNIFF_BYTES)
    except OSError:
        return False
    if head[8:12] == b"DUCK":  # a DuckDB file: 8 bytes of checksum, then its magic
        return False  # (the checksum starts with "{" in 1 file of 256)
    return head.lstrip().startswith(b"{")


@contextlib.contextmanager
def readable(path: Path) -> Iterator[Path]:
    """The tape at `path` as a DuckDB file: itself, or a text tape imported into a temporary
    one (removed on exit). Secrets are redacted on the way in, as `import` does; nothing is
    masked. A tape set (a folder of segments, or a glob: tape/tapeset.py) is joined into a
    temporary tape, its segments in order, each session's latest row kept."""
    if is_set(path):
        given = expand([path])
        for note in given.notes:
            sys.stderr.write(note + "\n")
        with readable_all(given.tapes) as tapes, tempfile.TemporaryDirectory() as tmp:
            joined = Path(tmp) / f"{path.name or 'set'}.duckdb"
            import_items(_chained(tapes), joined)
            yield joined
        return
    with readable_all([path]) as (tape,):
        yield tape


def _chained(tapes: Sequence[Path]) -> Iterator[Frame | Session]:
    for tape in tapes:
        with TapeReader(tape) as reader:
            yield from reader.sessions()
            yield from reader.frames()


@contextlib.contextmanager
def readable_all(paths: Sequence[Path]) -> Iterator[tuple[Path, ...]]:
    """`readable` for several tapes at once (text tapes share one temporary folder)."""
    if not any(is_text_tape(p) for p in paths):
        yield tuple(paths)
        return
    with tempfile.TemporaryDirectory(prefix="cometd-tape-") as tmp:
        tapes = []
        for n, path in enumerate(paths):
            if not is_text_tape(path):
                tapes.append(path)
                continue
            tape = Path(tmp) / f"{n}-{path.stem}.duckdb"
            try:
                items = har_items(path) if is_har(path) else JsonlReader(path).items()
                import_items(items, tape)
            except JsonlError as exc:  # it names the line: name the file too
                raise TapeError(f"{path}, {exc}") from None
            tapes.append(tape)
        yield tuple(tapes)
