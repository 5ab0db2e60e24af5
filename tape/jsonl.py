"""JSONL, the text form of a tape: one JSON object per line, for samples in git and interchange.

A frame line carries the `frames` columns; `raw` is text when the bytes are valid UTF-8, else
base64 with `"raw_encoding": "base64"`. A session line is `{"session": {...}}`; a later line for
the same session replaces an earlier one. Export writes each session line before its frames.
"""

from __future__ import annotations

import base64
import os
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import IO, Any

import orjson

from tape.frame import FRAME_COLUMNS, SESSION_COLUMNS, Frame, Session
from tape.prepare import prepare_frame, prepare_session
from tape.privacy import Privacy
from tape.schema import TapeError

_REQUIRED = ("session_id", "seq", "t_wall_ns", "direction", "transport", "kind", "raw")
_INT_FIELDS = ("seq", "t_wall_ns", "t_mono_ns", "http_status")
_STR_FIELDS = (
    "session_id",
    "direction",
    "transport",
    "kind",
    "exchange_id",
    "http_method",
    "http_path",
    "parse_error",
)
_INT64 = 2**63


class JsonlError(TapeError, ValueError):
    """A JSONL line is not a valid frame or session; says which line and why."""


def frame_to_line(frame: Frame) -> bytes:
    obj: dict[str, Any] = {}
    for name in FRAME_COLUMNS:
        value = getattr(frame, name)
        if name == "headers" and value is not None:
            value = orjson.Fragment(value.encode())
        if value is not None and name != "raw":
            obj[name] = value
    try:
        obj["raw"] = frame.raw.decode("utf-8")
    except UnicodeDecodeError:
        obj["raw"] = base64.b64encode(frame.raw).decode("ascii")
        obj["raw_encoding"] = "base64"
    return orjson.dumps(obj) + b"\n"


def session_to_line(session: Session) -> bytes:
    obj = {name: getattr(session, name) for name in SESSION_COLUMNS}
    obj["channels"] = list(session.channels)
    return orjson.dumps({"session": obj}) + b"\n"


def line_to_frame(obj: dict[str, Any], first_wall_ns: int | None = None) -> Frame:
    missing = [name for name in _REQUIRED if name not in obj]
    if missing:
        raise JsonlError(f"frame is missing {', '.join(missing)}")
    for name in _INT_FIELDS:
        value = obj.get(name)
        if value is not None and (
            type(value) is not int or not -_INT64 <= value < _INT64  # a bool is not a number here
        ):
            raise JsonlError(f"{name} must be a 64-bit integer, got {value!r}")
    for name in _STR_FIELDS:
        if obj.get(name) is not None and not isinstance(obj[name], str):
            raise JsonlError(f"{name} must be a string, got {obj[name]!r}")
    if obj.get("http_status") is not None and not 0 <= obj["http_status"] < 1000:
        raise JsonlError(f"http_status must be an HTTP status code, got {obj['http_status']}")
    _check_headers(obj.get("headers"))
    values: dict[str, Any] = {name: obj.get(name) for name in FRAME_COLUMNS}
    values["raw"] = _raw_bytes(obj)
    if values["headers"] is not None:
        values["headers"] = orjson.dumps(values["headers"]).decode()
    if values["t_mono_ns"] is None:  # hand-written tapes may omit it
        first = obj["t_wall_ns"] if first_wall_ns is None else first_wall_ns
        values["t_mono_ns"] = obj["t_wall_ns"] - first
    return Frame(**values)


def _check_headers(headers: Any) -> None:
    pairs_ok = isinstance(headers, list) and all(
        isinstance(p, list) and len(p) == 2 and all(isinstance(x, str) for x in p) for p in headers
    )
    if headers is not None and not pairs_ok:
        raise JsonlError('headers must be a list of ["name", "value"] string pairs')


def _raw_bytes(obj: dict[str, Any]) -> bytes:
    raw = obj["raw"]
    if not isinstance(raw, str):
        raise JsonlError("raw must be a string")
    encoding = obj.get("raw_encoding", "utf-8")
    if encoding == "base64":
        try:
            return base64.b64decode(raw, validate=True)
        except ValueError as exc:
            raise JsonlError(f"raw is not valid base64: {exc}") from exc
    if encoding != "utf-8":
        raise JsonlError(f"raw_encoding must be 'utf-8' or 'base64', got {encoding!r}")
    return raw.encode("utf-8")


def line_to_session(obj: dict[str, Any]) -> Session:
    values = obj["session"]
    if not isinstance(values, dict) or not isinstance(values.get("session_id"), str):
        raise JsonlError("a session line needs a session_id")
    known = {k: v for k, v in values.items() if k in SESSION_COLUMNS}
    channels, labels = known.get("channels") or [], known.get("labels") or {}
    if not isinstance(channels, list) or not all(isinstance(c, str) for c in channels):
        raise JsonlError("session channels must be a list of strings")
    if not isinstance(labels, dict) or not all(isinstance(v, str | None) for v in labels.values()):
        raise JsonlError("session labels must be an object of strings")
    for name in ("started_ns", "ended_ns"):
        if known.get(name) is not None and type(known[name]) is not int:
            raise JsonlError(f"session {name} must be an integer")
    known["channels"], known["labels"] = tuple(channels), dict(labels)
    return Session(**known)


def read_lines(stream: IO[bytes]) -> Iterator[Frame | Session]:
    """Parse a JSONL stream; errors name the line number. Frames must be gapless per session."""
    last_seq: dict[str, int] = {}
    first_wall: dict[str, int] = {}
    for number, line in enumerate(stream, start=1):
        if not line.strip():
            continue
        try:
            item = _parse_line(line, first_wall)
            if isinstance(item, Frame):
                _check_gapless(item, last_seq)
        except (JsonlError, ValueError, TypeError) as exc:
            raise JsonlError(f"line {number}: {exc}") from exc
        yield item


def _parse_line(line: bytes, first_wall: dict[str, int]) -> Frame | Session:
    obj = orjson.loads(line)
    if not isinstance(obj, dict):
        raise JsonlError("each line must be a JSON object")
    if "session" in obj:
        return line_to_session(obj)
    sid = obj.get("session_id")
    if isinstance(sid, str) and isinstance(obj.get("t_wall_ns"), int):
        first_wall.setdefault(sid, obj["t_wall_ns"])
    return line_to_frame(obj, first_wall.get(sid) if isinstance(sid, str) else None)


def _check_gapless(frame: Frame, last_seq: dict[str, int]) -> None:
    expected = last_seq.get(frame.session_id, 0) + 1
    if frame.seq != expected:
        raise JsonlError(
            f"session {frame.session_id}: seq {frame.seq} where {expected} was expected "
            "(seq must run 1, 2, 3... per session)"
        )
    last_seq[frame.session_id] = frame.seq


class JsonlWriter:
    """The JSONL tape form as a sink. Each flush is durable (fsync). `privacy`: what is
    redacted and masked, as for TapeWriter."""

    def __init__(self, path: Path | str, *, privacy: Privacy | None = None) -> None:
        self.path = Path(path)
        self._privacy = privacy
        self._file = open(self.path, "ab")  # noqa: SIM115 - closed in close()

    def write(self, frame: Frame) -> None:
        self._file.write(frame_to_line(prepare_frame(frame, self._privacy)))

    def put_session(self, session: Session) -> None:
        self._file.write(session_to_line(prepare_session(session, self._privacy)))

    def check(self) -> None:
        """Writes happen in the caller's thread, so failures have already been raised."""

    def flush(self) -> None:
        self._file.flush()
        os.fsync(self._file.fileno())

    def close(self) -> None:
        if not self._file.closed:
            self.flush()
            self._file.close()


class JsonlReader:
    """Read a JSONL tape: the last session line per session wins; frames in file order."""

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)

    def items(self) -> Iterator[Frame | Session]:
        with open(self.path, "rb") as stream:
            yield from read_lines(stream)

    def sessions(self) -> list[Session]:
        found = {i.session_id: i for i in self.items() if isinstance(i, Session)}
        return list(found.values())

    def frames(self, session_id: str | None = None) -> Iterator[Frame]:
        for item in self.items():
            if isinstance(item, Frame) and session_id in (None, item.session_id):
                yield item


def write_jsonl(stream: IO[bytes], sessions: Iterable[Session], frames: Iterable[Frame]) -> int:
    """Write sessions and frames, each session line just before its first frame."""
    pending = {s.session_id: s for s in sessions}
    count = 0
    for frame in frames:
        session = pending.pop(frame.session_id, None)
        if session is not None:
            stream.write(session_to_line(session))
        stream.write(frame_to_line(frame))
        count += 1
    for session in pending.values():  # sessions with no frames yet
        stream.write(session_to_line(session))
    return count
