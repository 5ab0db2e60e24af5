"""The writer's promises: commits every <= 200 ms, and a stalled commit never blocks write()."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from collections import deque
from pathlib import Path
from typing import Any

import duckdb
import orjson
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import tape.batches
import tape.memory
import tape.store
import tape.writer
from tape.batches import FRAMES_SCHEMA, frames_of, frames_table
from tape.frame import FRAME_COLUMNS, Direction, Frame, Kind
from tape.reader import TapeReader
from tape.schema import TapeError
from tape.writer import TapeWriter
from tests.conftest import TIMEOUT, ListSink, gws_frame_raw, make_frame


def test_a_frame_is_committed_within_the_commit_interval(tmp_path: Path) -> None:
    with TapeWriter(tmp_path / "t.duckdb") as writer:
        writer.write(make_frame("s", 1, gws_frame_raw(1)))
        start = time.monotonic()
        while writer.committed_frames < 1 and time.monotonic() - start < TIMEOUT:
            time.sleep(0.005)
        assert writer.committed_frames == 1  # committed by the interval: no flush, no close
        assert time.monotonic() - start < 0.2 + TIMEOUT / 10  # the interval, generously


def test_a_stalled_commit_does_not_block_the_producer(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    writer = TapeWriter(tmp_path / "t.duckdb")
    real_commit = writer._commit
    stalled, release = threading.Event(), threading.Event()

    def slow_commit(*args: list[object]) -> None:
        if not stalled.is_set():
            stalled.set()
            release.wait(TIMEOUT)  # a checkpoint stall, held until the test lets it go
        real_commit(*args)  # type: ignore[arg-type]

    monkeypatch.setattr(writer, "_commit", slow_commit)
    writer.write(make_frame("s", 1, b"[]"))
    assert stalled.wait(TIMEOUT)
    for seq in range(2, 20_002):
        writer.write(make_frame("s", seq, b"[]"))
    # Every write returned while the first commit was still held: none waited for it.
    assert not release.is_set()
    release.set()
    writer.close()
    with TapeReader(writer.path) as reader:
        assert [f.seq for f in reader.frames("s")] == list(range(1, 20_002))


def test_a_failed_writer_says_why(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    writer = TapeWriter(tmp_path / "t.duckdb")

    def broken(*args: list[Frame]) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(writer, "_commit", broken)
    writer.write(make_frame("s", 1, b"[]"))
    with pytest.raises(TapeError, match="No space left on device"):
        writer.flush()
    with pytest.raises(TapeError, match="No space left"):
        writer.close()


def test_a_recording_process_does_not_import_pandas(tmp_path: Path) -> None:
    """pyarrow would import pandas (~50 MB) on its first conversion; recording processes keep
    it out (keep_pandas_out_of_arrow), and pandas still works afterwards for whoever asks."""
    script = f"""
import sys
from tape.frame import Session
from tape.runtime import keep_pandas_out_of_arrow
from tape.session import SessionLog
from tape.writer import TapeWriter
keep_pandas_out_of_arrow()
with TapeWriter({str(tmp_path / "t.duckdb")!r}) as writer:
    SessionLog(writer, Session(session_id="s")).append("in", b'[{{"channel":"/a"}}]')
print("pandas" in sys.modules)
try:
    import pandas  # noqa: F401
except ImportError:
    print("no pandas")
else:
    import pyarrow as pa
    print(pa.table({{"a": [1]}}).to_pandas()["a"].tolist())
"""
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True, timeout=60
    ).stdout.split("\n")
    assert out[0] == "False"
    assert out[1] in ("no pandas", "[1]")


def test_a_frame_larger_than_the_buffer_limit_is_stored_and_projected(tmp_path: Path) -> None:
    """A long-poll reply can carry a whole backlog (Faye sent 100+ MB in one reply here); it
    must not fail the tape for want of DuckDB buffer room."""
    message = b'{"channel":"/bench","data":{"seq":%d,"pad":"' + b"x" * 1000 + b'"}}'
    count = 110_000  # ~115 MB: more than the writer's 96 MB memory limit
    raw = b"[" + b",".join(message % n for n in range(count)) + b"]"
    assert len(raw) > 110 * 2**20
    path = tmp_path / "big.duckdb"
    with TapeWriter(path) as writer:
        writer.write(make_frame("s", 1, raw))
        writer.flush()
        # the next commit checkpoints, as a long recording's do once the WAL is big: that
        # checkpoint must still find room for the big value (the writer thread is idle here)
        writer._conn.execute("SET checkpoint_threshold = '1MB'")
        writer.write(make_frame("s", 2, b'[{"channel":"/bench","data":{}}]'))
        writer.flush()
    with TapeReader(path) as reader:
        frames = list(reader.frames())
        assert [f.raw == raw for f in frames[:1]] == [True]
        assert [f.parse_error for f in frames] == [None, None]
        assert sum(1 for _ in reader.messages()) == count + 1


def test_the_memory_limit_comes_back_down_after_a_big_frame_is_committed(tmp_path: Path) -> None:
    """A long-poll backlog raises DuckDB's buffer limit while its reply is written; once it is
    committed and checkpointed the limit is back at the base, not raised for the rest of the
    tape (it held ~500 MB of RSS through a 200,000-message recording)."""
    big = b'[{"channel":"/x","data":"' + b"x" * (3 * 2**20) + b'"}]'
    with TapeWriter(tmp_path / "t.duckdb") as writer:
        writer.write(make_frame("s", 1, big))
        writer.flush()
        assert (writer._memory.base, writer._memory.current) == (tape.memory.MEMORY_MB,) * 2
        writer.write(make_frame("s", 2, b'[{"channel":"/x","data":1}]'))
        writer.flush()
        assert writer._memory.current == tape.memory.MEMORY_MB
    with TapeReader(writer.path) as reader:
        assert [f.raw == r for f, r in zip(reader.frames("s"), [big], strict=False)] == [True]
        assert sum(1 for _ in reader.messages("s")) == 2


_TEXT = st.sampled_from(["a", "b", None])


@given(
    st.lists(
        st.tuples(
            st.sampled_from(["s1", "s2"]),
            st.integers(min_value=-(2**62), max_value=2**62),
            st.sampled_from([Direction.IN, "in", "out"]),
            st.sampled_from([Kind.BAYEUX, "http-request"]),
            _TEXT,
            st.sampled_from([None, 200, 500]),
            st.binary(max_size=20),
        ),
        min_size=1,
        max_size=40,
    )
)
def test_the_arrow_batch_equals_a_plain_conversion(rows: list[tuple[object, ...]]) -> None:
    """The column shortcuts (constant, all-NULL, integer) build the same table as pa.array."""
    frames = [
        Frame(sid, i, t, t, d, "websocket", k, raw, text, text, None, status, text, text)  # type: ignore[arg-type]
        for i, (sid, t, d, k, text, status, raw) in enumerate(rows)
    ]
    columns = list(zip(*frames, strict=True))[: len(FRAMES_SCHEMA)]
    plain = pa.Table.from_arrays(
        [
            pa.array(columns[FRAME_COLUMNS.index(name)], type=field.type)
            for name, field in zip(FRAMES_SCHEMA.names, FRAMES_SCHEMA, strict=True)
        ],
        schema=FRAMES_SCHEMA,
    )
    assert frames_table(frames).equals(plain)
    # ... and reads back as the same frames (the writer's rare paths re-read a batch)
    assert frames_of(frames_table(frames)) == frames


def test_a_batch_too_big_to_project_at_once_is_committed_in_parts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Frames of many messages each, queued faster than they are written: a full batch needs
    more than DuckDB's buffer limit to project. It is split, never fails the writer."""
    monkeypatch.setattr(tape.memory, "MEMORY_MB", 24)
    raw = orjson.dumps(orjson.loads(gws_frame_raw(1)) * 30)  # ~23 kB, 60 messages
    count = (12 * 2**20) // len(raw)
    writer = TapeWriter(tmp_path / "t.duckdb")
    too_big: list[int] = []
    real_insert = writer._insert

    def watched(conn: duckdb.DuckDBPyConnection, batch: tape.batches.Batch) -> None:
        try:
            real_insert(conn, batch)
        except duckdb.OutOfMemoryException:
            too_big.append(batch.table.num_rows)
            raise

    monkeypatch.setattr(writer, "_insert", watched)
    # All queued in one call (as a recorder hands over a socket read's frames), so the writer's
    # first batch is a full one however quickly its threads wake.
    writer.write_many([make_frame("s", seq, raw) for seq in range(1, count + 1)])
    writer.flush()
    writer.close()
    assert too_big, "no batch was too big: the test no longer exercises the split"
    with TapeReader(writer.path) as reader:
        frames = list(reader.frames("s"))
        assert [f.seq for f in frames] == list(range(1, count + 1))
        assert all(f.parse_error is None for f in frames)
        assert sum(1 for _ in reader.messages("s")) == count * 60


def test_long_poll_replies_carrying_a_backlog_are_all_recorded(
    tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    """A busy server answers each long poll with its whole backlog: 40 replies of 1.5-6 MB
    (240k messages), queued as fast as they come. At the writer's usual 96 MB, DuckDB's
    checkpoint found no room to pin a big value beside the other writer thread's open
    transaction, and a failed checkpoint invalidates the database: the writer failed, or its
    close warned, in 3 runs of 3."""
    from tape.frame import Session
    from tape.session import SessionLog

    writer = TapeWriter(tmp_path / "t.duckdb")
    log = SessionLog(writer, Session(session_id="lp", transport="long-polling"))
    pad = "x" * 450
    sent = 0
    for k in range(40):
        n = (3000, 6000, 12000)[k % 3]
        body = orjson.dumps(
            [{"channel": "/bench", "data": {"seq": sent + j, "pad": pad}} for j in range(n)]
        )
        sent += n
        log.append("in", body, exchange_id=f"x{k}", http_status=200, checked=True)
    log.close("stopped")
    writer.close()
    assert capfd.readouterr().err == ""  # no "latency was not stored" warning either
    with duckdb.connect(str(writer.path), read_only=True) as conn:
        rows = conn.execute("SELECT count(*), count(DISTINCT seq) FROM messages").fetchall()
    assert rows == [(sent, 40)]


@pytest.mark.parametrize("to_tape", [False, True], ids=["sink-without-write_many", "tape"])
def test_received_frames_reach_the_sink_in_seq_order(tmp_path: Path, to_tape: bool) -> None:
    """received() holds a socket read's frames until release(); any other write releases them
    first, so the sink sees every frame once, in seq order, whichever way they came."""
    from tape.frame import Session
    from tape.session import SessionLog

    sink: Any = TapeWriter(tmp_path / "t.duckdb") if to_tape else ListSink()
    log = SessionLog(sink, Session(session_id="s", transport="websocket"))
    log.received(b'[{"channel":"/a"}]', "websocket", None)
    log.received(b'[{"channel":"/b"}]', "websocket", None)
    log.append("out", b"[]", checked=True)  # released before it
    log.received(b"[]", "websocket", None)
    log.release()
    log.release()  # nothing held: a no-op
    log.received(b"[]", "websocket", None)
    log.lifecycle("stopped")  # released before it
    log.received(b"[]", "websocket", None)
    log.close("stopped")  # and at the close
    if to_tape:
        sink.close()
        seqs = [f.seq for f in TapeReader(tmp_path / "t.duckdb").frames("s")]
    else:
        seqs = [f.seq for f in sink.frames]
    assert seqs == list(range(1, 8))


def test_release_with_nothing_held_does_not_touch_a_closed_writer(tmp_path: Path) -> None:
    """The transport releases after every socket read, pings and closes included: with no
    frame held that must not raise the writer's error out of the socket's callback."""
    from tape.frame import Session
    from tape.session import SessionLog

    writer = TapeWriter(tmp_path / "t.duckdb")
    log = SessionLog(writer, Session(session_id="s", transport="websocket"))
    log.received(b"[]", "websocket", None)
    log.release()
    writer.close()
    log.release()  # nothing held: no call, no error
    log.received(b"[]", "websocket", None)
    with pytest.raises(TapeError):
        log.release()  # a frame held: the closed writer says so


def test_received_frames_are_not_held_without_bound() -> None:
    """A caller that never calls release() still streams its frames to the sink."""
    from tape.frame import Session
    from tape.session import HOLD, SessionLog

    sink = ListSink()
    log = SessionLog(sink, Session(session_id="s", transport="websocket"))
    for _ in range(HOLD * 3 + 1):
        log.received(b"[]", "websocket", None)
    assert [f.seq for f in sink.frames] == list(range(1, HOLD * 3 + 1))


def test_session_log_received_is_append_for_a_received_frame() -> None:
    """The recorder's hot path builds the Frame itself: it must be the one `append` builds."""
    from tape.frame import Session
    from tape.session import SessionLog

    sink = ListSink()
    log = SessionLog(sink, Session(session_id="s", transport="websocket"))
    for problem in (None, "invalid-json: oops"):
        log.received(b"[]", "websocket", problem)
        log.append("in", b"[]", transport="websocket", parse_error=problem, checked=True)
    fast, slow = sink.frames[0::2], sink.frames[1::2]
    for a, b in zip(fast, slow, strict=True):
        assert type(a) is Frame
        assert a._replace(seq=0, t_wall_ns=0, t_mono_ns=0) == b._replace(
            seq=0, t_wall_ns=0, t_mono_ns=0
        )
        assert a.t_wall_ns <= b.t_wall_ns
        assert a.t_mono_ns <= b.t_mono_ns
    assert [f.seq for f in sink.frames] == [1, 2, 3, 4]


def test_a_split_batch_keeps_the_memory_raised_for_its_largest_frame(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The limit raised for a big frame must hold for every part of a split batch, not only
    until the first part commits (then the part with the big frame ran at 96 MB and failed)."""
    writer = TapeWriter(tmp_path / "t.duckdb")
    real = tape.store.insert_batch
    seen: list[tuple[int, int]] = []  # (largest raw in the part, buffer limit in MB)

    def first_too_big(conn: duckdb.DuckDBPyConnection, batch: tape.batches.Batch) -> None:
        largest = max(len(r.as_py()) for r in batch.table.column("raw"))
        seen.append((largest, writer._memory.current))
        if len(seen) <= 2:  # beside the other thread, then alone in turn: split it
            raise duckdb.OutOfMemoryException("simulated: the batch is too big to project")
        real(conn, batch)

    monkeypatch.setattr(tape.store, "insert_batch", first_too_big)
    big = b'[{"channel":"/x","data":"' + b"x" * (20 * 2**20) + b'"}]'
    for seq in range(1, 4):
        writer.write(make_frame("s", seq, b'[{"channel":"/x","data":1}]'))
    writer.write(make_frame("s", 4, big))
    writer.close()
    assert len(seen) > 2, "the batch was not split"
    assert all(limit >= 8 * (largest >> 20) for largest, limit in seen)
    with TapeReader(writer.path) as reader:
        assert [f.seq for f in reader.frames("s")] == [1, 2, 3, 4]


def test_batches_commit_in_queue_order_even_when_a_later_one_is_ready_first(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two writer threads insert at once (the second joins once two batches wait), but a batch
    never commits before an earlier one: a crash then can only lose a tail, never leave a gap
    in `seq`."""
    inserting: dict[str, int] = {}  # writer thread -> first seq of the batch it inserted last
    commits: list[tuple[int, int]] = []  # (first seq of the batch, committed_frames) per commit

    class Watched(TapeWriter):
        @property  # type: ignore[override]
        def committed_frames(self) -> int:
            return self._watched_committed

        @committed_frames.setter
        def committed_frames(self, value: int) -> None:
            if value:
                commits.append((inserting[threading.current_thread().name], value))
            self._watched_committed = value

    class Turn(threading.Condition):
        """The writer's turn condition, telling when a thread waits for its turn."""

        def wait(self, timeout: float | None = None) -> bool:
            waiting.set()
            return super().wait(timeout)

    writer = Watched(tmp_path / "t.duckdb", batch_rows=100)
    real_insert = writer._insert
    first_stalled, second_inserted = threading.Event(), threading.Event()
    release, waiting = threading.Event(), threading.Event()

    def insert(conn: duckdb.DuckDBPyConnection, batch: tape.batches.Batch) -> None:
        inserting[threading.current_thread().name] = batch.table.column("seq")[0].as_py()
        first = batch.table.column("seq")[0].as_py() == 1
        if first:
            first_stalled.set()
            assert release.wait(TIMEOUT)
        real_insert(conn, batch)
        if not first:
            second_inserted.set()

    monkeypatch.setattr(writer, "_insert", insert)
    monkeypatch.setattr(writer, "_turn", Turn())
    for seq in range(1, 301):  # the first batch taken, two more wait: a backlog
        writer.write(make_frame("s", seq, gws_frame_raw(seq)))
    assert first_stalled.wait(TIMEOUT)
    assert second_inserted.wait(TIMEOUT)
    # The second batch is inserted, and its thread now waits for its turn rather than commit
    # (only it can wait: the first thread is stalled before its turn).
    assert waiting.wait(TIMEOUT), "the second batch's thread never waited for its turn"
    assert commits == []
    release.set()
    writer.close()
    # The stalled first batch committed first, then the one inserted while it stalled.
    assert commits == [(1, 100), (101, 200), (201, 300)]
    with TapeReader(writer.path) as reader:
        assert [f.seq for f in reader.frames("s")] == list(range(1, 301))


def test_a_stream_one_writer_thread_keeps_up_with_is_written_by_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The second writer thread stays out of the way (and off the cores) until a backlog
    builds: batches that come one at a time are all committed by the first."""
    writer = TapeWriter(tmp_path / "t.duckdb", batch_rows=100)
    committers: list[str] = []
    real_commit = writer._commit

    def commit(*args: Any) -> None:
        committers.append(threading.current_thread().name)
        real_commit(*args)

    monkeypatch.setattr(writer, "_commit", commit)
    for seq in range(1, 601):
        writer.write(make_frame("s", seq, gws_frame_raw(seq)))
        if seq % 150 == 0:
            writer.flush()
    writer.close()
    assert set(committers) == {"tape-writer-0"}
    with TapeReader(writer.path) as reader:
        assert [f.seq for f in reader.frames("s")] == list(range(1, 601))


def test_session_rows_updated_in_every_batch_never_conflict(tmp_path: Path) -> None:
    """Session rows are upserted in turn: two threads' transactions never both update one."""
    from tape.frame import Session

    with TapeWriter(tmp_path / "t.duckdb", batch_rows=7, commit_interval=0.01) as writer:
        for seq in range(1, 2_001):
            writer.write(make_frame("s", seq, b'[{"channel":"/a"}]'))
            if seq % 5 == 0:
                writer.put_session(Session(session_id="s", client_id=f"c{seq}"))
        writer.flush()
    with TapeReader(writer.path) as reader:
        (session,) = reader.sessions()
        assert session.client_id == "c2000"
        assert [f.seq for f in reader.frames("s")] == list(range(1, 2_001))


def test_a_batch_failing_in_its_turn_stops_later_batches_committing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A batch redone in its turn (here: one big frame, alone, that DuckDB cannot project)
    fails the writer; the next batch, inserted meanwhile by the other thread, must not commit
    past it and leave a gap (a review found it did)."""
    real = tape.store.insert_batch

    def insert_batch(conn: duckdb.DuckDBPyConnection, batch: tape.batches.Batch) -> None:
        if batch.table.column("seq")[0].as_py() == 1:
            time.sleep(0.3)  # the other thread inserts its batch meanwhile
            raise duckdb.OutOfMemoryException("simulated: could not allocate block")
        real(conn, batch)

    monkeypatch.setattr(tape.store, "insert_batch", insert_batch)
    path = tmp_path / "t.duckdb"
    writer = TapeWriter(path)
    writer.write(make_frame("s", 1, b'[{"channel":"/a","data":"' + b"x" * (9 << 20) + b'"}]'))
    for seq in range(2, 3_001):
        writer.write(make_frame("s", seq, gws_frame_raw(seq)))
    with pytest.raises(TapeError, match="could not allocate"):
        writer.flush()
    with pytest.raises(TapeError, match="could not allocate"):
        writer.close()
    with TapeReader(path) as reader:
        assert [f.seq for f in reader.frames("s")] == []


def test_opening_a_tape_a_writer_in_this_process_holds_says_so(tmp_path: Path) -> None:
    from tape.schema import connect

    path = tmp_path / "t.duckdb"
    with TapeWriter(path):
        for read_only in (False, True):
            with pytest.raises(TapeError, match="open for writing in this process already"):
                connect(path, read_only=read_only)


@given(
    st.lists(
        st.tuples(
            st.sampled_from([Direction.IN, "in", Direction.OUT]),
            st.sampled_from([Kind.BAYEUX, "bayeux", Kind.LIFECYCLE, "http-request"]),
            st.sampled_from([None, "", "/api/v2/me?password=x"]),
            st.sampled_from([None, '[["Cookie","a=b"]]']),
            st.sampled_from([None, "invalid-json: oops"]),
            st.booleans(),
            st.sampled_from([b"[]", b'[{"channel":"/a"}]', b"{", b'{"password":"x"}']),
        ),
        min_size=1,
        max_size=30,
    )
)
def test_the_batch_of_received_frames_is_the_prepared_batch(rows: list[tuple[Any, ...]]) -> None:
    """The writer recognises a batch prepare_frame would pass unchanged column by column; it
    must build exactly what preparing each frame builds, and project the same."""
    from tape.prepare import prepare_frame

    frames = [
        Frame("s", i, i, i, d, "websocket", k, raw, None, None, path, None, headers, error, checked)
        for i, (d, k, path, headers, error, checked, raw) in enumerate(rows)
    ]
    batch = tape.batches.prepared_batch(frames, list(zip(*frames, strict=True)))
    prepared = [prepare_frame(f) for f in frames]
    assert batch.table.equals(frames_table(prepared))
    assert (batch.bayeux, batch.http) == tape.batches.projected(prepared)


@given(
    st.lists(
        st.tuples(
            st.sampled_from(["s1", "s2"]),
            st.sampled_from(["websocket", "long-polling"]),
            st.lists(
                st.tuples(
                    st.sampled_from([b"[]", b'[{"channel":"/a"}]', b"{", b'{"password":"x"}']),
                    st.sampled_from([None, "invalid-json: oops"]),
                ),
                min_size=1,
                max_size=5,
            ),
        ),
        min_size=1,
        max_size=4,
    ),
    st.integers(min_value=0, max_value=6),
)
@settings(deadline=None)  # the first case may pay for pyarrow's first conversion
def test_a_batch_of_received_runs_is_the_batch_of_their_frames(
    spec: list[tuple[str, str, list[tuple[bytes, str | None]]]], cut: int
) -> None:
    """Runs (SessionLog.received's columns) become the Arrow batch their frames, prepared one
    by one, would: sessions and transports mixed or not, parse errors or not; and a run cut in
    two holds the same frames."""
    from tape.frame import ReceivedRun
    from tape.prepare import prepare_frame

    runs, seq = [], 1
    for session_id, transport, items in spec:
        walls = [1_700_000_000_000_000_000 + seq * 1000 + i for i in range(len(items))]
        runs.append(
            ReceivedRun(
                session_id,
                seq,
                transport,
                [raw for raw, _ in items],
                walls,
                [wall - 7 for wall in walls],
                [error for _, error in items],
            )
        )
        seq += len(items)
    frames = [frame for run in runs for frame in run.frames()]
    assert [f.seq for f in frames] == list(range(1, seq))
    batch = tape.batches.runs_batch(runs, [f.raw for f in frames])
    prepared = [prepare_frame(f) for f in frames]
    assert batch.table.equals(frames_table(prepared))
    assert (batch.bayeux, batch.http) == tape.batches.projected(prepared)
    head, tail = runs[0].split(min(cut, len(runs[0])))
    assert head.frames() + tail.frames() == runs[0].frames()
    assert head.size + tail.size == runs[0].size


def test_runs_are_cut_at_batch_bounds_and_every_frame_stored_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A run longer than a batch has room for, in rows or in bytes, is cut there and its rest
    goes first into the next batch; a frame written between runs keeps its place. Two sessions
    share the writer. Every frame is stored once, in seq order, as received."""
    from tape.frame import ReceivedRun, Session
    from tape.session import SessionLog

    monkeypatch.setattr(tape.writer, "BATCH_BYTES", 3000)
    batches: list[tuple[int, int]] = []
    real = tape.writer.runs_batch

    def watched(runs: Any, raws: Any) -> Any:
        batches.append((len(raws), sum(map(len, raws))))
        return real(runs, raws)

    monkeypatch.setattr(tape.writer, "runs_batch", watched)
    taken: list[
        tuple[str, int]
    ] = []  # (session, seq) of each frame, in the order batches are taken
    real_take = TapeWriter._take

    def take(self: TapeWriter) -> Any:
        job = real_take(self)
        for item in job.frames if job is not None else ():
            frames = item.frames() if isinstance(item, ReceivedRun) else [item]
            taken.extend((f.session_id, f.seq) for f in frames)
        return job

    monkeypatch.setattr(TapeWriter, "_take", take)
    writer = TapeWriter(tmp_path / "t.duckdb", batch_rows=7)
    logs = {sid: SessionLog(writer, Session(session_id=sid, transport="websocket")) for sid in "ab"}
    sent: dict[str, list[tuple[bytes, str | None]]] = {"a": [], "b": []}
    for i in range(1, 61):
        sid = "ab"[i // 10 % 2]
        raw = gws_frame_raw(i) if i % 4 else b"[" * 5
        error = None if i % 4 else "invalid-json: truncated"
        logs[sid].received(raw, "websocket", error)
        sent[sid].append((raw, error))
        if i % 10 == 0:
            logs[sid].release()  # runs of 10 frames: longer than a batch, ~7 kB each
        if i == 35:
            logs["b"].lifecycle("connected")  # a Frame among the runs
    for log in logs.values():
        log.close("stopped")
    writer.close()
    largest = max(len(raw) for frames in sent.values() for raw, _ in frames)
    assert batches, "no batch was built from runs"
    assert all(rows <= 7 and size < 3000 + largest for rows, size in batches)
    for sid in "ab":  # taken, so committed, in seq order: a crash leaves no gap
        seqs = [seq for session, seq in taken if session == sid]
        assert seqs == list(range(1, len(seqs) + 1))
    with TapeReader(writer.path) as reader:
        for sid, expected in sent.items():
            stored = list(reader.frames(sid))
            assert [f.seq for f in stored] == list(range(1, len(stored) + 1))
            received = [f for f in stored if f.kind == Kind.BAYEUX]
            assert [(f.raw, f.parse_error) for f in received] == expected
            assert all(f.direction == "in" and f.transport == "websocket" for f in received)
            walls = [f.t_wall_ns for f in received]
            assert walls == sorted(walls)
        lifecycle = [f for f in reader.frames("b") if f.kind == Kind.LIFECYCLE]
        assert [orjson.loads(f.raw)["event"] for f in lifecycle] == ["connected"]
        assert lifecycle[0].seq == 17  # after the 16 frames b received before it (i = 10-19, 30-35)


@pytest.mark.parametrize(("frames", "size"), [(1, 1400), (2, 600)])
def test_a_run_whose_last_frame_fills_the_batch_is_taken_whole(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, frames: int, size: int
) -> None:
    """The frame that takes a batch past its byte limit is the run's last (one frame bigger
    than a batch, say): the run goes whole, with no empty rest left in the queue for a batch
    of its own (that failed the writer, and the batch before it with it)."""
    from tape.frame import ReceivedRun, Session
    from tape.session import SessionLog

    monkeypatch.setattr(tape.writer, "BATCH_BYTES", 1000)
    raw = b" " * (size - 2) + b"[]"
    run = ReceivedRun(
        "s", 1, "websocket", [raw] * frames, [1] * frames, [1] * frames, [None] * frames
    )
    assert tape.batches.fit_run(run, 7, 1000) == (run, None)
    writer = TapeWriter(tmp_path / "t.duckdb")
    log = SessionLog(writer, Session(session_id="s", transport="websocket"))
    for _ in range(frames):
        log.received(raw, "websocket", None)
    log.release()
    time.sleep(0.5)  # the writer takes the run, then finds the queue empty
    log.check()
    log.close("stopped")
    writer.close()
    with TapeReader(writer.path) as reader:
        assert [f.seq for f in reader.frames("s")] == list(range(1, frames + 1))


def _bare_writer(batch_rows: int) -> TapeWriter:
    """A TapeWriter's queue without its file or threads: for driving _take by hand."""
    writer = object.__new__(TapeWriter)
    writer._gate, writer._take_lock = threading.Lock(), threading.Lock()
    writer._pending, writer._pending_bytes, writer._pending_rows = deque(), 0, 0
    writer._next_ticket, writer._batch_rows = 0, batch_rows
    writer._error, writer._closed, writer._wake = None, False, threading.Event()
    writer._backlog = threading.Event()
    writer._limit, writer._byte_limit = 10**9, 10**12
    writer.committed_frames = 0
    return writer


@given(
    st.lists(
        st.one_of(
            st.lists(st.integers(min_value=1, max_value=900), min_size=1, max_size=12),  # a run
            st.integers(min_value=1, max_value=900),  # a Frame
            st.just("session"),
            st.just("flush"),
        ),
        max_size=25,
    ),
    st.integers(min_value=1, max_value=9),
)
@settings(deadline=None)
def test_batches_take_the_queue_in_order_within_their_limits(
    queue: list[Any], batch_rows: int
) -> None:
    """_take over any queue of runs, Frames, session rows and flush markers: every frame once,
    in queue order, never an empty run, each batch within its rows and (but for its last frame)
    its bytes; and the queue's row and byte counts end at zero."""
    from tape.frame import ReceivedRun, Session
    from tape.writer import _Flush

    monkey_bytes = 2000
    writer = _bare_writer(batch_rows)
    expected: list[object] = []
    seq = 0
    for entry in queue:
        if isinstance(entry, list):
            raws = [b"x" * n for n in entry]
            run = ReceivedRun(
                "s",
                seq + 1,
                "websocket",
                raws,
                [0] * len(raws),
                [0] * len(raws),
                [None] * len(raws),
            )
            seq += len(raws)
            writer.write_run(run)
            expected.extend(("frame", f.seq, len(f.raw)) for f in run.frames())
        elif isinstance(entry, int):
            seq += 1
            writer.write(make_frame("s", seq, b"x" * entry))
            expected.append(("frame", seq, entry))
        elif entry == "session":
            writer.put_session(Session(session_id="s"))
            expected.append("session")
        else:
            writer._pending.append(_Flush())
            expected.append("flush")
    taken: list[object] = []
    original = tape.writer.BATCH_BYTES
    tape.writer.BATCH_BYTES = monkey_bytes  # small, so bytes bound batches too
    try:
        while (job := writer._take()) is not None:
            rows = [
                f
                for item in job.frames
                for f in (item.frames() if isinstance(item, ReceivedRun) else [item])
            ]
            assert all(len(item) > 0 for item in job.frames if isinstance(item, ReceivedRun))
            assert len(rows) <= batch_rows
            assert sum(len(f.raw) for f in rows[:-1]) < monkey_bytes
            taken.extend(("frame", f.seq, len(f.raw)) for f in rows)
            taken.extend("session" for _ in job.sessions)
            taken.extend("flush" for _ in job.markers)
    finally:
        tape.writer.BATCH_BYTES = original
    # frames keep their order; sessions and markers travel with the batch they were taken in
    assert [t for t in taken if t[0] == "frame"] == [e for e in expected if e[0] == "frame"]
    assert sorted(map(str, taken)) == sorted(map(str, expected))
    assert (writer._pending_rows, writer._pending_bytes) == (0, 0)


def test_the_database_is_attached_anew_without_losing_a_frame(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every REATTACH_FRAMES committed frames the writer attaches its file anew (DuckDB keeps
    per-row-group metadata of an attached file until then); both writer threads, sessions
    and every frame carry on."""
    monkeypatch.setattr(tape.writer, "REATTACH_FRAMES", 20_000)
    monkeypatch.setattr(TapeWriter, "_reattach_at", 20_000)
    path = tmp_path / "long.duckdb"
    writer = TapeWriter(path)
    total = 100_000
    raw = gws_frame_raw(1)
    for seq in range(1, total + 1):
        writer.write(make_frame("s1", seq, raw))
    writer.close()
    assert writer.reattached >= 3
    with duckdb.connect(str(path), read_only=True) as conn:
        rows = conn.execute("SELECT count(*), count(DISTINCT seq), max(seq) FROM frames").fetchall()
        assert rows == [(total, total, total)]
        assert conn.execute("SELECT count(*) FROM messages").fetchall()[0][0] > 0
