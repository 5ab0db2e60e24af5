"""What each record mode does with a tape, given whether it exists and whether an upstream is
given: VCR.py's table, with `new` recording whole sessions."""

from __future__ import annotations

from pathlib import Path

import pytest

from replay.record_mode import (
    OPTION,
    UPSTREAM_ENV,
    Action,
    RecordMode,
    RecordModeError,
    decide,
    parse_mode,
)

UP = "http://127.0.0.1:8090"


@pytest.mark.parametrize(
    ("mode", "exists", "upstream", "action"),
    [
        (RecordMode.NONE, True, None, Action.REPLAY),
        (RecordMode.NONE, True, UP, Action.REPLAY),
        (RecordMode.ONCE, True, UP, Action.REPLAY),
        (RecordMode.ONCE, True, None, Action.REPLAY),
        (RecordMode.ONCE, False, UP, Action.RECORD),
        (RecordMode.NEW, False, UP, Action.RECORD),
        (RecordMode.NEW, True, UP, Action.APPEND),
        (RecordMode.NEW, True, None, Action.REPLAY),
        (RecordMode.ALL, True, UP, Action.OVERWRITE),
        (RecordMode.ALL, False, UP, Action.RECORD),
    ],
)
def test_each_mode_replays_records_or_appends(
    tmp_path: Path, mode: RecordMode, exists: bool, upstream: str | None, action: Action
) -> None:
    tape = tmp_path / "t.duckdb"
    if exists:
        tape.write_bytes(b"")
    assert decide(mode, tape, upstream) is action


def test_none_refuses_a_missing_tape_naming_it_and_the_mode_that_records_it(
    tmp_path: Path,
) -> None:
    tape = tmp_path / "missing.duckdb"
    with pytest.raises(RecordModeError) as error:
        decide(RecordMode.NONE, tape, UP)
    message = str(error.value)
    assert str(tape) in message
    assert f"{OPTION}=once" in message
    assert UPSTREAM_ENV in message


@pytest.mark.parametrize(
    ("mode", "exists"),
    [(RecordMode.ONCE, False), (RecordMode.NEW, False), (RecordMode.ALL, True)],
)
def test_recording_with_no_upstream_says_where_to_give_one(
    tmp_path: Path, mode: RecordMode, exists: bool
) -> None:
    tape = tmp_path / "t.duckdb"
    if exists:
        tape.write_bytes(b"")
    with pytest.raises(RecordModeError) as error:
        decide(mode, tape, None)
    message = str(error.value)
    assert f"record mode '{mode.value}' records {tape}" in message
    assert "upstream=" in message
    assert UPSTREAM_ENV in message


def test_a_mode_that_is_not_one_is_named() -> None:
    assert parse_mode("all", "marker") is RecordMode.ALL
    with pytest.raises(RecordModeError, match=r"marker: 'rewrite' is not a record mode \(once"):
        parse_mode("rewrite", "marker")
