"""Redaction and masking: secrets and personal data are replaced before any frame is stored
(docs/tape.md, "Redaction and masking"; what matches is described in tape/privacy.py).

Sans-I/O functions over headers, bodies, query strings and URLs, each taking a Privacy (the
default pattern, masking nothing, when none is given). Bodies with nothing to change keep
their exact bytes; a cheap bytes check comes first, since these run on every stored frame but
the bulk of a recording (received deliveries, which tape/prepare.py only masks).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Collection, Iterable
from typing import Any
from urllib.parse import unquote_plus

import orjson

from tape.privacy import REDACT_ONLY, REDACTED, SECRET_SUFFIXES, SECRET_WORDS, Privacy

__all__ = [
    "REDACTED",
    "clean_body",
    "clean_lifecycle",
    "headers_json",
    "mask_members",
    "redact_body",
    "redact_form",
    "redact_headers",
    "redact_headers_json",
    "redact_url",
]

# Cheap pre-check on the lowered bytes: a secret's name holds one of these (the default words
# all contain one; `\u` because a name may be written with JSON escapes).
_HINTS: tuple[bytes, ...] = (b"token", b"auth", b"key", b"secret", b"sess", b"pass", b"pwd")
_HINTS += (b"credential", b"cookie", b"\\u")
assert all(any(h.decode() in w for h in _HINTS) for w in (*SECRET_WORDS, *SECRET_SUFFIXES))
# A form or query field: its separator (or the start), name, `=`, value.
_FIELD = re.compile(r"(^|[?&;\n])([^=&;?#\n]*)=([^&;#?\n]*)")
# Last resort when a document is not JSON, or too deep to walk: `"name": scalar` in the bytes.
_JSON_MEMBER = re.compile(
    rb'"((?:[^"\\]|\\.)*)"(\s*:\s*)("(?:[^"\\]|\\.)*"|-?[0-9.eE+-]+|true|false|null)'
)
_CONTAINERS = (dict, list)
_USERINFO = re.compile(r"^([a-zA-Z][a-zA-Z0-9+.-]*://)[^/@]*@")
# In free text (an error message, a header value): any URL's user:password@, and query fields
# whose value ends at white space, so "GET http://u:p@h/x?token=S failed" keeps "failed".
_EXT = re.compile(rb'"ext"')  # a literal: searched at memchr speed (an alternation is 10x slower)
_TEXT_USERINFO = re.compile(r"""\b([a-zA-Z][a-zA-Z0-9+.-]*://)[^/@\s"'<>]*@""")
_TEXT_FIELD = re.compile(r"([?&;])([^=&;?#\s]*)=([^&;#?\s]*)")
# Headers whose values are URLs: a redirect or a referrer may carry a token in its query.
URL_HEADERS = frozenset({"location", "content-location", "referer", "refresh", "origin"})


def redact_headers(
    headers: Iterable[tuple[str, str]], extra: Iterable[str] = (), privacy: Privacy | None = None
) -> list[tuple[str, str]]:
    """Mask secret header values. `extra` adds exact names, e.g. the one GWS names in
    X-CSRF-HEADER."""
    p = privacy or REDACT_ONLY
    names = {name.lower() for name in extra}
    return [(k, _header_value(k, v, p, names)) for k, v in headers]


def _header_value(name: str, value: str, p: Privacy, extra: Collection[str]) -> str:
    if p.is_secret(name) or name.lower() in extra:
        return REDACTED
    if name.lower() in URL_HEADERS:
        return redact_text(value, p) or value
    return value


def headers_json(
    headers: Iterable[tuple[str, str]], extra: Iterable[str] = (), privacy: Privacy | None = None
) -> str:
    """The stored form of headers: JSON list of [name, value] pairs, order and repeats kept."""
    return orjson.dumps([list(pair) for pair in redact_headers(headers, extra, privacy)]).decode()


def redact_headers_json(text: str | None, privacy: Privacy | None = None) -> str | None:
    """Redact headers already in their stored JSON form (the writer's last pass; import)."""
    if text is None:
        return None
    p = privacy or REDACT_ONLY
    pairs = orjson.loads(text)
    cleaned = [[k, _header_value(k, v, p, ())] for k, v in pairs]
    if cleaned == pairs:
        return text
    return orjson.dumps(cleaned).decode()


def redact_body(raw: bytes, privacy: Privacy | None = None) -> bytes:
    """Redact secret-named fields in a JSON or form body, and mask masked ones."""
    return clean_body(raw, privacy or REDACT_ONLY, redact=True)


def clean_body(raw: bytes, privacy: Privacy, *, redact: bool, ext_only: bool = False) -> bytes:
    """`raw` with secret-named fields redacted (when `redact`; with `ext_only`, only within
    members named `ext`, as in a Bayeux message) and masked fields masked; the same object when
    there is nothing to change."""
    if redact:
        lowered = raw.lower()  # 30x faster than a case-insensitive regex
        secrets = any(hint in lowered for hint in _HINTS) or any(
            hint in lowered for hint in privacy.hints
        )
    else:
        # Only an `ext` member is looked into (a server's frame): one regex pass for its name
        # (or an escape that could spell it), not a lowered copy and a search per hint: that
        # cost 7 ms a MB of long-poll replies, and `bytes in` up to 2 ms a MB.
        secrets = ext_only and (_EXT.search(raw) is not None or (b"\\" in raw and b"\\u" in raw))
    # The names unquoted: a form body writes them so.
    masks = bool(privacy.mask) and (
        any(finder.search(raw) for finder in privacy.name_finders)
        or (b"\\" in raw and b"\\u" in raw)
    )
    if not secrets and not masks:
        return raw
    walker = _Walker(privacy, redact, ext_only=ext_only)
    try:
        doc = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raw = _JSON_MEMBER.sub(walker.member, raw)  # any secret name, `ext` or not
        if ext_only:
            return raw
        text = raw.decode("utf-8", "surrogateescape")
        return redact_form(text, privacy, redact=redact).encode("utf-8", "surrogateescape")
    try:
        doc = walker.walk(doc)
    except RecursionError:  # orjson nests 1024 deep, Python recursion less
        return _JSON_MEMBER.sub(walker.member, raw)
    return orjson.dumps(doc) if walker.changed else raw


def mask_members(raw: bytes, privacy: Privacy) -> bytes | None:
    """The fast way to mask a frame: masked members with scalar values replaced in the bytes,
    without decoding the document (~2x faster on a GWS event). None when the names occur
    otherwise too (a key/value pair, a list, an object value): then clean_body() must."""
    failed = False

    def member(m: re.Match[bytes]) -> bytes:
        nonlocal failed
        try:
            token = privacy.token(orjson.loads(m.group(2)))
        except orjson.JSONDecodeError:  # a number orjson cannot read: the slow way decides
            failed = True
            return m.group(0)
        return m.group(0)[: m.start(1) - m.start(0)] + m.group(1) + b'"' + token.encode() + b'"'

    masked, found = privacy.members.subn(member, raw)
    if failed or found != sum(raw.count(needle) for needle in privacy.needles):
        return None
    return masked


def clean_lifecycle(raw: bytes, privacy: Privacy) -> bytes:
    """A lifecycle frame (the recorder's own JSON, rare): secret-named details redacted, masked
    ones masked, and any string detail that carries a URL or a query string cleaned as one."""
    try:
        doc = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return clean_body(raw, privacy, redact=True)
    walker = _Walker(privacy, True, strings=True)
    try:
        doc = walker.walk(doc)
    except RecursionError:
        return _JSON_MEMBER.sub(walker.member, raw)
    return orjson.dumps(doc) if walker.changed else raw


def redact_form(text: str, privacy: Privacy | None = None, *, redact: bool = True) -> str:
    """Redact `password=...` style fields (and mask masked ones) in a query string or form."""
    if "=" not in text:  # no field at all: the common REST path, and 20x faster than the scan
        return text
    p = privacy or REDACT_ONLY

    return _FIELD.sub(_field_cleaner(p, redact), text)


def _field_cleaner(p: Privacy, redact: bool) -> Callable[[re.Match[str]], str]:
    def field(m: re.Match[str]) -> str:
        sep, name, value = m.groups()
        plain = unquote_plus(name)
        if redact and p.is_secret(plain):
            return f"{sep}{name}={REDACTED}"
        if p.is_masked(plain) and value:
            return f"{sep}{name}={p.token(unquote_plus(value))}"
        return m.group(0)

    return field


def redact_url(url: str | None, privacy: Privacy | None = None) -> str | None:
    """Drop user:password@ from a URL and redact secret query fields (session endpoints)."""
    if not url:
        return url
    return redact_form(_USERINFO.sub(r"\1", url), privacy)


def redact_text(text: str | None, privacy: Privacy | None = None) -> str | None:
    """Free text that may quote URLs (an error message, a URL-valued header): every URL's
    user:password@ dropped, and secret query fields redacted up to the next white space."""
    if not text or ("@" not in text and "=" not in text):
        return text
    text = _TEXT_USERINFO.sub(r"\1", text)
    return _TEXT_FIELD.sub(_field_cleaner(privacy or REDACT_ONLY, True), text)


class _Walker:
    """One pass over a decoded document, changing it in place (orjson made it for us alone):
    redacts and masks, and says whether it changed anything."""

    def __init__(
        self, privacy: Privacy, redact: bool, *, strings: bool = False, ext_only: bool = False
    ) -> None:
        self.p = privacy
        self.redact = redact
        self.ext_only = ext_only  # redact only within `ext` members (self.redact set there)
        self.strings = strings  # lifecycle details: clean URL-like strings too
        self.changed = False

    def walk(self, doc: Any) -> Any:
        kind = type(doc)
        if kind is dict:
            self._object(doc)
        elif kind is list:
            self._list(doc)
        elif self.strings and kind is str and ("=" in doc or "@" in doc):
            cleaned = redact_text(doc, self.p)
            if cleaned != doc:
                self.changed = True
            return cleaned
        return doc

    def _object(self, doc: dict[str, Any]) -> None:
        # A key/value pair object ({"key": "GSW_PHONE", "value": "..."}): its name decides
        # for its value, and its `key`/`name` member is a name, not a secret.
        if "value" in doc:
            named = doc.get("key", doc.get("name"))
            if type(named) is str:
                for k in doc:
                    if k == "value":
                        doc[k] = self._value(named, doc[k])
                    elif k not in ("key", "name"):
                        doc[k] = self._value(k, doc[k])
                return
        masked, redact, strings = self.p.mask_set, self.redact, self.strings
        for k, v in doc.items():
            if k in masked or (redact and self.p.is_secret(k)):
                doc[k] = self._value(k, v)
            elif self.ext_only and k == "ext" and not redact:
                self.redact = True  # a Bayeux ext: where credentials travel
                doc[k] = self.walk(v)
                self.redact = False
            elif type(v) in _CONTAINERS or strings:
                doc[k] = self.walk(v)

    def _value(self, name: str, value: Any) -> Any:
        if self.redact and self.p.is_secret(name):
            if value != REDACTED:
                self.changed = True
            return REDACTED  # its whole value, whatever its type (a list of tokens too)
        if name in self.p.mask_set and value is not None:
            token = self.p.token(value)
            if token != value:
                self.changed = True
            return token
        return self.walk(value)

    def _list(self, doc: list[Any]) -> None:
        masked = self.p.mask_set
        # A flat key/value list ([..., "GSW_PHONE", "+1555...", ...]): names at even indexes.
        after_name = False
        for i, v in enumerate(doc):
            if after_name and i % 2 == 1 and v is not None:
                token = self.p.token(v)
                if token != v:
                    self.changed = True
                doc[i] = token
            elif type(v) in _CONTAINERS or self.strings:
                doc[i] = self.walk(v)
            after_name = type(v) is str and v in masked

    def member(self, m: re.Match[bytes]) -> bytes:
        """The regex fallback: one `"name": scalar` member."""
        try:
            name = orjson.loads(b'"' + m.group(1) + b'"')
        except orjson.JSONDecodeError:
            return m.group(0)
        if (self.redact or self.ext_only) and self.p.is_secret(name):
            value = orjson.dumps(REDACTED)
        elif self.p.is_masked(name) and m.group(3) != b"null":
            try:
                scalar = orjson.loads(m.group(3))
            except orjson.JSONDecodeError:
                scalar = m.group(3).decode("utf-8", "replace")
            value = orjson.dumps(self.p.token(scalar))
        else:
            return m.group(0)
        return b'"' + m.group(1) + b'"' + m.group(2) + value
