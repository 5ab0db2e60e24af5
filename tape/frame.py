"""The stored event: one frame seen on the wire, and one recorded session.

A frame is the unit of the append-only log (docs/tape.md). Everything else in a tape
is a projection of frames.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import Any, NamedTuple


class Direction(StrEnum):
    IN = "in"  # server -> client
    OUT = "out"  # client -> server


class Kind(StrEnum):
    BAYEUX = "bayeux"
    HTTP_REQUEST = "http-request"
    HTTP_RESPONSE = "http-response"
    LIFECYCLE = "lifecycle"


class Transport(StrEnum):
    WEBSOCKET = "websocket"
    LONG_POLLING = "long-polling"
    HTTP = "http"


class Frame(NamedTuple):
    """One thing seen on the wire. `raw` holds the exact bytes (after redaction).

    A NamedTuple, not the frozen dataclass we use elsewhere: one is built per frame on the
    receive path, and a frozen dataclass's __init__ measured 5x slower. Tuples also transpose
    into Arrow columns with one zip().
    """

    session_id: str
    seq: int
    t_wall_ns: int
    t_mono_ns: int
    direction: str
    transport: str
    kind: str
    raw: bytes
    exchange_id: str | None = None
    http_method: str | None = None
    http_path: str | None = None
    http_status: int | None = None
    headers: str | None = None  # JSON text: a list of [name, value] pairs, redacted
    parse_error: str | None = None
    # Not stored: True when the codec already ran on `raw` (the recorder decodes every frame it
    # receives), so the sink need not decode it a second time. `parse_error` is then authoritative.
    checked: bool = False

    def with_changes(self, **changes: Any) -> Frame:
        return self._replace(**changes)


# The stored columns, in Frame's field order (everything but `checked`).
FRAME_COLUMNS: tuple[str, ...] = Frame._fields[:-1]


class ReceivedRun:
    """Frames received one after another in one session, column by column, as
    SessionLog.received() gathers them and the tape writer takes them: neither the receiving
    thread nor the writer builds or takes apart a Frame per frame (~1.5 us a frame of GIL time
    between them, measured here). Frame i is what `SessionLog.append("in", raws[i],
    transport=transport, parse_error=errors[i], checked=True)` stores, with seq first_seq + i:
    a Bayeux frame received and decoded by the codec, with no HTTP fields."""

    __slots__ = ("errors", "first_seq", "monos", "raws", "session_id", "size", "transport", "walls")

    def __init__(
        self,
        session_id: str,
        first_seq: int,
        transport: str,
        raws: list[bytes],
        walls: list[int],
        monos: list[int],
        errors: list[str | None],
    ) -> None:
        self.session_id, self.first_seq, self.transport = session_id, first_seq, transport
        self.raws, self.walls, self.monos, self.errors = raws, walls, monos, errors
        self.size = sum(map(len, raws))

    def __len__(self) -> int:
        return len(self.raws)

    def frames(self) -> list[Frame]:
        """The run as Frames, for sinks that take only those."""
        return [
            Frame(
                self.session_id,
                self.first_seq + i,
                wall,
                mono,
                Direction.IN,
                self.transport,
                Kind.BAYEUX,
                raw,
                parse_error=error,
                checked=True,
            )
            for i, (raw, wall, mono, error) in enumerate(
                zip(self.raws, self.walls, self.monos, self.errors, strict=True)
            )
        ]

    def split(self, k: int) -> tuple[ReceivedRun, ReceivedRun]:
        """Its first k frames, and the rest."""
        return (
            ReceivedRun(
                self.session_id,
                self.first_seq,
                self.transport,
                self.raws[:k],
                self.walls[:k],
                self.monos[:k],
                self.errors[:k],
            ),
            ReceivedRun(
                self.session_id,
                self.first_seq + k,
                self.transport,
                self.raws[k:],
                self.walls[k:],
                self.monos[k:],
                self.errors[k:],
            ),
        )


@dataclass(frozen=True, slots=True)
class Session:
    """One recorded Bayeux session: the `sessions` table row."""

    session_id: str
    mode: str = "record"
    endpoint: str | None = None
    transport: str | None = None
    client_id: str | None = None
    channels: tuple[str, ...] = ()
    started_ns: int | None = None
    ended_ns: int | None = None
    end_reason: str | None = None
    recorder_version: str | None = None
    labels: dict[str, str] = field(default_factory=dict)

    def with_changes(self, **changes: Any) -> Session:
        return replace(self, **changes)


SESSION_COLUMNS: tuple[str, ...] = (
    "session_id",
    "mode",
    "endpoint",
    "transport",
    "client_id",
    "channels",
    "started_ns",
    "ended_ns",
    "end_reason",
    "recorder_version",
    "labels",
)
