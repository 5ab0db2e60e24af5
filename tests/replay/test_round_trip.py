"""Round trip: record Faye into tape A with our recorder, replay A and record the replay into
tape B. The deliveries of A and B are equal (channel, data, order) and their timing agrees."""

from __future__ import annotations

import asyncio
import itertools
import statistics
from pathlib import Path

import pytest

from recorder.cli import record_to_tape
from recorder.record import RecordOptions
from replay.app import ReplayOptions
from replay.player import PlayOptions
from replay.threaded import ThreadedReplayer
from tape.reader import TapeReader
from tests.constants import TIMEOUT
from tests.peers.faye import FayeServer

BURSTS, PER_BURST, GAP_S = 20, 5, 0.05  # 200 messages in bursts 50 ms apart


def deliveries(tape: Path) -> list[tuple[str, str, int]]:
    """(channel, data as JSON text, receipt offset in ns) of every recorded delivery."""
    with TapeReader(tape) as reader:
        rows = reader.conn.execute(
            "SELECT d.channel, d.data::VARCHAR, m.t_mono_ns FROM message_data d "
            "JOIN messages m USING (session_id, seq, idx) "
            "WHERE m.direction = 'in' AND NOT starts_with(m.channel, '/meta/') "
            "ORDER BY m.seq, m.idx"
        ).fetchall()
    return [(str(c), str(d), int(t)) for c, d, t in rows]


@pytest.mark.parametrize("transport", ["websocket", "long-polling"])
async def test_record_replay_record_gives_the_same_deliveries(
    transport: str, faye_server: FayeServer, tmp_path: Path
) -> None:
    tape_a, tape_b = tmp_path / "a.duckdb", tmp_path / "b.duckdb"
    total = BURSTS * PER_BURST * 2
    recording = asyncio.get_running_loop().create_task(
        record_to_tape(
            RecordOptions(url=faye_server.url, transport=transport, max_messages=total), tape_a
        )
    )
    await faye_server.await_subscribed()
    for burst in range(BURSTS):
        await faye_server.apublish_gws(PER_BURST, start=burst * PER_BURST)
        await asyncio.sleep(GAP_S)
    assert (await asyncio.wait_for(recording, TIMEOUT)).ok

    # On its own thread and loop, as a replayer serving another process would be.
    replayer = await asyncio.to_thread(
        ThreadedReplayer, tape_a, ReplayOptions(play=PlayOptions(speed=1))
    )
    try:
        options = RecordOptions(url=replayer.url, transport=transport, max_messages=total)
        assert (await asyncio.wait_for(record_to_tape(options, tape_b), TIMEOUT * 2)).ok
    finally:
        await asyncio.to_thread(replayer.stop)

    a, b = deliveries(tape_a), deliveries(tape_b)
    assert [(c, d) for c, d, _ in a] == [(c, d) for c, d, _ in b]
    assert len(a) == total
    gaps_a = [y[2] - x[2] for x, y in itertools.pairwise(a)]
    gaps_b = [y[2] - x[2] for x, y in itertools.pairwise(b)]
    diff_ms = sorted(abs(x - y) / 1e6 for x, y in zip(gaps_a, gaps_b, strict=True))
    median, p99 = statistics.median(diff_ms), diff_ms[int(len(diff_ms) * 0.99) - 1]
    print(f"\n{transport}: inter-arrival |B - A| median {median:.2f} ms, p99 {p99:.2f} ms")
    if transport == "websocket":
        assert median <= 2.0
        assert p99 <= 10.0
    else:  # long-polling is bounded by the round trip of each poll: reported, loosely held
        assert median <= 5.0
        assert p99 <= 25.0
