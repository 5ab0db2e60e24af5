"""pytest plugin (entry point `pytest11`): the `cometd_replay` fixture serves a tape to the code
under test on a free 127.0.0.1 port, and yields a handle with its URLs and what it saw.

    @pytest.mark.cometd_tape("tests/tapes/shift.duckdb", speed=0)
    async def test_client(cometd_replay):
        client = MyClient(cometd_replay.url)          # or cometd_replay.ws_url
        ...
        await cometd_replay.wait_emitted()            # every subscribed client got its timeline
        assert cometd_replay.clients[0].emitted == 42

The tape can also come from indirect parametrization: a path, or a dict of the marker's
keyword arguments plus "tape". The replayer runs on its own thread, so no asyncio plugin is
needed to use it. Record modes (`--cometd-record-mode`, `record_mode=`; record_mode.py) let the
fixture record the tape through the capture proxy instead (recording.py).
"""

from __future__ import annotations

import os
from collections.abc import Generator, Iterator
from pathlib import Path
from typing import Any

import pytest

from replay.app import ReplayOptions
from replay.faults import Fault, FaultError, parse_fault
from replay.player import PlayOptions
from replay.record_mode import (
    DEFAULT_MODE,
    OPTION,
    UNMATCHED_HINT,
    UPSTREAM_ENV,
    Action,
    RecordMode,
    RecordModeError,
    decide,
    parse_mode,
)
from replay.recording import Recording, RecordingError
from replay.responder import DEFAULT_MATCHERS, Unmatched, body_field
from replay.threaded import ThreadedReplayer
from replay.timeline import TimelineOptions

MARKER = "cometd_tape"
_CALL = pytest.StashKey[pytest.TestReport]()


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.getgroup("cometd-tape").addoption(
        OPTION,
        dest="cometd_record_mode",
        choices=[m.value for m in RecordMode],
        default=DEFAULT_MODE.value,
        help="When the cometd_replay fixture records its tape through the capture proxy: "
        "once (when missing), none (never: a missing tape fails), new (when missing; with an "
        "upstream, append this run's sessions), all (always anew). A marker's record_mode= "
        f"wins. Default: {DEFAULT_MODE.value}.",
    )


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        f"{MARKER}(tape, speed=1.0, clock='per-client', session=None, channels=(), loop=False, "
        "reactive=False, match_on=(), fail_on_unmatched=True, record_mode=None, "
        "upstream=None, faults=(), seed=0): the tape the cometd_replay fixture serves (or "
        "records), and how",
    )


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """Keep the call's report: a recording is kept only when its test passed."""
    report = yield
    if report.when == "call":
        item.stash[_CALL] = report
    return report


def replay_options(kwargs: dict[str, Any]) -> ReplayOptions:
    known = {
        "speed",
        "clock",
        "session",
        "channels",
        "loop",
        "start",
        "end",
        "settle",
        "unknown_client_error",
        "reactive",
        "match_on",
        "fail_on_unmatched",
        "faults",
        "seed",
    }
    unknown = set(kwargs) - known
    if unknown:
        raise pytest.UsageError(f"{MARKER}: unknown option(s) {', '.join(sorted(unknown))}")
    play = PlayOptions(
        speed=kwargs.get("speed", 1.0),
        clock=kwargs.get("clock", "per-client"),
        loop=kwargs.get("loop", False),
        settle=kwargs.get("settle", 0.2),
    )
    timeline = TimelineOptions(
        session=kwargs.get("session"),
        channels=tuple(kwargs.get("channels", ())),
        start=kwargs.get("start"),
        end=kwargs.get("end"),
    )
    return ReplayOptions(
        timeline=timeline,
        play=play,
        unknown_client_error=kwargs.get("unknown_client_error", "402::Unknown client"),
        reactive=kwargs.get("reactive", False),
        matchers=(*DEFAULT_MATCHERS, *(body_field(f) for f in kwargs.get("match_on", ()))),
        faults=_faults(kwargs.get("faults", ())),
        seed=kwargs.get("seed", 0),
    )


def _faults(specs: Any) -> tuple[Fault, ...]:
    if isinstance(specs, str):
        specs = [specs]
    try:
        return tuple(parse_fault(spec) for spec in specs)
    except FaultError as exc:
        raise pytest.UsageError(f"{MARKER}: faults: {exc}") from None


def record_settings(kwargs: dict[str, Any], config: pytest.Config) -> tuple[RecordMode, str | None]:
    """Take `record_mode` and `upstream` out of the marker's options: the marker's mode, else
    the command line's; the marker's upstream, else $COMETD_TAPE_UPSTREAM."""
    mode = kwargs.pop("record_mode", None)
    upstream = kwargs.pop("upstream", None) or os.environ.get(UPSTREAM_ENV) or None
    if mode is None:
        return RecordMode(config.getoption("cometd_record_mode")), upstream
    return parse_mode(mode, f"{MARKER}(record_mode=...)"), upstream


def _requested(request: pytest.FixtureRequest) -> tuple[Path, dict[str, Any]]:
    param = getattr(request, "param", None)
    if isinstance(param, str | Path):
        return Path(param), {}
    if isinstance(param, dict):
        options = dict(param)
        return Path(options.pop("tape")), options
    marker = request.node.get_closest_marker(MARKER)
    if marker is None or not marker.args:
        raise pytest.UsageError(
            f"cometd_replay needs a tape: @pytest.mark.{MARKER}('path/to/tape.duckdb')"
        )
    return Path(marker.args[0]), dict(marker.kwargs)


@pytest.fixture
def cometd_replay(request: pytest.FixtureRequest) -> Iterator[ThreadedReplayer | Recording]:
    """A replayer serving the tape named by the `cometd_tape` marker, on a free port; or, when
    the record mode says so, the capture proxy recording that tape from the upstream.

    It runs on its own thread (the proxy in its own process), so sync and async tests alike can
    use it."""
    tape, kwargs = _requested(request)
    if not tape.is_absolute():
        tape = Path(request.config.rootpath) / tape
    try:
        mode, upstream = record_settings(kwargs, request.config)
        options = replay_options(kwargs)  # checked in every mode: a typo fails at once
        action = decide(mode, tape, upstream)
    except RecordModeError as exc:
        raise _failure(str(exc)) from None
    if action is Action.REPLAY:
        yield from _replayed(tape, options, kwargs.get("fail_on_unmatched", True))
    else:
        assert upstream is not None  # decide() saw to it
        yield from _recorded(request, tape, upstream, append=action is Action.APPEND)


def _replayed(
    tape: Path, options: ReplayOptions, fail_on_unmatched: bool
) -> Iterator[ThreadedReplayer]:
    replayer = ThreadedReplayer(tape, options)
    try:
        yield replayer
    finally:
        replayer.stop()
    if replayer.unmatched and fail_on_unmatched:
        pytest.fail(unmatched_message(replayer.unmatched), pytrace=False)


def unmatched_message(unmatched: list[Unmatched]) -> str:
    lines = [
        f"  {u.request['method']} {u.request['path']} "
        f"(operationName {u.request['operationName']!r}): " + "; ".join(u.differences)
        for u in unmatched
    ]
    return (
        f"cometd_replay: {len(lines)} request(s) matched no recorded request "
        f"(fail_on_unmatched=False allows it; {UNMATCHED_HINT}):\n" + "\n".join(lines)
    )


def _recorded(
    request: pytest.FixtureRequest, tape: Path, upstream: str, *, append: bool
) -> Iterator[Recording]:
    try:
        recording = Recording(tape, upstream, append=append)
    except RecordingError as exc:
        raise _failure(f"recording {tape} from {upstream}: {exc}") from None
    try:
        yield recording
    finally:
        try:
            recording.stop()
        except RecordingError as exc:
            recording.discard()
            raise _failure(f"recording {tape}: {exc}") from None
    report = request.node.stash.get(_CALL, None)
    if report is None or not report.passed:
        recording.discard()  # a failed test's capture would be replayed as the truth
        return
    try:
        recording.keep()
    except RecordingError as exc:
        recording.discard()
        raise _failure(f"writing {tape}: {exc}") from None


def _failure(message: str) -> BaseException:
    """The test's failure with `message` alone (raised `from None`: no chain shown)."""
    return pytest.fail.Exception(f"cometd_replay: {message}", pytrace=False)
