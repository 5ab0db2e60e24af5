"""Round trip: record Faye into tape A with our recorder, replay A and record the replay into
tape B. The deliveries of A and B are equal (channel, data, order) and B keeps A's pacing: its
bursts are as far apart as A's, within a bound a loaded machine meets. How closely each gap
agrees (median and p99 of |B - A|) is a benchmark figure: `python benchmarks/round_trip.py`."""

from __future__ import annotations

import asyncio
import itertools
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


async def round_trip(
    faye: FayeServer, transport: str, tape_a: Path, tape_b: Path
) -> tuple[list[tuple[str, str, int]], list[tuple[str, str, int]]]:
    """Record BURSTS bursts of GWS pairs from `faye` into tape A, replay A at --speed 1 and
    record that into tape B; the deliveries of A and of B."""
    total = BURSTS * PER_BURST * 2
    recording = asyncio.get_running_loop().create_task(
        record_to_tape(RecordOptions(url=faye.url, transport=transport, max_messages=total), tape_a)
    )
    await faye.await_subscribed()
    for burst in range(BURSTS):
        await faye.apublish_gws(PER_BURST, start=burst * PER_BURST)
        await asyncio.sleep(GAP_S)  # the recording's pacing, not a wait for something
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
    return deliveries(tape_a), deliveries(tape_b)


def gap_differences_ms(a: list[tuple[str, str, int]], b: list[tuple[str, str, int]]) -> list[float]:
    """|B - A| of each inter-arrival gap, in ms, sorted."""
    gaps_a = [y[2] - x[2] for x, y in itertools.pairwise(a)]
    gaps_b = [y[2] - x[2] for x, y in itertools.pairwise(b)]
    return sorted(abs(x - y) / 1e6 for x, y in zip(gaps_a, gaps_b, strict=True))


@pytest.mark.parametrize("transport", ["websocket", "long-polling"])
async def test_record_replay_record_gives_the_same_deliveries(
    transport: str, faye_server: FayeServer, tmp_path: Path
) -> None:
    a, b = await round_trip(faye_server, transport, tmp_path / "a.duckdb", tmp_path / "b.duckdb")
    assert len(a) == BURSTS * PER_BURST * 2
    assert [(c, d) for c, d, _ in b] == [(c, d) for c, d, _ in a]  # complete, in order

    # B is paced as A was: its first to last delivery spans A's ~1 s (BURSTS gaps of GAP_S),
    # not nothing (replayed at once), and not much longer. The lower bound is structural (half
    # of A's span); the upper one is generous and scales with the shared TIMEOUT.
    span_a, span_b = a[-1][2] - a[0][2], b[-1][2] - b[0][2]
    assert span_a >= (BURSTS - 1) * GAP_S * 1e9 / 2  # the bursts were published GAP_S apart
    assert span_b >= span_a / 2
    assert span_b <= span_a + TIMEOUT / 10 * 1e9
    # Bursts stay bursts: the biggest gaps of B are where A's are (between bursts).
    gaps_a = [y[2] - x[2] for x, y in itertools.pairwise(a)]
    gaps_b = [y[2] - x[2] for x, y in itertools.pairwise(b)]
    widest_a = sorted(range(len(gaps_a)), key=gaps_a.__getitem__)[-(BURSTS - 1) :]
    widest_b = sorted(range(len(gaps_b)), key=gaps_b.__getitem__)[-(BURSTS - 1) :]
    assert len(set(widest_a) & set(widest_b)) >= (BURSTS - 1) // 2
