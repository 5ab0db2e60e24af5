"""The recorder against a scripted server: GWS auth and CSRF, bad input, reconnect advice,
and the one-line errors a user sees. Interop with a real server is in test_faye_interop.py."""

from __future__ import annotations

import asyncio
import re
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from recorder.auth import Credentials
from recorder.cli import record_to_tape
from recorder.record import RecordOptions
from tape.reader import TapeReader
from tests.conftest import ROOT, TIMEOUT
from tests.recorder.scripted_server import HOLD, Script, ScriptedServer


@pytest.fixture
async def server() -> AsyncIterator[ScriptedServer]:
    srv = ScriptedServer(Script())
    await srv.start()
    yield srv
    await srv.stop()


def event(i: int, channel: str = "/v2/me/outbound") -> dict[str, object]:
    return {
        "channel": channel,
        "data": {"referenceId": str(i), "messageType": "OutboundRecordMessage"},
    }


@pytest.mark.parametrize("transport", ["long-polling", "websocket", "auto"])
async def test_gws_login_sends_cookie_and_csrf_and_stores_no_secret(
    transport: str, tmp_path: Path
) -> None:
    script = Script(user="agent1", password="hunter2-secret")
    script.connect_replies.append([event(1)])
    srv = ScriptedServer(script)
    await srv.start()
    try:
        tape = tmp_path / "auth.duckdb"
        options = RecordOptions(
            url=srv.url,
            credentials=Credentials("agent1", "hunter2-secret"),
            login_url=f"http://127.0.0.1:{srv.port}/api/v2/me",
            max_messages=1,
            transport=transport,
        )
        outcome = await asyncio.wait_for(record_to_tape(options, tape), TIMEOUT)
    finally:
        await srv.stop()
    assert outcome.ok, outcome.reason
    # Every Bayeux request (long-polling POSTs, the WebSocket upgrade) carries what the login
    # learnt; a strict WebSocket recording logs in over HTTP first too.
    sent = script.seen_headers + script.upgrade_headers
    assert sent
    if transport != "long-polling":
        assert script.upgrade_headers
    assert all(h.get("X-CSRF-TOKEN") == script.csrf_token for h in sent)
    assert all(f"JSESSIONID={script.cookie}" in h.get("Cookie", "") for h in sent)
    with TapeReader(tape) as reader:
        stored = b"".join(repr(f).encode() + f.raw for f in reader.frames())
        sessions = repr(reader.sessions()).encode()
    stored += sessions + tape.read_bytes()
    for secret in ("hunter2-secret", script.csrf_token, script.cookie, "YWdlbnQxOmh1bnRlcjI"):
        assert secret.encode() not in stored, secret
    assert b"[REDACTED]" in stored


async def test_bad_input_is_stored_raw_while_recording_goes_on(
    server: ScriptedServer, tmp_path: Path
) -> None:
    big = {"channel": "/v2/me/outbound", "data": {"pad": "x" * 5_000_000}}
    server.script.connect_replies.extend(
        [
            (200, b'[{"channel": "/meta/connect", oops'),  # invalid JSON
            (200, b'{"status": "ok"}'),  # an object, but not a Bayeux message
            [big],  # a 5 MB frame (the scripted server adds the connect reply)
            (500, b"<html>Internal Server Error</html>"),
            [event(7)],
        ]
    )
    tape = tmp_path / "bad.duckdb"
    options = RecordOptions(
        url=server.url, channels=("/v2/me/outbound",), transport="long-polling", max_messages=2
    )
    outcome = await asyncio.wait_for(record_to_tape(options, tape), TIMEOUT)
    assert outcome.ok, outcome.reason
    with TapeReader(tape) as reader:
        frames = [f for f in reader.frames() if f.direction == "in" and f.kind == "bayeux"]
        delivered = [m for m in reader.messages() if m.channel == "/v2/me/outbound"]
    errors = [f.parse_error for f in frames if f.parse_error]
    assert any(e.startswith("invalid JSON") for e in errors), errors
    assert any(e.startswith("missing channel") for e in errors), errors
    assert any(e.startswith("HTTP 500") for e in errors), errors
    assert any(len(f.raw) > 5_000_000 and f.parse_error is None for f in frames)
    assert len(delivered) == 2  # the 5 MB event and the one after the HTTP 500


async def test_a_binary_websocket_frame_is_stored_with_a_parse_error(
    server: ScriptedServer, tmp_path: Path
) -> None:
    server.script.connect_replies.extend([(200, b"BINARY:\x00\x01\xff"), [event(1)]])
    tape = tmp_path / "ws.duckdb"
    options = RecordOptions(
        url=server.url, transport="websocket", channels=("/v2/me/outbound",), max_messages=1
    )
    outcome = await asyncio.wait_for(record_to_tape(options, tape), TIMEOUT)
    assert outcome.ok, outcome.reason
    with TapeReader(tape) as reader:
        binary = [f for f in reader.frames() if f.raw == b"\x00\x01\xff"]
    assert binary
    assert binary[0].parse_error is not None
    assert binary[0].parse_error.startswith("binary WebSocket frame")


def run_cli(*args: str, env_password: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {"PATH": "/usr/bin:/bin", "PW": env_password or ""}
    return subprocess.run(
        [sys.executable, "-m", "tape", "record", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=TIMEOUT * 3,
        check=False,
    )


async def test_reconnect_none_stops_with_that_reason(
    server: ScriptedServer, tmp_path: Path
) -> None:
    refusal = {"successful": False, "error": "403::Go away", "advice": {"reconnect": "none"}}
    server.script.connect_replies.append(refusal)
    tape = tmp_path / "none.duckdb"
    result = await asyncio.to_thread(run_cli, server.url, "-o", str(tape))
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr
    assert "reconnect" in result.stderr.splitlines()[-1] or "none" in result.stderr
    with TapeReader(tape) as reader:
        (session,) = reader.sessions()
    assert session.end_reason is not None
    assert "none" in session.end_reason


@pytest.mark.parametrize("case", ["unreachable", "wrong-password", "not-cometd"])
async def test_first_contact_failures_are_one_line_errors(case: str, tmp_path: Path) -> None:
    script = Script(user="agent1", password="right")
    srv = ScriptedServer(script)
    await srv.start()
    url = {
        "unreachable": "http://127.0.0.1:9/cometd",
        "wrong-password": srv.url,
        "not-cometd": f"http://127.0.0.1:{srv.port}/api/v2/me",
    }[case]
    args = [url, "-o", str(tmp_path / "t.duckdb")]
    if case == "wrong-password":
        args += ["--user", "agent1", "--password-env", "PW"]
    try:
        result = await asyncio.to_thread(run_cli, *args, env_password="wrong")
    finally:
        await srv.stop()
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    error = [line for line in result.stderr.splitlines() if line.startswith("Error:")]
    expected = {
        "unreachable": "cannot reach",
        "wrong-password": "refused the credentials",
        "not-cometd": "does not look like a CometD server",
    }[case]
    assert error, result.stderr
    assert expected in error[0]
    # Nothing came from the server, so the run leaves no tape: a retry starts clean.
    assert "no tape written" in result.stderr
    assert not (tmp_path / "t.duckdb").exists()
    assert not (tmp_path / "t.duckdb.wal").exists()


async def test_an_existing_tape_is_refused_unless_appended_to_or_overwritten(
    server: ScriptedServer, tmp_path: Path
) -> None:
    server.script.connect_replies.extend([[event(i)] for i in range(6)])
    tape = tmp_path / "shift.duckdb"
    first = await asyncio.to_thread(run_cli, server.url, "-o", str(tape), "--max-messages", "1")
    assert first.returncode == 0, first.stderr
    again = await asyncio.to_thread(run_cli, server.url, "-o", str(tape), "--max-messages", "1")
    assert again.returncode == 1
    assert "Traceback" not in again.stderr
    assert "exists; add --append to add to it, --overwrite to replace it" in again.stderr
    appended = await asyncio.to_thread(
        run_cli, server.url, "-o", str(tape), "--max-messages", "1", "--append"
    )
    assert appended.returncode == 0, appended.stderr
    with TapeReader(tape) as reader:
        assert len(reader.sessions()) == 2
    replaced = await asyncio.to_thread(
        run_cli, server.url, "-o", str(tape), "--max-messages", "1", "--overwrite"
    )
    assert replaced.returncode == 0, replaced.stderr
    with TapeReader(tape) as reader:
        assert len(reader.sessions()) == 1
    both = await asyncio.to_thread(run_cli, server.url, "-o", str(tape), "--append", "--overwrite")
    assert both.returncode == 2
    assert "exclude each other" in both.stderr
    # An --overwrite run that fails before the server says anything puts the old tape back.
    before = tape.read_bytes()
    failed = await asyncio.to_thread(
        run_cli, "http://127.0.0.1:9/cometd", "-o", str(tape), "--overwrite"
    )
    assert failed.returncode == 1
    assert "the tape it was to replace is kept" in failed.stderr
    assert tape.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["shift.duckdb"]


def test_a_socks_proxy_is_refused_in_one_line(tmp_path: Path) -> None:
    result = run_cli(
        "http://127.0.0.1:9/cometd",
        "-o",
        str(tmp_path / "t.duckdb"),
        "--proxy",
        "socks5://u:pw@127.0.0.1:9",
    )
    assert result.returncode == 2
    assert "SOCKS is not supported" in result.stderr
    assert "pw@" not in result.stderr
    assert "Traceback" not in result.stderr


async def test_a_failing_tape_stops_the_recording_with_the_reason(
    server: ScriptedServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tape.writer import TapeWriter

    def disk_full(self: TapeWriter, *args: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(TapeWriter, "_commit", disk_full)
    options = RecordOptions(url=server.url, duration=TIMEOUT * 3)
    outcome = await asyncio.wait_for(record_to_tape(options, tmp_path / "full.duckdb"), TIMEOUT)
    assert not outcome.ok
    assert "No space left on device" in outcome.reason
    assert "the tape keeps the 0 frames committed before that" in outcome.reason


async def test_a_connect_answered_without_its_reply_is_retried_not_awaited_forever(
    server: ScriptedServer, tmp_path: Path
) -> None:
    server.script.connect_replies.extend([(200, b"[]"), [event(1)]])
    options = RecordOptions(
        url=server.url, channels=("/v2/me/outbound",), transport="long-polling", max_messages=1
    )
    outcome = await asyncio.wait_for(record_to_tape(options, tmp_path / "e.duckdb"), TIMEOUT)
    assert outcome.ok, outcome.reason


async def test_a_connect_never_answered_on_a_live_websocket_is_given_up_and_retried(
    server: ScriptedServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The socket answers pings, the server behind it stopped answering connects: after the
    advised timeout (2 s here) plus the grace, the recorder drops the socket and goes on."""
    monkeypatch.setattr("recorder.protocol.CONNECT_GRACE_S", 0.5)
    server.script.connect_replies.extend([HOLD, [event(1)]])
    options = RecordOptions(
        url=server.url, channels=("/v2/me/outbound",), transport="websocket", max_messages=1
    )
    tape = tmp_path / "held.duckdb"
    outcome = await asyncio.wait_for(record_to_tape(options, tape), TIMEOUT)
    assert outcome.ok, outcome.reason
    with TapeReader(tape) as reader:
        lifecycle = [
            bytes(r[0]).decode()
            for r in reader.conn.execute(
                "SELECT raw FROM frames WHERE kind = 'lifecycle' ORDER BY seq"
            ).fetchall()
        ]
        delivered = reader.conn.execute(
            "SELECT count(*) FROM messages WHERE channel = '/v2/me/outbound'"
        ).fetchall()[0][0]
    timeouts = [re.search(r"no /meta/connect reply within ([\d.]+) s", line) for line in lifecycle]
    waited = [float(m.group(1)) for m in timeouts if m]
    assert waited, lifecycle
    assert 2.5 <= waited[0] < 4  # the advised 2 s plus the 0.5 s grace
    assert delivered == 1


@pytest.mark.parametrize("transport", ["long-polling", "websocket"])
async def test_a_tape_that_fails_mid_recording_stops_it_with_one_error(
    server: ScriptedServer,
    tmp_path: Path,
    transport: str,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The disk fills while frames keep coming: the recorder stops with the tape's error as
    its reason, and nothing is logged besides (no traceback from a request task or from the
    socket's callback, where the next frame meets the failed tape first)."""
    import duckdb

    import tape.store

    def disk_full(conn: duckdb.DuckDBPyConnection, batch: object) -> None:
        raise duckdb.IOException("No space left on device (test)")

    monkeypatch.setattr(tape.store, "insert_batch", disk_full)
    for i in range(200):
        server.script.connect_replies.append([event(10 * i + j) for j in range(10)])
    options = RecordOptions(url=server.url, transport=transport, max_messages=10**6)
    tape_path = tmp_path / "full.duckdb"
    outcome = await asyncio.wait_for(record_to_tape(options, tape_path), TIMEOUT)
    assert not outcome.ok
    assert "No space left on device (test)" in outcome.reason
    assert [r.getMessage() for r in caplog.records if r.levelname in ("ERROR", "CRITICAL")] == []
    # The session row is still stored, when the database can take it, with why it ended.
    with TapeReader(tape_path) as reader:
        (session,) = reader.sessions()
    assert session.end_reason is not None
    assert "No space left on device (test)" in session.end_reason
    assert session.ended_ns is not None
