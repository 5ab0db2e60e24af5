"""Byte spans inside a JSON frame, so the replayer re-sends recorded `data` byte for byte.

Parsing and re-encoding would normalise numbers and whitespace (1.50 becomes 1.5); slicing the
recorded bytes cannot. The frame has already been validated by the codec when it was recorded.
"""

from __future__ import annotations

_OPEN = frozenset(b"[{")
_CLOSE = frozenset(b"]}")
_SPACE = frozenset(b" \t\r\n")
_SCALAR_END = _CLOSE | _SPACE | {0x2C}


def _string_end(raw: bytes, i: int) -> int:
    """Index just past the string whose opening quote is at `i`."""
    while True:
        i = raw.find(b'"', i + 1)
        if i < 0:
            return len(raw)
        slashes = 0
        while raw[i - 1 - slashes] == 0x5C:
            slashes += 1
        if slashes % 2 == 0:  # an even run of backslashes does not escape the quote
            return i + 1


def _value_end(raw: bytes, start: int) -> int:
    """Index just past the JSON value starting at `start`."""
    if raw[start] == 0x22:
        return _string_end(raw, start)
    i, n = start, len(raw)
    if raw[start] not in _OPEN:  # a number, true, false or null
        while i < n and raw[i] not in _SCALAR_END:
            i += 1
        return i
    depth = 0
    while i < n:
        c = raw[i]
        if c == 0x22:
            i = _string_end(raw, i)
            continue
        if c in _OPEN:
            depth += 1
        elif c in _CLOSE:
            depth -= 1
            if depth == 0:
                return i + 1
        i += 1
    return n


def _skip_space(raw: bytes, i: int) -> int:
    while i < len(raw) and raw[i] in _SPACE:
        i += 1
    return i


def elements(raw: bytes) -> list[tuple[int, int]]:
    """Spans of the messages in a frame: the elements of an array, or the one object."""
    i = _skip_space(raw, 0)
    if i >= len(raw) or raw[i] != 0x5B:  # a single object
        return [(i, _value_end(raw, i))]
    spans, i = [], _skip_space(raw, i + 1)
    while i < len(raw) and raw[i] != 0x5D:
        end = _value_end(raw, i)
        spans.append((i, end))
        i = _skip_space(raw, end)
        if i < len(raw) and raw[i] == 0x2C:
            i = _skip_space(raw, i + 1)
    return spans


def member(raw: bytes, span: tuple[int, int], key: bytes) -> tuple[int, int] | None:
    """Span of the value of top-level `key` in the object at `span`, or None."""
    i = _skip_space(raw, span[0] + 1)
    quoted = b'"' + key + b'"'
    while i < span[1] and raw[i] == 0x22:
        key_end = _value_end(raw, i)
        colon = _skip_space(raw, key_end)
        value = _skip_space(raw, colon + 1)
        end = _value_end(raw, value)
        if raw[i:key_end] == quoted:
            return value, end
        i = _skip_space(raw, _skip_space(raw, end) + 1)
    return None
