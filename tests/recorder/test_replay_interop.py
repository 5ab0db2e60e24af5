"""`cometd-tape record --ext replay` against a real server that implements the Salesforce-style
replay extension: Faye (npm `faye`) with a server-side extension in JavaScript
(tests/peers/faye_server.js, FAYE_REPLAY=1) that numbers and retains published events and
honours ext.replay on subscribe. The server ends the recorder's session three times while
events are being published; the tape holds every event exactly once, in replayId order."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest

from tape.reader import TapeReader
from tests.constants import ROOT, TIMEOUT
from tests.peers.faye import FayeServer

TOPIC = "/topic/orders"
BATCHES, PER_BATCH = 30, 10
KILL_AFTER = (7, 15, 23)  # batches after which the server ends the session


class ReplayFaye(FayeServer):
    """Faye with the replay extension installed."""

    def env(self) -> dict[str, str]:
        return {**super().env(), "FAYE_REPLAY": "1"}


@pytest.fixture
def replay_faye() -> Iterator[ReplayFaye]:
    server = ReplayFaye()
    try:
        server.start()
        yield server
    finally:
        server.stop()


def record(url: str, tape: Path, transport: str, *extra: str) -> subprocess.Popen[str]:
    total = str(BATCHES * PER_BATCH)
    args = ["record", url, "-o", str(tape), "-c", TOPIC, "--transport", transport]
    args += ["--ext", "replay", "--max-messages", total, "--duration", str(TIMEOUT * 6), *extra]
    return subprocess.Popen(
        [sys.executable, "-m", "tape", *args], cwd=ROOT, stderr=subprocess.PIPE, text=True
    )


def recorded(tape: Path) -> tuple[list[tuple[int, int]], list[dict[str, int]], list[str]]:
    """(replayId, n) of each event recorded, in tape order; the ext.replay of each subscribe
    sent; the lifecycle events."""
    with TapeReader(tape) as reader:
        events = reader.conn.execute(
            "SELECT json_extract(d.data, '$.event.replayId')::BIGINT, "
            "json_extract(d.data, '$.n')::BIGINT "
            "FROM message_data d JOIN messages m USING (session_id, seq, idx) "
            "WHERE m.direction = 'in' AND m.channel = ? ORDER BY m.session_id, m.seq, m.idx",
            [TOPIC],
        ).fetchall()
        subscribes = [
            orjson.loads(m.ext or "{}").get("replay", {})
            for m in reader.messages()
            if m.direction == "out" and m.channel == "/meta/subscribe"
        ]
        lifecycle = [orjson.loads(f.raw)["event"] for f in reader.frames() if f.kind == "lifecycle"]
    return [(int(r), int(n)) for r, n in events], subscribes, lifecycle


@pytest.mark.parametrize("transport", ["long-polling", "websocket"])
async def test_every_event_once_in_order_across_server_ended_sessions(
    transport: str, replay_faye: ReplayFaye, tmp_path: Path
) -> None:
    tape = tmp_path / "replay.duckdb"
    proc = record(replay_faye.url, tape, transport)
    try:
        await replay_faye.await_subscribed([TOPIC])
        for batch in range(BATCHES):
            first = batch * PER_BATCH
            await replay_faye.apublish(TOPIC, [{"n": n} for n in range(first, first + PER_BATCH)])
            if batch in KILL_AFTER:
                await replay_faye.await_subscribed([TOPIC])  # back from the last one
                killed = await replay_faye.acommand({"cmd": "kill_sessions"})
                assert killed["killed"] == 1
            else:
                await asyncio.sleep(0.02)
        # It stops by itself after BATCHES * PER_BATCH events: a repeat would stop it early.
        try:
            _, stderr = await asyncio.to_thread(proc.communicate, timeout=TIMEOUT * 3)
        except subprocess.TimeoutExpired:  # some never came: stop it, and see which below
            proc.terminate()
            _, stderr = await asyncio.to_thread(proc.communicate, timeout=TIMEOUT)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, stderr
    history = await replay_faye.acommand({"cmd": "replay_history", "channel": TOPIC})
    events, subscribes, lifecycle = recorded(tape)
    total = BATCHES * PER_BATCH
    assert events == [(n + 1, n) for n in range(total)]  # each once, in replayId order
    assert lifecycle.count("rehandshake") == len(KILL_AFTER)
    # The first subscribe asked for new events only; each after a re-handshake resumed after
    # the last event recorded before it, and some events came back only through that.
    assert subscribes[0] == {TOPIC: -1}
    resumed = [s[TOPIC] for s in subscribes[1:]]
    assert len(resumed) == len(KILL_AFTER)
    assert resumed == sorted(resumed)
    assert resumed[0] > 0
    assert history["retained"] == total
    assert history["resent"] > 0


def test_replay_from_needs_the_extension_and_an_id(tmp_path: Path) -> None:
    for extra, said in [
        (["--replay-from", "5"], "goes with --ext replay"),
        (["--ext", "replay", "--replay-from", "soon"], "is not ID or CHANNEL=ID"),
    ]:
        args = ["record", "http://127.0.0.1:1/cometd", "-o", str(tmp_path / "t.duckdb"), *extra]
        result = subprocess.run(
            [sys.executable, "-m", "tape", *args],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=TIMEOUT,
            check=False,
        )
        assert result.returncode == 2, result.stderr
        assert said in result.stderr
        assert "Traceback" not in result.stderr
