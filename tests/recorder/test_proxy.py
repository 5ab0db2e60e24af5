"""The capture proxy with real peers: aiocometd-ng + aiohttp through it to the GWS simulator
(2,000 DoNotCallRecord requests per transport, all analysed), a Faye server and Faye's Node
client through it (the same messages as without it), an unreachable upstream (502), and a
client that leaves mid-stream."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import duckdb
import numpy as np
import orjson
import pytest
from aiocometd_ng import ConnectionType

from analysis.views import open_tapes
from recorder.proxy import CaptureProxy, ProxyOptions
from replay.simulator import Simulator, SimulatorOptions
from tape.process_writer import ProcessTapeWriter
from tests.agent import agent, basic
from tests.constants import TIMEOUT
from tests.peers.faye import GWS_CHANNELS, FayeServer
from tests.peers.faye_client import FayeClients

MEDIAN_MS, P99_MS = 20.0, 60.0


@contextlib.asynccontextmanager
async def proxied(upstream: str, tape: Path) -> AsyncIterator[CaptureProxy]:
    writer = ProcessTapeWriter(tape)
    proxy = CaptureProxy(ProxyOptions(upstream=upstream), writer)
    await proxy.start()
    try:
        yield proxy
    finally:
        await proxy.stop()
        writer.close()


@pytest.mark.parametrize("kind", [ConnectionType.LONG_POLLING, ConnectionType.WEBSOCKET])
async def test_2000_requests_through_the_proxy_are_all_recorded_and_matched(
    kind: ConnectionType, tmp_path: Path
) -> None:
    tape = tmp_path / "proxy.duckdb"
    sim = Simulator(SimulatorOptions(median_ms=MEDIAN_MS, p99_ms=P99_MS, seed=42))
    await sim.start()
    try:
        async with proxied(sim.origin, tape) as proxy, agent(proxy.origin, kind) as desk:
            gate = asyncio.Semaphore(16)

            async def one(n: int) -> None:
                await asyncio.sleep(n / 400)  # 400 requests/s, as a busy desktop pool
                async with gate:
                    status, body = await desk.post(
                        f"/api/v2/me/outbound-records/{n}",
                        {
                            "operationName": "DoNotCallRecord",
                            "referenceId": f"ref-{n}",
                            "campaignName": "Camp",
                            "callingList": "L1",
                        },
                    )
                    assert (status, body) == (200, {"statusCode": 0})

            await asyncio.gather(*(one(n) for n in range(2000)))
            await desk.wait_acks([f"ref-{n}" for n in range(2000)], TIMEOUT * 3, metrics=2000)
    finally:
        await sim.stop()

    assert {a["referenceId"] for a in desk.acks.values()} == {f"ref-{n}" for n in range(2000)}
    conn = open_tapes([tape], cache=False)
    (sessions,) = conn.execute("SELECT count(*) FROM sessions").fetchall()[0]
    assert sessions == 1  # REST calls and Bayeux tied together by the JSESSIONID
    counts = dict(
        conn.execute(
            "SELECT kind, count(*) FROM frames WHERE kind IN ('http-request', 'http-response') "
            "AND http_path LIKE '/api/v2/me/outbound-records/%' OR (kind = 'http-response' "
            "AND exchange_id IN (SELECT exchange_id FROM frames WHERE http_path LIKE "
            "'/api/v2/me/outbound-records/%')) GROUP BY kind"
        ).fetchall()
    )
    assert counts == {"http-request": 2000, "http-response": 2000}
    matched, as_expected, server = conn.execute(
        "SELECT count(ack_ms), count(*) FILTER (WHERE ack_as_expected), list(server_ms) "
        "FROM request_latency WHERE operation_name = 'DoNotCallRecord'"
    ).fetchall()[0]
    assert (matched, as_expected) == (2000, 2000)
    # Within sampling error of the configured lognormal (2,000 draws: p50 +-5%, p99 +-15%).
    p50, p99 = np.percentile(server, [50, 99])
    assert p50 == pytest.approx(MEDIAN_MS, rel=0.08)
    assert p99 == pytest.approx(P99_MS, rel=0.2)
    early, ack_p50 = conn.execute(
        "SELECT count(*) FILTER (WHERE ack_ms < server_ms - 1), median(ack_ms) FROM request_latency"
    ).fetchall()[0]
    assert early == 0  # no ack is seen before the server's drawn delay has passed
    assert ack_p50 < MEDIAN_MS + 100  # and the path through the proxy adds little
    secrets = conn.execute(
        "SELECT count(*) FROM frames WHERE headers LIKE '%Basic %' OR "
        "regexp_matches(headers, 'JSESSIONID=[0-9a-f]') OR "
        'regexp_matches(headers, \'"X-CSRF-TOKEN","[0-9a-f]\')'
    ).fetchall()[0][0]
    assert secrets == 0
    client_id, transport = conn.execute("SELECT client_id, transport FROM sessions").fetchall()[0]
    assert client_id
    assert transport == kind.value  # its Bayeux transport, not the login's http


async def test_faye_traffic_passes_unchanged(faye_client: FayeClients, tmp_path: Path) -> None:
    with FayeServer() as faye:
        direct = await faye_client(faye.url, "long-polling", list(GWS_CHANNELS))
        async with proxied(f"http://127.0.0.1:{faye.port}", tmp_path / "f.duckdb") as proxy:
            via_lp = await faye_client(proxy.origin + "/cometd", "long-polling", list(GWS_CHANNELS))
            via_ws = await faye_client(proxy.origin + "/cometd", "websocket", list(GWS_CHANNELS))
            await faye.await_subscribed(GWS_CHANNELS, 3)
            await faye.apublish_gws(300)
            got = [await c.wait_messages(600) for c in (direct, via_lp, via_ws)]
    for channel in GWS_CHANNELS:
        mine = [[m["data"] for m in messages if m["channel"] == channel] for messages in got]
        assert mine[0] == mine[1] == mine[2]
        assert len(mine[0]) == 300
    conn = duckdb.connect(str(tmp_path / "f.duckdb"), read_only=True)
    transports = dict(
        conn.execute(
            "SELECT f.transport, count(*) FROM messages m JOIN frames f USING (session_id, seq) "
            "WHERE m.channel IN ('/v2/me/outbound', '/me/internal') GROUP BY ALL"
        ).fetchall()
    )
    assert transports == {"long-polling": 600, "websocket": 600}  # all recorded, each once
    assert conn.execute("SELECT count(*) FROM sessions").fetchall()[0][0] == 2


async def test_an_unreachable_upstream_gives_502_and_is_recorded(tmp_path: Path) -> None:
    tape = tmp_path / "down.duckdb"
    async with (
        proxied("http://127.0.0.1:9", tape) as proxy,
        aiohttp.ClientSession() as http,
        http.post(
            proxy.origin + "/cometd",
            data=b'[{"channel":"/meta/handshake"}]',
            headers=basic("a", "b"),
        ) as response,
    ):
        assert response.status == 502
        assert "unreachable" in (await response.json())["error"]
    conn = duckdb.connect(str(tape), read_only=True)
    rows = conn.execute("SELECT direction, http_status FROM frames ORDER BY seq").fetchall()
    assert rows == [("out", None), ("in", 502)]


async def test_a_client_leaving_mid_poll_leaves_a_consistent_tape(tmp_path: Path) -> None:
    tape = tmp_path / "gone.duckdb"
    sim = Simulator(SimulatorOptions(seed=1))
    await sim.start()
    try:
        async with proxied(sim.origin, tape) as proxy:
            jar = aiohttp.CookieJar(unsafe=True)
            async with aiohttp.ClientSession(cookie_jar=jar, headers=basic("agent", "agent")) as h:
                async with h.get(proxy.origin + "/api/v2/me") as r:
                    csrf = {"X-CSRF-TOKEN": r.headers["X-CSRF-TOKEN"]}
                url = proxy.origin + "/api/v2/notifications"

                async def post(batch: list[dict[str, object]]) -> list[dict[str, object]]:
                    async with h.post(url, json=batch, headers=csrf) as r:
                        return list(orjson.loads(await r.read()))

                (hs,) = await post(
                    [
                        {
                            "channel": "/meta/handshake",
                            "version": "1.0",
                            "supportedConnectionTypes": ["long-polling"],
                        }
                    ]
                )
                cid = hs["clientId"]
                await post(
                    [
                        {
                            "channel": "/meta/connect",
                            "clientId": cid,
                            "connectionType": "long-polling",
                            "advice": {"timeout": 0},
                        }
                    ]
                )
                held = asyncio.ensure_future(
                    post(
                        [
                            {
                                "channel": "/meta/connect",
                                "clientId": cid,
                                "connectionType": "long-polling",
                            }
                        ]
                    )
                )
                await asyncio.sleep(0.3)
                held.cancel()  # the client goes away while the server holds its connect
                with contextlib.suppress(asyncio.CancelledError):
                    await held
    finally:
        await sim.stop()
    conn = duckdb.connect(str(tape), read_only=True)
    (seqs,) = conn.execute("SELECT list(seq ORDER BY seq) FROM frames").fetchall()[0]
    assert seqs == list(range(1, len(seqs) + 1))  # gapless
    ended = conn.execute("SELECT end_reason FROM sessions").fetchall()
    assert ended == [("proxy stopped",)]
