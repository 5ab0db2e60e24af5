"""Request matchers (vcrpy's idea): each compares one aspect and says why two requests differ."""

from __future__ import annotations

from collections.abc import Callable

from replay.exchange import Incoming, RecordedExchange, path_pattern

Matcher = Callable[[Incoming, RecordedExchange], str | None]


def method(incoming: Incoming, recorded: RecordedExchange) -> str | None:
    if incoming.method.upper() == recorded.method.upper():
        return None
    return f"method: got {incoming.method}, recorded {recorded.method}"


def path(incoming: Incoming, recorded: RecordedExchange) -> str | None:
    if path_pattern(incoming.path) == path_pattern(recorded.path):
        return None
    return (
        f"path: got {incoming.path} ({path_pattern(incoming.path)}), "
        f"recorded {recorded.path} ({path_pattern(recorded.path)})"
    )


def operation(incoming: Incoming, recorded: RecordedExchange) -> str | None:
    if incoming.operation == recorded.operation:
        return None
    return f"operationName: got {incoming.operation!r}, recorded {recorded.operation!r}"


def body_field(name: str) -> Matcher:
    """A matcher on one JSON body field, e.g. body_field("campaignName")."""

    def matcher(incoming: Incoming, recorded: RecordedExchange) -> str | None:
        got = None if incoming.body is None else incoming.body.get(name)
        want = None if recorded.body is None else recorded.body.get(name)
        return None if got == want else f"{name}: got {got!r}, recorded {want!r}"

    matcher.__name__ = f"body_field({name!r})"
    return matcher


# By default: method, path pattern (numeric and id-like segments, and the record handle, are
# wildcards) and operationName; `body_field(name)` adds any JSON body field.
DEFAULT_MATCHERS: tuple[Matcher, ...] = (method, path, operation)
