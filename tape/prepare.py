"""The last step before a frame is stored, shared by every tape form: redact, then classify.

Doing it at the sink means no caller can forget it: secrets never reach a tape, and every
Bayeux frame is checked once, its problem recorded in `parse_error` rather than raised.
"""

from __future__ import annotations

from tape.bayeux import frame_error
from tape.frame import Frame, Kind
from tape.redact import redact_body, redact_form, redact_headers_json


def prepare_frame(frame: Frame) -> Frame:
    raw = redact_body(frame.raw) if frame.kind != Kind.LIFECYCLE else frame.raw
    path = redact_form(frame.http_path) if frame.http_path else frame.http_path
    headers = redact_headers_json(frame.headers)
    error = frame.parse_error
    if frame.kind == Kind.BAYEUX and error is None:
        error = frame_error(raw)
    if raw is frame.raw and path == frame.http_path and headers == frame.headers:
        if error == frame.parse_error:
            return frame
    return frame.with_changes(raw=raw, http_path=path, headers=headers, parse_error=error)
