"""docs/diff.md as a user meets it: its complete example test, copied into a fresh directory and
run by a real pytest with our plugin, passes; and the diff it shows is what the CLI prints."""

from __future__ import annotations

import re
from pathlib import Path

from tape.diff import diff_traffic, render
from tests.constants import ROOT
from tests.replay.test_plugin import run_pytest

PAGE = ROOT / "docs" / "diff.md"


def test_the_diff_example_passes(tmp_path: Path) -> None:
    match = re.search(
        r"<!-- example:diff -->\n```python\n(.*?)```\n<!-- /example -->", PAGE.read_text(), re.S
    )
    assert match, "docs/diff.md lost its example"
    (tmp_path / "test_diff_example.py").write_text(match.group(1))
    result = run_pytest(tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "2 passed" in result.stdout


def test_the_diff_shown_is_the_diff_printed() -> None:
    """The page's sample output, made again from the three acks it shows."""
    shown = re.search(r"```\n(--- golden.jsonl  /v2/me/outbound\n.*?)```", PAGE.read_text(), re.S)
    assert shown, "docs/diff.md lost its sample diff"

    def ack(handle: int, notification: str, reference: str, id: str) -> dict[str, object]:
        data = {"notificationType": notification, "referenceId": reference}
        return {
            "channel": "/v2/me/outbound",
            "data": {**data, "record": {"recordHandle": handle}},
            "id": id,
        }

    golden = [
        ack(13, "DoNotCallAcknowledge", "r1", "4"),
        ack(14, "DoNotCallAcknowledge", "r2", "6"),
        ack(15, "RecordRejectAcknowledge", "r3", "8"),
    ]
    today = [golden[0], ack(14, "RecordRescheduleAcknowledge", "x2", "7"), golden[2]]
    text = render(diff_traffic(golden, today))
    text = text.replace("A (3 messages given)", "golden.jsonl").replace(
        "B (3 messages given)", "today.duckdb"
    )
    assert text + "\n" == shown.group(1)
