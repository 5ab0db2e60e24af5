"""A tape a writer still holds: refused with advice that works, copied by `snapshot`, and a
plain `cp` of it without its .wal named as such."""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import duckdb
import pytest

from tests.cli import cometd_tape
from tests.constants import ROOT, TIMEOUT

# A writer that commits `n` frames, says so, and keeps the tape open (more frames every
# round) until its stdin closes.
_WRITER = """
import sys, time
from pathlib import Path
from tape.frame import Frame, Session
from tape.writer import TapeWriter
writer = TapeWriter(Path(sys.argv[1]))
writer.put_session(Session(session_id="live", mode="record", started_ns=time.time_ns()))
seq = 0
for _ in range(int(sys.argv[2])):
    for _ in range(200):
        seq += 1
        raw = b'[{"channel":"/v2/me/outbound","data":{"referenceId":"r%d"}}]' % seq
        writer.write(Frame(session_id="live", seq=seq, t_wall_ns=time.time_ns(), t_mono_ns=seq,
                           direction="in", transport="long-polling", kind="bayeux", raw=raw))
    writer.flush()
    print(seq, flush=True)
sys.stdin.readline()
writer.close()
"""


class LiveTape:
    def __init__(self, path: Path, rounds: int) -> None:
        self.path = path
        self.process = subprocess.Popen(
            [sys.executable, "-c", _WRITER, str(path), str(rounds)],
            cwd=ROOT,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.process.stdout is not None
        self.committed = 0
        for _ in range(rounds):
            line = self.process.stdout.readline()
            assert line, "the writer stopped"
            self.committed = int(line)

    def stop(self) -> None:
        assert self.process.stdin is not None
        self.process.stdin.close()
        assert self.process.wait(TIMEOUT * 3) == 0


@pytest.fixture
def live(tmp_path: Path) -> Iterator[LiveTape]:
    tape = LiveTape(tmp_path / "live.duckdb", rounds=3)
    try:
        yield tape
    finally:
        if tape.process.poll() is None:
            tape.stop()


def frames_of(path: Path) -> tuple[int, int, int]:
    conn = duckdb.connect(str(path), read_only=True)
    try:
        count, top, distinct = conn.execute(
            "SELECT count(*), max(seq), count(DISTINCT seq) FROM frames"
        ).fetchall()[0]
    finally:
        conn.close()
    return int(count), int(top), int(distinct)


def test_a_live_tape_is_refused_with_the_snapshot_advice(live: LiveTape) -> None:
    for args in (("info", str(live.path)), ("analyze", "summary", str(live.path))):
        done = cometd_tape(*args)
        assert done.returncode == 1, done.stderr
        assert "open for writing by another process" in done.stderr
        assert f"cometd-tape snapshot {live.path} COPY.duckdb" in done.stderr
        assert len(done.stderr.strip().splitlines()) == 1
        assert "Traceback" not in done.stderr


def test_snapshot_copies_every_committed_frame_of_a_live_tape(
    live: LiveTape, tmp_path: Path
) -> None:
    copy = tmp_path / "copy.duckdb"
    done = cometd_tape("snapshot", str(live.path), str(copy))
    assert done.returncode == 0, done.stderr
    assert f"copied {live.committed} frames in 1 sessions" in done.stdout
    assert not copy.with_name(copy.name + ".wal").exists()  # one file: the log folded in
    assert not list(tmp_path.glob("*.partial*"))
    assert frames_of(copy) == (live.committed, live.committed, live.committed)
    info = cometd_tape("info", str(copy))
    assert info.returncode == 0, info.stderr
    assert f"frames     {live.committed}" in info.stdout
    summary = cometd_tape("analyze", "summary", str(copy))
    assert summary.returncode == 0, summary.stderr

    again = cometd_tape("snapshot", str(live.path), str(copy))
    assert again.returncode == 1
    assert again.stderr.strip() == (
        f"Error: {copy} exists; add --overwrite to replace it, or choose another COPY"
    )
    live.stop()  # a tape no one writes is copied too
    done = cometd_tape("snapshot", str(live.path), str(copy), "--overwrite")
    assert done.returncode == 0, done.stderr
    assert frames_of(copy)[0] == live.committed


def test_a_plain_copy_without_its_wal_says_so(live: LiveTape, tmp_path: Path) -> None:
    # The writer has not checkpointed yet (its frames are small): the database file holds
    # nothing and the frames are all in the .wal.
    assert live.path.with_name(live.path.name + ".wal").stat().st_size > 0
    copy = tmp_path / "cp.duckdb"
    shutil.copyfile(live.path, copy)
    done = cometd_tape("info", str(copy))
    assert done.returncode == 1
    assert "empty DuckDB file, without the .wal" in done.stderr
    assert "cometd-tape snapshot LIVE COPY" in done.stderr
    assert "not a tape" not in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1
    # With its .wal next to it, the same copy is a tape.
    shutil.copyfile(live.path.with_name(live.path.name + ".wal"), f"{copy}.wal")
    done = cometd_tape("info", str(copy))
    assert done.returncode == 0, done.stderr


def test_snapshot_refuses_what_is_not_a_tape(tmp_path: Path) -> None:
    text = tmp_path / "notes.duckdb"
    text.write_text("hello\n")
    done = cometd_tape("snapshot", str(text), str(tmp_path / "copy.duckdb"))
    assert done.returncode == 1
    assert done.stderr.strip() == f"Error: {text} is not a tape (not a DuckDB file)"
    assert not (tmp_path / "copy.duckdb").exists()
    plain = tmp_path / "plain.duckdb"
    duckdb.connect(str(plain)).execute("CREATE TABLE t (x INT)").close()
    done = cometd_tape("snapshot", str(plain), str(tmp_path / "copy.duckdb"))
    assert done.returncode == 1
    assert "is a DuckDB file but not a tape" in done.stderr
    assert not list(tmp_path.glob("copy*"))
    missing = cometd_tape("snapshot", str(tmp_path / "nope.duckdb"), str(tmp_path / "c.duckdb"))
    assert missing.returncode == 2


def test_a_copy_the_writer_moved_meanwhile_is_taken_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tape import snapshot as snapshot_module
    from tape.schema import TapeError

    tape = tmp_path / "t.duckdb"
    assert (
        cometd_tape("import", str(ROOT / "samples" / "gws-dnc.jsonl"), "-o", str(tape)).returncode
        == 0
    )
    states = iter(range(1000))
    real = snapshot_module._state
    seen: list[int] = []

    def moving(path: Path) -> tuple[int, int, int]:  # changes for the first two copies
        n = next(states)
        seen.append(n)
        return (*real(path)[:2], n) if n < 4 else real(path)

    monkeypatch.setattr(snapshot_module, "_state", moving)
    assert snapshot_module.snapshot(tape, tmp_path / "c.duckdb") == (10, 1)
    assert len(seen) == 6  # two copies thrown away, the third kept

    monkeypatch.setattr(snapshot_module, "_state", lambda path: (0, 0, next(states)))
    with pytest.raises(TapeError, match=r"could not take a consistent copy .* in 3 attempts"):
        snapshot_module.snapshot(tape, tmp_path / "d.duckdb", attempts=3)
    assert not list(tmp_path.glob("d.duckdb*"))


def test_a_duckdb_file_whose_checksum_starts_with_a_brace_is_not_taken_for_jsonl(
    tmp_path: Path,
) -> None:
    from tape.source import is_text_tape

    # A DuckDB file's first 8 bytes are a checksum; 1 in 256 start with "{" (0x7b).
    fake = tmp_path / "g.duckdb"
    fake.write_bytes(b"\x7b\x0b\x88\xc7\x00\x00\x00\x00DUCK" + bytes(52))
    assert not is_text_tape(fake)
    jsonl = tmp_path / "t"
    jsonl.write_bytes(b'{"session": {"session_id": "s"}}\n')
    assert is_text_tape(jsonl)
