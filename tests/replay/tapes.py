"""Tapes for replay tests, written with the real writer: recorded deliveries at known offsets."""

from __future__ import annotations

from pathlib import Path

import orjson

from tape.frame import Frame, Session
from tape.writer import TapeWriter

CHANNELS = ("/v2/me/outbound", "/me/internal")
T0 = 1_700_000_000_000_000_000


def event_bytes(i: int) -> bytes:
    """One recorded delivery, with number forms a re-encoder would change (1.50, 1e3)."""
    channel = CHANNELS[i % 2]
    return (
        b'{"channel":"' + channel.encode() + b'","id":"' + str(i).encode() + b'",'
        b'"data":{"referenceId":"' + str(i).encode() + b'","ratio":1.50,"big":1e3,'
        b'"text":"caf\xc3\xa9 \\u00e9"}}'
    )


def write_tape(path: Path, count: int, spacing_s: float, *, per_frame: int = 1) -> list[bytes]:
    """A session with `count` deliveries `spacing_s` apart (after a handshake); returns them."""
    events = [event_bytes(i) for i in range(count)]
    with TapeWriter(path) as writer:
        writer.put_session(Session(session_id="rec", transport="websocket", started_ns=T0))
        handshake = b'[{"channel":"/meta/handshake","successful":true,"clientId":"c1","id":"1"}]'
        writer.write(_frame(1, 0, handshake))
        for n in range(0, count, per_frame):
            chunk = events[n : n + per_frame]
            offset_ns = int(0.5e9 + n * spacing_s * 1e9)
            writer.write(_frame(2 + n // per_frame, offset_ns, b"[" + b",".join(chunk) + b"]"))
    return events


def _frame(seq: int, offset_ns: int, raw: bytes) -> Frame:
    return Frame("rec", seq, T0 + offset_ns, offset_ns, "in", "websocket", "bayeux", raw)


def recorded_data(event: bytes) -> bytes:
    return event[event.index(b'"data":') + len(b'"data":') : -1]


def channel_of(event: bytes) -> str:
    return str(orjson.loads(event)["channel"])
