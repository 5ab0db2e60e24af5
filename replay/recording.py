"""Recording for the pytest plugin: the capture proxy (`python -m tape proxy`) runs as a child
process in front of the upstream, on a free 127.0.0.1 port it reports on its first line, and
writes a work tape beside the real one; the work tape takes the tape's place only when the
test passed (as JSONL when the tape's name ends in .jsonl).

A child process, not an import: `replay` may import only `tape` (tests/test_layout.py), and
the proxy tunes the garbage collector and the signal handlers of the process it runs in.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
from collections import deque
from pathlib import Path
from typing import Any

from replay.player import ClientSeen
from replay.responder import Unmatched
from replay.server import DEFAULT_PATHS

START_S = 60.0  # the proxy and its tape writer process start in ~0.7 s on an idle machine
STOP_S = 300.0  # its writer commits what it holds before it exits
_READY = re.compile(r"^proxy (http://\S+) -> ")


class RecordingError(Exception):
    """The capture proxy could not start, or failed: the message is its own."""


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "tape", *args]


class ProxyProcess:
    """`cometd-tape proxy --upstream U --listen 127.0.0.1:0 -o TAPE` as a child process; its
    stderr is read on a thread (its last lines are kept for the error messages)."""

    def __init__(self, upstream: str, output: Path, *, append: bool) -> None:
        command = _cli("proxy", "--upstream", upstream, "--listen", "127.0.0.1:0")
        command += ["-o", str(output), *(["--append"] if append else [])]
        self.process = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.lines: deque[str] = deque(maxlen=40)
        self.origin: str | None = None
        self._ready = threading.Event()
        self._reader = threading.Thread(target=self._read, name="cometd-record", daemon=True)
        self._reader.start()
        if not self._ready.wait(START_S) or self.origin is None:
            self._kill()
            raise RecordingError(f"the capture proxy did not start: {self.error()}")

    def _read(self) -> None:
        assert self.process.stderr is not None
        for line in self.process.stderr:
            self.lines.append(line.rstrip())
            found = _READY.match(line)
            if found and self.origin is None:
                self.origin = found.group(1)
                self._ready.set()
        self._ready.set()  # it ended: whoever waits for it to start stops waiting

    def error(self) -> str:
        """Its `Error:` line, or else its last lines."""
        errors = [line for line in self.lines if line.startswith("Error:")]
        return " ".join(errors or list(self.lines)[-5:]) or "no output"

    def stop(self) -> None:
        """SIGTERM, which the proxy takes as the normal stop: it closes its sessions and its
        tape. A RecordingError when it exits other than 0."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            code = self.process.wait(STOP_S)
        except subprocess.TimeoutExpired:
            self._kill()
            raise RecordingError(f"the capture proxy did not stop within {STOP_S:.0f} s") from None
        self._reader.join(10)
        if code != 0:
            raise RecordingError(f"the capture proxy failed (exit status {code}): {self.error()}")

    def _kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait()
        self._reader.join(10)


def _run(*args: str) -> None:
    result = subprocess.run(_cli(*args), capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise RecordingError(f"cometd-tape {args[0]}: {result.stderr.strip()}")


def _remove(path: Path) -> None:
    for name in (path, path.with_name(path.name + ".wal")):
        name.unlink(missing_ok=True)


class Recording:
    """The fixture's handle while recording: the proxy's URLs where the replayer's would be.
    Nothing is replayed, so `clients`, `unmatched`, `emitted` and `faults` stay empty (faults
    are injected when the tape is replayed, not into the real upstream)."""

    recording = True

    def __init__(self, tape: Path, upstream: str, *, append: bool) -> None:
        self.tape = tape
        self.work = tape.with_name(f".{tape.name}.recording.duckdb")
        tape.parent.mkdir(parents=True, exist_ok=True)
        _remove(self.work)  # a crashed run's leftover
        if append and tape.suffix == ".jsonl":
            _run("import", str(tape), "-o", str(self.work))
        elif append:
            shutil.copyfile(tape, self.work)
        try:
            self.proxy = ProxyProcess(upstream, self.work, append=append)
        except RecordingError:
            _remove(self.work)
            raise
        self._stopped = False

    @property
    def url(self) -> str:
        return f"{self.proxy.origin}{DEFAULT_PATHS[0]}"

    @property
    def ws_url(self) -> str:
        return "ws" + self.url.removeprefix("http")

    @property
    def clients(self) -> list[ClientSeen]:
        return []

    @property
    def unmatched(self) -> list[Unmatched]:
        return []

    @property
    def emitted(self) -> int:
        return 0

    @property
    def faults(self) -> list[Any]:
        return []

    async def wait_emitted(self, count: int | None = None, timeout: float = 30.0) -> int:
        """Nothing is replayed while recording: returns 0 at once."""
        return 0

    def stop(self) -> None:
        """Stop the proxy: the work tape is closed and whole."""
        if not self._stopped:
            self._stopped = True
            self.proxy.stop()

    def keep(self) -> None:
        """The work tape becomes the tape (exported, for a .jsonl tape)."""
        if self.tape.suffix == ".jsonl":
            _run("export", str(self.work), "-o", str(self.tape), "--overwrite")
            _remove(self.work)
            return
        wal = self.tape.with_name(self.tape.name + ".wal")
        wal.unlink(missing_ok=True)  # an old WAL would be replayed onto the new tape
        os.replace(self.work, self.tape)
        with contextlib.suppress(FileNotFoundError):
            os.replace(self.work.with_name(self.work.name + ".wal"), wal)

    def discard(self) -> None:
        _remove(self.work)
