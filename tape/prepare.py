"""The last step before a frame is stored, shared by every tape form: redact and mask, then
classify.

Doing it at the sink means no caller can forget it: secrets never reach a tape, personal data
reaches it masked, and every Bayeux frame is checked once, its problem recorded in
`parse_error` rather than raised. What is redacted and masked is the sink's Privacy
(tape/privacy.py); without one, the default pattern is redacted and nothing is masked.
"""

from __future__ import annotations

from collections.abc import Sequence

from tape.bayeux import frame_error
from tape.frame import Direction, Frame, Kind, Session
from tape.privacy import REDACT_ONLY, Privacy
from tape.redact import (
    clean_body,
    clean_lifecycle,
    mask_members,
    redact_form,
    redact_headers_json,
    redact_text,
    redact_url,
)


def prepare_frame(frame: Frame, privacy: Privacy | None = None) -> Frame:
    p = privacy or REDACT_ONLY
    if (
        frame.checked
        and frame.headers is None
        and not frame.http_path
        and frame.kind == Kind.BAYEUX
        and frame.direction == Direction.IN
    ):
        # The bulk of a recording: a decoded delivery. Looked at only if it names a masked
        # field or holds an `ext` (see _scanned), found by a bytes search.
        raw = clean_delivery(frame.raw, p)
        return frame if raw is frame.raw else frame.with_changes(raw=raw)
    if frame.kind == Kind.LIFECYCLE:
        raw = clean_lifecycle(frame.raw, p)
    elif _scanned(frame):
        raw = clean_body(frame.raw, p, redact=True)
    else:
        raw = clean_body(frame.raw, p, redact=False, ext_only=True)
    path = redact_form(frame.http_path, p) if frame.http_path else frame.http_path
    headers = redact_headers_json(frame.headers, p)
    error = frame.parse_error
    if frame.kind == Kind.BAYEUX and error is None and not frame.checked:
        error = frame_error(raw)
    unchanged = raw is frame.raw and path == frame.http_path and headers == frame.headers
    if unchanged and error == frame.parse_error:
        return frame
    return frame.with_changes(raw=raw, http_path=path, headers=headers, parse_error=error)


def clean_delivery(raw: bytes, privacy: Privacy) -> bytes:
    """A received Bayeux frame, masked and its `ext` redacted: the same bytes object unless it
    names a masked field or holds an `ext` (as JSON writes a name: `"GSW_PHONE"`, `"ext"`;
    one regex search)."""
    if not privacy.finder.search(raw):
        return raw
    if b'"ext"' not in raw:
        masked = mask_members(raw, privacy)
        if masked is not None:
            return masked
    return clean_body(raw, privacy, redact=False, ext_only=True)


def clean_deliveries(raws: Sequence[bytes], privacy: Privacy) -> Sequence[bytes]:
    """clean_delivery() over a batch of received frames: `raws` itself when none changes.

    The batch is searched as one buffer first: one regex pass over the batch, not one a frame
    (the writer joins the batch's bytes into its Arrow column anyway)."""
    if not raws or not privacy.finder.search(b"".join(raws)):
        return raws
    cleaned = [clean_delivery(raw, privacy) for raw in raws]
    return raws if all(a is b for a, b in zip(cleaned, raws, strict=True)) else cleaned


def _scanned(frame: Frame) -> bool:
    """Bodies a client sends, and HTTP bodies either way, are redacted by field name.

    Bayeux frames from the server carry events, not the client's credentials, and they are
    the bulk of any tape: scanning their names cost ~3 us a frame, and GWS events are full of
    names such as `key` that a name rule would take. They are masked, and their headers (over
    long-polling) redacted."""
    return not (frame.kind == Kind.BAYEUX and frame.direction == Direction.IN)


def prepare_session(session: Session, privacy: Privacy | None = None) -> Session:
    """A session row keeps its endpoint, never the credentials in it; a label named like a
    secret keeps its name only."""
    p = privacy or REDACT_ONLY
    endpoint = redact_url(session.endpoint, p)
    reason = redact_text(session.end_reason, p)  # an error may quote a URL with a token
    labels = session.labels
    if any(p.is_secret(name) for name in labels):
        labels = {k: "[REDACTED]" if p.is_secret(k) else v for k, v in labels.items()}
    if endpoint == session.endpoint and labels is session.labels and reason == session.end_reason:
        return session
    return session.with_changes(endpoint=endpoint, labels=labels, end_reason=reason)
