"""`cometd-tape diff A B` as a user meets it, on real tapes: the sample proxy tape and edited
copies of it, the replay tests' tapes, tape sets; exit 0 when the same, 1 when different, 2 with
one `Error:` line for a tape that is missing or unreadable, or a bad option."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from tape.cli import cli
from tests.cli import cometd_tape
from tests.constants import SAMPLE
from tests.replay.tapes import write_tape

Edit = Callable[[dict[str, Any]], None]


def diff(*args: str | Path) -> Result:
    return CliRunner().invoke(cli, ["diff", *map(str, args)])


def summary(result: Result) -> str:
    return result.stdout.splitlines()[-1]


def variant(tmp_path: Path, name: str, edit: Edit, source: Path = SAMPLE) -> Path:
    """A copy of a JSONL tape with `edit` applied to each frame."""
    lines = []
    for line in source.read_text().splitlines():
        item = json.loads(line)
        if "seq" in item:
            edit(item)
        lines.append(json.dumps(item))
    path = tmp_path / name
    path.write_text("\n".join(lines) + "\n")
    return path


def replacing(seq: int | None, old: str, new: str) -> Edit:
    def edit(frame: dict[str, Any]) -> None:
        if seq in (None, frame["seq"]):
            frame["raw"] = frame["raw"].replace(old, new)

    return edit


def test_a_tape_and_its_import_carry_the_same_traffic(tmp_path: Path) -> None:
    tape = tmp_path / "sample.duckdb"
    assert cometd_tape("import", str(SAMPLE), "-o", str(tape), "--no-mask").returncode == 0
    result = cometd_tape("diff", str(SAMPLE), str(tape))
    assert result.returncode == 0, result.stderr
    assert result.stdout == "same traffic: 2 deliveries on 2 channels, 1 exchange\n"


def test_values_masked_with_each_tapes_own_key_compare_equal(tmp_path: Path) -> None:
    one, two = tmp_path / "one.duckdb", tmp_path / "two.duckdb"
    for tape in (one, two):  # each import masks the phone numbers with a random key of its own
        assert CliRunner().invoke(cli, ["import", str(SAMPLE), "-o", str(tape)]).exit_code == 0
    assert diff(one, two).exit_code == 0
    unmasked = diff(one, two, "--no-default-ignores", "--ignore", "$..referenceId")
    assert unmasked.exit_code == 1
    assert summary(unmasked) == "1 delivery differs on /me/internal, 1 exchange differs"
    assert '-{"channel":"/me/internal","data":{' in unmasked.stdout
    assert '"GSW_PHONE":"pii:' in unmasked.stdout
    masked_vs_clear = diff(SAMPLE, one)  # a phone number in clear against a masked one
    assert summary(masked_vs_clear) == "1 delivery differs on /me/internal, 1 exchange differs"


def test_one_changed_ack_is_one_change(tmp_path: Path) -> None:
    changed = variant(
        tmp_path,
        "b.jsonl",
        replacing(10, '"DoNotCallAcknowledge","messageType"', '"Refused","messageType"'),
    )
    result = diff(SAMPLE, changed)
    assert result.exit_code == 1
    lines = result.stdout.splitlines()
    assert lines[:3] == [
        f"--- {SAMPLE}  /v2/me/outbound",
        f"+++ {changed}  /v2/me/outbound",
        "@@ -1 +1 @@",
    ]
    assert lines[3].startswith('-{"channel":"/v2/me/outbound","data":{"messageType"')
    assert '"notificationType":"DoNotCallAcknowledge"' in lines[3]
    assert '"notificationType":"Refused"' in lines[4]
    assert '"referenceId":"<ignored>"' in lines[4]
    assert lines[5:] == ["1 delivery differs on /v2/me/outbound"]
    assert diff(SAMPLE, changed, "--ignore", "$.data.notificationType").exit_code == 0
    quiet = diff(SAMPLE, changed, "-q")
    assert quiet.stdout == "1 delivery differs on /v2/me/outbound\n"


def test_a_changed_rest_answer_is_one_changed_exchange(tmp_path: Path) -> None:
    changed = variant(tmp_path, "b.jsonl", replacing(9, '"statusCode":0', '"statusCode":1'))
    result = diff(SAMPLE, changed)
    assert result.exit_code == 1
    assert summary(result) == "1 exchange differs"
    assert f"--- {SAMPLE}  REST exchanges" in result.stdout
    assert '+{"method":"POST","path":"/api/v2/me/outbound-records/13"' in result.stdout
    assert '"response":{"statusCode":1},"status":200}' in result.stdout
    assert diff(SAMPLE, changed, "--deliveries-only").exit_code == 0


def test_what_changes_between_recordings_is_ignored_by_default(tmp_path: Path) -> None:
    """A new referenceId (in the request and its ack) and new server metrics."""

    def edit(frame: dict[str, Any]) -> None:
        replacing(None, "123456789", "555")(frame)
        replacing(10, "4352048", "1")(frame)

    changed = variant(tmp_path, "b.jsonl", edit)
    assert diff(SAMPLE, changed).exit_code == 0
    result = diff(SAMPLE, changed, "--no-default-ignores")
    assert result.exit_code == 1
    assert summary(result) == (
        "1 delivery differs on /v2/me/outbound, 1 delivery differs on /me/internal, "
        "1 exchange differs"
    )


def test_timing_is_compared_only_when_asked(tmp_path: Path) -> None:
    write_tape(tmp_path / "a.duckdb", 5, 0.1)
    write_tape(tmp_path / "b.duckdb", 5, 0.2)  # each delivery twice as far from the first
    a, b = tmp_path / "a.duckdb", tmp_path / "b.duckdb"
    assert diff(a, b).exit_code == 0
    late = diff(a, b, "--timing", "10%")
    assert late.exit_code == 1
    assert "  #3 in A, #3 in B: at 0.400 s in A, 0.800 s in B (allowed ±0.040 s)" in late.stdout
    assert summary(late) == (
        "2 deliveries off time on /v2/me/outbound, 2 deliveries off time on /me/internal"
    )
    on_time = diff(a, b, "--timing", "100%+1ms")
    assert on_time.exit_code == 0
    assert summary(on_time) == (
        "same traffic: 5 deliveries on 2 channels, 0 exchanges, every delivery on time "
        "within 100%+1ms"
    )


def test_a_missing_delivery_is_one_missing(tmp_path: Path) -> None:
    write_tape(tmp_path / "a.duckdb", 5, 0.01)
    write_tape(tmp_path / "b.duckdb", 4, 0.01)
    result = diff(tmp_path / "a.duckdb", tmp_path / "b.duckdb")
    assert result.exit_code == 1
    assert summary(result) == "1 delivery missing in B on /v2/me/outbound"


def test_a_tape_set_reads_as_one_tape(tmp_path: Path) -> None:
    (tmp_path / "set").mkdir()
    write_tape(tmp_path / "set" / "0001.duckdb", 6, 0.01)
    write_tape(tmp_path / "one.duckdb", 6, 0.01)
    assert diff(tmp_path / "set", tmp_path / "one.duckdb").exit_code == 0
    assert diff(tmp_path / "set" / "*.duckdb", tmp_path / "one.duckdb").exit_code == 0


def test_one_session_of_each(tmp_path: Path) -> None:
    second = variant(
        tmp_path,
        "second.jsonl",
        replacing(10, '"DoNotCallAcknowledge","messageType"', '"Refused","messageType"'),
    )
    text = second.read_text().replace("gws-dnc-0001", "gws-dnc-0002")
    both = tmp_path / "both.jsonl"
    both.write_text(SAMPLE.read_text() + text)
    whole = diff(both, SAMPLE)
    assert whole.exit_code == 1
    assert "missing in B" in summary(whole)
    assert diff(both, SAMPLE, "--session-a", "gws-dnc-0001").exit_code == 0
    one = diff(both, SAMPLE, "--session-a", "gws-dnc-0002", "--session-b", "gws-dnc-0001")
    assert one.exit_code == 1
    assert summary(one) == "1 delivery differs on /v2/me/outbound"
    assert f"--- {both} (session gws-dnc-0002)  /v2/me/outbound" in one.stdout


def test_a_frame_that_is_not_json_is_a_difference(tmp_path: Path) -> None:
    def garbage(frame: dict[str, Any]) -> None:
        if frame["seq"] == 10:
            frame["raw"] = "<html>502 Bad Gateway</html>"

    result = diff(SAMPLE, variant(tmp_path, "b.jsonl", garbage))
    assert result.exit_code == 1
    assert (
        '+{"channel":"(unreadable frame)","data":"<html>502 Bad Gateway</html>"}' in result.stdout
    )


def one_error(result: Any) -> str:
    assert result.returncode == 2, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1, result.stderr
    return errors[0]


def test_refusals_are_one_error_line_and_exit_2(tmp_path: Path) -> None:
    junk = tmp_path / "junk.duckdb"
    junk.write_text("not a tape")
    missing = one_error(cometd_tape("diff", str(SAMPLE), str(tmp_path / "nope.duckdb")))
    assert "does not exist" in missing
    unreadable = cometd_tape("diff", str(SAMPLE), str(junk))
    assert one_error(unreadable).startswith(f"Error: {junk} is not a tape")
    assert unreadable.stderr.count("\n") == 1  # the one line, no usage text
    no_session = cometd_tape("diff", str(SAMPLE), str(SAMPLE), "--session-b", "nope")
    assert one_error(no_session) == (
        f"Error: {SAMPLE} has no session 'nope'; its sessions: gws-dnc-0001"
    )


@pytest.mark.parametrize(
    ("option", "value", "message"),
    [
        ("--ignore", "data.id", "is not a JSONPath: it starts with $"),
        ("--ignore", "$.a[", "is not a JSONPath"),
        ("--timing", "10", "is not a timing tolerance"),
        ("--context", "-1", "-1 is not in the range x>=0"),
    ],
)
def test_a_bad_option_is_a_usage_error(option: str, value: str, message: str) -> None:
    result = diff(SAMPLE, SAMPLE, option, value)
    assert result.exit_code == 2
    assert message in result.stderr
