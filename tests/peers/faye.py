"""A real Faye (npm `faye`) Bayeux server in a Node child process, for tests.

`FayeServer` runs `node tests/peers/faye_server.js` on 127.0.0.1, mounted at `/cometd`, and
drives it with JSON-line commands over the child's stdin/stdout. Register the `faye_server`
fixture in tests/conftest.py with::

    from tests.peers.faye import faye_server  # noqa: F401

Node must be on PATH and the pinned Faye installed with `npm ci --prefix tests`.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import itertools
import json
import os
import shutil
import subprocess
import threading
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

import pytest

from tests.constants import TIMEOUT

PEERS = Path(__file__).resolve().parent
TESTS = PEERS.parent
SCRIPT = PEERS / "faye_server.js"
NODE_MODULES = TESTS / "node_modules"
INSTALL_HINT = "run `npm ci --prefix tests` (from the repository root) to install the pinned Faye"

GWS_CHANNELS = ("/v2/me/outbound", "/me/internal")

Json = dict[str, Any]


@dataclass(frozen=True)
class TlsFiles:
    """PEM files for a Faye server over HTTPS: its certificate chain and key, and the CA its
    clients' certificates must be signed by (None: no client certificate asked for)."""

    cert: Path
    key: Path
    client_ca: Path | None = None


class FayeError(RuntimeError):
    """The Faye server could not start, died, or answered a command with ok: false."""


class _Pending:
    """One command waiting for its answer line."""

    def __init__(self) -> None:
        self.done = threading.Event()
        self.answer: Json | None = None


class FayeServer:
    """A real Faye server in a child process: start, drive with commands, kill, restart, stop.

    `command()` and the helpers built on it are thread-safe and may overlap (answers are matched
    by id). The `a`-prefixed coroutines run them in a worker thread for asyncio tests.
    """

    def __init__(
        self, *, timeout_s: float = 60.0, node: str = "node", tls: TlsFiles | None = None
    ) -> None:
        self.timeout_s = timeout_s  # Faye's `timeout` option (FAYE_TIMEOUT), in seconds
        self.node = node
        self.tls = tls  # serve HTTPS (and WSS) with these files
        self._proc: subprocess.Popen[str] | None = None
        self._port: int | None = None
        self._ids = itertools.count(1)
        self._write_lock = threading.Lock()
        self._pending_lock = threading.Lock()
        self._pending: dict[int, _Pending] = {}
        self._stderr: collections.deque[str] = collections.deque(maxlen=50)
        self._threads: list[threading.Thread] = []

    # -- lifecycle ------------------------------------------------------------------------------

    def start(self, port: int = 0) -> None:
        """Spawn the server on `port` (0 = a free port) and wait for its ready line."""
        if self._proc is not None:
            raise FayeError("the Faye server is already running; stop() or kill() it first")
        node = shutil.which(self.node)
        if node is None:
            raise FayeError(f"`{self.node}` is not on PATH: install Node 20, then {INSTALL_HINT}")
        if not (NODE_MODULES / "faye" / "package.json").is_file():
            raise FayeError(f"Faye is not installed in {NODE_MODULES}: {INSTALL_HINT}")

        env = dict(os.environ, FAYE_TIMEOUT=str(self.timeout_s))
        if self.tls is not None:
            env.update(FAYE_TLS_CERT=str(self.tls.cert), FAYE_TLS_KEY=str(self.tls.key))
            if self.tls.client_ca is not None:
                env["FAYE_TLS_CLIENT_CA"] = str(self.tls.client_ca)
        proc = subprocess.Popen(
            [node, str(SCRIPT), str(port)],
            cwd=TESTS,
            env=env,
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
        self._stderr.clear()
        ready: list[Json] = []
        got_ready = threading.Event()
        self._threads = [
            threading.Thread(
                target=self._read_stdout,
                args=(proc.stdout, ready, got_ready),
                name=f"faye-stdout-{proc.pid}",
                daemon=True,
            ),
            threading.Thread(
                target=self._read_stderr,
                args=(proc.stderr,),
                name=f"faye-stderr-{proc.pid}",
                daemon=True,
            ),
        ]
        for thread in self._threads:
            thread.start()

        if not got_ready.wait(TIMEOUT) or not ready or ready[0].get("ready") is not True:
            detail = ready[0] if ready else "no ready line"
            self.kill()
            raise FayeError(f"the Faye server did not start ({detail}){self._stderr_tail()}")
        self._port = int(ready[0]["port"])

    def kill(self) -> None:
        """SIGKILL the server process we started (by its PID) and reap it. Idempotent."""
        proc = self._proc
        if proc is None:
            return
        if proc.poll() is None:
            proc.kill()
        proc.wait(TIMEOUT)
        self._finish(proc)

    def restart(self) -> None:
        """Kill the server and start a fresh one on the same port (all Faye state is lost)."""
        port = self.port
        self.kill()
        self.start(port)

    def stop(self) -> None:
        """Close the server's stdin (it exits at EOF), wait, then terminate or kill. Idempotent."""
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
        if self._proc is proc:
            self._proc = None

    def __enter__(self) -> FayeServer:
        if self._proc is None:
            self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- addresses ------------------------------------------------------------------------------

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    @property
    def pid(self) -> int:
        if self._proc is None:
            raise FayeError("the Faye server is not running")
        return self._proc.pid

    @property
    def port(self) -> int:
        if self._port is None:
            raise FayeError("the Faye server has not been started")
        return self._port

    @property
    def url(self) -> str:
        scheme = "https" if self.tls is not None else "http"
        return f"{scheme}://127.0.0.1:{self.port}/cometd"

    @property
    def ws_url(self) -> str:
        scheme = "wss" if self.tls is not None else "ws"
        return f"{scheme}://127.0.0.1:{self.port}/cometd"

    # -- commands -------------------------------------------------------------------------------

    def command(self, cmd: Json, *, timeout: float | None = None) -> Json:
        """Send one command and return its answer; raise FayeError unless the answer is ok."""
        answer = self.raw_command(cmd, timeout=timeout)
        if answer.get("ok") is not True:
            raise FayeError(
                f"Faye command {cmd.get('cmd')!r} failed: {answer.get('error', answer)}"
            )
        return answer

    def raw_command(self, cmd: Json, *, timeout: float | None = None) -> Json:
        """Send one command and return its answer as is, ok or not."""
        proc = self._proc
        if proc is None or proc.stdin is None:
            raise FayeError("the Faye server is not running")
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
            raise FayeError(f"the Faye server is gone ({exc}){self._stderr_tail()}") from exc
        if not pending.done.wait(wait):
            with self._pending_lock:
                self._pending.pop(ident, None)
            raise FayeError(f"no answer to Faye command {cmd.get('cmd')!r} within {wait:g} s")
        if pending.answer is None:
            raise FayeError(
                f"the Faye server exited before answering {cmd.get('cmd')!r}{self._stderr_tail()}"
            )
        return pending.answer

    async def acommand(self, cmd: Json, *, timeout: float | None = None) -> Json:
        return await asyncio.to_thread(self.command, cmd, timeout=timeout)

    def publish(
        self, channel: str, data: Iterable[object], *, timeout: float | None = None
    ) -> Json:
        """Publish each item of `data` on `channel`, in order, from Faye's in-process client."""
        return self.command(
            {"cmd": "publish", "channel": channel, "data": list(data)}, timeout=timeout
        )

    def publish_gws(self, count: int, start: int = 0, *, timeout: float | None = None) -> Json:
        """Publish `count` GWS pairs (ack on /v2/me/outbound, then event on /me/internal)."""
        return self.command({"cmd": "gws", "count": count, "start": start}, timeout=timeout)

    def blast(
        self,
        channel: str,
        count: int,
        size: int = 500,
        *,
        timeout: float | None = None,
        via: str = "client",
    ) -> Json:
        """Publish `count` ~`size`-byte messages {seq, pad} as fast as Faye can; has elapsed_ms.

        `via="engine"` hands them straight to Faye's engine (no in-process client round trip)."""
        return self.command(
            {"cmd": "blast", "channel": channel, "count": count, "size": size, "via": via},
            timeout=timeout,
        )

    def pace(
        self,
        rate: float,
        duration: float,
        start: int = 0,
        *,
        tick_ms: int = 5,
        timeout: float | None = None,
    ) -> Json:
        """Publish GWS pairs start, start + 1, ... (referenceId str(i)) at `rate` pairs a second
        for `duration` seconds, pair i due i / rate s after the start (an absolute clock, checked
        every `tick_ms`), straight into Faye's engine. Returns once done, with published
        (messages), pairs, started_monotonic_ns, elapsed_ms and max_lag_ms (the timer's worst)."""
        wait = duration + TIMEOUT if timeout is None else timeout
        return self.command(
            {
                "cmd": "pace",
                "rate": rate,
                "duration_ms": round(duration * 1000),
                "start": start,
                "tick_ms": tick_ms,
            },
            timeout=wait,
        )

    def clients(self) -> Json:
        """Handshake/disconnect counts, live clients, subscriptions; Faye's own client excluded."""
        return self.command({"cmd": "clients"})

    def wait_subscribed(
        self,
        channels: Sequence[str] = GWS_CHANNELS,
        count: int = 1,
        *,
        timeout: float | None = None,
    ) -> Json:
        """Return once at least `count` clients are subscribed to every one of `channels`."""
        wait = TIMEOUT if timeout is None else timeout
        return self.command(
            {
                "cmd": "wait_subscribed",
                "channels": list(channels),
                "count": count,
                "timeout_ms": int(wait * 1000),
            },
            timeout=wait + TIMEOUT / 2,
        )

    async def apublish(
        self, channel: str, data: Iterable[object], *, timeout: float | None = None
    ) -> Json:
        items = list(data)
        return await asyncio.to_thread(self.publish, channel, items, timeout=timeout)

    async def apublish_gws(
        self, count: int, start: int = 0, *, timeout: float | None = None
    ) -> Json:
        return await asyncio.to_thread(self.publish_gws, count, start, timeout=timeout)

    async def ablast(
        self,
        channel: str,
        count: int,
        size: int = 500,
        *,
        timeout: float | None = None,
        via: str = "client",
    ) -> Json:
        return await asyncio.to_thread(self.blast, channel, count, size, timeout=timeout, via=via)

    async def apace(
        self,
        rate: float,
        duration: float,
        start: int = 0,
        *,
        tick_ms: int = 5,
        timeout: float | None = None,
    ) -> Json:
        return await asyncio.to_thread(
            self.pace, rate, duration, start, tick_ms=tick_ms, timeout=timeout
        )

    async def aclients(self) -> Json:
        return await asyncio.to_thread(self.clients)

    async def await_subscribed(
        self,
        channels: Sequence[str] = GWS_CHANNELS,
        count: int = 1,
        *,
        timeout: float | None = None,
    ) -> Json:
        """The coroutine form of wait_subscribed()."""
        return await asyncio.to_thread(self.wait_subscribed, channels, count, timeout=timeout)

    # -- child process output -------------------------------------------------------------------

    def _read_stdout(self, stream: TextIO, ready: list[Json], got_ready: threading.Event) -> None:
        try:
            for line in stream:
                try:
                    message = json.loads(line)
                except ValueError:
                    self._stderr.append(f"(stdout) {line.rstrip()}")
                    continue
                if not isinstance(message, dict):
                    continue
                if "ready" in message and not got_ready.is_set():
                    ready.append(message)
                    got_ready.set()
                    continue
                ident = message.get("id")
                with self._pending_lock:
                    pending = self._pending.pop(ident, None) if isinstance(ident, int) else None
                if pending is not None:
                    pending.answer = message
                    pending.done.set()
        except (OSError, ValueError):
            pass
        finally:
            got_ready.set()
            with self._pending_lock:
                orphans = list(self._pending.values())
                self._pending.clear()
            for pending in orphans:
                pending.done.set()  # answer stays None: the server died

    def _read_stderr(self, stream: TextIO) -> None:
        try:
            for line in stream:
                self._stderr.append(line.rstrip())
        except (OSError, ValueError):
            pass

    def _stderr_tail(self) -> str:
        lines = list(self._stderr)
        return (":\n" + "\n".join(lines[-20:])) if lines else ""


@pytest.fixture
def faye_server() -> Iterator[FayeServer]:
    """A started Faye server on a free 127.0.0.1 port (url: http://127.0.0.1:N/cometd)."""
    server = FayeServer()
    try:
        server.start()
        yield server
    finally:
        server.stop()
