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
needed to use it.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from replay.app import ReplayOptions
from replay.player import PlayOptions
from replay.responder import DEFAULT_MATCHERS, body_field
from replay.threaded import ThreadedReplayer
from replay.timeline import TimelineOptions

MARKER = "cometd_tape"


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        f"{MARKER}(tape, speed=1.0, clock='per-client', session=None, channels=(), loop=False, "
        "reactive=False, match_on=(), fail_on_unmatched=True): the tape the cometd_replay "
        "fixture serves, and how",
    )


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
    )


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
def cometd_replay(request: pytest.FixtureRequest) -> Iterator[ThreadedReplayer]:
    """A replayer serving the tape named by the `cometd_tape` marker, on a free port.

    It runs on its own thread and loop, so sync and async tests alike can use it.
    """
    tape, kwargs = _requested(request)
    if not tape.is_absolute():
        tape = Path(request.config.rootpath) / tape
    replayer = ThreadedReplayer(tape, replay_options(kwargs))
    try:
        yield replayer
    finally:
        replayer.stop()
    if replayer.unmatched and kwargs.get("fail_on_unmatched", True):
        lines = [
            f"  {u.request['method']} {u.request['path']} "
            f"(operationName {u.request['operationName']!r}): " + "; ".join(u.differences)
            for u in replayer.unmatched
        ]
        pytest.fail(
            f"cometd_replay: {len(lines)} request(s) matched no recorded request "
            "(fail_on_unmatched=False allows it):\n" + "\n".join(lines),
            pytrace=False,
        )
