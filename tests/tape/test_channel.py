"""Tests for tape.channel: validation, classification and wildcard matching."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tape.channel import (
    ChannelError,
    ChannelPattern,
    Wildcard,
    any_match,
    is_deliverable,
    is_meta,
    is_pattern,
    is_service,
    matches,
    validate_channel,
)


@pytest.mark.parametrize(
    "name",
    ["/foo", "/foo/bar", "/v2/me/outbound", "/foo-bar/(foobar)", "/foo/*", "/foo/**", "/*", "/**"],
)
def test_valid_names_pass(name: str) -> None:
    validate_channel(name)


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("", "channel name is empty"),
        ("foo/bar", "channel name 'foo/bar' must start with '/'"),
        ("/", "channel name '/' has an empty segment"),
        ("/foo//bar", "channel name '/foo//bar' has an empty segment"),
        ("/foo/", "channel name '/foo/' has an empty segment"),
        ("/*/foo", "channel pattern '/*/foo' has a wildcard before its last segment"),
        ("/foo/**/bar", "channel pattern '/foo/**/bar' has a wildcard before its last segment"),
        ("/a*", "channel name '/a*' mixes '*' into the segment 'a*'"),
        ("/foo/***", "channel name '/foo/***' mixes '*' into the segment '***'"),
        ("/foo/b*r/baz", "channel name '/foo/b*r/baz' mixes '*' into the segment 'b*r'"),
    ],
)
def test_invalid_names_raise_with_reason(name: str, message: str) -> None:
    with pytest.raises(ChannelError) as caught:
        validate_channel(name)
    assert str(caught.value) == message
    assert isinstance(caught.value, ValueError)


def test_classification() -> None:
    assert is_meta("/meta/connect")
    assert not is_meta("/metadata")
    assert is_service("/service/echo")
    assert not is_service("/services")
    assert is_pattern("/foo/*")
    assert is_pattern("/foo/**")
    assert not is_pattern("/foo")
    assert not is_pattern("/foo*")


@pytest.mark.parametrize(
    ("name", "deliverable"),
    [
        ("/v2/me/outbound", True),
        ("/me/internal", True),
        ("/meta/connect", False),
        ("/service/echo", False),
    ],
)
def test_is_deliverable(name: str, deliverable: bool) -> None:
    assert is_deliverable(name) is deliverable


# The examples given in Bayeux 1.0 "Channel Globbing".
@pytest.mark.parametrize(
    ("pattern", "channel", "expected"),
    [
        ("/foo/*", "/foo/bar", True),
        ("/foo/*", "/foo/boo", True),
        ("/foo/*", "/foo", False),
        ("/foo/*", "/foobar", False),
        ("/foo/*", "/foo/bar/boo", False),
        ("/foo/**", "/foo/bar", True),
        ("/foo/**", "/foo/boo", True),
        ("/foo/**", "/foo/bar/boo", True),
        ("/foo/**", "/foo", False),
        ("/foo/**", "/foobar", False),
        ("/foo/**", "/foobar/boo", False),
        ("/foo/bar", "/foo/bar", True),
        ("/foo/bar", "/foo/bar/baz", False),
        ("/foo/bar", "/foo", False),
        ("/**", "/meta/connect", True),
        ("/*", "/foo", True),
        ("/*", "/foo/bar", False),
    ],
)
def test_matches_spec_examples(pattern: str, channel: str, expected: bool) -> None:
    assert matches(pattern, channel) is expected
    assert ChannelPattern.parse(pattern).matches(channel) is expected


def test_matches_rejects_an_invalid_pattern() -> None:
    with pytest.raises(ChannelError):
        matches("/foo/**/bar", "/foo/x/bar")


def test_parse_splits_off_the_wildcard() -> None:
    assert ChannelPattern.parse("/foo/**") == ChannelPattern("/foo/**", "/foo/", Wildcard.MANY)
    assert ChannelPattern.parse("/foo/*").wildcard is Wildcard.ONE
    assert ChannelPattern.parse("/foo/bar") == ChannelPattern("/foo/bar", "/foo/bar", None)
    assert ChannelPattern.parse("/foo/**").segments == ("foo", "**")


def test_any_match() -> None:
    patterns = [ChannelPattern.parse(p) for p in ("/v2/me/outbound", "/me/*")]
    assert any_match(patterns, "/me/internal")
    assert any_match(patterns, "/v2/me/outbound")
    assert not any_match(patterns, "/v2/me/other")
    assert not any_match([], "/me/internal")


# --- property test against a naive segment-by-segment reference ------------------------------


def naive_matches(pattern: str, channel: str) -> bool:
    return _naive(pattern.split("/")[1:], channel.split("/")[1:])


def _naive(pattern: list[str], channel: list[str]) -> bool:
    if not pattern:
        return not channel
    if pattern[0] == "**":
        return any(_naive(pattern[1:], channel[n:]) for n in range(1, len(channel) + 1))
    if not channel:
        return False
    head_ok = pattern[0] == "*" or pattern[0] == channel[0]
    return head_ok and _naive(pattern[1:], channel[1:])


# A tiny alphabet so that generated patterns and channels share prefixes often.
segments = st.lists(st.sampled_from(["a", "b", "meta", "x-1"]), min_size=1, max_size=4)
channels = segments.map(lambda parts: "/" + "/".join(parts))
patterns = st.tuples(
    st.lists(st.sampled_from(["a", "b", "meta", "x-1"]), max_size=3),
    st.sampled_from(["", "*", "**"]),
).filter(lambda t: bool(t[0]) or bool(t[1]))
pattern_names = patterns.map(lambda t: "/" + "/".join([*t[0], *([t[1]] if t[1] else [])]))


@given(pattern_names, channels)
def test_matches_agrees_with_naive_reference(pattern: str, channel: str) -> None:
    assert matches(pattern, channel) is naive_matches(pattern, channel)


@given(pattern_names)
def test_pattern_derived_channels_match(pattern: str) -> None:
    # Filling the wildcard with one segment always matches, whichever wildcard it is.
    channel = pattern.replace("**", "z").replace("*", "z")
    assert matches(pattern, channel)
    assert matches(pattern, channel + "/deeper") is pattern.endswith("/**")


@given(pattern_names)
def test_generated_names_are_valid(pattern: str) -> None:
    validate_channel(pattern)
    assert is_pattern(pattern) is pattern.endswith("*")
