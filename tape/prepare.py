"""The last step before a frame is stored, shared by every tape form: redact, then classify.

Doing it at the sink means no caller can forget it: secrets never reach a tape, and every
Bayeux frame is checked once, its problem recorded in `parse_error` rather than raised.
"""

from __future__ import annotations

from tape.bayeux import frame_error
from tape.frame import Direction, Frame, Kind, Session
from tape.redact import redact_body, redact_form, redact_headers_json, redact_url


def prepare_frame(frame: Frame) -> Frame:
    if (
        frame.checked
        and frame.headers is None
        and not frame.http_path
        and frame.kind == Kind.BAYEUX
        and frame.direction == Direction.IN
    ):
        return frame  # the bulk of a recording: a decoded delivery, nothing to redact
    raw = redact_body(frame.raw) if _may_hold_secrets(frame) else frame.raw
    path = redact_form(frame.http_path) if frame.http_path else frame.http_path
    headers = redact_headers_json(frame.headers)
    error = frame.parse_error
    if frame.kind == Kind.BAYEUX and error is None and not frame.checked:
        error = frame_error(raw)
    unchanged = raw is frame.raw and path == frame.http_path and headers == frame.headers
    if unchanged and error == frame.parse_error:
        return frame
    return frame.with_changes(raw=raw, http_path=path, headers=headers, parse_error=error)


def _may_hold_secrets(frame: Frame) -> bool:
    """Bodies a client sends, and HTTP bodies either way, are scanned for password fields.

    Bayeux deliveries from the server carry events, not the client's credentials, and they are
    the bulk of any tape; scanning them cost ~3 us a frame. Their headers are still redacted.
    """
    if frame.kind == Kind.LIFECYCLE:
        return False
    return not (frame.kind == Kind.BAYEUX and frame.direction == Direction.IN)


def prepare_session(session: Session) -> Session:
    """A session row keeps its endpoint, never the credentials in it."""
    endpoint = redact_url(session.endpoint)
    return session if endpoint == session.endpoint else session.with_changes(endpoint=endpoint)
