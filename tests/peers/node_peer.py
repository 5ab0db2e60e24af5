"""A Node child process speaking JSON lines: the machinery under every Node peer in the tests.

`NodeChild` spawns `node SCRIPT ARGS...` from tests/, checks that Node and the npm package the
script needs are there (saying how to install them if not), reads every stdout line as a JSON
object on a thread of its own and hands it to `_on_message`, keeps the tail of stderr for error
messages, and stops the child by closing its stdin (then SIGTERM, then SIGKILL, by its PID).

`NodePeer` is a server on it: the script prints one `{"ready": true, "port": N}` line once it
listens on 127.0.0.1, then answers every stdin line (a JSON command with an "id") with exactly
one stdout line carrying the same id; it exits at stdin EOF. Subclasses name the script, the
package and the environment: `CometdServer` (cometd_server.py) and `FayeServer` (faye.py).
`NodeClient` (node_client.py) is a `NodeChild` that reports what a Bayeux client sees instead
of answering: `FayeClient` (faye_client.py) and `CometdClient` (cometd_client.py) are ones.
"""

from __future__ import annotations

import collections
import contextlib
import itertools
import json
import os
import shutil
import subprocess
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar, TextIO

from tests.constants import TIMEOUT

PEERS = Path(__file__).resolve().parent
TESTS = PEERS.parent
NODE_MODULES = TESTS / "node_modules"

Json = dict[str, Any]


class PeerError(RuntimeError):
    """The peer could not start, died, or answered a command with ok: false."""


class _Pending:
    """One command waiting for its answer line."""

    def __init__(self) -> None:
        self.done = threading.Event()
        self.answer: Json | None = None


class NodeChild:
    """A Node script in a child process whose stdout is JSON lines: spawn, read, stop, kill."""

    name: ClassVar[str] = "the Node peer"
    script: ClassVar[Path]
    package: ClassVar[str]  # the npm package the script needs, under tests/node_modules
    error: ClassVar[type[PeerError]] = PeerError

    def __init__(self, *, node: str = "node") -> None:
        self.node = node
        self._proc: subprocess.Popen[str] | None = None
        self._write_lock = threading.Lock()
        self._stderr: collections.deque[str] = collections.deque(maxlen=50)
        self._threads: list[threading.Thread] = []
        self._returncode: int | None = None

    def env(self) -> dict[str, str]:
        """The child's environment (subclasses add their options)."""
        return dict(os.environ)

    def install_hint(self) -> str:
        return f"run `npm ci --prefix tests` (from the repository root) to install {self.package}"

    # -- lifecycle ------------------------------------------------------------------------------

    def _spawn(self, args: Sequence[str]) -> None:
        """Start `node SCRIPT ARGS...` and its stdout and stderr readers."""
        if self._proc is not None:
            raise self.error(f"{self.name} is already running; stop() or kill() it first")
        node = shutil.which(self.node)
        if node is None:
            raise self.error(
                f"`{self.node}` is not on PATH: install Node 20, then {self.install_hint()}"
            )
        if not (NODE_MODULES / self.package / "package.json").is_file():
            raise self.error(
                f"{self.package} is not installed in {NODE_MODULES}: {self.install_hint()}"
            )
        proc = subprocess.Popen(
            [node, str(self.script), *args],
            cwd=TESTS,
            env=self.env(),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            encoding="utf-8",
            bufsize=1,
        )
        assert proc.stdin is not None
        assert proc.stdout is not None
        assert proc.stderr is not None
        self._proc = proc
        self._returncode = None
        self._stderr.clear()
        self._threads = [
            threading.Thread(
                target=self._read_stdout,
                args=(proc.stdout,),
                name=f"node-stdout-{proc.pid}",
                daemon=True,
            ),
            threading.Thread(
                target=self._read_stderr,
                args=(proc.stderr,),
                name=f"node-stderr-{proc.pid}",
                daemon=True,
            ),
        ]
        for thread in self._threads:
            thread.start()

    def kill(self) -> None:
        """SIGKILL the process we started (by its PID) and reap it. Idempotent."""
        proc = self._proc
        if proc is None:
            return
        if proc.poll() is None:
            proc.kill()
        proc.wait(TIMEOUT)
        self._finish(proc)

    def stop(self) -> None:
        """Close the child's stdin (it exits at EOF), wait, then terminate or kill. Idempotent."""
        proc = self._proc
        if proc is None:
            return
        if proc.stdin is not None:
            with self._write_lock, contextlib.suppress(OSError):
                proc.stdin.close()
        try:
            proc.wait(TIMEOUT / 4)
        except subprocess.TimeoutExpired:
            proc.terminate()
            try:
                proc.wait(TIMEOUT / 4)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(TIMEOUT)
        self._finish(proc)

    def _finish(self, proc: subprocess.Popen[str]) -> None:
        for thread in self._threads:
            thread.join(TIMEOUT)
        self._threads = []
        for stream in (proc.stdin, proc.stdout, proc.stderr):
            if stream is not None:
                with contextlib.suppress(OSError):
                    stream.close()
        self._returncode = proc.returncode
        if self._proc is proc:
            self._proc = None

    # -- state ----------------------------------------------------------------------------------

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    @property
    def pid(self) -> int:
        if self._proc is None:
            raise self.error(f"{self.name} is not running")
        return self._proc.pid

    @property
    def returncode(self) -> int | None:
        """The exit status once the child exited (and until it is started again)."""
        return self._returncode if self._proc is None else self._proc.poll()

    # -- child process output -------------------------------------------------------------------

    def _loads(self, line: str) -> object:
        """Parse one stdout line (json: exact for any number; a subclass may trade for speed)."""
        return json.loads(line)

    def _on_message(self, message: Json) -> None:
        """One JSON object from the child's stdout (called on the reader thread)."""
        raise NotImplementedError

    def _on_bad_line(self, line: str) -> None:
        """A stdout line that is not a JSON object."""
        self._stderr.append(f"(stdout) {line.rstrip()}")

    def _on_eof(self) -> None:
        """The child's stdout ended: it exited (or closed it)."""

    def _read_stdout(self, stream: TextIO) -> None:
        try:
            for line in stream:
                try:
                    message = self._loads(line)
                except ValueError:  # json's and orjson's decode errors both are
                    self._on_bad_line(line)
                    continue
                if isinstance(message, dict):
                    self._on_message(message)
                else:
                    self._on_bad_line(line)
        except (OSError, ValueError):
            pass
        finally:
            self._on_eof()

    def _read_stderr(self, stream: TextIO) -> None:
        try:
            for line in stream:
                self._stderr.append(line.rstrip())
        except (OSError, ValueError):
            pass

    def _stderr_tail(self) -> str:
        lines = list(self._stderr)
        return (":\n" + "\n".join(lines[-20:])) if lines else ""


class NodePeer(NodeChild):
    """A peer server in a Node child process: start, drive with commands, kill, restart, stop.

    `command()` is thread-safe and calls may overlap (answers are matched by id).
    """

    name: ClassVar[str] = "the peer"

    def __init__(self, *, node: str = "node") -> None:
        super().__init__(node=node)
        self._port: int | None = None
        self._ids = itertools.count(1)
        self._pending_lock = threading.Lock()
        self._pending: dict[int, _Pending] = {}
        self._ready: list[Json] = []
        self._got_ready = threading.Event()

    # -- lifecycle ------------------------------------------------------------------------------

    def start(self, port: int = 0) -> None:
        """Spawn the server on `port` (0 = a free port) and wait for its ready line."""
        if self._proc is not None:
            raise self.error(f"{self.name} is already running; stop() or kill() it first")
        self._ready, self._got_ready = [], threading.Event()
        self._spawn([str(port)])
        ready = self._ready
        if not self._got_ready.wait(TIMEOUT) or not ready or ready[0].get("ready") is not True:
            detail = ready[0] if ready else "no ready line"
            self.kill()
            raise self.error(f"{self.name} did not start ({detail}){self._stderr_tail()}")
        self._port = int(ready[0]["port"])

    def restart(self) -> None:
        """Kill the server and start a fresh one on the same port (all its state is lost)."""
        port = self.port
        self.kill()
        self.start(port)

    # -- addresses ------------------------------------------------------------------------------

    @property
    def port(self) -> int:
        if self._port is None:
            raise self.error(f"{self.name} has not been started")
        return self._port

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/cometd"

    # -- commands -------------------------------------------------------------------------------

    def command(self, cmd: Json, *, timeout: float | None = None) -> Json:
        """Send one command and return its answer; raise unless the answer is ok."""
        answer = self.raw_command(cmd, timeout=timeout)
        if answer.get("ok") is not True:
            raise self.error(
                f"{self.name}: command {cmd.get('cmd')!r} failed: {answer.get('error', answer)}"
            )
        return answer

    def raw_command(self, cmd: Json, *, timeout: float | None = None) -> Json:
        """Send one command and return its answer as is, ok or not."""
        proc = self._proc
        if proc is None or proc.stdin is None:
            raise self.error(f"{self.name} is not running")
        wait = TIMEOUT if timeout is None else timeout
        ident = next(self._ids)
        pending = _Pending()
        with self._pending_lock:
            self._pending[ident] = pending
        line = json.dumps({**cmd, "id": ident}, separators=(",", ":")) + "\n"
        try:
            with self._write_lock:
                proc.stdin.write(line)
                proc.stdin.flush()
        except (OSError, ValueError) as exc:
            with self._pending_lock:
                self._pending.pop(ident, None)
            raise self.error(f"{self.name} is gone ({exc}){self._stderr_tail()}") from exc
        if not pending.done.wait(wait):
            with self._pending_lock:
                self._pending.pop(ident, None)
            raise self.error(f"no answer to command {cmd.get('cmd')!r} within {wait:g} s")
        if pending.answer is None:
            raise self.error(
                f"{self.name} exited before answering {cmd.get('cmd')!r}{self._stderr_tail()}"
            )
        return pending.answer

    # -- child process output -------------------------------------------------------------------

    def _on_message(self, message: Json) -> None:
        if "ready" in message and not self._got_ready.is_set():
            self._ready.append(message)
            self._got_ready.set()
            return
        ident = message.get("id")
        with self._pending_lock:
            pending = self._pending.pop(ident, None) if isinstance(ident, int) else None
        if pending is not None:
            pending.answer = message
            pending.done.set()

    def _on_eof(self) -> None:
        self._got_ready.set()
        with self._pending_lock:
            orphans = list(self._pending.values())
            self._pending.clear()
        for pending in orphans:
            pending.done.set()  # answer stays None: the server died
