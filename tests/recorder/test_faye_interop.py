"""The recorder against a real Faye server (npm `faye`, a Node process on 127.0.0.1), over
both transports: every message exactly once and in order, subscriptions honoured, and a server
restart survived with the gap on the tape."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import orjson
import pytest

from recorder.record import Outcome, Recorder, RecordOptions
from recorder.status import Status
from tape.frame import Session
from tape.reader import MessageRow, TapeReader
from tape.session import SessionLog
from tape.writer import TapeWriter
from tests.conftest import TIMEOUT
from tests.peers.faye import FayeServer

TRANSPORTS = ["long-polling", "websocket"]


@dataclass
class Running:
    recorder: Recorder
    task: asyncio.Task[Outcome]
    writer: TapeWriter
    log: SessionLog

    @property
    def status(self) -> Status:
        return self.recorder.status

    async def wait_for(self, delivered: int) -> None:
        deadline = time.monotonic() + TIMEOUT * 2
        while self.status.delivered < delivered and time.monotonic() < deadline:
            assert not self.task.done(), self.task.result()
            await asyncio.sleep(0.02)
        assert self.status.delivered >= delivered, self.status.line()

    async def finish(self) -> Outcome:
        outcome = await asyncio.wait_for(self.task, TIMEOUT)
        self.log.close(outcome.reason)
        self.writer.close()
        return outcome


@pytest.fixture
async def start_recording(tmp_path: Path) -> AsyncIterator[object]:
    started: list[Running] = []

    def start(options: RecordOptions) -> Running:
        writer = TapeWriter(tmp_path / "faye.duckdb")
        log = SessionLog(writer, Session(session_id="rec", transport=options.transport))
        recorder = Recorder(options, log, Status("rec", options.transport))
        running = Running(
            recorder, asyncio.get_running_loop().create_task(recorder.run()), writer, log
        )
        started.append(running)
        return running

    yield start
    for running in started:
        if not running.task.done():
            running.recorder.stop("test ended")
            await asyncio.wait_for(running.task, TIMEOUT)
            running.writer.close()


def delivered(path: Path, channel: str) -> list[MessageRow]:
    with TapeReader(path) as reader:
        return [m for m in reader.messages() if m.channel == channel and m.direction == "in"]


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_5000_messages_arrive_once_in_order_with_fields(
    transport: str, faye_server: FayeServer, start_recording: object, tmp_path: Path
) -> None:
    run = start_recording(RecordOptions(url=faye_server.url, transport=transport))  # type: ignore[operator]
    await faye_server.await_subscribed()
    await faye_server.apublish_gws(2500)  # 2,500 acks + 2,500 metrics events
    await run.wait_for(5000)
    run.recorder.stop("done")
    outcome = await run.finish()
    assert outcome.ok, outcome.reason
    tape = tmp_path / "faye.duckdb"
    acks = delivered(tape, "/v2/me/outbound")
    metrics = delivered(tape, "/me/internal")
    assert [m.reference_id for m in acks] == [str(i) for i in range(2500)]
    assert [m.record_handle for m in acks] == [str(i) for i in range(2500)]
    assert {m.notification_type for m in acks} == {"DoNotCallAcknowledge"}
    assert [m.node_processing_ns for m in metrics] == [4352048 + i for i in range(2500)]
    assert {m.server_processing_ms for m in metrics} == {5.0}
    assert [m.user_event for m in metrics] == ["DoNotCallAcknowledge"] * 2500


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_a_message_on_an_unsubscribed_channel_is_not_recorded(
    transport: str, faye_server: FayeServer, start_recording: object, tmp_path: Path
) -> None:
    options = RecordOptions(url=faye_server.url, transport=transport, channels=("/v2/me/outbound",))
    run = start_recording(options)  # type: ignore[operator]
    await faye_server.await_subscribed(["/v2/me/outbound"])
    await faye_server.apublish("/me/internal", [{"n": 1}])
    await faye_server.apublish("/v2/me/outbound", [{"n": 2}])
    await run.wait_for(1)
    await asyncio.sleep(0.2)
    run.recorder.stop("done")
    await run.finish()
    tape = tmp_path / "faye.duckdb"
    assert [orjson.loads(_data(tape, m)) for m in delivered(tape, "/v2/me/outbound")] == [{"n": 2}]
    assert delivered(tape, "/me/internal") == []


def _data(tape: Path, row: MessageRow) -> str:
    with TapeReader(tape) as reader:
        found = reader.conn.execute(
            "SELECT data FROM message_data WHERE session_id = ? AND seq = ? AND idx = ?",
            [row.session_id, row.seq, row.idx],
        ).fetchall()
    return str(found[0][0])


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_faye_restart_means_rehandshake_resubscribe_and_a_recorded_gap(
    transport: str, faye_server: FayeServer, start_recording: object, tmp_path: Path
) -> None:
    run = start_recording(RecordOptions(url=faye_server.url, transport=transport))  # type: ignore[operator]
    await faye_server.await_subscribed()
    await faye_server.apublish_gws(5)
    await run.wait_for(10)
    await asyncio.to_thread(faye_server.restart)  # a new Faye knows no clientId: 401 on connect
    await faye_server.await_subscribed()  # the recorder re-handshook and re-subscribed by itself
    await faye_server.apublish_gws(5, start=100)
    await run.wait_for(20)
    run.recorder.stop("done")
    await run.finish()
    tape = tmp_path / "faye.duckdb"
    refs = [m.reference_id for m in delivered(tape, "/v2/me/outbound")]
    assert refs == [str(i) for i in (0, 1, 2, 3, 4, 100, 101, 102, 103, 104)]
    with TapeReader(tape) as reader:
        frames = list(reader.frames())
        handshakes = [m for m in reader.messages() if m.channel == "/meta/handshake"]
    events = [orjson.loads(f.raw) for f in frames if f.kind == "lifecycle"]
    names = [e["event"] for e in events]
    assert names[:2] == ["transport", "connected"]
    assert "rehandshake" in names
    rehandshake = next(e for e in events if e["event"] == "rehandshake")
    assert rehandshake["gap_ms"] is not None
    assert rehandshake["gap_ms"] > 0
    assert len({m.client_id for m in handshakes if m.client_id}) == 2
    if transport == "long-polling":  # over WebSocket Faye may just close; over HTTP it says 401
        assert any(b'"401:' in f.raw for f in frames if f.direction == "in")
