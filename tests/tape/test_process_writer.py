"""The tape writer in a child process: everything written arrives, in order, even when the
producer outruns the child (back-pressure, not loss); flush means committed; a dead child or
a closed writer is a TapeError, never silence."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import duckdb
import pytest

from tape.frame import Frame, Session
from tape.process_writer import GATHER_LIMIT, ProcessTapeWriter
from tape.schema import TapeError
from tests.constants import TIMEOUT


def frame(n: int) -> Frame:
    raw = b'[{"channel":"/x","data":{"n":%d}}]' % n
    return Frame("s", n, 1_700_000_000_000_000_000 + n, n, "in", "websocket", "bayeux", raw)


def test_every_frame_arrives_in_order_past_the_gather_limit(tmp_path: Path) -> None:
    tape = tmp_path / "p.duckdb"
    count = GATHER_LIMIT + 10_000
    with ProcessTapeWriter(tape) as writer:
        writer.put_session(Session(session_id="s"))
        for n in range(1, count + 1):
            writer.write(frame(n))
        assert len(writer._items) < GATHER_LIMIT + 1  # the producer waited for room
        writer.flush()
    conn = duckdb.connect(str(tape), read_only=True)
    seqs, messages = conn.execute(
        "SELECT (SELECT list(seq ORDER BY seq) FROM frames), (SELECT count(*) FROM messages)"
    ).fetchall()[0]
    assert seqs == list(range(1, count + 1))
    assert messages == count
    with pytest.raises(TapeError, match="closed"):
        writer.write(frame(count + 1))


def test_a_dead_child_is_a_tape_error(tmp_path: Path) -> None:
    writer = ProcessTapeWriter(tmp_path / "d.duckdb")
    writer.put_session(Session(session_id="s"))
    assert writer._proc.pid is not None
    os.kill(writer._proc.pid, signal.SIGKILL)
    writer._proc.join(TIMEOUT)  # the child is gone before we look
    with pytest.raises(TapeError, match="exited"):
        writer.check()
    with pytest.raises(TapeError):
        writer.close()
