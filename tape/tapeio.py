"""Moving whole tapes between forms: JSONL items into a DuckDB tape."""

from __future__ import annotations

import contextlib
from collections.abc import Iterable
from pathlib import Path

from tape.frame import Frame, Session
from tape.privacy import Privacy
from tape.reader import read_sessions
from tape.schema import TapeError, open_for_reading
from tape.writer import TapeWriter


def import_items(
    items: Iterable[Frame | Session], output: Path, *, privacy: Privacy | None = None
) -> tuple[int, int]:
    """Write frames and sessions into `output`; returns (frames, sessions) written, redacted
    and masked as `privacy` says (tape/privacy.py).

    Sessions already in the tape are refused rather than mixed, since seq must stay gapless.
    Frames whose session has no session line get one (mode "import") from their first frame.
    """
    created = not output.exists()
    existing = _existing_sessions(output)
    writer = TapeWriter(output, privacy=privacy)
    try:
        seen, described = _feed(items, writer, existing, output)
        writer.close()
    except BaseException:
        with contextlib.suppress(TapeError):  # the first error is the one to report
            writer.close(finalize=not created)  # nothing to store in a tape about to go
        if created:  # a failed import leaves no half-written tape behind
            for leftover in (output, output.with_name(output.name + ".wal")):
                leftover.unlink(missing_ok=True)
        raise
    return writer.committed_frames, len(seen.keys() | described)


def _feed(
    items: Iterable[Frame | Session], writer: TapeWriter, existing: set[str], output: Path
) -> tuple[dict[str, int], set[str]]:
    seen: dict[str, int] = {}
    described: set[str] = set()
    for item in items:
        sid = item.session_id
        if sid in existing:
            raise TapeError(f"{output} already holds session {sid}; import into a new tape")
        if isinstance(item, Session):
            described.add(sid)
            writer.put_session(item)
        else:
            seen.setdefault(sid, item.t_wall_ns)
            writer.write(item)
    for sid, started in seen.items():
        if sid not in described:
            writer.put_session(Session(session_id=sid, mode="import", started_ns=started))
    return seen, described


def _existing_sessions(path: Path) -> set[str]:
    if not path.exists():
        return set()
    conn = open_for_reading(path)
    try:
        in_frames = conn.execute("SELECT DISTINCT session_id FROM frames").fetchall()
        return {s.session_id for s in read_sessions(conn)} | {row[0] for row in in_frames}
    finally:
        conn.close()
