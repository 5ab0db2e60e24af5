"""Outage scenarios for the recorder against cometd-nodejs-server, shared by
tests/recorder/test_cometd_interop.py and benchmarks/restarts.py.

A `cometd-tape record --transport long-polling` process records one channel while the server
publishes sequence-numbered messages on it (a stream in the server process). Each repetition
ends the recorder's session one way:

- restart: the server is killed, stays down `outage_s`, and a fresh one starts on the same port;
  the recorder's next connect gets `402::session_unknown` from it.
- expire: the recorder is paused (SIGSTOP) until the server has expired its session (maxInterval,
  confirmed by the server's own sessionRemoved event), then resumed (SIGCONT); its next connect
  gets `402::session_unknown`.

After the recorder has stopped, the tape says, for each repetition: how long after the frame
carrying the 402 the first /meta/handshake went out (on the recorder's monotonic clock, the
frames' t_mono_ns), and whether every message the server published after the new
subscription (its `subscribed` event, which precedes the subscribe reply) is in the tape.
"""

from __future__ import annotations

import contextlib
import json
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import duckdb

from tests.constants import TIMEOUT
from tests.peers.cometd_server import CometdServer

CHANNEL = "/tape/seq"
RATE = 200.0  # messages a second from the server's stream
SETTLE_S = 0.4  # how long the stream goes on after the new subscription
Kind = Literal["restart", "expire"]

# The expire scenario's server: connects held 1 s, sessions expired 1 s after their last
# connect reply, swept every 100 ms. A session cannot expire while its connect is held, so the
# pause lasts at least timeout + maxInterval + a sweep (~2.1 s), as the server confirms.
EXPIRE_OPTIONS: dict[str, Any] = {
    "timeout_ms": 1000,
    "max_interval_ms": 1000,
    "sweep_period_ms": 100,
}


@dataclass
class Repetition:
    """What one repetition published; the tape fills in the rest."""

    index: int
    subscribed_next_seq: int  # the first seq published after the new subscription
    published_next_seq: int  # one past the last seq published
    rehandshake_ms: float | None = None  # 402 frame -> first outgoing /meta/handshake
    error: str | None = None  # the 402 the server answered
    gap_ms: float | None = None  # the recorder's own "rehandshake" gap (outage as it saw it)
    missing: list[int] = field(default_factory=list)

    @property
    def expected(self) -> range:
        return range(self.subscribed_next_seq, self.published_next_seq)


@dataclass
class Result:
    kind: Kind
    outage_s: float
    repetitions: list[Repetition]
    recorder_exit: int
    recorder_stderr: str
    unknown_client_replies: int  # 402 frames in the tape: one per repetition expected

    @property
    def rehandshake_ms(self) -> list[float]:
        return [r.rehandshake_ms for r in self.repetitions if r.rehandshake_ms is not None]


class RecorderProcess:
    """`cometd-tape record URL -o TAPE --transport long-polling -c CHANNEL` as a child process."""

    def __init__(self, url: str, tape: Path, channel: str = CHANNEL) -> None:
        script = Path(sys.executable).with_name("cometd-tape")  # the CLI entry of this venv
        entry = [str(script)] if script.is_file() else [sys.executable, "-m", "tape"]
        self.stderr_path = tape.with_suffix(".stderr")
        self._stderr = self.stderr_path.open("w")
        self.proc = subprocess.Popen(
            [*entry, "record", url, "-o", str(tape), "--transport", "long-polling", "-c", channel],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=self._stderr,
        )

    def pause(self) -> None:
        self.proc.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        self.proc.send_signal(signal.SIGCONT)

    def stop(self) -> int:
        """SIGTERM (a clean stop: disconnect, tape closed), then the exit code; SIGKILL if stuck."""
        if self.proc.poll() is None:
            self.resume()  # a stopped process would not act on SIGTERM
            self.proc.send_signal(signal.SIGTERM)
        try:
            code = self.proc.wait(TIMEOUT * 2)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            code = self.proc.wait(TIMEOUT)
        self._stderr.close()
        return code

    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace")


def _wait(condition_name: str, check: object, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():  # type: ignore[operator]
            return
        time.sleep(0.01)
    raise AssertionError(f"timed out after {timeout:g} s waiting for {condition_name}")


def _last_subscription(server: CometdServer) -> dict[str, object]:
    log = [e for e in server.clients()["subscribe_log"] if e["channel"] == CHANNEL]
    assert log, "the server saw no subscription"
    entry: dict[str, object] = log[-1]
    return entry


def run(
    kind: Kind,
    repetitions: int,
    tape: Path,
    *,
    outage_s: float = 2.0,
    rate: float = RATE,
    progress: bool = False,
) -> Result:
    """Run `repetitions` outages of one kind against one server and one recorder process."""
    server = CometdServer(**EXPIRE_OPTIONS) if kind == "expire" else CometdServer()
    server.start()
    recorder: RecorderProcess | None = None
    reps: list[Repetition] = []
    try:
        recorder = RecorderProcess(server.url, tape)
        server.wait_subscribed([CHANNEL], timeout=TIMEOUT)
        for index in range(repetitions):
            base = (index + 1) * 1_000_000
            if kind == "restart":
                reps.append(_restart_once(server, index, base, outage_s, rate))
            else:
                reps.append(_expire_once(server, recorder, index, base, rate))
            if progress:
                print(f"  {kind} {index + 1}/{repetitions}", file=sys.stderr, flush=True)
        time.sleep(SETTLE_S)  # the last deliveries reach the tape before the stop
    finally:
        code = recorder.stop() if recorder is not None else -1
        server.stop()
    stderr = recorder.stderr() if recorder is not None else ""
    result = Result(kind, outage_s, reps, code, stderr, 0)
    if code == 0:
        _read_tape(tape, result)
    return result


def _restart_once(
    server: CometdServer, index: int, base: int, outage_s: float, rate: float
) -> Repetition:
    server.stream(CHANNEL, rate, start=base)  # traffic up to the kill (lost with the server)
    time.sleep(SETTLE_S)
    server.kill()
    time.sleep(outage_s)
    server.start(server.port)
    # The new server streams from its first moment, so the recorder re-subscribes mid-stream.
    stream = server.stream(CHANNEL, rate, start=base + 500_000)
    # The recorder retries on its backoff (0, 0.5, 1, 2, 4, 8... s while the server is down).
    server.wait_subscribed([CHANNEL], timeout=outage_s + 20)
    subscribed = _last_subscription(server)
    time.sleep(SETTLE_S)
    done = server.stream_stop(int(stream["stream"]))
    first = subscribed["next_seq"]
    return Repetition(
        index,
        int(first) if isinstance(first, int) else int(done["first_seq"]),
        int(done["next_seq"]),
    )


def _expire_once(
    server: CometdServer, recorder: RecorderProcess, index: int, base: int, rate: float
) -> Repetition:
    stream = server.stream(CHANNEL, rate, start=base)
    time.sleep(SETTLE_S)
    before = server.clients()
    expired = int(before["expired"])
    recorder.pause()
    try:
        # Past maxInterval: wait for the server itself to say the session has gone.
        _wait(
            "the server to expire the paused recorder's session",
            lambda: int(server.clients()["expired"]) > expired,
            TIMEOUT,
        )
    finally:
        recorder.resume()
    server.wait_subscribed([CHANNEL], timeout=TIMEOUT)
    subscribed = _last_subscription(server)
    time.sleep(SETTLE_S)
    done = server.stream_stop(int(stream["stream"]))
    first = subscribed["next_seq"]
    assert isinstance(first, int), subscribed
    return Repetition(index, first, int(done["next_seq"]))


def _read_tape(tape: Path, result: Result) -> None:
    with contextlib.closing(duckdb.connect(str(tape), read_only=True)) as con:
        unknown = con.execute(
            "SELECT seq, t_mono_ns, error FROM messages"
            " WHERE direction = 'in' AND successful = false AND error LIKE '402:%'"
            " ORDER BY seq, idx"
        ).fetchall()
        handshakes = con.execute(
            "SELECT seq, t_mono_ns FROM messages"
            " WHERE direction = 'out' AND channel = '/meta/handshake' ORDER BY seq"
        ).fetchall()
        lifecycle = [
            json.loads(bytes(raw))
            for (raw,) in con.execute(
                "SELECT raw FROM frames WHERE kind = 'lifecycle' ORDER BY seq"
            ).fetchall()
        ]
        gaps = [e.get("gap_ms") for e in lifecycle if e.get("event") == "rehandshake"]
        seqs = {
            int(json.loads(data)["seq"])
            for (data,) in con.execute(
                "SELECT data FROM message_data WHERE channel = ?", [CHANNEL]
            ).fetchall()
        }
    result.unknown_client_replies = len(unknown)
    for rep, (seq, t_ns, error) in zip(result.repetitions, unknown, strict=False):
        after = [t for s, t in handshakes if s > seq]
        rep.error = str(error)
        rep.rehandshake_ms = (after[0] - t_ns) / 1e6 if after else None
    for rep, gap in zip(result.repetitions, gaps, strict=False):
        rep.gap_ms = gap
    for rep in result.repetitions:
        rep.missing = [s for s in rep.expected if s not in seqs]


def percentile(values: list[float], q: float) -> float:
    """The q-th percentile (0-100), nearest-rank: an observed value, as for p99 of 20 runs."""
    ordered = sorted(values)
    rank = max(1, -(-len(ordered) * q // 100))
    return ordered[int(rank) - 1]
