"""Committed frames survive `kill -9`: the tape reopens without repair, gapless from 1."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tape.reader import TapeReader
from tests.conftest import ROOT, TIMEOUT
from tests.reliability.crash_writer import RATE


@pytest.mark.parametrize("flat_out", [False, True], ids=["steady", "flat-out"])
def test_sigkill_loses_no_committed_frame(tmp_path: Path, flat_out: bool) -> None:
    """Steady: the loss window at a known rate. Flat out: both writer threads have a batch in
    flight when the kill comes, and commits in queue order must still leave no gap."""
    path = tmp_path / "crash.duckdb"
    args = ["--flat-out"] if flat_out else []
    child = subprocess.Popen(
        [sys.executable, "-m", "tests.reliability.crash_writer", str(path), *args],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert child.stdout is not None
    enqueued = committed = 0
    deadline = time.monotonic() + TIMEOUT
    while committed < 30_000 and time.monotonic() < deadline:
        enqueued, committed = map(int, child.stdout.readline().split())
    os.kill(child.pid, signal.SIGKILL)
    child.wait()
    assert committed >= 30_000, "the writer never committed enough frames to test"

    with TapeReader(path) as reader:
        seqs = [f.seq for f in reader.frames("crash")]
        messages = sum(1 for _ in reader.messages("crash"))
    assert seqs == list(range(1, len(seqs) + 1))  # gapless from 1
    assert len(seqs) >= committed  # every frame committed before the kill is there
    assert messages == 2 * len(seqs)  # the projection committed with its frames
    lost = enqueued - len(seqs)
    if flat_out:
        print(f"\nflat out: {len(seqs)} frames committed, {lost} enqueued but not committed")
        return
    print(
        f"\nloss window: {lost} frames enqueued but not committed = {lost / RATE * 1000:.0f} ms "
        f"at {RATE} frames/s"
    )
