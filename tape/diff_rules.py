"""What `cometd-tape diff` compares of a message: the message less what legitimately changes
between two recordings of the same traffic, as one canonical JSON line.

Ignore rules are JSONPath expressions (jsonpath-ng), rooted at each delivered Bayeux message and
at each REST body; a matched value is replaced by "<ignored>", so its presence still counts but
its value does not. One rule is not a path: `pii:*` makes every masked value (`pii:` and 16 hex,
tape/privacy.py) compare equal, since each recording masks with its own key unless given one.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import orjson
from jsonpath_ng.exceptions import JSONPathError
from jsonpath_ng.jsonpath import Child, Descendants, Fields, JSONPath
from jsonpath_ng.parser import parse

IGNORED = "<ignored>"
MASKED = "pii:<masked>"
PII_RULE = "pii:*"

# What changes between two recordings of the same traffic. Bayeux: the message id (the server's
# or a counter) and the clientId; GWS: a request's referenceId (and its ack's), the metrics of
# an event (server times), and timestamps.
DEFAULT_IGNORES: tuple[str, ...] = (
    "$.id",
    "$.clientId",
    "$..referenceId",
    "$..timestamp",
    "$.data.metrics",
    PII_RULE,
)

_PII = re.compile(r"pii:[0-9a-f]{16}")
_LONG_DIGITS = re.compile(rb"[0-9]{19}")  # an integer orjson would read as a float


class RuleError(ValueError):
    """An ignore rule that is not a JSONPath expression; the message says which and why."""


@dataclass(frozen=True, slots=True)
class Rules:
    """Compiled ignore rules: the paths, and whether masked values compare equal. `needs`
    holds, per path, the keys a document must contain for it to match (as canonical JSON
    text): most messages lack most of them, and a path skipped costs no copy and no walk."""

    paths: tuple[JSONPath, ...] = ()
    pii: bool = False
    text: tuple[str, ...] = ()
    needs: tuple[tuple[bytes, ...], ...] = ()

    @classmethod
    def parse(cls, rules: Iterable[str]) -> Rules:
        given = tuple(dict.fromkeys(rules))  # once each, in the order given
        paths = tuple(_compile(rule) for rule in given if rule != PII_RULE)
        needs = tuple(tuple(dumps(name) for name in sorted(_needs(p))) for p in paths)
        return cls(paths, PII_RULE in given, given, needs)

    def apply(self, value: Any) -> Any:
        """`value` with every ignored part replaced; `value` itself is left as it was."""
        return self._applied(value, dumps(value))[0]

    def line(self, value: Any) -> str:
        """The canonical line compared and shown: ignored parts replaced, keys sorted."""
        return self._applied(value, dumps(value))[1].decode()

    def _applied(self, value: Any, text: bytes) -> tuple[Any, bytes]:
        todo = [p for p, needs in zip(self.paths, self.needs, strict=True) if _has(text, needs)]
        unmask = self.pii and b"pii:" in text
        if not todo and not unmask:
            return value, text
        value = loads(text)  # a copy: jsonpath-ng updates in place
        for path in todo:
            value = path.update(value, IGNORED)
        if unmask:
            value = _unmask(value)
        return value, dumps(value)


def rules_for(ignore: Iterable[str] = (), *, default_ignores: bool = True) -> Rules:
    """The rules `--ignore` and `--no-default-ignores` (or assert_same_traffic's) ask for."""
    return Rules.parse([*(DEFAULT_IGNORES if default_ignores else ()), *ignore])


def _compile(rule: str) -> JSONPath:
    if not rule.startswith("$"):
        raise RuleError(
            f"{rule!r} is not a JSONPath: it starts with $ (the message or body), e.g. "
            f"$.data.id, $.a[*].b or $..timestamp (or {PII_RULE} for masked values)"
        )
    try:
        return parse(rule)
    except JSONPathError as exc:
        raise RuleError(f"{rule!r} is not a JSONPath: {exc}") from None


def _needs(path: Any) -> set[str]:
    """The keys every match of `path` passes through: a path of children and descendants
    needs each field it names alone (`$['a','b']`, a wildcard or a filter needs none)."""
    if isinstance(path, Child | Descendants):
        return _needs(path.left) | _needs(path.right)
    if isinstance(path, Fields) and len(path.fields) == 1 and path.fields[0] != "*":
        return {path.fields[0]}
    return set()


def _has(text: bytes, needs: tuple[bytes, ...]) -> bool:
    return all(name in text for name in needs)


def _unmask(value: Any) -> Any:
    if isinstance(value, str):
        return MASKED if _PII.fullmatch(value) else value
    if isinstance(value, dict):
        return {key: _unmask(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_unmask(item) for item in value]
    return value


def loads(raw: bytes | str) -> Any:
    """JSON text as Python, with integers of 19 digits or more kept exact (orjson reads them
    as floats: two different ids would compare equal)."""
    data = raw.encode() if isinstance(raw, str) else raw
    if _LONG_DIGITS.search(data):
        return json.loads(data)
    return orjson.loads(data)


def dumps(value: Any) -> bytes:
    """Canonical JSON: keys sorted, no spaces, non-ASCII kept."""
    try:
        return orjson.dumps(value, option=orjson.OPT_SORT_KEYS)
    except TypeError:  # an integer past 64 bits, or a key that is not a string
        text = json.dumps(value, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
        return text.encode()
