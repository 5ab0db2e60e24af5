"""`cometd-tape replay --fault` as a user runs it: the faults are injected and logged as they
happen, and a spec that cannot be used is a usage error that says what to write."""

from __future__ import annotations

import asyncio
import re
import signal
import subprocess
import sys
from pathlib import Path

import aiohttp

from tests.constants import ROOT, TIMEOUT
from tests.replay.tapes import CHANNELS, write_tape
from tests.replay.test_cli import Poller, refs, start_replay


async def test_faults_from_the_command_line_are_injected_and_logged(tmp_path: Path) -> None:
    tape = tmp_path / "t.duckdb"
    write_tape(tape, 20, 0.001)
    proc, line = await start_replay(
        tape, "--speed", "0", "--fault", "drop:nth=2", "--fault", "duplicate:nth=4", "--seed", "3"
    )
    try:
        match = re.search(r"on (http://127\.0\.0\.1:\d+/\S+)", line)
        assert match, line
        async with aiohttp.ClientSession() as http:
            client = Poller(http, match.group(1))
            await client.start(list(CHANNELS))
            got = refs(await client.until(20))
        proc.send_signal(signal.SIGINT)
        _, stderr = await asyncio.to_thread(proc.communicate, timeout=TIMEOUT)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert got == ["0", "2", "3", "3", *(str(i) for i in range(4, 20))]
    assert re.search(r"fault: [\d.]+ s drop -> \w+ \(/me/internal\): delivery #2", stderr)
    assert re.search(r"fault: [\d.]+ s duplicate -> \w+ \(/me/internal\): delivery #4", stderr)
    assert proc.returncode == 0


def test_a_bad_fault_spec_is_a_usage_error(tmp_path: Path) -> None:
    tape = tmp_path / "t.duckdb"
    write_tape(tape, 2, 0.001)
    result = subprocess.run(
        [sys.executable, "-m", "tape", "replay", str(tape), "--fault", "unknown-client"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=TIMEOUT * 3,
        check=False,
    )
    assert result.returncode == 2
    assert "unknown-client needs at=TIME or after=N" in result.stderr
    assert "Traceback" not in result.stderr
