"""docs/faults.md as a user meets it: its complete example test, copied into a fresh directory
and run by a real pytest with our plugin, passes."""

from __future__ import annotations

import re
from pathlib import Path

from tests.constants import ROOT
from tests.replay.test_plugin import run_pytest


def test_the_faults_example_passes(tmp_path: Path) -> None:
    text = (ROOT / "docs" / "faults.md").read_text()
    match = re.search(
        r"<!-- example:faults -->\n```python\n(.*?)```\n<!-- /example -->", text, re.S
    )
    assert match, "docs/faults.md lost its example"
    (tmp_path / "test_faults_example.py").write_text(match.group(1))
    result = run_pytest(tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "2 passed" in result.stdout
