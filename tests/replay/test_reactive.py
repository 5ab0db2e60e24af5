"""Reactive replay of a proxy tape: a fresh client (aiohttp + aiocometd-ng) sends requests with
NEW referenceIds and handles, and gets acks carrying its own, after the recorded delays; an
unmatched request gets a 404 that names the closest recorded one; the pytest fixture can fail
a test on it."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import aiohttp
import duckdb
import numpy as np
import pytest
from aiocometd_ng import ConnectionType

from recorder.proxy import CaptureProxy, ProxyOptions
from replay.app import Replayer, ReplayOptions
from replay.responder import path_pattern
from replay.simulator import Simulator, SimulatorOptions
from tape.process_writer import ProcessTapeWriter
from tests.agent import agent
from tests.constants import TIMEOUT
from tests.replay.test_plugin import run_pytest

COUNT = 40


async def _record(tape: Path) -> None:
    sim = Simulator(SimulatorOptions(median_ms=30, p99_ms=120, seed=7))
    await sim.start()
    writer = ProcessTapeWriter(tape)
    proxy = CaptureProxy(ProxyOptions(upstream=sim.origin), writer)
    await proxy.start()
    try:
        async with agent(proxy.origin) as desk:
            for n in range(COUNT):
                status, _ = await desk.post(
                    f"/api/v2/me/outbound-records/{100 + n}",
                    {"operationName": "DoNotCallRecord", "referenceId": f"old-{n}"},
                )
                assert status == 200
                await asyncio.sleep(0.01)
            await desk.wait_acks([f"old-{n}" for n in range(COUNT)], TIMEOUT, metrics=COUNT)
    finally:
        await proxy.stop()
        writer.close()
        await sim.stop()


@pytest.fixture(scope="module")
def proxy_tape(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tape = tmp_path_factory.mktemp("reactive") / "recorded.duckdb"
    asyncio.run(_record(tape))
    return tape


def recorded_delays(tape: Path) -> list[float]:
    """Request -> ack as the proxy recorded it, in request order (ms)."""
    conn = duckdb.connect(str(tape), read_only=True)
    rows = conn.execute(
        "SELECT ack_ms FROM request_latency WHERE operation_name = 'DoNotCallRecord' "
        "ORDER BY request_ns"
    ).fetchall()
    return [r[0] for r in rows]


@pytest.mark.parametrize("kind", [ConnectionType.LONG_POLLING, ConnectionType.WEBSOCKET])
async def test_new_reference_ids_get_their_own_acks_with_recorded_delays(
    proxy_tape: Path, kind: ConnectionType
) -> None:
    recorded = recorded_delays(proxy_tape)
    assert len(recorded) == COUNT
    replayer = await Replayer.start(proxy_tape, ReplayOptions(reactive=True))
    try:
        async with agent(replayer.server.url("/").rstrip("/"), kind) as desk:
            sent: dict[str, float] = {}
            for n in range(COUNT):
                ref = f"new-{kind.value}-{n}"
                sent[ref] = time.monotonic()
                status, body = await desk.post(
                    f"/api/v2/me/outbound-records/{900 + n}",
                    {"operationName": "DoNotCallRecord", "referenceId": ref},
                )
                assert (status, body) == (200, {"statusCode": 0})
                await desk.wait_acks([ref], TIMEOUT)  # one at a time: delays do not overlap
            await desk.wait_acks(list(sent), TIMEOUT, metrics=COUNT)
    finally:
        await replayer.stop()
    assert replayer.unmatched == []
    for n in range(COUNT):
        ack = desk.acks[f"new-{kind.value}-{n}"]
        assert ack["notificationType"] == "DoNotCallAcknowledge"
        assert ack["record"]["recordHandle"] == 900 + n  # the new handle, substituted
    handles = sorted(m["userData"]["GSW_RECORD_HANDLE"] for m in desk.internal)
    assert handles == [900 + n for n in range(COUNT)]
    # Served in recorded order: the n-th request gets the n-th recorded delay.
    errors = [
        (desk.ack_times[ref] - sent[ref]) * 1000 - recorded[n]
        for n, ref in enumerate(sorted(sent, key=lambda r: int(r.rsplit("-", 1)[1])))
    ]
    # The error includes the measuring client's own overhead (aiocometd-ng, in this process):
    # a median of 3-4 ms on an idle 2-core machine, 5.3 ms once under a loaded CI run. The
    # upper bounds are generous (20 ms and 200 ms at the default TIMEOUT of 10 s), for a loaded
    # machine; an ack sent without its recorded delay (median 30 ms) is early and fails the last.
    assert np.median(np.abs(errors)) < 2 * TIMEOUT, errors
    assert max(errors) < 20 * TIMEOUT, errors
    assert min(errors) > -5, errors  # never early


async def test_an_unmatched_request_gets_a_404_naming_the_closest(proxy_tape: Path) -> None:
    replayer = await Replayer.start(proxy_tape, ReplayOptions(reactive=True))
    try:
        async with aiohttp.ClientSession() as http:
            url = replayer.server.url("/api/v2/me/outbound-records/5")
            async with http.post(url, json={"operationName": "CompleteRecord"}) as response:
                assert response.status == 404
                diagnosis = await response.json()
    finally:
        await replayer.stop()
    assert diagnosis["closest"]["operationName"] == "DoNotCallRecord"
    assert path_pattern(diagnosis["closest"]["path"]) == "/api/v2/me/outbound-records/*"
    assert diagnosis["differences"] == [
        "operationName: got 'CompleteRecord', recorded 'DoNotCallRecord'"
    ]
    assert len(replayer.unmatched) == 1


def test_the_pytest_fixture_fails_a_test_on_an_unmatched_request(
    proxy_tape: Path, tmp_path: Path
) -> None:
    test = tmp_path / "test_client.py"
    test.write_text(
        "import urllib.error, urllib.request\n"
        "import pytest\n\n"
        "def reject(cometd_replay):\n"
        "    url = cometd_replay.url.replace('notifications', 'me/outbound-records/1')\n"
        '    body = b\'{"operationName":"RejectRecord"}\'\n'
        "    with pytest.raises(urllib.error.HTTPError) as error:\n"
        "        urllib.request.urlopen(urllib.request.Request(url, data=body, method='POST'))\n"
        "    assert error.value.code == 404\n"
        "    assert len(cometd_replay.unmatched) == 1\n\n"
        f"@pytest.mark.cometd_tape({str(proxy_tape)!r}, speed=0, reactive=True)\n"
        "def test_fails(cometd_replay):\n"
        "    reject(cometd_replay)\n\n"
        f"@pytest.mark.cometd_tape({str(proxy_tape)!r}, speed=0, reactive=True, "
        "fail_on_unmatched=False)\n"
        "def test_allowed(cometd_replay):\n"
        "    reject(cometd_replay)\n"
    )
    result = run_pytest(tmp_path)
    out = result.stdout
    assert result.returncode == 1, out
    # test_fails passes its body, then the fixture fails it at teardown; test_allowed passes
    assert "2 passed, 1 error" in out
    assert "ERROR test_client.py::test_fails" in out
    assert "1 request(s) matched no recorded request" in out
    assert "operationName: got 'RejectRecord', recorded 'DoNotCallRecord'" in out
