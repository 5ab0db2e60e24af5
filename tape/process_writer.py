"""A tape writer in its own process, for producers that must keep their CPU and their GIL.

`ProcessTapeWriter` is a FrameSink like `TapeWriter`, but the writing (redaction, Arrow
batches, DuckDB, the messages projection, checkpoints) runs in a child process. The producer
only appends to a list; a hand-off thread pickles what has gathered every few milliseconds and
sends it down a pipe. Measured on the capture proxy (2 cores): with the in-process writer, the
writer thread's GIL holds stalled the event loop, and the ack latency seen through the proxy
rose from ~25 ms to ~90-600 ms under 400 requests/s; with this one it stays at ~25 ms.

Durability: the child commits as `TapeWriter` does (every <=200 ms). If the producer is killed,
the child sees the pipe close, commits what it has and exits; if the child dies, the next
write or `check()` raises TapeError. `flush()` waits until everything written is committed.
"""

from __future__ import annotations

import atexit
import contextlib
import multiprocessing
import os
import pickle
import signal
import threading
import time
import traceback
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path

from tape.frame import Frame, Session
from tape.privacy import Privacy
from tape.runtime import keep_pandas_out_of_arrow, settle_gc
from tape.schema import TapeError
from tape.segments import Rotation, SegmentedWriter

HANDOFF_S = 0.02  # how often gathered frames go to the child
# The child runs at a lower priority, and DuckDB in it on one thread: measured on the proxy
# (2 cores), a writer at the same priority using both cores in bursts halved the proxy's
# throughput (~1,200 vs ~2,000 requests/s); niced, the recording costs little of it.
NICE = 10
# Back-pressure: a producer that outruns the child waits once this many items are gathered,
# so memory stays bounded (the pipe holds the batch in flight, the child its own queue).
GATHER_LIMIT = 50_000
GATHER_BYTES = 32 * 2**20
_FLUSH = "flush"


class ProcessTapeWriter:
    def __init__(
        self,
        path: Path | str,
        *,
        privacy: Privacy | None = None,
        segments: Segments | None = None,
    ) -> None:
        """`privacy`: as TapeWriter's; it goes to the child with its key, in memory only.
        `segments`: write a tape set in the folder `path` (tape/segments.py) instead."""
        self.path = Path(path)
        context = multiprocessing.get_context("spawn")  # never fork a process with threads
        self._conn, child = context.Pipe()
        self._proc = context.Process(
            target=_child,
            args=(str(self.path), child, privacy, segments),
            name="tape-writer",
            daemon=True,
        )
        self._proc.start()
        child.close()
        status = self._receive(timeout=60)
        if status != "ready":
            self._proc.join(5)
            raise TapeError(str(status))
        self._items: list[Frame | Session] = []
        self._lock = threading.Lock()  # one sender on the pipe at a time
        self._room = threading.Condition()
        self._error: str | None = None
        self._closed = False
        self._stop = threading.Event()
        self._gathered_bytes = 0
        self._thread = threading.Thread(target=self._handoff, name="tape-handoff", daemon=True)
        self._thread.start()
        # If the program ends without close() (an exception on the way out), close our end of
        # the pipe first: the child then commits what it has and exits, rather than waiting
        # for more while multiprocessing waits for it (atexit runs last-registered first).
        atexit.register(self._conn.close)

    # --- FrameSink --------------------------------------------------------------------------

    def write(self, frame: Frame) -> None:
        if self._error is not None or self._closed:
            self.check()
        self._items.append(frame)
        self._gathered_bytes += len(frame.raw)
        if len(self._items) >= GATHER_LIMIT or self._gathered_bytes >= GATHER_BYTES:
            self._wait_for_room()

    def _wait_for_room(self) -> None:
        with self._room:
            while (
                len(self._items) >= GATHER_LIMIT or self._gathered_bytes >= GATHER_BYTES
            ) and self._error is None:
                if not self._proc.is_alive() or not self._thread.is_alive():
                    break
                self._room.wait(0.1)

    def put_session(self, session: Session) -> None:
        if self._error is not None or self._closed:
            self.check()
        self._items.append(session)

    def check(self) -> None:
        if self._closed:
            raise TapeError(f"{self.path} is closed")
        if self._error is not None:
            raise TapeError(f"writing {self.path} failed: {self._error}")
        if not self._proc.is_alive() and not self._closed:
            self._error = f"the writer process exited (code {self._proc.exitcode})"
            raise TapeError(f"writing {self.path} failed: {self._error}")

    def flush(self) -> None:
        """Block until everything written so far is committed."""
        with self._lock:
            try:
                self._send_gathered()
                self._conn.send_bytes(pickle.dumps(_FLUSH))
                answer = self._receive(timeout=120)
            except (OSError, EOFError) as exc:
                answer = f"the writer process is gone ({exc})"
        if answer != "flushed":
            self._error = str(answer)
        self.check()

    def close(self) -> None:
        if self._closed:
            return
        self._stop.set()
        self._thread.join()
        with self._lock:
            try:
                self._send_gathered()
                self._conn.send_bytes(pickle.dumps(None))
                answer = self._receive(timeout=300)
            except (OSError, EOFError) as exc:
                answer = f"the writer process is gone ({exc})"
        self._closed = True
        self._proc.join(30)
        self._conn.close()
        atexit.unregister(self._conn.close)
        if answer != "closed":
            self._error = self._error or str(answer)
        if self._error is not None:
            raise TapeError(f"writing {self.path} failed: {self._error}")

    def __enter__(self) -> ProcessTapeWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- the hand-off -----------------------------------------------------------------------

    def _handoff(self) -> None:
        while not self._stop.wait(HANDOFF_S):
            if not self._items:
                continue
            with self._lock:
                try:
                    self._send_gathered()
                except (OSError, EOFError) as exc:
                    self._error = self._error or f"the writer process is gone ({exc})"
                    return
                except BaseException as exc:  # e.g. MemoryError: say so, never stall silently
                    self._error = self._error or f"handing frames to the writer failed: {exc!r}"
                    return
                if self._conn.poll():  # the child only speaks unasked to report a failure
                    self._error = str(self._receive(timeout=1))
                    return

    def _send_gathered(self) -> None:
        items, self._items = self._items, []  # swapping is atomic under the GIL
        self._gathered_bytes = 0
        with self._room:
            self._room.notify_all()
        if items:
            self._conn.send_bytes(pickle.dumps(items, protocol=pickle.HIGHEST_PROTOCOL))

    def _receive(self, timeout: float) -> object:
        deadline = time.monotonic() + timeout
        while not self._conn.poll(0.1):
            if not self._proc.is_alive() or time.monotonic() > deadline:
                return f"the writer process exited (code {self._proc.exitcode})"
        try:
            return pickle.loads(self._conn.recv_bytes())
        except (OSError, EOFError) as exc:
            return f"the writer process is gone ({exc})"


@dataclass(frozen=True, slots=True)
class Segments:
    """What a ProcessTapeWriter's child writes segments by: `rotation` (None: one segment) and
    the segments' name prefix (a proxy worker's `w1-`)."""

    rotation: Rotation | None = None
    prefix: str = ""


def _child(
    path: str, conn: Connection, privacy: Privacy | None = None, segments: Segments | None = None
) -> None:
    """The writer process: a TapeWriter (or a SegmentedWriter) fed from the pipe until None, or
    the pipe closes."""
    from tape.writer import TapeWriter  # imported here: the parent need not load DuckDB

    # Ctrl-C reaches the whole process group: the child must not die of it before it has
    # committed. It stops when told (None) or when the pipe closes.
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, signal.SIG_IGN)

    with contextlib.suppress(OSError, AttributeError):  # AttributeError: no nice() on Windows
        os.nice(NICE)  # forwarding first: the writer catches up in the gaps
    keep_pandas_out_of_arrow()
    writer: TapeWriter | SegmentedWriter
    try:
        if segments is None:
            writer = TapeWriter(path, threads=1, privacy=privacy)
        else:
            writer = SegmentedWriter(
                Path(path),
                segments.rotation,
                prefix=segments.prefix,
                opener=lambda p: TapeWriter(p, threads=1, privacy=privacy),
            )
    except Exception as exc:
        conn.send_bytes(pickle.dumps(str(exc)))
        return
    conn.send_bytes(pickle.dumps("ready"))
    settle_gc()
    try:
        while True:
            try:
                message = pickle.loads(conn.recv_bytes())
            except (EOFError, OSError):
                break  # the producer is gone: keep what came, below
            if message is None:
                break
            if message == _FLUSH:
                writer.flush()
                conn.send_bytes(pickle.dumps("flushed"))
                continue
            for item in message:
                if isinstance(item, Frame):
                    writer.write(item)
                else:
                    writer.put_session(item)
        writer.close()
    except Exception as exc:
        detail = str(exc) or traceback.format_exc(limit=1)
        with contextlib.suppress(OSError, EOFError):
            conn.send_bytes(pickle.dumps(detail))
        return
    with contextlib.suppress(OSError, EOFError):
        conn.send_bytes(pickle.dumps("closed"))
