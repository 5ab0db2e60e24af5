"""The pytest plugin as a user meets it: the README's example test, run by a real pytest in a
fresh directory, passes; and a test that wants a missing tape fails with a clear message."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from tests.constants import ROOT, TIMEOUT


def readme_example() -> str:
    text = (ROOT / "README.md").read_text()
    match = re.search(
        r"<!-- example:pytest -->\n```python\n(.*?)```\n<!-- /example -->", text, re.S
    )
    assert match, "the README lost its pytest example"
    return match.group(1)


def run_pytest(directory: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            "--rootdir",
            str(ROOT),
            str(directory),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=TIMEOUT * 6,
        check=False,
    )


def test_the_readme_example_passes(tmp_path: Path) -> None:
    (tmp_path / "test_example.py").write_text(readme_example())
    result = run_pytest(tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 passed" in result.stdout


def test_a_missing_tape_is_a_clear_failure(tmp_path: Path) -> None:
    (tmp_path / "test_missing.py").write_text(
        "import pytest\n\n"
        "@pytest.mark.cometd_tape('no/such/tape.duckdb')\n"
        "def test_x(cometd_replay):\n    pass\n"
    )
    result = run_pytest(tmp_path)
    assert result.returncode != 0
    assert "no such tape file" in result.stdout
