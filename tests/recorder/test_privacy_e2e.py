"""Privacy end to end, against a real Faye server: a proxy tape and a record tape, with secrets
in headers, cookies, query parameters, JSON bodies, Bayeux ext fields and a --redact name,
hold none of them in any column of any table nor in `cometd-tape export`; masked fields show
the key's HMAC token, the same for the same value, in raw and in messages' data."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import aiohttp
import duckdb
import orjson
import pytest

from recorder.proxy import CaptureProxy, ProxyOptions
from tape.privacy import REDACTED, Privacy
from tape.process_writer import ProcessTapeWriter
from tests.conftest import TIMEOUT
from tests.peers.faye import GWS_CHANNELS, FayeServer

ROOT = Path(__file__).resolve().parents[2]
KEY, OTHER_KEY = b"the-test-key-1", b"the-test-key-2"
PHONE = "+15550001"
SECRETS = {
    "X-Auth-Token": "SEC-auth-token-h1",
    "X-Api-Key": "SEC-api-key-h2",
    "X-Agent-Pin": "SEC-user-named-h3",  # redacted only because of --redact
    "cookie": "SEC-cookie-c1",
    "query": "SEC-query-q1",
    "body": "SEC-body-apikey-b1",
    "ext.apiKey": "SEC-ext-apikey-e1",
    "ext.session": "SEC-ext-session-e2",
    "publish ext": "SEC-publish-ext-e3",
}


def _leaks(tape: Path, values: list[str]) -> dict[str, list[str]]:
    """Every column of every table, cast to text (BLOBs, MAPs and lists too), searched by SQL
    for each value: {value: ["table.column", ...]} where it was found."""
    conn = duckdb.connect(str(tape), read_only=True)
    try:
        columns = conn.execute(
            "SELECT table_name, column_name FROM information_schema.columns "
            "WHERE table_schema = 'main' AND table_name IN "
            "(SELECT table_name FROM information_schema.tables WHERE table_type = 'BASE TABLE')"
        ).fetchall()
        assert {t for t, _ in columns} >= {"frames", "messages", "sessions", "http_fields"}
        found: dict[str, list[str]] = {}
        for table, column in columns:
            for value in values:
                (hits,) = conn.execute(
                    f'SELECT count(*) FROM "{table}" '
                    f'WHERE contains(CAST("{column}" AS VARCHAR), ?)',
                    [value],
                ).fetchone()  # type: ignore[misc]
                if hits:
                    found.setdefault(value, []).append(f"{table}.{column}")
        return found
    finally:
        conn.close()


def _exported(tape: Path) -> str:
    result = subprocess.run(
        [sys.executable, "-m", "tape", "export", str(tape)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=TIMEOUT * 2,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def _assert_clean(tape: Path, secrets: list[str]) -> None:
    assert _leaks(tape, secrets) == {}
    text = _exported(tape)
    assert text.count("\n") > 5
    for line in text.splitlines():
        orjson.loads(line)
    assert [s for s in secrets if s in text] == []


def _tokens(tape: Path, sql: str) -> list[Any]:
    conn = duckdb.connect(str(tape), read_only=True)
    try:
        return [row[0] for row in conn.execute(sql).fetchall()]
    finally:
        conn.close()


def _headers() -> dict[str, str]:
    return {
        "X-Auth-Token": SECRETS["X-Auth-Token"],
        "X-Api-Key": SECRETS["X-Api-Key"],
        "X-Agent-Pin": SECRETS["X-Agent-Pin"],
        "Cookie": f"JSESSIONID={SECRETS['cookie']}; BAYEUX_BROWSER=b1",
    }


async def _bayeux_over_long_polling(session: aiohttp.ClientSession, url: str) -> None:
    async def post(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
        async with session.post(url, json=messages, headers=_headers()) as response:
            assert response.status == 200
            return await response.json()  # type: ignore[no-any-return]

    ext = {"apiKey": SECRETS["ext.apiKey"], "session": SECRETS["ext.session"]}
    (shake,) = await post(
        [
            {
                "channel": "/meta/handshake",
                "version": "1.0",
                "supportedConnectionTypes": ["long-polling"],
                "ext": ext,
            }
        ]
    )
    cid = shake["clientId"]
    await post([{"channel": "/meta/subscribe", "clientId": cid, "subscription": "/desk"}])
    connect = {"channel": "/meta/connect", "clientId": cid, "connectionType": "long-polling"}
    await post([{**connect, "advice": {"timeout": 0}}])  # not held: nothing is queued yet
    data = {"phoneNumber": PHONE, "userData": {"GSW_PHONE": PHONE}, "referenceId": "r1"}
    ext_pub = {"apiKey": SECRETS["publish ext"]}
    await post([{"channel": "/desk", "clientId": cid, "data": data, "ext": ext_pub}])
    for _ in range(5):  # Faye echoes the publisher's ext to the subscriber
        replies = await post([connect])
        if any(r.get("channel") == "/desk" for r in replies):
            break
    else:
        pytest.fail("the publish never came back")
    await post([{"channel": "/meta/disconnect", "clientId": cid}])


async def _bayeux_over_websocket(session: aiohttp.ClientSession, url: str) -> None:
    ws_url = url.replace("http://", "ws://") + f"?apiKey={SECRETS['query']}"
    async with session.ws_connect(ws_url, headers=_headers()) as ws:

        async def send(message: dict[str, Any]) -> None:
            await ws.send_bytes(orjson.dumps([message]))

        async def until(channel: str) -> dict[str, Any]:
            while True:
                got = orjson.loads((await asyncio.wait_for(ws.receive(), TIMEOUT)).data)
                for reply in got:
                    if reply.get("channel") == channel:
                        return reply  # type: ignore[no-any-return]

        ext = {"apiKey": SECRETS["ext.apiKey"], "session": SECRETS["ext.session"]}
        await send(
            {
                "channel": "/meta/handshake",
                "version": "1.0",
                "supportedConnectionTypes": ["websocket"],
                "ext": ext,
            }
        )
        cid = (await until("/meta/handshake"))["clientId"]
        await send({"channel": "/meta/connect", "clientId": cid, "connectionType": "websocket"})
        await send({"channel": "/meta/subscribe", "clientId": cid, "subscription": "/desk"})
        await until("/meta/subscribe")
        data = {"phoneNumber": PHONE, "kv": [{"key": "GSW_PHONE", "value": PHONE}]}
        await send(
            {
                "channel": "/desk",
                "clientId": cid,
                "data": data,
                "ext": {"apiKey": SECRETS["publish ext"]},
            }
        )
        delivery = await until("/desk")
        assert delivery["ext"] == {"apiKey": SECRETS["publish ext"]}  # what the tape must not keep
        await send({"channel": "/meta/disconnect", "clientId": cid})


async def test_a_proxy_tape_keeps_no_secret_and_masks_personal_data(tmp_path: Path) -> None:
    tape = tmp_path / "proxy.duckdb"
    privacy = Privacy(redact=["X-Agent-Pin"], key=KEY)
    with FayeServer() as faye:
        writer = ProcessTapeWriter(tape, privacy=privacy)
        proxy = CaptureProxy(ProxyOptions(upstream=f"http://127.0.0.1:{faye.port}"), writer)
        await proxy.start()
        try:
            async with aiohttp.ClientSession() as session:
                rest = (
                    f"{proxy.origin}/api/v2/me/outbound-records/1?access_token={SECRETS['query']}"
                )
                body = {"apiKey": SECRETS["body"], "phoneNumber": PHONE, "referenceId": "r1"}
                async with session.post(rest, json=body, headers=_headers()) as response:
                    await response.read()  # Faye has no REST API: a 404, recorded all the same
                await _bayeux_over_long_polling(session, f"{proxy.origin}/cometd")
                await _bayeux_over_websocket(session, f"{proxy.origin}/cometd")
        finally:
            await proxy.stop()
            writer.close()
        assert proxy.tape_error is None

    _assert_clean(tape, list(SECRETS.values()))
    token = privacy.token(PHONE)
    assert token != Privacy(key=OTHER_KEY).token(PHONE)
    # the secrets were there, and are marked redacted where they were
    headers = _tokens(tape, "SELECT headers FROM frames WHERE headers IS NOT NULL")
    assert any(["X-Agent-Pin", REDACTED] in orjson.loads(h) for h in headers)
    raws = _tokens(tape, "SELECT raw FROM frames WHERE kind <> 'lifecycle'")
    assert sum(b'"apiKey":"[REDACTED]"' in r for r in raws) >= 6  # body, 2 handshakes, echoes
    # masked: the REST body, the publishes and their deliveries, in raw and in messages' data
    assert sum(r.count(token.encode()) for r in raws) >= 8
    assert all(PHONE.encode() not in r for r in raws)
    datas = _tokens(
        tape,
        "SELECT data FROM message_data WHERE channel = '/desk' AND data IS NOT NULL",
    )
    assert len(datas) >= 4  # two publishes out, two deliveries in
    assert all(orjson.loads(d)["phoneNumber"] == token for d in datas)
    assert _tokens(
        tape, "SELECT count(*) FROM frames WHERE kind = 'bayeux' AND parse_error IS NOT NULL"
    ) == [0]


@pytest.mark.parametrize("transport", ["long-polling", "websocket"])
def test_a_record_tape_keeps_no_secret_and_masks_personal_data(
    transport: str, tmp_path: Path
) -> None:
    tape = tmp_path / "record.duckdb"
    with FayeServer() as faye:
        cmd = [
            sys.executable,
            "-m",
            "tape",
            "record",
            f"{faye.url}?apiKey={SECRETS['query']}",
            "-o",
            str(tape),
            "--transport",
            transport,
            "--header",
            f"X-Auth-Token:{SECRETS['X-Auth-Token']}",
            "--header",
            f"X-Api-Key:{SECRETS['X-Api-Key']}",
            "--header",
            f"X-Agent-Pin:{SECRETS['X-Agent-Pin']}",
            "--cookie",
            f"JSESSIONID={SECRETS['cookie']}",
            "--redact",
            "X-Agent-Pin",
            "--mask-key-env",
            "TAPE_TEST_KEY",
            "--label",
            f"authToken={SECRETS['body']}",
            "--max-messages",
            "20",
        ]
        env = {**os.environ, "TAPE_TEST_KEY": OTHER_KEY.decode()}
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stderr=subprocess.PIPE, text=True)
        try:
            faye.wait_subscribed(GWS_CHANNELS)
            faye.publish_gws(10)  # 10 acks and 10 metrics events, GSW_PHONE 3000...3009
            _, stderr = proc.communicate(timeout=TIMEOUT * 2)
        finally:
            proc.kill()
        assert proc.returncode == 0, stderr

    _assert_clean(tape, list(SECRETS.values()))
    phones = [f"300{i}" for i in range(10)]
    assert _leaks(tape, [f'"GSW_PHONE":"{p}"' for p in phones]) == {}
    mine, other = Privacy(key=OTHER_KEY), Privacy(key=KEY)
    stored = _tokens(
        tape,
        "SELECT json_extract_string(data, '$.userData.GSW_PHONE') FROM message_data "
        "WHERE channel = '/me/internal' ORDER BY seq, idx",
    )
    assert stored == [mine.token(p) for p in phones]
    assert set(stored).isdisjoint(other.token(p) for p in phones)
    labels = _tokens(tape, "SELECT labels['authToken'] FROM sessions")
    assert labels == [REDACTED]
