"""Running the real `cometd-tape` CLI in a child process, as a user does."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.constants import ROOT, TIMEOUT


def cometd_tape(
    *args: str, cwd: Path = ROOT, stdin: str | None = None, timeout: float = TIMEOUT * 6
) -> subprocess.CompletedProcess[str]:
    """`python -m tape ARGS...`; stdout and stderr captured, the exit code not checked."""
    return subprocess.run(
        [sys.executable, "-m", "tape", *args],
        cwd=cwd,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
