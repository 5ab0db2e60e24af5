"""The replayer and the simulator, over real sockets, against what production throws at them:
unsubscribes mid-stream, a huge batch, numbers beyond a double, a client publishing on GWS's
own channels, thousands of clients that vanish, slow headers, and SIGTERM under load."""

from __future__ import annotations

import asyncio
import base64
import re
import signal
import socket
import time
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest

from replay.app import Replayer, ReplayOptions
from replay.player import PlayOptions
from replay.protocol import PUBLISH_DENIED, BayeuxServer
from replay.server import ReplayServer
from replay.simulator import Simulator, SimulatorOptions
from tests.constants import TIMEOUT
from tests.replay.tapes import CHANNELS, write_tape
from tests.replay.test_cli import start_replay

# "Within a second" as a test can hold it on a loaded 2-core machine: 2.5 s at the default
# TIMEOUT, still far under the stalls these tests catch (a 26.5 s batch, a shutdown that hangs).
# The precise figures (exit 0.1-0.2 s after SIGTERM under load) are benchmarks/replay_load.py's.
SECOND = TIMEOUT / 4


def handshake_msg(n: int = 0, types: tuple[str, ...] = ("long-polling",)) -> dict[str, Any]:
    return {
        "channel": "/meta/handshake",
        "version": "1.0",
        "id": f"h{n}",
        "supportedConnectionTypes": list(types),
    }


async def post(http: aiohttp.ClientSession, url: str, body: Any) -> tuple[int, Any]:
    data = body if isinstance(body, bytes) else orjson.dumps(body)
    async with http.post(url, data=data) as response:
        return response.status, orjson.loads(await response.read())


async def subscribed_clients(
    http: aiohttp.ClientSession, url: str, count: int, subscription: Any
) -> list[str]:
    """`count` long-polling clients, handshaken and subscribed in one POST each (they never
    connect); their clientIds."""
    _, replies = await post(http, url, [handshake_msg(i) for i in range(count)])
    ids = [str(r["clientId"]) for r in replies]
    subs = [
        {"channel": "/meta/subscribe", "clientId": c, "subscription": subscription} for c in ids
    ]
    _, answers = await post(http, url, subs)
    assert all(a["successful"] for a in answers)
    return ids


@pytest.fixture
async def looping(tmp_path: Path) -> Any:
    tape = tmp_path / "t.duckdb"
    write_tape(tape, 500, 0.004)
    options = ReplayOptions(play=PlayOptions(speed=1, loop=True, settle=0), max_interval_ms=1000)
    replayer = await Replayer.start(tape, options)
    yield replayer
    await replayer.stop()


async def test_unsubscribe_stops_deliveries_from_its_reply(looping: Replayer) -> None:
    async with aiohttp.ClientSession() as http, http.ws_connect(looping.ws_url) as ws:
        await ws.send_bytes(orjson.dumps([handshake_msg(types=("websocket",))]))
        cid = orjson.loads((await ws.receive(timeout=TIMEOUT)).data)[0]["clientId"]
        sub = {"channel": "/meta/subscribe", "clientId": cid, "subscription": list(CHANNELS)}
        connect = {"channel": "/meta/connect", "clientId": cid, "connectionType": "websocket"}
        await ws.send_bytes(orjson.dumps([sub, connect]))
        unsub = {"channel": "/meta/unsubscribe", "clientId": cid, "subscription": CHANNELS[1]}
        seen: list[tuple[bool, str]] = []  # (after the unsubscribe reply, channel)
        after, deadline = False, time.monotonic() + 2 * TIMEOUT
        while time.monotonic() < deadline and sum(a for a, _ in seen) < 100:
            for message in orjson.loads((await ws.receive(timeout=TIMEOUT)).data):
                channel = message["channel"]
                if channel == "/meta/connect":
                    await ws.send_bytes(orjson.dumps([connect]))
                elif channel == "/meta/unsubscribe":
                    assert message["successful"] is True
                    after = True
                elif not after and len(seen) == 50:
                    await ws.send_bytes(orjson.dumps([unsub]))
                if not channel.startswith("/meta/"):
                    seen.append((after, channel))
    late = [channel for was_after, channel in seen if was_after and channel == CHANNELS[1]]
    assert {c for a, c in seen if not a} == set(CHANNELS)
    assert sum(a for a, _ in seen) >= 100  # the other channel kept coming
    assert late == [], f"{len(late)} messages on {CHANNELS[1]} after its unsubscribe reply"


async def test_a_huge_batch_stalls_no_one(looping: Replayer) -> None:
    """10,000 handshakes, then 10,000 publishes on their ids in one POST: it took 26.5 s, and
    another client's handshake waited as long."""
    async with aiohttp.ClientSession() as http:
        ids = []
        for n in range(10):
            _, replies = await post(http, looping.url, [handshake_msg(i) for i in range(1000)])
            ids += [r["clientId"] for r in replies]
            assert len(replies) == 1000, n
        publishes = [
            {"channel": "/x", "clientId": cid, "data": {"n": n}} for n, cid in enumerate(ids)
        ]
        big = asyncio.create_task(post(http, looping.url, publishes))
        started = time.monotonic()
        _, other = await post(http, looping.url, [handshake_msg()])
        waited = time.monotonic() - started
        status, reply = await big
        _, allowed = await post(http, looping.url, publishes[:1000])
    assert other[0]["successful"] is True
    assert waited < SECOND
    assert status == 400
    assert reply[0]["error"] == "400::a batch of 10000 messages is over the limit of 1000"
    assert all(r["successful"] for r in allowed)


@pytest.mark.parametrize("body", [b"1e999", b'[{"channel":123,"x":1e999}]'])
async def test_numbers_beyond_a_double_get_400_not_500(looping: Replayer, body: bytes) -> None:
    async with aiohttp.ClientSession() as http:
        status, reply = await post(http, looping.url, body)
        assert status == 400
        assert reply[0]["error"].startswith("400::")
        async with http.ws_connect(looping.ws_url) as ws:
            await ws.send_bytes(body)
            answer = orjson.loads((await ws.receive(timeout=TIMEOUT)).data)
            assert answer[0]["successful"] is False
            await ws.send_bytes(orjson.dumps([handshake_msg(types=("websocket",))]))
            hello = orjson.loads((await ws.receive(timeout=TIMEOUT)).data)
            assert hello[0]["successful"] is True  # the socket stays open


async def test_the_simulator_refuses_client_publishes_on_gws_channels() -> None:
    simulator = Simulator()
    await simulator.start()
    try:
        auth = {"Authorization": "Basic " + base64.b64encode(b"agent:agent").decode()}
        jar = aiohttp.CookieJar(unsafe=True)  # keeps cookies from 127.0.0.1
        async with aiohttp.ClientSession(cookie_jar=jar) as http:
            async with http.get(simulator.origin + "/api/v2/me", headers=auth) as login:
                csrf = {"X-CSRF-TOKEN": login.headers["X-CSRF-TOKEN"]}
            url = simulator.url()

            async def bayeux(*messages: dict[str, Any]) -> list[dict[str, Any]]:
                async with http.post(url, data=orjson.dumps(messages), headers=csrf) as response:
                    assert response.status == 200
                    return orjson.loads(await response.read())  # type: ignore[no-any-return]

            cid = (await bayeux(handshake_msg()))[0]["clientId"]
            for channel in ("/v2/me/outbound", "/me/internal", "/me/x/y"):
                (reply,) = await bayeux({"channel": channel, "clientId": cid, "data": {}})
                assert reply["successful"] is False, channel
                assert reply["error"] == PUBLISH_DENIED
            (ok,) = await bayeux({"channel": "/team/chat", "clientId": cid, "data": {}})
            assert ok["successful"] is True
    finally:
        await simulator.stop()


async def test_thousands_of_vanished_clients_leave_nothing_behind(looping: Replayer) -> None:
    """2,000 clients handshake, subscribe and get deliveries, then vanish without a word:
    once they expire no session, timeline, queue or connection is left."""
    async with aiohttp.ClientSession() as http:
        for _ in range(2):
            await subscribed_clients(http, looping.url, 1000, list(CHANNELS))
        deadline = time.monotonic() + TIMEOUT
        while not looping.player.emitted and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        assert looping.sizes()["sessions"] == 2000
        assert looping.player.emitted > 0
        deadline = time.monotonic() + TIMEOUT
        while looping.sizes()["sessions"] and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
    sizes = looping.sizes()
    assert {k: v for k, v in sizes.items() if v} == {}
    assert looping.player.served == 2000
    assert len(looping.clients) <= 100  # the last departed, kept for logs


async def test_the_simulators_web_sessions_expire() -> None:
    # Long enough for the 300 logins to all be live at once on a loaded machine (at 0.2 s some
    # expired before the count), short enough to expire well within the TIMEOUT wait below.
    simulator = Simulator(SimulatorOptions(session_timeout_s=TIMEOUT / 10))
    await simulator.start()
    try:
        auth = {"Authorization": "Basic " + base64.b64encode(b"agent:agent").decode()}
        async with aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar()) as http:
            for _ in range(300):
                async with http.get(simulator.origin + "/api/v2/me", headers=auth) as login:
                    assert login.status == 200
        assert simulator.sizes()["web_sessions"] == 300
        deadline = time.monotonic() + TIMEOUT
        while simulator.sizes()["web_sessions"] and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        assert simulator.sizes()["web_sessions"] == 0
    finally:
        await simulator.stop()


async def test_slow_headers_are_cut_off_and_harm_no_one() -> None:
    server = ReplayServer(BayeuxServer(), read_timeout_s=0.5)
    await server.start()
    try:
        slow = [await asyncio.open_connection(server.host, server.port) for _ in range(20)]
        for _, writer in slow:
            writer.write(b"POST /cometd HTTP/1.1\r\nHost: x\r\n")
        started = time.monotonic()
        async with aiohttp.ClientSession() as http:
            _, reply = await post(http, server.url(), [handshake_msg()])
        assert reply[0]["successful"] is True
        for _, writer in slow:
            writer.write(b"X-Slow: 1\r\n")  # still trickling: the head's clock is not reset
        ends = await asyncio.wait_for(
            asyncio.gather(*(reader.read() for reader, _ in slow)), TIMEOUT
        )
        assert time.monotonic() - started < 0.5 + SECOND
        assert all(end == b"" for end in ends)  # closed by the server
        for _, writer in slow:
            writer.close()
    finally:
        await server.stop()


async def test_sigterm_under_a_looping_load_exits_promptly(tmp_path: Path) -> None:
    tape = tmp_path / "t.duckdb"
    write_tape(tape, 2000, 0.0005, per_frame=2)
    proc, line = await start_replay(tape, "--speed", "0", "--loop")
    try:
        url = re.search(r" on (http://\S+)", line)
        assert url, line
        received = [0]
        async with aiohttp.ClientSession() as http:
            readers = [
                asyncio.create_task(_read_ws(http, url.group(1), received)) for _ in range(20)
            ]
            deadline = time.monotonic() + TIMEOUT
            while received[0] < 50_000 and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
            assert received[0] >= 50_000
            started = time.monotonic()
            proc.send_signal(signal.SIGTERM)
            _, stderr = await asyncio.to_thread(proc.communicate, timeout=TIMEOUT)
            took = time.monotonic() - started
            for reader in readers:
                reader.cancel()
            await asyncio.gather(*readers, return_exceptions=True)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0
    assert took < SECOND
    assert re.search(r"served 20 clients, \d+ messages emitted", stderr)
    assert "Traceback" not in stderr


async def _read_ws(http: aiohttp.ClientSession, url: str, received: list[int]) -> None:
    async with http.ws_connect(url.replace("http", "ws", 1), max_msg_size=0) as ws:
        await ws.send_bytes(orjson.dumps([handshake_msg(types=("websocket",))]))
        cid = orjson.loads((await ws.receive()).data)[0]["clientId"]
        connect = {"channel": "/meta/connect", "clientId": cid, "connectionType": "websocket"}
        sub = {"channel": "/meta/subscribe", "clientId": cid, "subscription": list(CHANNELS)}
        await ws.send_bytes(orjson.dumps([sub, connect]))
        async for frame in ws:
            if frame.type is not aiohttp.WSMsgType.TEXT:
                return
            messages = orjson.loads(frame.data)
            received[0] += len(messages)
            if any(m["channel"] == "/meta/connect" for m in messages):
                await ws.send_bytes(orjson.dumps([connect]))


async def test_a_scheduler_over_its_budget_still_makes_progress(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every batch over budget at once (a loaded machine): each still plays a timeline, so
    nothing livelocks. Taking every due timeline out of the heap before playing any had spent
    the budget on that alone with ~1,000 due together, and no batch played anything."""
    monkeypatch.setattr("replay.player.BATCH_S", -1.0)
    tape = tmp_path / "t.duckdb"
    write_tape(tape, 50, 0.001)
    options = ReplayOptions(play=PlayOptions(speed=0, settle=0))
    replayer = await Replayer.start(tape, options)
    try:
        async with aiohttp.ClientSession() as http:
            await subscribed_clients(http, replayer.url, 300, "/**")
        assert await replayer.wait_emitted(300 * 50, timeout=TIMEOUT) == 300 * 50
    finally:
        await replayer.stop()


async def test_a_finished_timeline_is_not_played_again_on_a_later_subscribe(
    tmp_path: Path,
) -> None:
    tape = tmp_path / "t.duckdb"
    write_tape(tape, 6, 0.001)
    replayer = await Replayer.start(tape, ReplayOptions(play=PlayOptions(speed=0, settle=0)))
    try:
        async with aiohttp.ClientSession() as http:
            _, (hello,) = await post(http, replayer.url, [handshake_msg()])
            cid = hello["clientId"]
            sub = {"channel": "/meta/subscribe", "clientId": cid, "subscription": CHANNELS[0]}
            await post(http, replayer.url, [sub])
            await replayer.wait_emitted(3, timeout=TIMEOUT)
            await asyncio.sleep(0.1)
            await post(http, replayer.url, [sub | {"subscription": CHANNELS[1]}])
            await asyncio.sleep(0.3)
        assert replayer.player.emitted == 3  # its half of the timeline, once
    finally:
        await replayer.stop()


async def test_a_websocket_client_that_stops_reading_is_cut_off_and_keeps_its_queue(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("replay.server.MAX_SEND_BUFFER", 64 * 1024)
    monkeypatch.setattr("replay.server.CLOSE_S", 0.2)
    tape = tmp_path / "t.duckdb"
    write_tape(tape, 500, 0.004)
    options = ReplayOptions(play=PlayOptions(speed=200, loop=True, settle=0))
    replayer = await Replayer.start(tape, options)
    raw = socket.socket()
    raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # fills at once
    raw.connect((replayer.server.host, replayer.server.port))
    reader, writer = await asyncio.open_connection(sock=raw)
    try:
        writer.write(
            b"GET /cometd HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
        )
        await reader.readuntil(b"\r\n\r\n")
        async with aiohttp.ClientSession() as http:
            _, (hello,) = await post(http, replayer.url, [handshake_msg(types=("websocket",))])
        cid = hello["clientId"]
        sub = {"channel": "/meta/subscribe", "clientId": cid, "subscription": "/**"}
        connect = {"channel": "/meta/connect", "clientId": cid, "connectionType": "websocket"}
        payload = orjson.dumps([sub, connect])
        mask = b"\x00\x00\x00\x00"  # a zero mask leaves the payload as it is
        writer.write(bytes([0x81, 0xFE]) + len(payload).to_bytes(2, "big") + mask + payload)
        await writer.drain()
        # It never reads again: the replayer's deliveries pile up in its send buffer.
        deadline = time.monotonic() + TIMEOUT
        while replayer.sizes()["sockets"] and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        assert replayer.sizes()["sockets"] == 0  # closed (1008), then cut after CLOSE_S
        assert replayer.server.protocol.has_client(cid)  # the session waits for a reconnect...
        assert replayer.server.protocol.queued(cid) > 0  # ...with what was not sent
    finally:
        writer.close()
        await replayer.stop()


async def test_clients_that_take_nothing_at_speed_0_are_looked_at_less_and_less(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """500 clients subscribed at speed 0 that never connect: their queues fill, and the player
    backs off instead of asking each of them again every 2 ms (250,000 looks a second)."""
    tape = tmp_path / "t.duckdb"
    write_tape(tape, 200, 0.001)
    monkeypatch.setattr("replay.player.WINDOW", 50)
    replayer = await Replayer.start(tape, ReplayOptions(play=PlayOptions(speed=0, settle=0)))
    looks = [0]
    backlog = replayer.server.backlog

    def counted(client_id: str) -> int:
        looks[0] += 1
        return backlog(client_id)

    monkeypatch.setattr(replayer.server, "backlog", counted)
    try:
        async with aiohttp.ClientSession() as http:
            await subscribed_clients(http, replayer.url, 500, "/**")
            await asyncio.sleep(0.5)  # every queue is full by now
            before = looks[0]
            await asyncio.sleep(1.0)
        assert replayer.player.emitted == 500 * 50
        assert looks[0] - before < 500 * 1.0 / 0.064 * 2  # at most ~every 64 ms each
    finally:
        await replayer.stop()


async def test_the_simulators_held_polls_are_freed_when_their_client_leaves() -> None:
    simulator = Simulator()
    await simulator.start()
    try:
        auth = {"Authorization": "Basic " + base64.b64encode(b"agent:agent").decode()}
        jar = aiohttp.CookieJar(unsafe=True)
        async with aiohttp.ClientSession(cookie_jar=jar) as http:
            async with http.get(simulator.origin + "/api/v2/me", headers=auth) as login:
                csrf = {"X-CSRF-TOKEN": login.headers["X-CSRF-TOKEN"]}
            async with http.post(
                simulator.url(), data=orjson.dumps([handshake_msg()]), headers=csrf
            ) as response:
                cid = orjson.loads(await response.read())[0]["clientId"]
            connect = {
                "channel": "/meta/connect",
                "clientId": cid,
                "connectionType": "long-polling",
            }
            for timeout in (0, None):
                body = [connect | ({"advice": {"timeout": 0}} if timeout == 0 else {})]
                request = http.post(simulator.url(), data=orjson.dumps(body), headers=csrf)
                if timeout == 0:
                    async with request as response:
                        await response.read()
                else:
                    held = asyncio.create_task(request.__aenter__())
                    for _ in range(100):
                        if simulator.sizes()["held_polls"]:
                            break
                        await asyncio.sleep(0.01)
                    assert simulator.sizes()["held_polls"] == 1
                    held.cancel()
                    await asyncio.gather(held, return_exceptions=True)
        for _ in range(200):
            if not simulator.sizes()["held_polls"]:
                break
            await asyncio.sleep(0.01)
        assert simulator.sizes()["held_polls"] == 0
    finally:
        await simulator.stop()
