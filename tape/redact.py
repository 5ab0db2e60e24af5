"""Redaction: secrets are replaced before any frame is stored (DESIGN.md, "Recorder").

Headers named here, and JSON or form fields that look like passwords, become `[REDACTED]`.
Redaction runs on every frame, so the common case (nothing to redact) is one regex scan.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

import orjson

REDACTED = "[REDACTED]"

SECRET_HEADERS = frozenset(
    {"authorization", "proxy-authorization", "cookie", "set-cookie", "x-csrf-token"}
)

# A JSON key or form field whose name says it holds a secret.
_SECRET_KEY = re.compile(r"pass|pwd|secret|token|credential|authori[sz]ation", re.IGNORECASE)
# Cheap pre-check on the lowered bytes; `\u` because a key may be written with JSON escapes.
_HINTS = (b"pass", b"pwd", b"secret", b"token", b"credential", b"authori", b"\\u")
_FORM_SECRET = re.compile(
    r"(?i)((?:^|[?&;\n])[^=&;\n]*(?:pass|pwd|secret|token|credential|jsessionid)[^=&;\n]*=)"
    r"[^&;#?\n]*"
)
# Last resort when a document is too deep to walk: mask "secret-key": "value" in the bytes.
_JSON_SECRET = re.compile(
    rb'(?i)("[^"]*(?:pass|pwd|secret|token|credential|authori[sz]ation)[^"]*"\s*:\s*)'
    rb'("(?:[^"\\]|\\.)*"|-?[0-9.eE+-]+|true|false|null)'
)


def redact_headers(
    headers: Iterable[tuple[str, str]], extra: Iterable[str] = ()
) -> list[tuple[str, str]]:
    """Mask secret header values. `extra` adds names, e.g. the one GWS names in X-CSRF-HEADER."""
    names = SECRET_HEADERS | {name.lower() for name in extra}
    return [(k, REDACTED if k.lower() in names else v) for k, v in headers]


def headers_json(headers: Iterable[tuple[str, str]], extra: Iterable[str] = ()) -> str:
    """The stored form of headers: JSON list of [name, value] pairs, order and repeats kept."""
    return orjson.dumps([list(pair) for pair in redact_headers(headers, extra)]).decode()


def redact_headers_json(text: str | None) -> str | None:
    """Redact headers already in their stored JSON form (used on import)."""
    if text is None:
        return None
    pairs = orjson.loads(text)
    redacted = [[k, REDACTED if k.lower() in SECRET_HEADERS else v] for k, v in pairs]
    return orjson.dumps(redacted).decode()


def redact_body(raw: bytes) -> bytes:
    """Mask password-like fields in a JSON or form body; other bytes are left exactly as is."""
    lowered = raw.lower()  # a case-insensitive regex is 30x slower than this on 800 bytes
    if not any(hint in lowered for hint in _HINTS):
        return raw
    try:
        doc = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raw = _JSON_SECRET.sub(rb'\1"' + REDACTED.encode() + rb'"', raw)
        return redact_form(raw.decode("utf-8", "surrogateescape")).encode(
            "utf-8", "surrogateescape"
        )
    try:
        return orjson.dumps(_mask(doc)) if _has_secret(doc) else raw
    except RecursionError:  # orjson nests 1024 deep, Python recursion less
        return _JSON_SECRET.sub(rb'\1"' + REDACTED.encode() + rb'"', raw)


def redact_form(text: str) -> str:
    """Mask `password=...` style fields in a query string or form body."""
    if "=" not in text:  # no field at all: the common REST path, and 20x faster than the scan
        return text
    return _FORM_SECRET.sub(lambda m: m.group(1) + REDACTED, text)


def redact_url(url: str | None) -> str | None:
    """Drop user:password@ from a URL and mask secret query fields (for session endpoints)."""
    if not url:
        return url
    url = re.sub(r"^([a-zA-Z][a-zA-Z0-9+.-]*://)[^/@]*@", r"\1", url)
    return redact_form(url)


def _has_secret(doc: Any) -> bool:
    if isinstance(doc, dict):
        return any(_is_secret(k, v) or _has_secret(v) for k, v in doc.items())
    if isinstance(doc, list):
        return any(_has_secret(v) for v in doc)
    return False


def _is_secret(key: str, value: Any) -> bool:
    """A secret-named key: its whole value goes, whatever its type (a list of tokens too)."""
    return bool(_SECRET_KEY.search(key))


def _mask(doc: Any) -> Any:
    if isinstance(doc, dict):
        return {k: REDACTED if _is_secret(k, v) else _mask(v) for k, v in doc.items()}
    if isinstance(doc, list):
        return [_mask(v) for v in doc]
    return doc
