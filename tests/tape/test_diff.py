"""The diff core as a test engineer relies on it: a traffic equals itself under any ignore rule,
one changed delivery is reported exactly once (one `-` line, one `+` line, "1 delivery differs"),
a change only under an ignored path is never reported; and the rules, timing and summary."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from tape.diff import assert_same_traffic, diff_traffic, render
from tape.diff_core import Delivery, DiffOptions, Exchange, Traffic, compare
from tape.diff_rules import IGNORED, MASKED, RuleError, Rules, dumps, rules_for
from tape.diff_timing import Timing

CHANNELS = ("/v2/me/outbound", "/me/internal", "/a/b")
NAMES = ("data", "a", "b", "x", "items", "timestamp", "referenceId")

scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=8)
)
json_values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(st.sampled_from(NAMES) | st.text(max_size=3), inner, max_size=4)
    ),
    max_leaves=12,
)
# Keys a JSONPath can name without quoting: the messages whose paths the tests build.
named_values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.sampled_from(NAMES), inner),
    max_leaves=10,
)


def deliveries(values: st.SearchStrategy[Any]) -> st.SearchStrategy[list[Delivery]]:
    def one(channel: str, data: Any, n: int) -> Delivery:
        return Delivery(channel, {"channel": channel, "data": data, "id": str(n)}, n * 0.01)

    return st.lists(
        st.builds(one, st.sampled_from(CHANNELS), values, st.integers(0, 10_000)), max_size=12
    )


def steps() -> st.SearchStrategy[str]:
    name = st.sampled_from(NAMES)
    return st.one_of(
        name.map(lambda n: "." + n),
        name.map(lambda n: ".." + n),
        st.just("[*]"),
        st.just(".*"),
        st.integers(0, 3).map(lambda i: f"[{i}]"),
    )


rules = st.lists(st.lists(steps(), max_size=4).map(lambda s: "$" + "".join(s)), max_size=3).map(
    lambda paths: [p for p in paths if not p.endswith("..")]
)


def traffic(items: list[Delivery], name: str = "A") -> Traffic:
    return Traffic(name, tuple(items), ())


def counts(diff: Any) -> tuple[int, int, int]:
    return (
        sum(s.differ for s in diff.sections),
        sum(s.missing for s in diff.sections),
        sum(s.extra for s in diff.sections),
    )


@given(deliveries(json_values), rules, st.booleans())
def test_a_traffic_equals_itself_under_any_ignore_rule(
    items: list[Delivery], paths: list[str], defaults: bool
) -> None:
    options = DiffOptions(rules=rules_for(paths, default_ignores=defaults), timing=Timing(0, 0))
    diff = compare(traffic(items), traffic(items, "B"), options)
    assert diff.equal
    assert render(diff).startswith("same traffic:")


@given(deliveries(json_values), st.data())
def test_one_changed_delivery_is_reported_exactly_once(
    items: list[Delivery], data: st.DataObject
) -> None:
    assume(items)
    k = data.draw(st.integers(0, len(items) - 1))
    changed = list(items)
    old = items[k]
    # A value no other delivery holds: a change to a neighbour's value reads as a move.
    message = {**old.message, "data": {"changed": old.message["data"]}}
    changed[k] = Delivery(old.channel, message, old.offset)
    diff = compare(traffic(items), traffic(changed, "B"), DiffOptions(rules=rules_for()))
    assert counts(diff) == (1, 0, 0)
    text = render(diff)
    lines = text.splitlines()
    assert sum(line.startswith("-{") for line in lines) == 1
    assert sum(line.startswith("+{") for line in lines) == 1
    assert lines[-1] == f"1 delivery differs on {old.channel}"


def walk(value: Any, data: st.DataObject) -> list[str | int]:
    """A concrete place inside `value`, as the keys and indexes leading to it."""
    place: list[str | int] = []
    while isinstance(value, dict | list) and value and data.draw(st.booleans()):
        key = data.draw(
            st.sampled_from(sorted(value) if isinstance(value, dict) else range(len(value)))
        )
        place.append(key)
        value = value[key]
    return place


def path_to(place: list[str | int], data: st.DataObject) -> str:
    """A JSONPath that matches `place`: exact, or with wildcards, or recursive from a key."""
    parts = [
        (
            data.draw(st.sampled_from([f".{p}", ".*"]))
            if isinstance(p, str)
            else data.draw(st.sampled_from([f"[{p}]", "[*]"]))
        )
        for p in place
    ]
    keys = [i for i, p in enumerate(place) if isinstance(p, str) and i > 0]
    if keys and data.draw(st.booleans()):
        cut = data.draw(st.sampled_from(keys))
        return "$.." + str(place[cut]) + "".join(parts[cut + 1 :])
    return "$" + "".join(parts)


def put(message: Any, place: list[str | int], value: Any) -> Any:
    changed = copy.deepcopy(message)
    target = changed
    for key in place[:-1]:
        target = target[key]
    target[place[-1]] = value
    return changed


@given(deliveries(named_values), st.data(), json_values)
def test_a_change_under_an_ignored_path_is_never_reported(
    items: list[Delivery], data: st.DataObject, new: Any
) -> None:
    assume(items)
    k = data.draw(st.integers(0, len(items) - 1))
    message = items[k].message
    place = ["data", *walk(message["data"], data)]
    old = message
    for key in place:
        old = old[key]
    assume(dumps(old) != dumps(new))
    rule = path_to(place, data)
    changed = list(items)
    changed[k] = Delivery(items[k].channel, put(message, place, new), items[k].offset)
    ignoring = DiffOptions(rules=Rules.parse([rule]))
    assert compare(traffic(items), traffic(changed, "B"), ignoring).equal, rule
    assert not compare(traffic(items), traffic(changed, "B"), DiffOptions(rules=Rules())).equal


def test_paths_replace_what_they_match_and_keep_what_they_do_not() -> None:
    message = {"id": "7", "data": {"id": 1, "a": [{"b": 1, "c": 2}, {"b": 3}], "timestamp": 5}}
    rules = Rules.parse(["$.data.id", "$.data.a[*].b", "$..timestamp", "$.nowhere.b"])
    assert rules.apply(message) == {
        "id": "7",
        "data": {
            "id": IGNORED,
            "a": [{"b": IGNORED, "c": 2}, {"b": IGNORED}],
            "timestamp": IGNORED,
        },
    }
    assert message["data"]["id"] == 1  # the message itself is left alone
    assert rules.line({"b": 1, "a": 2}) == '{"a":2,"b":1}'  # keys sorted


def test_masked_values_compare_equal_by_default() -> None:
    a = {
        "channel": "/c",
        "data": {"phone": "pii:0123456789abcdef", "GSW_PHONE": "pii:ffffffffffffffff"},
    }
    assert rules_for().apply(a)["data"] == {"phone": MASKED, "GSW_PHONE": MASKED}
    assert rules_for(default_ignores=False).apply(a) == a


def test_long_integers_stay_exact() -> None:
    a = {"channel": "/c", "data": {"n": 12345678901234567890123}}
    b = {"channel": "/c", "data": {"n": 12345678901234567890124}}
    assert not diff_traffic([a], [b]).equal


@pytest.mark.parametrize("bad", ["data.id", "$.a[", "$..", "$[?(@.x)]"])
def test_a_bad_rule_says_why(bad: str) -> None:
    with pytest.raises(RuleError, match="is not a JSONPath"):
        Rules.parse([bad])


def test_timing_tolerances() -> None:
    assert Timing.parse("10%").allowed(2.0) == pytest.approx(0.2)
    assert Timing.parse("50ms").allowed(2.0) == pytest.approx(0.05)
    assert Timing.parse("10%+50ms").allowed(2.0) == pytest.approx(0.25)
    assert Timing.parse("0.5s").allowed(0) == 0.5
    for bad in ("10", "ten%", "10%+5ms+1s", "-5ms"):
        with pytest.raises(ValueError, match="not a timing tolerance"):
            Timing.parse(bad)


def test_a_delivery_off_time_is_reported_with_its_offsets() -> None:
    a = [Delivery("/c", {"channel": "/c", "data": n}, n * 1.0) for n in range(3)]
    b = [*a[:2], Delivery("/c", {"channel": "/c", "data": 2}, 2.5)]
    late = compare(traffic(a), traffic(b, "B"), DiffOptions(timing=Timing.parse("10%")))
    assert render(late).splitlines()[-2:] == [
        "  #3 in A, #3 in B: at 2.000 s in A, 2.500 s in B (allowed ±0.200 s)",
        "1 delivery off time on /c",
    ]
    assert compare(traffic(a), traffic(b, "B"), DiffOptions(timing=Timing.parse("30%"))).equal


def test_messages_given_in_a_test_have_no_times() -> None:
    with pytest.raises(ValueError, match="timing needs recorded times"):
        diff_traffic([{"channel": "/c", "data": 1}], [{"channel": "/c", "data": 1}], timing="10%")


def test_the_assertion_message_is_the_diff() -> None:
    a = [{"channel": "/c", "data": n, "id": str(n)} for n in range(5)]
    b = [*a[:2], {"channel": "/c", "data": 99}, *a[3:], {"channel": "/meta/connect", "data": 1}]
    with pytest.raises(AssertionError) as raised:
        assert_same_traffic(a, b)
    assert str(raised.value) == "\n".join(
        [
            "--- A (5 messages given)  /c",
            "+++ B (6 messages given)  /c",
            "@@ -1,5 +1,5 @@",
            ' {"channel":"/c","data":0,"id":"<ignored>"}',
            ' {"channel":"/c","data":1,"id":"<ignored>"}',
            '-{"channel":"/c","data":2,"id":"<ignored>"}',
            '+{"channel":"/c","data":99}',
            ' {"channel":"/c","data":3,"id":"<ignored>"}',
            ' {"channel":"/c","data":4,"id":"<ignored>"}',
            "1 delivery differs on /c",
        ]
    )
    assert_same_traffic(a, [{**m, "id": "other"} for m in a])  # ids are ignored by default


def test_missing_and_extra_deliveries_and_exchanges_are_counted() -> None:
    a = Traffic("A", tuple(Delivery("/c", {"channel": "/c", "data": n}) for n in range(4)), ())
    b = Traffic("B", a.deliveries[:1] + a.deliveries[2:] + a.deliveries[:1], ())
    ok = Exchange("POST", "/api/x", 200, {"referenceId": "1"}, {"statusCode": 0})
    a_ex = Traffic("A", a.deliveries, (ok, ok))
    b_ex = Traffic(
        "B",
        a.deliveries,
        (Exchange("POST", "/api/x", 200, {"referenceId": "2"}, {"statusCode": 0}),),
    )
    assert render(compare(a, b, DiffOptions())).splitlines()[-1] == (
        "1 delivery missing in B on /c, 1 delivery extra in B on /c"
    )
    assert render(compare(a_ex, b_ex, DiffOptions())).splitlines()[-1] == "1 exchange missing in B"
    assert compare(a_ex, b_ex, DiffOptions(exchanges=False)).equal
