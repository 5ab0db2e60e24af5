"""The GWS simulator with real clients: aiohttp logs in (basic, JSESSIONID, CSRF) and calls the
Outbound API; aiocometd-ng receives the acks, with the request's referenceId, and the metrics."""

from __future__ import annotations

from collections.abc import AsyncIterator

import aiohttp
import numpy as np
import pytest
from aiocometd_ng import ConnectionType

from replay.simulator import ACKS, LatencyModel, Simulator, SimulatorOptions
from tests.agent import agent, basic
from tests.constants import TIMEOUT


@pytest.fixture
async def simulator() -> AsyncIterator[Simulator]:
    sim = Simulator(SimulatorOptions(median_ms=5, p99_ms=20, seed=1))
    await sim.start()
    yield sim
    await sim.stop()


@pytest.mark.parametrize("kind", [ConnectionType.LONG_POLLING, ConnectionType.WEBSOCKET])
async def test_every_operation_is_acked_with_its_reference_id(
    simulator: Simulator, kind: ConnectionType
) -> None:
    async with agent(simulator.origin, kind) as desk:
        refs = []
        for n, operation in enumerate([*ACKS, *ACKS]):
            ref = f"{kind.value}-{n}"
            status, body = await desk.post(
                f"/api/v2/me/outbound-records/{n}",
                {"operationName": operation, "referenceId": ref, "campaignName": "C"},
            )
            assert (status, body) == (200, {"statusCode": 0})
            refs.append(ref)
        status, body = await desk.post(
            "/api/v2/me/outbound-campaigns/Summer",
            {"operationName": "GetPreviewRecord", "referenceId": "preview-1"},
        )
        assert (status, body) == (200, {"statusCode": 0})
        await desk.wait_acks([*refs, "preview-1"], TIMEOUT, metrics=11)
    for n, operation in enumerate([*ACKS, *ACKS]):
        ack = desk.acks[f"{kind.value}-{n}"]
        assert ack["notificationType"] == ACKS[operation]
        assert ack["record"]["recordHandle"] == n
    assert desk.acks["preview-1"]["notificationType"] == "PreviewRecord"
    assert desk.acks["preview-1"]["record"]["campaignName"] == "Summer"
    metrics = [m["metrics"]["eventProcessing"] for m in desk.internal]
    assert len(metrics) == 11
    assert all(m["serverProcessingTimeTotalMs"] >= 0 for m in metrics)


async def test_gws_auth_csrf_and_errors(simulator: Simulator) -> None:
    origin = simulator.origin
    record = origin + "/api/v2/me/outbound-records/1"
    for headers in ({}, basic("agent", "nope")):
        async with (
            aiohttp.ClientSession(headers=headers) as http,
            http.get(origin + "/api/v2/me") as response,
        ):
            assert response.status == 401
            assert response.headers["WWW-Authenticate"].startswith("Basic")
    jar = aiohttp.CookieJar(unsafe=True)
    async with aiohttp.ClientSession(cookie_jar=jar, headers=basic("agent", "agent")) as http:
        async with http.get(origin + "/api/v2/me") as response:
            assert response.status == 200
            token = response.headers["X-CSRF-TOKEN"]
            assert response.headers["X-CSRF-HEADER"] == "X-CSRF-TOKEN"
        assert "JSESSIONID" in {c.key for c in jar}
        body = {"operationName": "DoNotCallRecord", "referenceId": "r"}
        async with http.post(record, json=body) as response:  # no CSRF header
            assert response.status == 403
            assert "CSRF" in (await response.json())["statusMessage"]
        headers = {"X-CSRF-TOKEN": token}
        async with http.post(record, json={"operationName": "Dance"}, headers=headers) as r:
            assert r.status == 400
            error = await r.json()
            assert error["statusCode"] == 2
            assert "Dance" in error["statusMessage"]
        async with http.post(record, data=b"not json", headers=headers) as r:
            assert r.status == 400


async def test_error_rates_refuse_or_drop_acks() -> None:
    sim = Simulator(
        SimulatorOptions(median_ms=1, p99_ms=2, seed=5, error_rate=0.3, missing_ack_rate=0.2)
    )
    await sim.start()
    try:
        async with agent(sim.origin) as desk:
            codes = []
            for n in range(200):
                _, body = await desk.post(
                    f"/api/v2/me/outbound-records/{n}",
                    {"operationName": "CompleteRecord", "referenceId": f"r{n}"},
                )
                codes.append(body["statusCode"])
            await desk.wait_acks([f"r{n}" for n, c in enumerate(codes) if c == 0][:1], TIMEOUT)
    finally:
        await sim.stop()
    assert sim.stats.refused == codes.count(1)
    assert 40 <= sim.stats.refused <= 80
    assert 20 <= sim.stats.unacked <= 60
    assert sim.stats.acked + sim.stats.unacked + sim.stats.refused == 200


def test_the_latency_model_hits_its_median_and_p99() -> None:
    import random

    model = LatencyModel(20, 80, random.Random(3))
    draws = np.array([model.sample_ms() for _ in range(200_000)])
    p50, p99 = np.percentile(draws, [50, 99])
    assert p50 == pytest.approx(20, rel=0.02)
    assert p99 == pytest.approx(80, rel=0.04)
