"""The README and docs/ as a reader meets them: every relative link (and its #anchor) leads
somewhere, and every code block marked `<!-- runnable -->` runs as written."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.constants import ROOT, TIMEOUT

PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
_LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
_FENCE = re.compile(r"^```.*?^```", re.M | re.S)
_RUNNABLE = re.compile(r"<!-- runnable -->\n```sh\n(.*?)```", re.S)


def _slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"[`*_]", "", heading.strip().lower())
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def _anchors(page: Path) -> set[str]:
    text = _FENCE.sub("", page.read_text())
    return {_slug(m.group(1)) for m in re.finditer(r"^#+ (.+)$", text, re.M)}


def _links(page: Path) -> list[str]:
    return _LINK.findall(_FENCE.sub("", page.read_text()))


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_every_relative_link_resolves(page: Path) -> None:
    broken = []
    for target in _links(page):
        if re.match(r"[a-z]+:", target):  # http:, https:, mailto:
            continue
        path, _, anchor = target.partition("#")
        dest = (page.parent / path).resolve() if path else page
        if not dest.exists():
            broken.append(f"{target}: no such file")
        elif anchor and dest.suffix == ".md" and anchor not in _anchors(dest):
            broken.append(f"{target}: no heading #{anchor} in {dest.name}")
    assert broken == [], f"{page.name}: {broken}"


def test_the_readme_is_the_front_door_not_the_manual() -> None:
    assert len((ROOT / "README.md").read_text().splitlines()) <= 300


def test_the_readme_runnable_blocks_run(tmp_path: Path) -> None:
    blocks = _RUNNABLE.findall((ROOT / "README.md").read_text())
    assert blocks, "the README has no <!-- runnable --> block"
    shutil.copytree(ROOT / "samples", tmp_path / "samples")
    bin_dir = str(Path(sys.executable).parent)
    env = {**os.environ, "PATH": bin_dir + os.pathsep + os.environ.get("PATH", "")}
    env["COMETD_TAPE_CACHE"] = str(tmp_path / "cache")
    for block in blocks:
        for line in block.strip().splitlines():
            result = subprocess.run(
                shlex.split(line),
                cwd=tmp_path,
                env=env,
                capture_output=True,
                text=True,
                timeout=TIMEOUT * 6,
                check=False,
            )
            assert result.returncode == 0, f"{line}\n{result.stderr}"
            assert "Traceback" not in result.stderr
