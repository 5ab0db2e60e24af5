"""A real headless Chromium (Debian's `chromium`), driven over the DevTools protocol.

Loads a page, collects console errors, uncaught exceptions and failed loads, evaluates
JavaScript in it and takes a full-page screenshot.
"""

from __future__ import annotations

import base64
import contextlib
import itertools
import json
import os
import re
import shutil
import signal
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from websockets.sync.client import ClientConnection, connect

from tests.constants import TIMEOUT

FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--remote-debugging-address=127.0.0.1",
    "--remote-debugging-port=0",
    "--window-size=1000,800",
]


def chromium_path() -> str:
    for name in ("chromium", "chromium-browser"):
        found = shutil.which(name)
        if found:
            return found
    raise AssertionError("Debian's chromium is not installed: `apt-get install chromium`")


def _group_alive(group: int) -> bool:
    """Whether a process of `group` still runs (a zombie, left for PID 1 to reap, does not)."""
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError):
            fields = stat.read_text().rpartition(")")[2].split()
            if int(fields[2]) == group and fields[0] != "Z":
                return True
    return False


@dataclass
class PageResult:
    errors: list[str] = field(default_factory=list)
    value: Any = None
    screenshot: bytes = b""


class Browser:
    def __init__(self) -> None:
        self._profile = tempfile.TemporaryDirectory(prefix="chromium-")
        self._proc = subprocess.Popen(
            [chromium_path(), *FLAGS, f"--user-data-dir={self._profile.name}", "about:blank"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,  # its own process group: its helpers are ended with it
        )
        self._ids = itertools.count(1)
        self._pending: list[dict[str, Any]] = []
        self._stack = contextlib.ExitStack()
        try:
            self._ws = self._stack.enter_context(
                connect(self._devtools_url(), max_size=64 * 1024 * 1024)
            )
        except BaseException:
            self.close()  # chromium started: never leave it (in its own session) running
            raise

    def _devtools_url(self) -> str:
        assert self._proc.stderr is not None
        deadline = time.monotonic() + TIMEOUT * 3
        while time.monotonic() < deadline:
            line = self._proc.stderr.readline()
            if not line and self._proc.poll() is not None:
                raise AssertionError(f"chromium exited with {self._proc.returncode}")
            found = re.search(r"DevTools listening on (ws://\S+)", line)
            if found:
                return found.group(1)
        raise AssertionError(f"chromium did not open its DevTools port within {TIMEOUT * 3} s")

    def close(self) -> None:
        self._stack.close()
        # The group chromium leads (renderer, GPU and other helpers), not only its main process:
        # a helper still running kept writing to the profile while it was removed (one CI run).
        group = self._proc.pid
        with contextlib.suppress(ProcessLookupError):
            os.killpg(group, signal.SIGTERM)
        try:
            self._proc.wait(TIMEOUT)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(group, signal.SIGKILL)
            self._proc.wait()
        deadline = time.monotonic() + TIMEOUT / 2
        while _group_alive(group) and time.monotonic() < deadline:
            time.sleep(0.05)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(group, signal.SIGKILL)
        # A file written at the last moment would still fail the removal: try again for a while.
        deadline = time.monotonic() + TIMEOUT
        while True:
            try:
                self._profile.cleanup()
                return
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)

    def __enter__(self) -> Browser:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def load(
        self, url: str, script: str, *, timeout: float = TIMEOUT * 3, width: int | None = None
    ) -> PageResult:
        """Open `url`, wait for load, evaluate `script` (an expression), take a screenshot.
        `width`: the viewport's width in CSS pixels (default: the window's, 1000)."""
        result = PageResult()
        target = self._call("Target.createTarget", {"url": "about:blank"})["targetId"]
        session = self._call("Target.attachToTarget", {"targetId": target, "flatten": True})[
            "sessionId"
        ]
        for domain in ("Page", "Runtime", "Log"):
            self._call(f"{domain}.enable", session=session)
        if width is not None:
            self._call(
                "Emulation.setDeviceMetricsOverride",
                {"width": width, "height": 800, "deviceScaleFactor": 1, "mobile": False},
                session=session,
            )
        self._call("Page.navigate", {"url": url}, session=session)
        self._wait_for("Page.loadEventFired", session, result, timeout)
        evaluated = self._call(
            "Runtime.evaluate", {"expression": script, "returnByValue": True}, session=session
        )
        result.value = evaluated["result"].get("value")
        shot = self._call(
            "Page.captureScreenshot",
            {"format": "png", "captureBeyondViewport": True},
            session=session,
        )
        result.screenshot = base64.b64decode(shot["data"])
        self._call("Target.closeTarget", {"targetId": target})
        return result

    # --- protocol ----------------------------------------------------------------------------

    def _call(
        self, method: str, params: dict[str, Any] | None = None, *, session: str | None = None
    ) -> dict[str, Any]:
        ident = next(self._ids)
        message: dict[str, Any] = {"id": ident, "method": method, "params": params or {}}
        if session:
            message["sessionId"] = session
        self._ws.send(json.dumps(message))
        while True:
            reply = json.loads(self._ws.recv(timeout=TIMEOUT * 3))
            if reply.get("id") == ident:
                if "error" in reply:
                    raise AssertionError(f"{method}: {reply['error']}")
                return dict(reply.get("result", {}))
            self._pending.append(reply)

    def _wait_for(self, event: str, session: str, result: PageResult, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        seen = False
        while not seen:
            if self._pending:
                message = self._pending.pop(0)
            else:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise AssertionError(f"no {event} within {timeout} s")
                message = json.loads(_recv(self._ws, remaining))
            if message.get("sessionId") != session:
                continue
            seen = message.get("method") == event
            _collect_error(message, result)
        # Errors raised while the page ran its last scripts arrive just after load.
        end = time.monotonic() + 0.5
        while time.monotonic() < end:
            try:
                message = json.loads(_recv(self._ws, end - time.monotonic()))
            except TimeoutError:
                break
            _collect_error(message, result)


def _recv(ws: ClientConnection, timeout: float) -> str | bytes:
    return ws.recv(timeout=max(timeout, 0.01))


def _collect_error(message: dict[str, Any], result: PageResult) -> None:
    method, params = message.get("method"), message.get("params", {})
    if method == "Runtime.consoleAPICalled" and params.get("type") in ("error", "assert"):
        result.errors.append(f"console.{params['type']}: {params.get('args')}")
    elif method == "Runtime.exceptionThrown":
        result.errors.append(f"exception: {params.get('exceptionDetails')}")
    elif method == "Log.entryAdded" and params.get("entry", {}).get("level") == "error":
        result.errors.append(f"log: {params['entry'].get('text')}")
