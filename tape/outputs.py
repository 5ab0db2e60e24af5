"""The one rule for a file a command writes (a report, an export, a copy): an existing one is
refused unless --overwrite, in the words `claim_tape` (tape/cli.py) uses for tapes."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import click


def overwrite_option(command: Callable[..., Any]) -> Callable[..., Any]:
    """`--overwrite`: replace the output if it exists."""
    return click.option("--overwrite", is_flag=True, help="Replace the output if it exists.")(
        command
    )


def claim_output(path: Path, *, overwrite: bool, option: str = "-o", tape: bool = False) -> None:
    """Make `path` ready to be written: refused when it exists, unless `overwrite` (then it is
    removed first; a `tape` with its .wal). `option` names the option that chose the path."""
    if not path.exists():
        if tape:  # a WAL without its database is a crashed run's leftover
            path.with_name(path.name + ".wal").unlink(missing_ok=True)
        return
    if path.is_dir():
        raise click.ClickException(f"{path} is a folder; give a file name to {option}")
    if not overwrite:
        raise click.ClickException(
            f"{path} exists; add --overwrite to replace it, or choose another {option}"
        )
    path.unlink()
    if tape:
        path.with_name(path.name + ".wal").unlink(missing_ok=True)


def claim_folder(folder: Path, *, overwrite: bool, owned: Callable[[Path], bool]) -> None:
    """Make `folder` ready to be written into: a missing or empty folder is fine; one holding
    files is refused unless `overwrite`, and then only emptied when every entry in it is
    `owned` (one this command writes), so --overwrite never removes a user's own files."""
    if not folder.exists():
        return
    if not folder.is_dir():
        raise click.ClickException(f"{folder} is a file; give a folder to -o")
    entries = list(folder.iterdir())
    if not entries:
        return
    if not overwrite:
        raise click.ClickException(
            f"{folder} exists and is not empty; add --overwrite to replace what it holds, "
            "or choose another -o"
        )
    strangers = [e.name for e in entries if not owned(e)]
    if strangers:
        shown = ", ".join(sorted(strangers)[:5]) + (" ..." if len(strangers) > 5 else "")
        raise click.ClickException(
            f"{folder} holds files an export does not write ({shown}); --overwrite replaces "
            "only an earlier export: choose another -o"
        )
    for entry in entries:
        _remove(entry)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        for child in path.iterdir():
            _remove(child)
        path.rmdir()
    else:
        path.unlink()
