"""Record modes as a user meets them: inner test files, run by pytest (pytester) with each mode,
record through the fixture against the GWS simulator (a real process) and replay without it.
The client under test is the example of docs/record-modes.md: aiohttp and aiocometd-ng."""

from __future__ import annotations

import contextlib
import json
import re
import select
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import duckdb
import pytest

from replay.record_mode import OPTION, UPSTREAM_ENV
from tape.diff import assert_same_traffic
from tests.constants import ROOT, SAMPLE, TIMEOUT
from tests.replay.test_plugin import readme_example

pytest_plugins = ["pytester"]
SIM_OPTIONS = ("--median-ms", "5", "--p99-ms", "20", "--seed", "1")

# The inner tests write what their client saw, so two runs can be compared.
DUMP = """

@pytest.mark.cometd_tape("tapes/traffic.duckdb", reactive=True)
def test_dump_traffic(cometd_replay):
    import json, pathlib
    seen = asyncio.run(desktop(cometd_replay.url, 5))
    name = "recorded" if cometd_replay.recording else "replayed"
    pathlib.Path(name + ".json").write_text(json.dumps(seen))
"""

FAILING = """

@pytest.mark.cometd_tape("tapes/outbound.jsonl", reactive=True)
def test_fails(cometd_replay):
    asyncio.run(desktop(cometd_replay.url, 1))
    assert False, "the client under test misbehaved"
"""

COMPLETE = """

async def complete(url):
    origin = url.removesuffix(NOTIFICATIONS)
    jar = aiohttp.CookieJar(unsafe=True)
    async with aiohttp.ClientSession(headers=LOGIN, cookie_jar=jar) as http:
        async with http.get(origin + "/api/v2/me") as response:
            csrf = {response.headers["X-CSRF-HEADER"]: response.headers["X-CSRF-TOKEN"]}
        body = {"operationName": "CompleteRecord", "referenceId": "done-1"}
        path = origin + "/api/v2/me/outbound-records/7"
        async with http.post(path, json=body, headers=csrf) as response:
            assert response.status == 200, await response.text()


@pytest.mark.cometd_tape("tapes/outbound.duckdb", reactive=True)
def test_complete(cometd_replay):
    asyncio.run(complete(cometd_replay.url))
"""


def record_modes_example() -> str:
    text = (ROOT / "docs" / "record-modes.md").read_text()
    match = re.search(
        r"<!-- example:record-modes -->\n```python\n(.*?)```\n<!-- /example -->", text, re.S
    )
    assert match, "docs/record-modes.md lost its example"
    return match.group(1)


@contextlib.contextmanager
def simulator() -> Iterator[str]:
    """`cometd-tape simulate` on a free port, as its own process: its origin."""
    process = subprocess.Popen(
        [sys.executable, "-m", "tape", "simulate", "--listen", "127.0.0.1:0", *SIM_OPTIONS],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert process.stdout is not None
        ready, _, _ = select.select([process.stdout], [], [], TIMEOUT * 3)
        found = re.search(r"http://127\.0\.0\.1:\d+", process.stdout.readline() if ready else "")
        assert found, "the simulator did not start"
        yield found.group(0)
    finally:
        process.terminate()
        process.wait(TIMEOUT * 3)


@pytest.fixture(scope="module")
def upstream() -> Iterator[str]:
    with simulator() as origin:
        yield origin


def closed_port() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}"


def run(pytester: pytest.Pytester, *args: str) -> pytest.RunResult:
    return pytester.runpytest("-p", "no:cacheprovider", "-W", "ignore", *args)


def sessions(tape: Path) -> list[str]:
    with contextlib.closing(duckdb.connect(str(tape), read_only=True)) as conn:
        rows = conn.execute("SELECT session_id FROM sessions ORDER BY started_ns").fetchall()
    return [r[0] for r in rows]


def phones(messages: list[dict[str, Any]]) -> set[str]:
    """GSW_PHONE of each metrics message: the tape holds it masked."""
    return {m["data"]["userData"]["GSW_PHONE"] for m in messages if "userData" in m["data"]}


def test_once_records_through_the_fixture_then_replays_without_the_server(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytester.makepyfile(test_desktop=record_modes_example() + DUMP)
    with simulator() as origin:
        monkeypatch.setenv(UPSTREAM_ENV, origin)
        began = time.monotonic()
        run(pytester, f"{OPTION}=once").assert_outcomes(passed=2)
        recording_s = time.monotonic() - began
    tapes = pytester.path / "tapes"
    assert sorted(p.name for p in tapes.iterdir()) == ["outbound.duckdb", "traffic.duckdb"]
    assert len(sessions(tapes / "traffic.duckdb")) == 1
    # The simulator is stopped: its port is closed, the tapes answer everything.
    began = time.monotonic()
    run(pytester, f"{OPTION}=once").assert_outcomes(passed=2)
    replaying_s = time.monotonic() - began
    recorded = json.loads((pytester.path / "recorded.json").read_text())
    replayed = json.loads((pytester.path / "replayed.json").read_text())
    assert len(recorded) == 10  # 5 acks, each with its metrics
    assert phones(recorded) == {"3001"}  # the simulator's number, masked on the tape
    assert all(p.startswith("pii:") for p in phones(replayed))
    # Everything else as it came, referenceIds and metrics included: no default ignores.
    ignore = ["$.data.userData.GSW_PHONE"]
    assert_same_traffic(recorded, replayed, ignore=ignore, default_ignores=False)
    print(f"recording run {recording_s:.2f} s, replaying run {replaying_s:.2f} s")


def test_none_fails_on_a_missing_tape_naming_it_and_the_mode_that_records_it(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(UPSTREAM_ENV, closed_port())
    pytester.makepyfile(test_desktop=record_modes_example())
    result = run(pytester)  # the default mode
    result.assert_outcomes(errors=1)
    tape = pytester.path / "tapes" / "outbound.duckdb"
    result.stdout.fnmatch_lines(
        [f"*no such tape file: {tape}, and record mode 'none' never records one*{OPTION}=once*"]
    )
    assert not tape.parent.exists()


def test_once_replays_an_existing_tape_without_contacting_the_upstream(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(UPSTREAM_ENV, closed_port())  # nothing listens there
    (pytester.path / "samples").mkdir()
    shutil.copy(SAMPLE, pytester.path / "samples")
    pytester.makepyfile(test_readme=readme_example())
    run(pytester, f"{OPTION}=once").assert_outcomes(passed=1)
    assert (pytester.path / "samples" / SAMPLE.name).read_bytes() == SAMPLE.read_bytes()


def test_recording_without_an_upstream_fails_saying_where_to_give_one(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(UPSTREAM_ENV, raising=False)
    pytester.makepyfile(test_desktop=record_modes_example())
    result = run(pytester, f"{OPTION}=once")
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(
        ["*record mode 'once' records * (the tape does not exist), but no upstream is given*"]
    )


def test_the_markers_mode_wins_and_a_bad_upstream_is_the_proxys_error(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(UPSTREAM_ENV, "https://gws.example.com")
    example = record_modes_example()
    pytester.makepyfile(
        test_none=example.replace("reactive=True", "reactive=True, record_mode='none'"),
        test_bad=example.replace("reactive=True", "reactive=True, record_mode='rewrite'"),
    )
    result = run(pytester, f"{OPTION}=once")
    result.assert_outcomes(errors=2)
    result.stdout.fnmatch_lines_random(
        [
            "*no such tape file*record mode 'none' never records one*",
            "*cometd_tape(record_mode=...): 'rewrite' is not a record mode (once, none, new, all)*",
        ]
    )
    pytester.makepyfile(test_none="", test_bad="", test_desktop=example)
    result = run(pytester, f"{OPTION}=once")
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(
        ["*the capture proxy did not start: Error: *TLS upstreams are not supported*"]
    )
    assert list((pytester.path / "tapes").iterdir()) == []


def test_all_records_anew_and_a_jsonl_tape_stays_jsonl(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, upstream: str
) -> None:
    tape = pytester.path / "tapes" / "outbound.jsonl"
    tape.parent.mkdir()
    shutil.copy(SAMPLE, tape)
    pytester.makepyfile(
        test_desktop=record_modes_example().replace("outbound.duckdb", "outbound.jsonl")
    )
    monkeypatch.setenv(UPSTREAM_ENV, upstream)
    run(pytester, f"{OPTION}=all").assert_outcomes(passed=1)
    text = tape.read_text()
    assert "ref-2" in text
    assert "123456789" not in text  # the sample's referenceId
    assert sorted(p.name for p in tape.parent.iterdir()) == ["outbound.jsonl"]
    monkeypatch.delenv(UPSTREAM_ENV)
    run(pytester).assert_outcomes(passed=1)  # `none` replays the new JSONL tape


def test_a_test_that_fails_while_recording_leaves_the_old_tape(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, upstream: str
) -> None:
    tape = pytester.path / "tapes" / "outbound.jsonl"
    tape.parent.mkdir()
    shutil.copy(SAMPLE, tape)
    pytester.makepyfile(test_desktop=record_modes_example() + FAILING)
    monkeypatch.setenv(UPSTREAM_ENV, upstream)
    result = run(pytester, f"{OPTION}=all", "-k", "test_fails")
    result.assert_outcomes(failed=1, deselected=1)
    assert tape.read_bytes() == SAMPLE.read_bytes()
    assert sorted(p.name for p in tape.parent.iterdir()) == ["outbound.jsonl"]


def test_new_appends_a_session_whose_requests_are_answered_from_then_on(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, upstream: str
) -> None:
    pytester.makepyfile(test_desktop=record_modes_example() + COMPLETE)
    tape = pytester.path / "tapes" / "outbound.duckdb"
    monkeypatch.setenv(UPSTREAM_ENV, upstream)
    run(pytester, f"{OPTION}=once", "-k", "test_every").assert_outcomes(passed=1, deselected=1)
    first = sessions(tape)
    # The tape has no CompleteRecord: the reactive replay fails the test, and says what records it.
    result = run(pytester, "-k", "test_complete")
    result.assert_outcomes(failed=1, errors=1, deselected=1)
    result.stdout.fnmatch_lines(
        [
            "*1 request(s) matched no recorded request*"
            f"{OPTION}=new with an upstream records them, as a new session of the tape*",
            "*POST /api/v2/me/outbound-records/7 (operationName 'CompleteRecord')*",
        ]
    )
    run(pytester, f"{OPTION}=new", "-k", "test_complete").assert_outcomes(passed=1, deselected=1)
    after = sessions(tape)
    assert after[: len(first)] == first
    assert len(after) > len(first)
    monkeypatch.delenv(UPSTREAM_ENV)  # `new` with no upstream replays: both tests pass
    run(pytester, f"{OPTION}=new").assert_outcomes(passed=2)
    assert sessions(tape) == after
