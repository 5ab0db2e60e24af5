"""The code's shape, as the next engineer meets it: the import rule between the packages, no
product file over 500 lines, and a docstring at the top of every module saying its job."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from tests.constants import ROOT

PACKAGES = ("tape", "recorder", "replay", "analysis", "demo")
# Which of our packages each may import: tape is the centre, demo composes the rest.
ALLOWED = {
    "tape": set(),
    "recorder": {"tape"},
    "replay": {"tape"},
    "analysis": {"tape"},
    "demo": {"tape", "recorder", "replay", "analysis"},
}
MODULES = sorted(p for package in PACKAGES for p in (ROOT / package).rglob("*.py"))


def _ours(node: ast.AST) -> set[str]:
    """The packages of ours that one import statement names."""
    if isinstance(node, ast.Import):
        names = [alias.name for alias in node.names]
    elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
        names = [node.module]
    else:
        return set()
    return {name.split(".")[0] for name in names} & set(PACKAGES)


@pytest.mark.parametrize("module", MODULES, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_the_import_rule_holds(module: Path) -> None:
    package = module.relative_to(ROOT).parts[0]
    tree = ast.parse(module.read_text())
    imported = set().union(*(_ours(node) for node in ast.walk(tree))) - {package}
    assert imported <= ALLOWED[package], f"{package} may import only {ALLOWED[package] or 'none'}"


@pytest.mark.parametrize("module", MODULES, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_a_module_has_one_job_and_says_it(module: Path) -> None:
    text = module.read_text()
    assert len(text.splitlines()) <= 500, "over 500 lines: split it along its seams"
    if module.name in ("__init__.py", "__main__.py") and not text.strip():
        return
    docstring = ast.get_docstring(ast.parse(text))
    assert docstring, "no module docstring saying what the module is for"
    assert "not built yet" not in docstring
