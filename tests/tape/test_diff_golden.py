"""A golden-tape regression test as a user writes one: record a client (the demo's agent
desktop, through the capture proxy) against the GWS simulator twice with the same seed, and the
two tapes carry the same traffic under the default ignores; a third recording where the server
refuses some requests is caught, each refusal once (its ack missing, its answer changed)."""

from __future__ import annotations

from pathlib import Path

import duckdb
import pytest

from demo.desktop import PASSWORD, USER, drive
from recorder.proxy import CaptureProxy, ProxyOptions
from replay.simulator import Simulator, SimulatorOptions
from tape.diff import assert_same_traffic
from tape.writer import TapeWriter
from tests.cli import cometd_tape

SEED = 7


async def record(tape: Path, *, error_rate: float = 0.01) -> Path:
    """The agent desktop through the capture proxy (writing `tape`) to a seeded simulator; its
    own Bayeux client's view goes to `NAME-record.duckdb`. Requests go 40 ms apart and acks
    come 5-10 ms after, so the acks keep the requests' order on every run."""
    options = SimulatorOptions(
        median_ms=5, p99_ms=10, seed=SEED, error_rate=error_rate, users={USER: PASSWORD}
    )
    simulator = Simulator(options)
    await simulator.start()
    own_view = tape.with_name(tape.stem + "-record.duckdb")
    with TapeWriter(tape) as proxy_tape, TapeWriter(own_view) as client_tape:
        proxy = CaptureProxy(ProxyOptions(upstream=simulator.origin), proxy_tape)
        await proxy.start()
        try:
            await drive(proxy.origin, 12, 25, "long-polling", SEED, sink=client_tape)
        finally:
            await proxy.stop()
            await simulator.stop()
    return tape


def refused(tape: Path) -> int:
    conn = duckdb.connect(str(tape), read_only=True)
    try:
        rows = conn.execute("SELECT count(*) FROM http_fields WHERE status_code = 1").fetchall()
    finally:
        conn.close()
    return int(rows[0][0])


async def test_the_same_client_and_seed_record_the_same_traffic(tmp_path: Path) -> None:
    golden = await record(tmp_path / "golden.duckdb")
    again = await record(tmp_path / "again.duckdb")
    assert_same_traffic(golden, again)
    shown = cometd_tape("diff", str(golden), str(again))
    assert shown.returncode == 0, shown.stdout
    assert shown.stdout == "same traffic: 24 deliveries on 2 channels, 13 exchanges\n"
    # The desktop's own Bayeux client received what the proxy saw it receive.
    assert_same_traffic(golden, tmp_path / "golden-record.duckdb", exchanges=False)

    worse = await record(tmp_path / "worse.duckdb", error_rate=0.3)
    lost = refused(worse) - refused(golden)
    assert lost >= 1
    with pytest.raises(AssertionError) as caught:
        assert_same_traffic(golden, worse)
    message = str(caught.value)
    assert message.splitlines()[-1] == (
        f"{lost} deliver{'y' if lost == 1 else 'ies'} missing in B on /v2/me/outbound, "
        f"{lost} deliver{'y' if lost == 1 else 'ies'} missing in B on /me/internal, "
        f"{lost} exchange{'' if lost == 1 else 's'} differ{'s' if lost == 1 else ''}"
    )
    added = [line for line in message.splitlines() if line.startswith('+{"method":"POST"')]
    assert len(added) == lost
    assert all('"response":{"statusCode":1,"statusMessage":' in line for line in added)
