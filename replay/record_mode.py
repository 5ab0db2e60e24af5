"""Record modes of the pytest plugin, after VCR.py: given the mode, whether the tape exists and
the upstream, what the `cometd_replay` fixture does (replay, record, append, re-record), or
why it cannot. Pure decisions and their messages; `recording.py` carries them out.

A Bayeux session cannot be split the way VCR.py splits a cassette into requests: a request the
tape lacks carries the tape's cookies and CSRF token, which the upstream never issued, and its
ack would come on the upstream's Bayeux session, which the client is not connected to. So `new`
records whole sessions: a missing tape as `once` does, and, with an upstream given, this run's
sessions appended to the tape (reactive replay matches requests across all its sessions).
"""

from __future__ import annotations

from enum import Enum, StrEnum
from pathlib import Path

OPTION = "--cometd-record-mode"
UPSTREAM_ENV = "COMETD_TAPE_UPSTREAM"


class RecordMode(StrEnum):
    ONCE = "once"  # replay a tape that exists; record one that does not
    NONE = "none"  # never record: a missing tape fails the test (for CI)
    NEW = "new"  # record a missing tape; with an upstream, append this run's sessions
    ALL = "all"  # always record the tape anew


# pytest-recording's choice, for its reason: no test reaches a real server unless asked to, and
# a test whose tape is missing fails as it did before record modes existed.
DEFAULT_MODE = RecordMode.NONE


class Action(Enum):
    REPLAY = "replay"
    RECORD = "record"  # a new tape
    APPEND = "append"  # this run's sessions added to the tape
    OVERWRITE = "overwrite"  # the tape recorded anew; the old one goes once the test passed


class RecordModeError(Exception):
    """Why the fixture can neither replay nor record: the message names the tape and a way out."""


def parse_mode(value: object, where: str) -> RecordMode:
    """A mode from the command line or a marker, or a RecordModeError naming `where`."""
    try:
        return RecordMode(str(value))
    except ValueError:
        modes = ", ".join(m.value for m in RecordMode)
        raise RecordModeError(f"{where}: {value!r} is not a record mode ({modes})") from None


def decide(mode: RecordMode, tape: Path, upstream: str | None) -> Action:
    """What to do with `tape` in `mode`; a RecordModeError when it is missing under `none`, or
    must be recorded and no upstream is given."""
    exists = tape.exists()
    if mode is RecordMode.NONE:
        if not exists:
            raise RecordModeError(missing_tape(tape))
        return Action.REPLAY
    if not exists:
        action, why = Action.RECORD, "the tape does not exist"
    elif mode is RecordMode.ONCE or (mode is RecordMode.NEW and upstream is None):
        return Action.REPLAY
    elif mode is RecordMode.NEW:
        action, why = Action.APPEND, "an upstream is given"
    else:
        action, why = Action.OVERWRITE, "the mode always records anew"
    if upstream is None:
        raise RecordModeError(
            f"record mode '{mode.value}' records {tape} ({why}), but no upstream is given: "
            f"set upstream='http://host:port' on the cometd_tape marker, or {UPSTREAM_ENV}"
        )
    return action


def missing_tape(tape: Path) -> str:
    return (
        f"no such tape file: {tape}, and record mode 'none' never records one: run with "
        f"{OPTION}=once (or record_mode='once' on the marker) and an upstream "
        f"(upstream= on the marker, or {UPSTREAM_ENV}) to record it"
    )


UNMATCHED_HINT = (
    f"{OPTION}=new with an upstream records them, as a new session of the tape; "
    f"{OPTION}=all records the tape anew"
)
