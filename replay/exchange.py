"""A recorded REST exchange with its follow-ups, an incoming request, and their paths."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

_ID_SEGMENT = re.compile(r"^(?:\d+|[0-9a-fA-F-]{16,})$")
_WILD_AFTER = ("outbound-records",)


@dataclass(frozen=True, slots=True)
class FollowUp:
    delay_s: float  # after the request, as recorded
    channel: str
    data: bytes  # the recorded `data` JSON
    key: tuple[str, int, int]  # (session_id, seq, idx): left out of the timeline


@dataclass(frozen=True, slots=True)
class RecordedExchange:
    session_id: str
    seq: int
    method: str
    path: str
    body: dict[str, Any] | None
    status: int
    response: bytes
    headers: tuple[tuple[str, str], ...]
    follow_ups: tuple[FollowUp, ...]

    @property
    def operation(self) -> Any:
        return None if self.body is None else self.body.get("operationName")

    @property
    def reference_id(self) -> Any:
        return None if self.body is None else self.body.get("referenceId")

    @property
    def handle(self) -> str | None:
        return record_handle(self.path)

    def describe(self) -> dict[str, Any]:
        return {
            "method": self.method,
            "path": self.path,
            "operationName": self.operation,
            "session_id": self.session_id,
            "seq": self.seq,
        }


@dataclass(frozen=True, slots=True)
class Incoming:
    method: str
    path: str
    body: dict[str, Any] | None

    @property
    def operation(self) -> Any:
        return None if self.body is None else self.body.get("operationName")

    def describe(self) -> dict[str, Any]:
        return {"method": self.method, "path": self.path, "operationName": self.operation}


def path_pattern(raw: str) -> str:
    """`/api/v2/me/outbound-records/13?x=1` -> `/api/v2/me/outbound-records/*`."""
    segments = raw.split("?", 1)[0].rstrip("/").split("/")
    out = []
    for n, segment in enumerate(segments):
        wild = _ID_SEGMENT.match(segment) or (n > 0 and segments[n - 1] in _WILD_AFTER)
        out.append("*" if wild else segment)
    return "/".join(out)


def record_handle(raw: str) -> str | None:
    segments = raw.split("?", 1)[0].rstrip("/").split("/")
    for n, segment in enumerate(segments[:-1]):
        if segment in _WILD_AFTER:
            return segments[n + 1]
    return None
