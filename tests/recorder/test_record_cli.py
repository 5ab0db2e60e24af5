"""`cometd-tape record` as a user runs it: a clean stop on SIGTERM/SIGINT, and the options
that shape the requests and the session row."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from pathlib import Path

import orjson
import pytest

from tape.reader import TapeReader
from tests.constants import ROOT, TIMEOUT
from tests.peers.faye import FayeServer
from tests.recorder.scripted_server import Script, ScriptedServer


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
async def test_a_signal_stops_cleanly_with_disconnect_flush_and_summary(
    sig: signal.Signals, faye_server: FayeServer, tmp_path: Path
) -> None:
    tape = tmp_path / "sig.duckdb"
    proc = subprocess.Popen(
        [sys.executable, "-m", "tape", "record", faye_server.url, "-o", str(tape)],
        cwd=ROOT,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        await faye_server.await_subscribed()
        await faye_server.apublish_gws(3)
        await asyncio.sleep(0.5)
        os.kill(proc.pid, sig)
        _, stderr = await asyncio.to_thread(proc.communicate, timeout=TIMEOUT)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, stderr
    assert f"stopped by {sig.name}" in stderr
    assert "recorded" in stderr
    assert "Traceback" not in stderr
    with TapeReader(tape) as reader:
        (session,) = reader.sessions()
        frames = list(reader.frames())
        channels = [m.channel for m in reader.messages() if m.direction == "in"]
    assert session.end_reason == f"stopped by {sig.name}"
    assert session.ended_ns is not None
    assert any(b"/meta/disconnect" in f.raw for f in frames if f.direction == "out")
    assert channels.count("/v2/me/outbound") == 3
    assert orjson.loads(frames[-1].raw)["event"] == "stopped"


async def test_headers_cookies_and_labels(tmp_path: Path) -> None:
    script = Script()
    script.connect_replies.append([{"channel": "/v2/me/outbound", "data": {"n": 1}}])
    srv = ScriptedServer(script)
    await srv.start()
    tape = tmp_path / "opts.duckdb"
    cmd = [
        sys.executable,
        "-m",
        "tape",
        "record",
        srv.url,
        "-o",
        str(tape),
        "--max-messages",
        "1",
        "--header",
        "X-Agent: desk-7",
        "--cookie",
        "LB=node2",
        "--label",
        "env=qa",
        "--label",
        "ticket=GWS-42",
    ]
    try:
        result = await asyncio.to_thread(
            subprocess.run, cmd, cwd=ROOT, capture_output=True, text=True, timeout=TIMEOUT
        )
    finally:
        await srv.stop()
    assert result.returncode == 0, result.stderr
    assert all(h.get("X-Agent") == "desk-7" for h in script.seen_headers)
    assert all("LB=node2" in h.get("Cookie", "") for h in script.seen_headers)
    with TapeReader(tape) as reader:
        (session,) = reader.sessions()
    assert session.labels == {"env": "qa", "ticket": "GWS-42"}
    assert session.endpoint == srv.url
    assert session.end_reason == "1 messages recorded"


def test_bad_option_values_are_usage_errors(tmp_path: Path) -> None:
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "tape",
            "record",
            "http://127.0.0.1:1/cometd",
            "-o",
            str(tmp_path / "t.duckdb"),
            "--header",
            "no-colon",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        check=False,
    )
    assert result.returncode == 2
    assert "is not NAME:VALUE" in result.stderr
    assert "Traceback" not in result.stderr
