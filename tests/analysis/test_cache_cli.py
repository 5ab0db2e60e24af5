"""`cometd-tape cache info|clear`, where the cache lives, and its bound (least recently used
entries go first). Every test has a cache folder of its own."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from analysis import cache
from analysis.generate import generate
from tests.constants import ROOT, TIMEOUT


def run(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tape", *args],
        cwd=ROOT,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=TIMEOUT * 6,
        check=False,
    )


@pytest.fixture(scope="module")
def tapes(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    folder = tmp_path_factory.mktemp("tapes")
    made = []
    for n in range(3):
        path = folder / f"t{n}.duckdb"
        generate(path, 300, seed=n)
        made.append(path)
    return made


def files(folder: Path) -> dict[str, list[str]]:
    """The views cached per tape file name."""
    found: dict[str, list[str]] = {}
    for entry in cache.entries():
        assert entry.path.parent == folder
        tape, view = cache.describe(entry)
        assert tape is not None
        assert view is not None
        found.setdefault(Path(tape).name, []).append(view)
    return {k: sorted(v) for k, v in found.items()}


def test_info_and_clear(tmp_path: Path, tapes: list[Path], monkeypatch: pytest.MonkeyPatch) -> None:
    folder = tmp_path / "cache"
    env = {"COMETD_TAPE_CACHE": str(folder)}
    monkeypatch.setenv("COMETD_TAPE_CACHE", str(folder))
    info = run("cache", "info", env=env)
    assert info.returncode == 0, info.stderr
    assert info.stdout.splitlines()[0] == f"folder  {folder}  (not made yet)"
    assert "0.0 MB in 0 files, bound 2048.0 MB" in info.stdout

    for tape in tapes[:2]:
        done = run("analyze", "unmatched", str(tape), env=env)
        assert done.returncode == 0, done.stderr
    assert files(folder) == {
        "t0.duckdb": ["unmatched_requests"],
        "t1.duckdb": ["unmatched_requests"],
    }
    other = folder / "notes.txt"  # not the cache's: left alone
    other.write_text("mine")
    size = sum(e.size for e in cache.entries())
    info = run("cache", "info", env={**env, "COMETD_TAPE_CACHE_MB": "5"})
    assert info.returncode == 0, info.stderr
    lines = info.stdout.splitlines()
    assert lines[0] == f"folder  {folder}"
    assert (
        lines[1] == f"size    {size / 1e6:.1f} MB in 2 files, bound 5.0 MB ($COMETD_TAPE_CACHE_MB)"
    )
    assert lines[2].split() == ["tape", "view", "size", "last", "used", "(UTC)"]
    assert lines[3].split()[:2] == [str(tapes[1]), "unmatched_requests"]  # the latest first
    assert lines[4].split()[:2] == [str(tapes[0]), "unmatched_requests"]

    cleared = run("cache", "clear", env=env)
    assert cleared.returncode == 0, cleared.stderr
    assert cleared.stdout.strip() == f"removed 2 files ({size / 1e6:.1f} MB) from {folder}"
    assert cache.entries() == []
    assert sorted(p.name for p in folder.iterdir()) == ["notes.txt"]
    other.unlink()
    assert (
        run("cache", "clear", env=env).stdout.strip() == f"removed 0 files (0.0 MB) from {folder}"
    )
    assert not folder.exists()  # emptied, the folder goes too


def test_the_folder_follows_xdg_cache_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("COMETD_TAPE_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache.cache_dir() == tmp_path / "xdg" / "cometd-tape"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert cache.cache_dir() == tmp_path / "home" / ".cache" / "cometd-tape"
    monkeypatch.setenv("COMETD_TAPE_CACHE", str(tmp_path / "explicit"))
    assert cache.cache_dir() == tmp_path / "explicit"
    info = run(
        "cache", "info", env={"COMETD_TAPE_CACHE": "", "XDG_CACHE_HOME": str(tmp_path / "x")}
    )
    assert info.stdout.startswith(f"folder  {tmp_path / 'x' / 'cometd-tape'}  (not made yet)")


def test_the_limit_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(cache.LIMIT_ENV, raising=False)
    assert cache.limit_bytes() == cache.DEFAULT_LIMIT_MB * 1_000_000
    monkeypatch.setenv(cache.LIMIT_ENV, "0.5")
    assert cache.limit_bytes() == 500_000
    monkeypatch.setenv(cache.LIMIT_ENV, "lots")  # not a number: the default
    assert cache.limit_bytes() == cache.DEFAULT_LIMIT_MB * 1_000_000


def test_the_least_recently_used_entries_go_beyond_the_bound(
    tmp_path: Path, tapes: list[Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = tmp_path / "cache"
    monkeypatch.setenv("COMETD_TAPE_CACHE", str(folder))
    env = {"COMETD_TAPE_CACHE": str(folder)}

    def unmatched(tape: Path, limit_mb: float) -> None:
        done = run("analyze", "unmatched", str(tape), env={**env, cache.LIMIT_ENV: str(limit_mb)})
        assert done.returncode == 0, done.stderr

    unmatched(tapes[0], 100)
    one = cache.entries()[0].size  # every entry of these tapes is about as big
    unmatched(tapes[1], 100)
    unmatched(tapes[0], 100)  # used again: now t1's entry is the least recently used
    assert set(files(folder)) == {"t0.duckdb", "t1.duckdb"}
    bound = (2.5 * one) / 1e6  # room for two entries, not three
    unmatched(tapes[2], bound)
    assert set(files(folder)) == {"t0.duckdb", "t2.duckdb"}
    assert sum(e.size for e in cache.entries()) <= bound * 1e6
    unmatched(tapes[1], 0)  # no room at all: the entry in use is kept, the others go
    assert set(files(folder)) == {"t1.duckdb"}


def test_evict_keeps_what_is_in_use(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COMETD_TAPE_CACHE", str(tmp_path))
    for n, name in enumerate(["a.requests.duckdb", "b.acks.duckdb", "c.gaps.duckdb"]):
        path = tmp_path / name
        path.write_bytes(b"x" * 1000)
        os.utime(path, ns=(n * 10**9, n * 10**9))  # a oldest, c newest
    (tmp_path / "b.acks.duckdb.wal").write_bytes(b"y" * 500)  # counted with its database
    assert [e.size for e in cache.entries()] == [1000, 1500, 1000]
    removed = cache.evict(keep=[tmp_path / "a.requests.duckdb"], limit=2000)
    assert [e.path.name for e in removed] == ["b.acks.duckdb"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.requests.duckdb", "c.gaps.duckdb"]
    assert cache.evict(limit=2000) == []
