"""The Bayeux 1.0 codec: frames in, typed messages out, and back (the names importers use).

The parts: tape.bayeux_model (Message, Advice, error strings, request constructors),
tape.bayeux_check (exact validation), tape.bayeux_fast (the msgspec fast check) and
tape.bayeux_lazy (deliveries parsed on first read).
"""

from __future__ import annotations

from tape.bayeux_check import (
    BayeuxDecodeError,
    InvalidField,
    InvalidJson,
    InvalidShape,
    MissingChannel,
    Reconnect,
    load_json,
    validated,
)
from tape.bayeux_fast import envelopes
from tape.bayeux_lazy import LazyDelivery, decode_frame_lazily
from tape.bayeux_model import (
    Advice,
    BayeuxErrorString,
    Message,
    connect,
    decode_frame,
    disconnect,
    encode_batch,
    handshake,
    is_unknown_client,
    parse_error_string,
    publish,
    subscribe,
    try_parse_error_string,
    unsubscribe,
)

__all__ = [
    "Advice",
    "BayeuxDecodeError",
    "BayeuxErrorString",
    "InvalidField",
    "InvalidJson",
    "InvalidShape",
    "LazyDelivery",
    "Message",
    "MissingChannel",
    "Reconnect",
    "connect",
    "decode_frame",
    "decode_frame_lazily",
    "disconnect",
    "encode_batch",
    "frame_error",
    "handshake",
    "is_unknown_client",
    "load_json",
    "parse_error_string",
    "publish",
    "subscribe",
    "try_parse_error_string",
    "unsubscribe",
]


def frame_error(raw: bytes | str) -> str | None:
    """None when `raw` decodes, else a stable one-line reason for the tape's parse_error column."""
    # Runs on every frame a writer checks (import), so it builds no Message, and the fast check
    # comes first: it accepts nearly every valid frame, and only what the rules accept.
    if envelopes(raw) is not None:
        return None
    try:
        validated(raw)
    except BayeuxDecodeError as exc:
        return f"{exc.kind}: {exc}"
    return None
