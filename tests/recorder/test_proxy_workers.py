"""`cometd-tape proxy --workers N`: N processes on one port, each recording its own tape of one
tape set. Every exchange is recorded exactly once across the workers' tapes, SIGTERM stops them
all with every frame kept, a worker that dies stops the rest, and bad options are one line."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import duckdb
import orjson

from tests.cli import cometd_tape
from tests.constants import ROOT, TIMEOUT

CLIENTS, REQUESTS = 6, 40


@contextlib.contextmanager
def simulator() -> Iterator[str]:
    sim = subprocess.Popen(
        [sys.executable, "-m", "tape", "simulate", "--listen", "127.0.0.1:0", "--seed", "1"],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert sim.stdout is not None
        line = sim.stdout.readline()
        found = re.search(r"on (http://127\.0\.0\.1:\d+)", line)
        assert found, line
        yield found.group(1)
    finally:
        sim.send_signal(signal.SIGINT)
        sim.wait(TIMEOUT)


@contextlib.contextmanager
def proxy_set(
    upstream: str, folder: Path, workers: int = 2, flags: list[str] | None = None
) -> Iterator[tuple[subprocess.Popen[str], str]]:
    args = ["--upstream", upstream, "--listen", "127.0.0.1:0", "--workers", str(workers)]
    args += flags or []
    proc = subprocess.Popen(
        [sys.executable, "-m", "tape", "proxy", *args, "-o", str(folder)],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stderr is not None
        line = proc.stderr.readline()
        found = re.search(r"proxy (http://127\.0\.0\.1:\d+) .* \((\d+) workers\)", line)
        assert found, line
        assert int(found.group(2)) == workers
        yield proc, found.group(1)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(TIMEOUT)


async def desktops(origin: str) -> set[str]:
    """CLIENTS agents, each logged in (its own cookie), each posting REQUESTS records; half of
    them open a connection per request, so that the connections spread over the workers."""

    async def one(n: int) -> set[str]:
        token = base64.b64encode(b"agent:agent").decode()
        connector = aiohttp.TCPConnector(force_close=n % 2 == 0)
        jar = aiohttp.CookieJar(unsafe=True)
        refs = set()
        async with aiohttp.ClientSession(connector=connector, cookie_jar=jar) as http:
            async with http.get(
                origin + "/api/v2/me", headers={"Authorization": f"Basic {token}"}
            ) as r:
                assert r.status == 200
                csrf = {"X-CSRF-TOKEN": r.headers["X-CSRF-TOKEN"]}
            for k in range(REQUESTS):
                ref = f"c{n}-{k}"
                body = {"operationName": "DoNotCallRecord", "referenceId": ref}
                async with http.post(
                    f"{origin}/api/v2/me/outbound-records/{k}", json=body, headers=csrf
                ) as r:
                    assert r.status == 200
                    assert await r.json() == {"statusCode": 0}
                refs.add(ref)
        return refs

    return set().union(*await asyncio.gather(*(one(n) for n in range(CLIENTS))))


Row = tuple[str, str, str, int | None, bytes]


def frames_of(tape: Path, *, closed: bool = True) -> list[Row]:
    """A worker tape's request/response frames: (session, exchange, direction, status, raw);
    `closed`: every session in it was closed (the worker stopped cleanly)."""
    conn = duckdb.connect(str(tape), read_only=True)
    try:
        rows = conn.execute(
            "SELECT session_id, exchange_id, direction, http_status, raw FROM frames "
            "WHERE kind IN ('http-request', 'http-response') ORDER BY session_id, seq"
        ).fetchall()
        if closed:
            open_sessions = conn.execute("SELECT count(*) FROM sessions WHERE ended_ns IS NULL")
            assert open_sessions.fetchall()[0][0] == 0, tape
    finally:
        conn.close()
    return [(s, e, d, st, bytes(raw)) for s, e, d, st, raw in rows]


def recorded(folder: Path) -> dict[str, list[Row]]:
    return {tape.name: frames_of(tape) for tape in sorted(folder.glob("*.duckdb"))}


def test_two_workers_record_every_exchange_exactly_once_and_stop_on_sigterm(
    tmp_path: Path,
) -> None:
    folder = tmp_path / "set"
    with simulator() as upstream, proxy_set(upstream, folder) as (proc, origin):
        sent = asyncio.run(desktops(origin))
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=TIMEOUT * 6)
    assert proc.returncode == 0, err
    total = CLIENTS * (REQUESTS + 1)  # each client's login too
    assert f"stopped: {total} HTTP exchanges" in err
    tapes = recorded(folder)
    assert sorted(tapes) == ["w1-0001.duckdb", "w2-0001.duckdb"]
    assert all(tapes.values()), "both workers took connections"  # 63 new connections or more
    refs: list[str] = []
    for rows in tapes.values():
        requests = {(s, e): raw for s, e, d, _, raw in rows if d == "out"}
        responses = [(s, e) for s, e, d, status, _ in rows if d == "in" and status == 200]
        assert len(requests) == sum(1 for row in rows if row[2] == "out")  # ids unique
        assert sorted(responses) == sorted(requests)  # each request answered once, same tape
        refs += [orjson.loads(raw)["referenceId"] for raw in requests.values() if raw]
    assert sorted(refs) == sorted(sent)  # every request recorded once, in one worker's tape
    assert sum(len(rows) for rows in tapes.values()) == 2 * total


def test_a_worker_that_dies_stops_the_proxy_and_the_others_keep_their_frames(
    tmp_path: Path,
) -> None:
    folder = tmp_path / "set"
    with simulator() as upstream, proxy_set(upstream, folder) as (proc, origin):
        sent = asyncio.run(desktops(origin))
        kids = Path(f"/proc/{proc.pid}/task/{proc.pid}/children").read_text().split()
        workers = [
            int(pid) for pid in kids if b"spawn_main" in Path(f"/proc/{pid}/cmdline").read_bytes()
        ]
        assert len(workers) == 2
        # A worker hands its frames to its tape writer's process every 20 ms; what it holds
        # when killed is lost, what it has handed over is committed as the writer exits.
        time.sleep(TIMEOUT / 10)
        os.kill(workers[0], signal.SIGKILL)
        _, err = proc.communicate(timeout=TIMEOUT * 6)
    assert proc.returncode == 1
    lines = [line for line in err.splitlines() if line.startswith("Error:")]
    assert len(lines) == 1, err
    died = re.search(r"worker ([12]): exited \(code -9\)", lines[0])
    assert died, err
    assert "Traceback" not in err
    # The survivor stopped cleanly: its sessions are closed. The killed worker's tape keeps
    # what its writer process had (it commits and exits when the worker's end of the pipe
    # closes), once that process is done with the file.
    survivor = 3 - int(died.group(1))
    kept = frames_of(folder / f"w{survivor}-0001.duckdb")
    deadline = time.monotonic() + TIMEOUT * 3
    while True:
        try:
            lost = frames_of(folder / f"w{died.group(1)}-0001.duckdb", closed=False)
            break
        except duckdb.IOException:  # its writer still holds the file
            assert time.monotonic() < deadline
            time.sleep(0.1)
    refs = [orjson.loads(raw)["referenceId"] for *_, d, _, raw in kept + lost if d == "out" and raw]
    assert sorted(refs) == sorted(sent)  # all were handed over before the kill, so all kept


def test_bad_workers_values_and_a_folder_holding_tapes_are_one_line_errors(
    tmp_path: Path,
) -> None:
    base = ["proxy", "--upstream", "http://127.0.0.1:9", "--listen", "127.0.0.1:0"]
    for bad in ("0", "-1", "two", "65"):
        result = cometd_tape(*base, "--workers", bad, "-o", str(tmp_path / "s.duckdb"))
        assert result.returncode == 2, result.stderr
        assert "--workers" in result.stderr
        assert "Traceback" not in result.stderr
    assert not (tmp_path / "s").exists()
    assert not (tmp_path / "s.duckdb").exists()
    folder = tmp_path / "full"
    folder.mkdir()
    (folder / "w1-0001.duckdb").write_bytes(b"an earlier run's tape")
    result = cometd_tape(*base, "--workers", "2", "-o", str(tmp_path / "full.duckdb"))
    assert result.returncode == 1
    assert "holds tapes; add --append to add segments to it, --overwrite to replace" in (
        result.stderr
    )
    assert len(result.stderr.strip().splitlines()) == 1
    assert (folder / "w1-0001.duckdb").read_bytes() == b"an earlier run's tape"
    result = cometd_tape(*base, "-o", str(folder))  # one process: a tape file, not a folder
    assert result.returncode == 1
    assert "is a folder" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_overwrite_replaces_a_sets_tapes_a_busy_port_puts_them_back_and_ctrl_c_stops_it(
    tmp_path: Path,
) -> None:
    import socket

    folder = tmp_path / "set"
    folder.mkdir()
    for name in ("w1-0001.duckdb", "w3-0001.duckdb"):
        (folder / name).write_bytes(b"old")
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = cometd_tape(
            "proxy", "--upstream", "http://127.0.0.1:9", "--listen", f"127.0.0.1:{port}",
            "--workers", "2", "--overwrite", "-o", str(folder),
        )  # fmt: skip
    assert result.returncode == 1
    assert "cannot listen on 127.0.0.1" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert sorted(p.name for p in folder.iterdir()) == ["w1-0001.duckdb", "w3-0001.duckdb"]
    assert not folder.with_name("set.replaced").exists()
    with simulator() as upstream:
        args = ["--upstream", upstream, "--listen", "127.0.0.1:0", "--overwrite"]
        proc = subprocess.Popen(
            [sys.executable, "-m", "tape", "proxy", *args, "--workers", "2", "-o", str(folder)],
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )
        assert proc.stderr is not None
        assert "(2 workers)" in proc.stderr.readline()
        os.killpg(proc.pid, signal.SIGINT)  # Ctrl-C: the whole group, workers and writers too
        _, err = proc.communicate(timeout=TIMEOUT * 6)
    assert proc.returncode == 0, err
    assert sorted(p.name for p in folder.iterdir()) == ["w1-0001.duckdb", "w2-0001.duckdb"]
    assert not folder.with_name("set.replaced").exists()
    assert len(recorded(folder)) == 2  # both real tapes now, their sessions none


def test_append_adds_each_workers_next_segment(tmp_path: Path) -> None:
    folder = tmp_path / "set"
    with simulator() as upstream:
        for run in range(2):
            flags = ["--append"] if run else []
            with proxy_set(upstream, folder, flags=flags) as (proc, origin):
                asyncio.run(desktops(origin))
                proc.send_signal(signal.SIGTERM)
                _, err = proc.communicate(timeout=TIMEOUT * 6)
            assert proc.returncode == 0, err
    names = sorted(p.name for p in folder.glob("*.duckdb"))
    assert names == ["w1-0001.duckdb", "w1-0002.duckdb", "w2-0001.duckdb", "w2-0002.duckdb"]
    tapes = recorded(folder)
    requests = sum(1 for rows in tapes.values() for row in rows if row[2] == "out")
    assert requests == 2 * CLIENTS * (REQUESTS + 1)
