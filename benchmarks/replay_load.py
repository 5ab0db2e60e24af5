"""Load benchmark: our replayer against a real Faye server, each serving many clients at once.

    python benchmarks/replay_load.py [--long-polling 1000] [--websocket 1000]
        [--msgs-per-client 5] [--duration 60] [--settle 30] [--processes 2] [--only ours|faye]

The two acceptance runs:

    python benchmarks/replay_load.py --long-polling 1000 --websocket 1000 --msgs-per-client 5
    python benchmarks/replay_load.py --long-polling 0 --websocket 200 --msgs-per-client 0

Per server (ours, then Faye, in the same run):

* ours replays a generated GWS-shaped tape (72 frames/s of an ack on /v2/me/outbound and an
  event on /me/internal: 144 msg/s at speed 1, frame i at i/72 s, `referenceId` = i) with
  `python -m tape replay TAPE --listen 127.0.0.1:0 --speed S --loop`, S = R/144 for
  --msgs-per-client R (R = 0: S = 1), each client on its own clock; Faye publishes the same
  pairs at the same rate (the harness's `pace` command, tests/peers/faye_server.js) to all.
* N long-polling and M WebSocket clients (benchmarks/load_clients.py, in --processes asyncio
  child processes) handshake, subscribe to both channels, keep /meta/connect going and record
  each message's receipt time and frame index; after --duration s of load they disconnect.
* Per client, the least-late message received during the load defines its baseline b
  (receipt - offset_i / S), and the measuring window runs from the start of the load to its
  end less 0.5 s (in flight): expected = the timeline's messages due at b + offset_i / S
  inside the window, delivered = those of them received by the end of the load (the 0.5 s is
  their grace). Lateness = receipt - b - offset_i / S over every message delivered.
  Silence = the longest gap between a client's receipts while it had messages due.
  Held = no error and a message received in the last max(2 s, 5 frame periods) of the load.
* The harness's own share is printed too: the client processes' CPU and how far their event
  loops lagged (a lag makes every message of that process late; Faye's synchronous fan-out to
  all clients at once shows more of it than a per-client clock does).
* The server's CPU over the load window (/proc/PID/stat, % of one core), RSS before the load,
  its peak (VmHWM) and RSS --settle s after the clients left, then the time it takes to exit
  after SIGTERM (capped at 10 s, then SIGKILL). For ours, the last `status:` line the replayer
  logged on stderr, if any.

--keep DIR keeps the tape, the replayer's stderr and the clients' raw receipts (npz + json).
Everything the harness waits for is bounded: a server that starves its clients or ignores
SIGTERM is reported as such. All traffic stays on 127.0.0.1.
"""

from __future__ import annotations

import argparse
import contextlib
import math
import os
import queue
import re
import resource
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import numpy as np
import orjson

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tape.frame import Frame, Session  # noqa: E402
from tape.writer import TapeWriter  # noqa: E402
from tests.peers.faye import FayeServer  # noqa: E402

CLIENTS = ROOT / "benchmarks" / "load_clients.py"
FRAME_RATE = 72.0  # tape frames a second at speed 1
PER_FRAME = 2  # messages in a frame: an ack and an event, as GWS sends them
TAPE_RATE = FRAME_RATE * PER_FRAME  # 144 msg/s, the demo tape's rate
MIN_TAPE_S = 120.0
IN_FLIGHT_S = 0.5  # the end of the window left out: messages still on their way
EXIT_CAP_S = 10.0
STATUS = re.compile(r"status: \d+ live clients")
DEVICE_ID = "c259da54-7c22-4a43-9440-77a92facc86b"
CLK_TCK = os.sysconf("SC_CLK_TCK")

Json = dict[str, Any]


def log(line: str) -> None:
    print(f"{time.strftime('%H:%M:%S')} {line}", file=sys.stderr, flush=True)


# -- the tape ---------------------------------------------------------------------------------


def gws_pair(i: int, at_ms: int) -> list[Json]:
    """Frame i: what gwsPair(i) in tests/peers/faye_server.js publishes."""
    campaign = f"Campaign{i % 7}"
    return [
        {
            "channel": "/v2/me/outbound",
            "data": {
                "record": {
                    "devicePath": f"/devices/{DEVICE_ID}",
                    "callingList": "CallingList1",
                    "applicationId": 134,
                    "recordHandle": i,
                    "campaignName": campaign,
                },
                "notificationType": "DoNotCallAcknowledge",
                "messageType": "OutboundRecordMessage",
                "referenceId": str(i),
            },
        },
        {
            "channel": "/me/internal",
            "data": {
                "metrics": {
                    "eventProcessing": {
                        "serverGenerationTimestamp": at_ms,
                        "nodeProcessingTimeNanos": 4352048 + i,
                        "serverProcessingTimeTotalMs": 5,
                    }
                },
                "userData": {
                    "GSW_APPLICATION_ID": 134,
                    "GSW_RECORD_HANDLE": i,
                    "GSW_USER_EVENT": "DoNotCallAcknowledge",
                    "GSW_CALLING_LIST": "CallingList1",
                    "GSW_CAMPAIGN_NAME": campaign,
                    "GSW_PHONE": f"300{i}",
                },
                "deviceId": DEVICE_ID,
                "messageType": "DeviceUserEventMessage",
            },
        },
    ]


def write_tape(path: Path, frames: int) -> None:
    """`frames` GWS pairs, frame i at offset i / FRAME_RATE s, one JSON array each."""
    wall0 = time.time_ns()
    with TapeWriter(path) as writer:
        writer.put_session(Session(session_id="load", transport="websocket", started_ns=wall0))
        for i in range(frames):
            offset = round(i * 1e9 / FRAME_RATE)
            raw = orjson.dumps(gws_pair(i, (wall0 + offset) // 1_000_000))
            writer.write(
                Frame("load", i + 1, wall0 + offset, offset, "in", "websocket", "bayeux", raw)
            )


# -- /proc ------------------------------------------------------------------------------------


def cpu_seconds(pid: int) -> float | None:
    """utime + stime of a process, in seconds (None once it is gone)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def status_mb(pid: int, name: str) -> float | None:
    """A /proc/PID/status memory field (VmRSS, VmHWM) in MB."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(f"{name}:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def raise_nofile(wanted: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < wanted:
        new = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (new, hard))
        if new < wanted:
            log(f"warning: RLIMIT_NOFILE hard limit {hard} < {wanted} wanted")


def line_reader(stream: IO[str]) -> queue.Queue[str | None]:
    """A daemon thread putting a child's stdout lines on a queue (None at EOF)."""
    lines: queue.Queue[str | None] = queue.Queue()

    def read() -> None:
        with contextlib.suppress(OSError, ValueError):
            for line in stream:
                lines.put(line)
        lines.put(None)

    threading.Thread(target=read, daemon=True).start()
    return lines


def next_line(lines: queue.Queue[str | None], deadline: float) -> str | None:
    try:
        return lines.get(timeout=max(0.0, deadline - time.monotonic()))
    except queue.Empty:
        return None


def sleep_until(t: float) -> None:
    time.sleep(max(0.0, t - time.monotonic()))


# -- the clients ------------------------------------------------------------------------------


@dataclass
class ClientRecord:
    transport: str
    subscribed_at: float | None
    error: str | None
    error_at: float | None
    times: np.ndarray[Any, np.dtype[np.float64]]
    indices: np.ndarray[Any, np.dtype[np.int64]]


@dataclass
class Fleet:
    """The client child processes of one load run."""

    url: str
    long_polling: int
    websocket: int
    processes: int
    tmp: Path
    ramp_timeout: float
    duration: float
    procs: list[subprocess.Popen[str]] = field(default_factory=list)
    lines: list[queue.Queue[str | None]] = field(default_factory=list)
    shares: list[tuple[int, int]] = field(default_factory=list)
    ready: list[Json | None] = field(default_factory=list)
    done: list[Json | None] = field(default_factory=list)

    def start(self) -> None:
        n = max(1, min(self.processes, self.long_polling + self.websocket))
        for p in range(n):
            lp = self.long_polling // n + (p < self.long_polling % n)
            ws = self.websocket // n + (p < self.websocket % n)
            if lp + ws == 0:
                continue
            proc = subprocess.Popen(
                [
                    sys.executable,
                    str(CLIENTS),
                    self.url,
                    "--long-polling",
                    str(lp),
                    "--websocket",
                    str(ws),
                    "--out",
                    str(self.tmp / f"clients-{p}"),
                    "--ramp-timeout",
                    str(self.ramp_timeout),
                    "--wait-go",
                    str(self.ramp_timeout + 60),
                    "--max-duration",
                    str(self.duration + 5),
                ],
                cwd=ROOT,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                text=True,
            )
            assert proc.stdout is not None
            self.procs.append(proc)
            self.lines.append(line_reader(proc.stdout))
            self.shares.append((lp, ws))

    def wait_ready(self) -> None:
        deadline = time.monotonic() + self.ramp_timeout + 30
        for lines in self.lines:
            line = next_line(lines, deadline)
            self.ready.append(orjson.loads(line) if line and line.startswith("{") else None)

    def go(self, t_go: float, t_end: float) -> None:
        for proc in self.procs:
            assert proc.stdin is not None
            with contextlib.suppress(OSError):
                proc.stdin.write(f"go {t_go!r} {t_end!r}\n")
                proc.stdin.flush()

    def wait_done(self, deadline: float) -> None:
        for proc, lines in zip(self.procs, self.lines, strict=True):
            answer: Json | None = None
            while True:
                line = next_line(lines, deadline)
                if line is None:
                    break
                if '"done"' in line:
                    log(f"client process {proc.pid}: {line.strip()}")
                    answer = orjson.loads(line)
                    break
            self.done.append(answer)
            if answer is None and proc.poll() is None:
                log(f"client process {proc.pid} did not finish in time: killed")
                proc.kill()
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(10)
            if proc.poll() is None:
                proc.kill()
                proc.wait(10)

    def kill(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.kill()
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(10)

    def records(self) -> tuple[list[ClientRecord], float, list[Json]]:
        """Every client's record (a process that failed: its clients as failed), the clients'
        CPU seconds over the load window, and each process's event-loop lag."""
        out: list[ClientRecord] = []
        cpu = 0.0
        stalls: list[Json] = []
        empty_t = np.zeros(0, dtype=np.float64)
        empty_i = np.zeros(0, dtype=np.int64)
        for p, ((lp, ws), done) in enumerate(zip(self.shares, self.done, strict=True)):
            base = self.tmp / f"clients-{p}"
            if done is None or not base.with_suffix(".json").is_file():
                transports = ["long-polling"] * lp + ["websocket"] * ws
                out += [
                    ClientRecord(t, None, "client process failed", None, empty_t, empty_i)
                    for t in transports
                ]
                continue
            meta = orjson.loads(base.with_suffix(".json").read_bytes())
            cpu += float(meta["cpu_s"])
            stalls.append(meta["stalls"])
            with np.load(base.with_suffix(".npz")) as data:
                times, indices, counts = data["t"], data["i"], data["counts"]
            ends = np.cumsum(counts)
            starts = ends - counts
            for c, s, e in zip(meta["clients"], starts, ends, strict=True):
                out.append(
                    ClientRecord(
                        c["transport"],
                        c["subscribed_at"],
                        c["error"],
                        c["error_at"],
                        times[s:e],
                        indices[s:e],
                    )
                )
        return out, cpu, stalls


# -- the figures ------------------------------------------------------------------------------


@dataclass
class Figures:
    name: str
    clients: int = 0
    subscribed: int = 0
    ramp_s: float = 0.0
    held: int = 0
    held_lp: tuple[int, int] = (0, 0)
    held_ws: tuple[int, int] = (0, 0)
    errors: Counter[str] = field(default_factory=Counter)
    delivered: int = 0
    expected: int = 0
    duplicates: int = 0
    wrapped: int = 0
    p50_ms: float = math.nan
    p99_ms: float = math.nan
    max_silence_s: float = math.nan
    silent_clients: int = 0
    silence_limit_s: float = 1.0
    cpu_pct: float | None = None
    clients_cpu_pct: float = 0.0
    clients_stalls: str = ""
    rss_before_mb: float | None = None
    peak_mb: float | None = None
    rss_after_mb: float | None = None
    exit_s: float | None = None
    exit_note: str = ""
    notes: list[str] = field(default_factory=list)

    def line(self, settle: float) -> str:
        def mb(v: float | None) -> str:
            return "?" if v is None else f"{v:.0f} MB"

        ratio = self.delivered / self.expected if self.expected else math.nan
        cpu = "?" if self.cpu_pct is None else f"{self.cpu_pct:.0f}%"
        exit_ = "?" if self.exit_s is None or math.isnan(self.exit_s) else f"{self.exit_s:.2f} s"
        parts = [
            f"{self.name}: held {self.held:,}/{self.clients:,} "
            f"(LP {self.held_lp[0]:,}/{self.held_lp[1]:,}, WS {self.held_ws[0]:,}/"
            f"{self.held_ws[1]:,}; {self.subscribed:,} subscribed in {self.ramp_s:.1f} s)",
            f"delivered {self.delivered:,}/{self.expected:,} ({ratio:.2%})",
            f"lateness p50 {self.p50_ms:.1f} ms, p99 {self.p99_ms:.1f} ms",
            f"longest silence {self.max_silence_s:.2f} s "
            f"({self.silent_clients:,} clients > {self.silence_limit_s:g} s)",
            f"CPU {cpu} of a core",
            f"RSS {mb(self.rss_before_mb)} before, peak {mb(self.peak_mb)}, "
            f"{mb(self.rss_after_mb)} {settle:g} s after",
            f"exit after SIGTERM {exit_}{self.exit_note}",
        ]
        return " | ".join(parts)

    def details(self) -> list[str]:
        out = [
            f"  {self.name}: client processes used {self.clients_cpu_pct:.0f}% of a core"
            f"{self.clients_stalls}"
        ]
        if self.duplicates:
            out.append(f"  {self.name}: {self.duplicates:,} duplicate messages")
        if self.wrapped:
            out.append(f"  {self.name}: {self.wrapped} clients saw the timeline wrap (bad figures)")
        for error, n in self.errors.most_common(5):
            out.append(f"  {self.name}: {n:,} clients failed: {error}")
        out += [f"  {self.name}: {note}" for note in self.notes]
        return out


def analyse(
    figures: Figures,
    records: list[ClientRecord],
    t_go: float,
    t_end: float,
    speed: float,
    frames: int,
    origin: float | None = None,
) -> None:
    """Fill in the delivery, lateness, silence and held figures from the clients' records.

    Per client: b = the least lateness (receipt - offset_i / S) of the messages it received
    during the load; expected = the frames' messages due at b + offset_i / S from the start of
    the load to IN_FLIGHT_S before its end; delivered = those of them received by the end (the
    last IN_FLIGHT_S is their grace). `origin`, when the server's own schedule is known (Faye's
    publisher: frame i at origin + offset_i / S), also gives the lateness against that clock.
    """
    w0, w1 = t_go, t_end - IN_FLIGHT_S
    period = 1.0 / (FRAME_RATE * speed)  # wall seconds between frames: offset_i / S = i * period
    hold_s = max(2.0, 5 * period)
    figures.silence_limit_s = max(1.0, 2 * period)
    nominal = PER_FRAME * (math.floor((w1 - w0) / period) + 1)
    lateness: dict[str, list[np.ndarray[Any, np.dtype[np.float64]]]] = {}
    absolute: list[np.ndarray[Any, np.dtype[np.float64]]] = []
    silences: list[float] = []
    held = {"long-polling": [0, 0], "websocket": [0, 0]}
    for r in records:
        figures.clients += 1
        held[r.transport][1] += 1
        if r.subscribed_at is not None:
            figures.subscribed += 1
        if r.error is not None and (r.error_at is None or r.error_at <= t_end):
            figures.errors[re.sub(r"\d+", "N", r.error)[:160]] += 1
        elif r.subscribed_at is not None and r.times.size and r.times[-1] >= t_end - hold_s:
            figures.held += 1
            held[r.transport][0] += 1
        if r.indices.size > 1 and np.any(np.diff(r.indices) < -frames // 2):
            figures.wrapped += 1
        during = (r.times >= w0) & (r.times <= t_end)
        t, i = r.times[during], r.indices[during]
        if t.size == 0:
            figures.expected += nominal
            silences.append(w1 - w0)
            continue
        b = float(np.min(t - i * period))
        lo = max(0, math.ceil((w0 - b) / period))
        hi = min(frames - 1, math.floor((w1 - b) / period))
        figures.expected += PER_FRAME * max(0, hi - lo + 1)
        due = (i >= lo) & (i <= hi)
        t, i = t[due], i[due]
        figures.delivered += int(t.size)
        if t.size == 0:
            silences.append(w1 - w0)
            continue
        lateness.setdefault(r.transport, []).append(t - b - i * period)
        if origin is not None:
            absolute.append(t - origin - i * period)
        _, counts = np.unique(i, return_counts=True)
        figures.duplicates += int(np.sum(np.maximum(counts - PER_FRAME, 0)))
        gaps = [float(np.max(np.diff(t))) if t.size > 1 else 0.0]
        gaps.append(float(t[0]) - (b + lo * period))  # silent from the first message due
        gaps.append((b + hi * period) - float(t[-1]))  # ... or up to the last one due
        silences.append(max(gaps))
    figures.held_lp = (held["long-polling"][0], held["long-polling"][1])
    figures.held_ws = (held["websocket"][0], held["websocket"][1])
    if lateness:
        every = np.concatenate([a for arrays in lateness.values() for a in arrays]) * 1000
        figures.p50_ms, figures.p99_ms = (float(v) for v in np.percentile(every, [50, 99]))
        for transport, arrays in sorted(lateness.items()):
            p50, p99 = np.percentile(np.concatenate(arrays) * 1000, [50, 99])
            figures.notes.append(f"{transport} lateness p50 {p50:.1f} ms, p99 {p99:.1f} ms")
    if absolute:
        p50, p99 = np.percentile(np.concatenate(absolute) * 1000, [50, 99])
        figures.notes.append(
            f"lateness against the publisher's own clock: p50 {p50:.1f} ms, p99 {p99:.1f} ms"
        )
    if silences:
        figures.max_silence_s = max(silences)
        figures.silent_clients = sum(1 for s in silences if s > figures.silence_limit_s)


# -- one load run against one server --------------------------------------------------------


@dataclass
class Target:
    name: str
    url: str
    pid: int
    frames: Callable[[], int]  # how many frames the server's timeline had
    on_go: Callable[[float, float], None]  # called at t_go with (t_go, t_end)
    after_go: Callable[[], None]  # called once the clients are done
    origin: Callable[[], float | None] = lambda: None  # when frame 0 was due, if known


def run_load(target: Target, args: argparse.Namespace, speed: float, tmp: Path) -> Figures:
    figures = Figures(target.name)
    figures.rss_before_mb = status_mb(target.pid, "VmRSS")
    fleet = Fleet(
        target.url,
        args.long_polling,
        args.websocket,
        args.processes,
        tmp,
        args.ramp_timeout,
        args.duration,
    )
    try:
        started = time.monotonic()
        fleet.start()
        fleet.wait_ready()
        figures.ramp_s = time.monotonic() - started
        subscribed = sum(int(r["subscribed"]) for r in fleet.ready if r)
        log(
            f"{target.name}: {subscribed:,} of {args.long_polling + args.websocket:,} clients "
            f"subscribed in {figures.ramp_s:.1f} s"
        )
        t_go = time.monotonic() + 0.5
        t_end = t_go + args.duration
        fleet.go(t_go, t_end)
        sleep_until(t_go)
        cpu0, wall0 = cpu_seconds(target.pid), time.monotonic()
        target.on_go(t_go, t_end)
        sleep_until(t_end)
        cpu1, wall1 = cpu_seconds(target.pid), time.monotonic()
        if cpu0 is not None and cpu1 is not None:
            figures.cpu_pct = 100 * (cpu1 - cpu0) / (wall1 - wall0)
        else:
            figures.notes.append("the server was gone by the end of the load")
        log(f"{target.name}: load done; clients disconnecting")
        fleet.wait_done(t_end + 60)
        target.after_go()
    finally:
        fleet.kill()
    records, clients_cpu, stalls = fleet.records()
    figures.clients_cpu_pct = 100 * clients_cpu / args.duration
    if stalls:
        figures.clients_stalls = (
            f"; their event loops lagged p99 {max(s['lag_p99_ms'] for s in stalls):.0f} ms, "
            f"max {max(s['lag_max_ms'] for s in stalls):.0f} ms"
        )
    analyse(figures, records, t_go, t_end, speed, target.frames(), target.origin())
    figures.peak_mb = status_mb(target.pid, "VmHWM")
    log(f"{target.name}: clients gone; settling {args.settle:g} s")
    time.sleep(args.settle)
    figures.rss_after_mb = status_mb(target.pid, "VmRSS")
    return figures


def ours(args: argparse.Namespace, speed: float, tmp: Path) -> Figures:
    wall_s = args.ramp_timeout + args.duration + 60  # the longest a client's timeline may run
    frames = math.ceil(max(MIN_TAPE_S, wall_s * speed) * FRAME_RATE)
    tape = tmp / "load.duckdb"
    log(f"ours: writing a {frames / FRAME_RATE:.0f} s tape ({frames:,} frames)")
    write_tape(tape, frames)
    stderr_path = tmp / "replayer.stderr"
    with stderr_path.open("w") as stderr:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "tape",
                "replay",
                str(tape),
                "--listen",
                "127.0.0.1:0",
                "--speed",
                f"{speed:.12g}",
                "--loop",
            ],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=stderr,
            text=True,
        )
    try:
        assert proc.stdout is not None
        first = next_line(line_reader(proc.stdout), time.monotonic() + 120)
        found = re.search(r"on (http://127\.0\.0\.1:\d+/\S+)", first or "")
        if not found:
            raise SystemExit(f"the replayer did not print its URL (got {first!r})")
        target = Target("ours", found.group(1), proc.pid, lambda: frames, _nothing, _nothing0)
        figures = run_load(target, args, speed, tmp)
        figures.notes.append(last_status(stderr_path))
        figures.exit_s, figures.exit_note = time_sigterm(proc)
        return figures
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)


def _nothing(t_go: float, t_end: float) -> None:
    return None


def _nothing0() -> None:
    return None


def last_status(path: Path) -> str:
    last = None
    with path.open(errors="replace") as lines:
        for line in lines:
            if STATUS.search(line):
                last = line.strip()
    return f"last status line: {last}" if last else "no status line"


def time_sigterm(proc: subprocess.Popen[str]) -> tuple[float, str]:
    """Seconds from SIGTERM to exit; past EXIT_CAP_S the process is killed and that reported."""
    if proc.poll() is not None:
        return math.nan, f" (n/a: it had already exited, status {proc.returncode})"
    started = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    try:
        code = proc.wait(EXIT_CAP_S)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(10)
        return EXIT_CAP_S, f" (FAILED: still running after {EXIT_CAP_S:g} s, killed)"
    elapsed = time.monotonic() - started
    return elapsed, "" if code in (0, -signal.SIGTERM) else f" (exit status {code})"


def faye(args: argparse.Namespace, speed: float, tmp: Path) -> Figures:
    server = FayeServer()
    server.start()
    pace: list[Json] = []
    errors: list[str] = []
    threads: list[threading.Thread] = []

    def on_go(t_go: float, t_end: float) -> None:
        def run() -> None:
            try:
                duration = t_end + IN_FLIGHT_S - time.monotonic()
                pace.append(server.pace(FRAME_RATE * speed, duration, timeout=duration + 30))
            except Exception as exc:  # reported, not raised: the run still ends
                errors.append(f"pace failed: {exc}")

        thread = threading.Thread(target=run, daemon=True)
        thread.start()
        threads.append(thread)

    def after_go() -> None:
        for thread in threads:
            thread.join(30)

    def frames() -> int:
        return int(pace[0]["pairs"]) if pace else 0

    def origin() -> float | None:
        return int(pace[0]["started_monotonic_ns"]) / 1e9 if pace else None

    try:
        target = Target("Faye", server.url, server.pid, frames, on_go, after_go, origin)
        figures = run_load(target, args, speed, tmp)
        figures.notes += errors
        if pace:
            figures.notes.append(
                f"pace published {pace[0]['published']:,} messages, "
                f"timer {pace[0]['max_lag_ms']:.1f} ms late at worst"
            )
        started = time.monotonic()
        if not server.running:
            figures.exit_note = " (n/a: it had already exited)"
            return figures
        os.kill(server.pid, signal.SIGTERM)
        while server.running and time.monotonic() - started < EXIT_CAP_S:
            time.sleep(0.005)
        if server.running:
            figures.exit_s = EXIT_CAP_S
            figures.exit_note = f" (FAILED: still running after {EXIT_CAP_S:g} s, killed)"
            server.kill()
        else:
            figures.exit_s = time.monotonic() - started
        return figures
    finally:
        server.stop()


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--long-polling", type=int, default=1000, metavar="N")
    parser.add_argument("--websocket", type=int, default=1000, metavar="M")
    parser.add_argument(
        "--msgs-per-client",
        type=float,
        default=5.0,
        metavar="R",
        help=f"messages a second to each client (0: the tape's full {TAPE_RATE:g}, speed 1)",
    )
    parser.add_argument("--duration", type=float, default=60.0, help="seconds of load")
    parser.add_argument(
        "--settle", type=float, default=30.0, help="seconds after the clients left to read RSS"
    )
    parser.add_argument(
        "--processes", type=int, default=2, help="client processes (2 for 2,000 clients)"
    )
    parser.add_argument(
        "--ramp-timeout",
        type=float,
        default=60.0,
        help="seconds for all clients to subscribe; the rest count as failed",
    )
    parser.add_argument("--only", choices=["ours", "faye"])
    parser.add_argument(
        "--keep",
        type=Path,
        metavar="DIR",
        help="keep the tape, the replayer's stderr and the clients' records in DIR",
    )
    args = parser.parse_args()
    if args.msgs_per_client < 0 or args.duration <= IN_FLIGHT_S + 1 or args.settle < 0:
        parser.error("--msgs-per-client >= 0, --duration > 1.5 and --settle >= 0, please")
    if args.long_polling < 0 or args.websocket < 0 or args.processes < 1:
        parser.error("client counts >= 0 and --processes >= 1, please")
    return args


def main() -> None:
    args = parse_args()
    clients = args.long_polling + args.websocket
    raise_nofile(2 * clients + 1024)
    speed = 1.0 if args.msgs_per_client == 0 else args.msgs_per_client / TAPE_RATE
    rate = TAPE_RATE * speed
    print(
        f"{args.long_polling:,} long-polling + {args.websocket:,} WebSocket clients, "
        f"{rate:g} msg/s each ({rate * clients:,.0f} msg/s in all; speed {speed:.4g}), "
        f"{args.duration:g} s of load, {args.processes} client processes",
        flush=True,
    )
    results: list[Figures] = []
    with contextlib.ExitStack() as stack:
        if args.keep is None:
            tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="replay-load-")))
        else:
            tmp = args.keep
            tmp.mkdir(parents=True, exist_ok=True)
        if args.only in (None, "ours"):
            (tmp / "ours").mkdir(exist_ok=True)
            results.append(ours(args, speed, tmp / "ours"))
            print(results[-1].line(args.settle), *results[-1].details(), sep="\n", flush=True)
        if args.only in (None, "faye"):
            (tmp / "faye").mkdir(exist_ok=True)
            results.append(faye(args, speed, tmp / "faye"))
            print(results[-1].line(args.settle), *results[-1].details(), sep="\n", flush=True)
    if len(results) == 2:
        mine, theirs = results
        cpu = (
            f"{mine.cpu_pct / theirs.cpu_pct:.2f}x"
            if mine.cpu_pct is not None and theirs.cpu_pct
            else "n/a"
        )
        delivered = f"{mine.delivered / theirs.delivered:.2f}x" if theirs.delivered else "n/a"
        print(f"ours/Faye: CPU {cpu}, delivered {delivered}")


if __name__ == "__main__":
    main()
