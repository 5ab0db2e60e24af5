"""Transport negotiation: `auto` handshakes over long-polling and goes on over WebSocket when
the server offers it and the upgrade works, else stays; the tape says which and why. The strict
choices do not fall back, and a strict WebSocket refused says so in one line."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import duckdb
import orjson
import pytest
from aiohttp import web

from recorder.auth import Credentials
from recorder.cli import record_to_tape
from recorder.record import RecordOptions
from tests.cli import cometd_tape
from tests.constants import ROOT, TIMEOUT
from tests.peers.cometd_server import CometdServer
from tests.peers.faye import FayeServer
from tests.recorder.scripted_server import Script, ScriptedServer


def event(i: int) -> dict[str, object]:
    return {"channel": "/v2/me/outbound", "data": {"referenceId": str(i)}}


@pytest.fixture
async def server() -> AsyncIterator[ScriptedServer]:
    srv = ScriptedServer(Script())
    await srv.start()
    yield srv
    await srv.stop()


def transports(tape: Path) -> tuple[str, list[dict[str, str]], list[tuple[str, str, str]]]:
    """The session's transport, its "transport" lifecycle events, and (direction, transport,
    channel of the first message) of every Bayeux frame."""
    with duckdb.connect(str(tape), read_only=True) as conn:
        row = conn.execute("SELECT transport FROM sessions").fetchone()
        frames = conn.execute(
            "SELECT kind, direction, transport, raw FROM frames ORDER BY seq"
        ).fetchall()
    assert row is not None
    chosen: list[dict[str, str]] = []
    wire: list[tuple[str, str, str]] = []
    for kind, direction, transport, raw in frames:
        body = orjson.loads(bytes(raw)) if raw else None
        if kind == "lifecycle" and isinstance(body, dict) and body["event"] == "transport":
            chosen.append(body)
        elif kind == "bayeux" and isinstance(body, list) and body:
            wire.append((direction, transport, body[0]["channel"]))
    return str(row[0]), chosen, wire


async def test_auto_goes_on_over_websocket_with_faye(
    faye_server: FayeServer, tmp_path: Path
) -> None:
    options = RecordOptions(url=faye_server.url, max_messages=4)
    tape = tmp_path / "auto.duckdb"
    task = asyncio.get_running_loop().create_task(record_to_tape(options, tape))
    await faye_server.await_subscribed()
    await faye_server.apublish_gws(2)
    outcome = await asyncio.wait_for(task, TIMEOUT)
    assert outcome.ok, outcome.reason
    used, chosen, wire = transports(tape)
    assert used == "websocket"
    assert chosen == [
        {
            "event": "transport",
            "chosen": "websocket",
            "reason": "the server offers websocket and the upgrade succeeded",
        }
    ]
    # the handshake over HTTP, everything after it over the socket
    assert wire[:2] == [
        ("out", "long-polling", "/meta/handshake"),
        ("in", "long-polling", "/meta/handshake"),
    ]
    assert {t for _, t, _ in wire[2:]} == {"websocket"}
    connects = [w for w in wire if w[2] == "/meta/connect" and w[0] == "out"]
    assert connects


async def test_auto_stays_on_long_polling_when_websocket_is_not_offered(
    server: ScriptedServer, tmp_path: Path
) -> None:
    server.script.connection_types = ["long-polling"]
    server.script.connect_replies.append([event(1)])
    tape = tmp_path / "lp.duckdb"
    options = RecordOptions(url=server.url, channels=("/v2/me/outbound",), max_messages=1)
    outcome = await asyncio.wait_for(record_to_tape(options, tape), TIMEOUT)
    assert outcome.ok, outcome.reason
    used, chosen, wire = transports(tape)
    assert used == "long-polling"
    assert chosen == [
        {
            "event": "transport",
            "chosen": "long-polling",
            "reason": "the server offers ['long-polling'], not websocket",
        }
    ]
    assert {t for _, t, _ in wire} == {"long-polling"}
    assert server.script.upgrade_headers == []  # not even tried


async def test_auto_falls_back_to_long_polling_when_the_upgrade_is_refused(
    server: ScriptedServer, tmp_path: Path
) -> None:
    server.script.refuse_upgrade = 400
    server.script.connect_replies.append([event(1)])
    tape = tmp_path / "fallback.duckdb"
    options = RecordOptions(url=server.url, channels=("/v2/me/outbound",), max_messages=1)
    outcome = await asyncio.wait_for(record_to_tape(options, tape), TIMEOUT)
    assert outcome.ok, outcome.reason
    used, chosen, wire = transports(tape)
    assert used == "long-polling"
    assert len(chosen) == 1
    assert chosen[0]["chosen"] == "long-polling"
    assert "upgrade failed" in chosen[0]["reason"]
    assert "HTTP 400" in chosen[0]["reason"]
    assert {t for _, t, _ in wire} == {"long-polling"}
    assert len(server.script.upgrade_headers) == 1


async def test_the_upgrade_carries_the_cookies_the_handshake_set(
    server: ScriptedServer, tmp_path: Path
) -> None:
    """A CometD server binds the session to its BAYEUX_BROWSER cookie: the socket that takes
    the session over from the long-polling handshake must send it."""
    server.script.connect_replies.append([event(1)])
    options = RecordOptions(url=server.url, channels=("/v2/me/outbound",), max_messages=1)
    outcome = await asyncio.wait_for(record_to_tape(options, tmp_path / "c.duckdb"), TIMEOUT)
    assert outcome.ok, outcome.reason
    (upgrade,) = server.script.upgrade_headers
    assert f"BAYEUX_BROWSER=b-{server.script.cookie}" in upgrade.get("Cookie", "")


async def test_strict_long_polling_never_upgrades(server: ScriptedServer, tmp_path: Path) -> None:
    server.script.connect_replies.append([event(1)])
    tape = tmp_path / "strict.duckdb"
    options = RecordOptions(
        url=server.url, channels=("/v2/me/outbound",), transport="long-polling", max_messages=1
    )
    outcome = await asyncio.wait_for(record_to_tape(options, tape), TIMEOUT)
    assert outcome.ok, outcome.reason
    used, chosen, _ = transports(tape)
    assert used == "long-polling"
    assert [c["reason"] for c in chosen] == ["asked for (--transport long-polling)"]
    assert server.script.upgrade_headers == []


def test_strict_websocket_refused_exits_1_naming_the_other_choices(tmp_path: Path) -> None:
    """Through the CLI, against a server that refuses the upgrade with HTTP 400."""
    script = (
        "import asyncio, sys\n"
        "from tests.recorder.scripted_server import Script, ScriptedServer\n"
        "async def main():\n"
        "    srv = ScriptedServer(Script(refuse_upgrade=400))\n"
        "    await srv.start()\n"
        "    print(srv.url, flush=True)\n"
        "    await asyncio.Event().wait()\n"
        "asyncio.run(main())\n"
    )
    srv = subprocess.Popen(
        [sys.executable, "-c", script], cwd=ROOT, stdout=subprocess.PIPE, text=True
    )
    try:
        assert srv.stdout is not None
        url = srv.stdout.readline().strip()
        result = cometd_tape(
            "record",
            url,
            "-o",
            str(tmp_path / "t.duckdb"),
            "--transport",
            "websocket",
            timeout=TIMEOUT * 3,
        )
    finally:
        srv.kill()
        srv.wait(TIMEOUT)
    assert result.returncode == 1, result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1, result.stderr
    assert "refused the WebSocket upgrade" in errors[0]
    assert "HTTP 400" in errors[0]
    assert "--transport long-polling" in errors[0]
    assert "auto" in errors[0]
    assert "Traceback" not in result.stderr


async def test_redirects_on_login_and_handshake_are_followed_with_their_cookies(
    tmp_path: Path,
) -> None:
    """GWS behind a gateway: the login URL answers 302 and the Bayeux URL 307 (a POST, which
    must be sent again, body and all, to the new location); the cookies they set go along."""
    script = Script(user="agent1", password="pw")
    script.connect_replies.append([event(1)])
    srv = ScriptedServer(script)
    moved_posts: list[str] = []

    async def login_moved(request: web.Request) -> web.StreamResponse:
        response = web.HTTPFound("/api/v2/me")
        response.set_cookie("GATEWAY", "g1")
        raise response

    async def bayeux_moved(request: web.Request) -> web.StreamResponse:
        moved_posts.append((await request.read()).decode())
        raise web.HTTPTemporaryRedirect("/cometd")

    srv.app.router.add_get("/login", login_moved)
    srv.app.router.add_post("/old", bayeux_moved)
    await srv.start()
    try:
        options = RecordOptions(
            url=f"http://127.0.0.1:{srv.port}/old",
            channels=("/v2/me/outbound",),
            transport="long-polling",
            credentials=Credentials("agent1", "pw"),
            login_url=f"http://127.0.0.1:{srv.port}/login",
            max_messages=1,
        )
        outcome = await asyncio.wait_for(record_to_tape(options, tmp_path / "r.duckdb"), TIMEOUT)
    finally:
        await srv.stop()
    assert outcome.ok, outcome.reason
    assert "/meta/handshake" in moved_posts[0]
    handshake = script.seen_headers[0]  # the handshake, at its new location
    assert "GATEWAY=g1" in handshake.get("Cookie", "")
    assert f"JSESSIONID={script.cookie}" in handshake.get("Cookie", "")
    assert handshake.get("X-CSRF-TOKEN") == script.csrf_token


async def test_auto_records_over_long_polling_from_the_cometd_server(tmp_path: Path) -> None:
    """cometd-nodejs-server, the CometD project's own, speaks long-polling only."""
    with CometdServer() as cometd:
        options = RecordOptions(url=cometd.url, channels=("/t",), max_messages=3)
        tape = tmp_path / "cometd.duckdb"
        task = asyncio.get_running_loop().create_task(record_to_tape(options, tape))
        await cometd.await_subscribed(["/t"])
        await asyncio.to_thread(cometd.publish, "/t", [{"n": i} for i in range(3)])
        outcome = await asyncio.wait_for(task, TIMEOUT)
    assert outcome.ok, outcome.reason
    used, chosen, wire = transports(tape)
    assert used == "long-polling"
    assert [c["chosen"] for c in chosen] == ["long-polling"]
    assert "not websocket" in chosen[0]["reason"]
    assert [w for w in wire if w[2] == "/t"] == [("in", "long-polling", "/t")] * len(
        [w for w in wire if w[2] == "/t"]
    )
    assert len([w for w in wire if w[2] == "/t"]) >= 1


def test_strict_websocket_against_the_cometd_server_exits_1_plainly(tmp_path: Path) -> None:
    with CometdServer() as cometd:
        result = cometd_tape(
            "record",
            cometd.url,
            "-o",
            str(tmp_path / "t.duckdb"),
            "--transport",
            "websocket",
            timeout=TIMEOUT * 3,
        )
    assert result.returncode == 1, result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1, result.stderr
    assert "refused the WebSocket upgrade" in errors[0]
    assert "--transport long-polling" in errors[0]
    assert "Traceback" not in result.stderr
