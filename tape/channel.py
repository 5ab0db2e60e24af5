"""Bayeux channel names and wildcard patterns: validation, classification and matching.

Pure functions over strings; the recorder, replayer and analysis all route messages with them.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum
from functools import lru_cache

META_PREFIX = "/meta/"
SERVICE_PREFIX = "/service/"


class ChannelError(ValueError):
    """A channel name or pattern that breaks the Bayeux 1.0 grammar."""


class Wildcard(StrEnum):
    """The two trailing wildcards of Bayeux 1.0 "Channel Globbing"."""

    ONE = "*"
    MANY = "**"


def validate_channel(name: str) -> None:
    """Raise ChannelError unless `name` is a channel name or a trailing-wildcard pattern."""
    # Bayeux 1.0 "Channels": channel_name = "/" channel_segments; every segment is a non-empty
    # token. We do not police the token alphabet: servers accept more (GWS, Salesforce use '.'
    # and '__e'), and a recorder must not refuse what real peers put on the wire.
    if not name:
        raise ChannelError("channel name is empty")
    if not name.startswith("/"):
        raise ChannelError(f"channel name {name!r} must start with '/'")
    segments = name[1:].split("/")
    for position, segment in enumerate(segments):
        _check_segment(name, segment, is_last=position == len(segments) - 1)


def _check_segment(name: str, segment: str, *, is_last: bool) -> None:
    if not segment:
        raise ChannelError(f"channel name {name!r} has an empty segment")
    if segment in (Wildcard.ONE, Wildcard.MANY):
        # "Channel Globbing": channel_pattern = *( "/" channel_segment ) "/" wild_card, so
        # a wildcard is only ever the final segment.
        if not is_last:
            raise ChannelError(f"channel pattern {name!r} has a wildcard before its last segment")
    elif "*" in segment:
        raise ChannelError(f"channel name {name!r} mixes '*' into the segment {segment!r}")


def is_meta(name: str) -> bool:
    """True for the protocol's own channels (Bayeux 1.0 "Meta Channels")."""
    return name.startswith(META_PREFIX)


def is_service(name: str) -> bool:
    """True for request/response channels (Bayeux 1.0 "Service Channels")."""
    return name.startswith(SERVICE_PREFIX)


def is_pattern(name: str) -> bool:
    """True when the last segment is `*` or `**`."""
    return name.endswith("/*") or name.endswith("/**")


def is_deliverable(name: str) -> bool:
    """True when a message on `name` may be broadcast to subscribers."""
    # "Meta Channels": MUST NOT be distributed to remote clients. "Service Channels": not
    # distributed to any remote client; only the requester may get a reply.
    return not (is_meta(name) or is_service(name))


@dataclass(frozen=True, slots=True)
class ChannelPattern:
    """A parsed channel name or pattern, split once so that matching is a prefix test."""

    text: str
    prefix: str  # `text` without its wildcard ("/foo/" for "/foo/**"); all of it otherwise
    wildcard: Wildcard | None

    @classmethod
    def parse(cls, pattern: str) -> ChannelPattern:
        """Validate `pattern` and split off its trailing wildcard, if any."""
        validate_channel(pattern)
        head, _, last = pattern.rpartition("/")
        if last in (Wildcard.ONE, Wildcard.MANY):
            return cls(text=pattern, prefix=head + "/", wildcard=Wildcard(last))
        return cls(text=pattern, prefix=pattern, wildcard=None)

    @property
    def segments(self) -> tuple[str, ...]:
        """The segments of the pattern, the wildcard included."""
        return tuple(self.text[1:].split("/"))

    def matches(self, channel: str) -> bool:
        """True when the concrete channel name `channel` falls under this pattern."""
        if self.wildcard is None:
            return channel == self.prefix
        if not channel.startswith(self.prefix) or len(channel) == len(self.prefix):
            return False
        # "Channel Globbing": `*` matches exactly one more segment, `**` one or more.
        return self.wildcard is Wildcard.MANY or "/" not in channel[len(self.prefix) :]


@lru_cache(maxsize=1024)
def _parse_cached(pattern: str) -> ChannelPattern:
    # Subscriptions are few and long-lived, so routing sees the same handful of patterns.
    return ChannelPattern.parse(pattern)


def matches(pattern: str, channel: str) -> bool:
    """True when `channel` (a concrete name) matches `pattern`; raises ChannelError if invalid."""
    return _parse_cached(pattern).matches(channel)


def any_match(patterns: Iterable[ChannelPattern], channel: str) -> bool:
    """True when any of `patterns` matches `channel`."""
    return any(pattern.matches(channel) for pattern in patterns)
