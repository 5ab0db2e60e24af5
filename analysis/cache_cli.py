"""`cometd-tape cache`: what the analysis cache (analysis/cache.py) holds, and emptying it."""

from __future__ import annotations

import datetime as dt

import click

from analysis import cache as view_cache
from analysis.output import render


@click.group("cache")
def cache_group() -> None:
    """The analysis cache: the views of each tape analysed, stored to be read again.

    It lives in $COMETD_TAPE_CACHE, else $XDG_CACHE_HOME/cometd-tape, else
    ~/.cache/cometd-tape, and holds at most $COMETD_TAPE_CACHE_MB megabytes (default
    2048): the least recently used entries go first.
    """


@cache_group.command("info")
def cache_info_command() -> None:
    """Where the cache is, its size and bound, and the tapes and views it holds."""
    found = view_cache.entries()
    folder = view_cache.cache_dir()
    total = sum(e.size for e in found)
    limit = view_cache.limit_bytes()
    click.echo(f"folder  {folder}{'' if folder.is_dir() else '  (not made yet)'}")
    click.echo(
        f"size    {_mb(total)} in {len(found)} files, bound {_mb(limit)} (${view_cache.LIMIT_ENV})"
    )
    rows = []
    for entry in reversed(found):  # the most recently used first
        tape, view = view_cache.describe(entry)
        used = dt.datetime.fromtimestamp(entry.used_ns / 1e9, dt.UTC).strftime("%Y-%m-%d %H:%M:%S")
        rows.append((tape or "?", view or entry.path.name, _mb(entry.size), used))
    if rows:
        click.echo(render(["tape", "view", "size", "last used (UTC)"], rows, "table"))


@cache_group.command("clear")
def cache_clear_command() -> None:
    """Remove every entry of the cache (analysis computes them again when needed)."""
    removed = view_cache.clear()
    total = sum(e.size for e in removed)
    click.echo(f"removed {len(removed)} files ({_mb(total)}) from {view_cache.cache_dir()}")


def _mb(size: int) -> str:
    return f"{size / 1e6:.1f} MB"
