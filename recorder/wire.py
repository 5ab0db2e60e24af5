"""Where transports hand bytes to the tape: every frame sent or received is logged first,
then decoded once (the tape is told the codec already ran, so it does not decode again)."""

from __future__ import annotations

import io
from collections.abc import Iterable
from typing import TYPE_CHECKING

from multidict import CIMultiDictProxy

from tape.bayeux import BayeuxDecodeError, Message, decode_frame_lazily
from tape.redact import headers_json
from tape.session import SessionLog

if TYPE_CHECKING:  # the capture proxy imports this module, and has no use for aiohttp
    import aiohttp


def decode(raw: bytes) -> tuple[list[Message], str | None]:
    try:
        return decode_frame_lazily(raw), None
    except BayeuxDecodeError as exc:
        return [], f"{exc.kind}: {exc}"


async def read_body(content: aiohttp.StreamReader) -> bytes:
    """A response's whole body, as ClientResponse.read() gives it, but built in place: read()
    joins the chunks at the end, two copies of a 70 MB long-poll reply at once; a BytesIO grows
    one (glibc moves a big block by remapping it) and hands over its buffer without a copy."""
    first = await content.readany()
    second = await content.readany() if first else b""
    if not second:  # the usual, small reply: one chunk
        return first
    body = io.BytesIO()
    body.write(first)
    body.write(second)
    del first, second
    while chunk := await content.readany():
        body.write(chunk)
    return body.getvalue()


def header_pairs(
    headers: CIMultiDictProxy[str] | Iterable[tuple[str, str]],
) -> list[tuple[str, str]]:
    items = headers.items() if isinstance(headers, CIMultiDictProxy) else headers
    return [(str(k), str(v)) for k, v in items]


def stored_headers(
    headers: CIMultiDictProxy[str] | Iterable[tuple[str, str]], secret: Iterable[str] = ()
) -> str:
    return headers_json(header_pairs(headers), extra=secret)


def log_received(
    log: SessionLog, raw: bytes, transport: str, *, error: str | None = None, **http: object
) -> list[Message]:
    """Log one received body/frame and return its messages ([] when it did not decode)."""
    if error is None and not http:  # a WebSocket frame, the hot path: the fewest calls
        try:
            messages = decode_frame_lazily(raw)
        except BayeuxDecodeError as exc:
            log.received(raw, transport, f"{exc.kind}: {exc}")
            return []
        log.received(raw, transport, None)
        return messages
    messages, problem = decode(raw) if error is None else ([], error)
    if error is not None and raw:
        _, detail = decode(raw)
        problem = f"{error}; {detail}" if detail else error
    log.append("in", raw, transport=transport, parse_error=problem, checked=True, **http)  # type: ignore[arg-type]
    return messages
