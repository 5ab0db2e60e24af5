"""Two capture points' tapes of one recording, for the analysis tests: the desktop's REST
through the capture proxy (`proxy.duckdb`), its Bayeux straight to the simulator, recorded by
its own client as `record` does (`record.duckdb`)."""

from __future__ import annotations

from pathlib import Path

from demo.desktop import PASSWORD, USER, drive
from recorder.proxy import CaptureProxy, ProxyOptions
from replay.simulator import Simulator, SimulatorOptions
from tape.writer import TapeWriter

OPTIONS = SimulatorOptions(median_ms=150, p99_ms=400, seed=7, users={USER: PASSWORD})


async def proxy_and_record(folder: Path, requests: int, *, seed: int) -> tuple[Path, Path]:
    """`requests` Outbound requests at 150 a second: their tapes (REST, then acks)."""
    rest, acks = folder / "proxy.duckdb", folder / "record.duckdb"
    simulator = Simulator(OPTIONS)
    await simulator.start()
    proxy_writer, record_writer = TapeWriter(rest), TapeWriter(acks)
    proxy = CaptureProxy(ProxyOptions(upstream=simulator.origin), proxy_writer)
    await proxy.start()
    try:
        await drive(
            proxy.origin, requests, 150.0, "long-polling", seed=seed,
            bayeux_origin=simulator.origin, sink=record_writer,
        )  # fmt: skip
    finally:
        await proxy.stop()
        await simulator.stop()
        proxy_writer.close()
        record_writer.close()
    return rest, acks
