"""The CLI as a user meets it: help everywhere, import/export/info/rebuild, one-line errors."""

from __future__ import annotations

import subprocess
from pathlib import Path

import click
import duckdb
import pytest
from click.testing import CliRunner

from tape.cli import cli
from tests.cli import cometd_tape
from tests.conftest import SAMPLE


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return cometd_tape(*args)


def test_help_lists_the_tape_commands() -> None:
    result = run("--help")
    assert result.returncode == 0
    for name in ("import", "export", "info", "rebuild"):
        assert f"  {name} " in result.stdout


def test_every_command_has_help_text() -> None:
    ctx = click.Context(cli)
    for name in cli.list_commands(ctx):
        command = cli.get_command(ctx, name)
        assert command is not None, name
        assert command.help, f"{name} has no help text"
        assert len(command.help) > 20, f"{name}'s help text is too short"
        for param in command.params:
            if isinstance(param, click.Option):
                assert param.help, f"{name} {param.opts} has no help text"


def test_import_info_export_rebuild_round_trip(tmp_path: Path) -> None:
    tape = tmp_path / "demo.duckdb"
    out = tmp_path / "back.jsonl"
    runner = CliRunner()
    result = runner.invoke(cli, ["import", str(SAMPLE), "-o", str(tape), "--no-mask"])
    assert result.exit_code == 0, result.output
    assert "imported 10 frames in 1 sessions" in result.output
    info = runner.invoke(cli, ["info", str(tape)])
    assert info.exit_code == 0
    assert "schema v2" in info.output
    assert "gws-dnc-0001" in info.output
    assert "/v2/me/outbound" in info.output
    assert runner.invoke(cli, ["export", str(tape), "-o", str(out)]).exit_code == 0
    assert out.read_bytes() == SAMPLE.read_bytes()
    rebuilt = runner.invoke(cli, ["rebuild", str(tape)])
    assert rebuilt.exit_code == 0
    assert "12 rows" in rebuilt.output


def test_export_to_stdout(tmp_path: Path) -> None:
    tape = tmp_path / "demo.duckdb"
    assert run("import", str(SAMPLE), "-o", str(tape), "--no-mask").returncode == 0
    result = run("export", str(tape))
    assert result.returncode == 0
    assert result.stdout.encode() == SAMPLE.read_bytes()


def test_importing_the_same_session_twice_is_refused(tmp_path: Path) -> None:
    tape = tmp_path / "demo.duckdb"
    assert run("import", str(SAMPLE), "-o", str(tape)).returncode == 0
    result = run("import", str(SAMPLE), "-o", str(tape))
    assert result.returncode == 1
    assert "exists; add --append to add to it, --overwrite to replace it" in result.stderr
    result = run("import", str(SAMPLE), "-o", str(tape), "--append")
    assert result.returncode == 1
    assert "already holds session gws-dnc-0001" in result.stderr
    assert "Traceback" not in result.stderr
    result = run("import", str(SAMPLE), "-o", str(tape), "--overwrite")
    assert result.returncode == 0, result.stderr
    conn = duckdb.connect(str(tape), read_only=True)
    assert conn.execute("SELECT count(*) FROM sessions").fetchall() == [(1,)]
    conn.close()


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"not json\n", "line 1:"),
        (
            b'{"session_id":"s","seq":2,"t_wall_ns":1,"direction":"in","transport":"http",'
            b'"kind":"bayeux","raw":"[]"}\n',
            "seq 2 where 1 was expected",
        ),
        (b'{"session_id":"s","seq":1}\n', "frame is missing t_wall_ns"),
        (
            b'{"session_id":"s","seq":true,"t_wall_ns":1,"direction":"in","transport":"http",'
            b'"kind":"bayeux","raw":"[]"}\n',
            "seq must be a 64-bit integer, got True",
        ),
        (
            b'{"session_id":"s","seq":1,"t_wall_ns":1,"direction":"in","transport":"http",'
            b'"kind":"bayeux","raw":"!!","raw_encoding":"base64"}\n',
            "not valid base64",
        ),
    ],
)
def test_bad_jsonl_gives_a_line_numbered_error(
    tmp_path: Path, content: bytes, message: str
) -> None:
    source = tmp_path / "bad.jsonl"
    source.write_bytes(content)
    tape = tmp_path / "t.duckdb"
    result = run("import", str(source), "-o", str(tape))
    assert result.returncode == 1
    assert message in result.stderr
    assert "Traceback" not in result.stderr
    assert not tape.exists(), "a failed import must not leave a half-written tape"


def test_opening_something_that_is_not_a_tape(tmp_path: Path) -> None:
    junk = tmp_path / "junk.duckdb"
    junk.write_bytes(b"this is not a database" * 100)
    result = run("info", str(junk))
    assert result.returncode == 1
    assert "is not a tape" in result.stderr
    assert "Traceback" not in result.stderr
    other = tmp_path / "other.duckdb"
    duckdb.connect(str(other)).execute("CREATE TABLE t (x INT)").close()
    result = run("info", str(other))
    assert result.returncode == 1
    assert "not a tape" in result.stderr


def test_a_tape_from_a_newer_schema_is_refused(tmp_path: Path) -> None:
    tape = tmp_path / "demo.duckdb"
    assert run("import", str(SAMPLE), "-o", str(tape)).returncode == 0
    conn = duckdb.connect(str(tape))
    conn.execute("UPDATE tape_meta SET value = '99' WHERE key = 'schema_version'")
    conn.close()
    result = run("info", str(tape))
    assert result.returncode == 1
    assert "has tape schema v99" in result.stderr
    assert "Upgrade cometd-tape" in result.stderr


def test_missing_file_and_usage_errors() -> None:
    result = run("info", "/nonexistent/tape.duckdb")
    assert result.returncode == 2
    assert "does not exist" in result.stderr
    assert run("import").returncode == 2


def test_a_bad_line_imports_nothing_into_an_existing_tape(tmp_path: Path) -> None:
    tape = tmp_path / "demo.duckdb"
    assert run("import", str(SAMPLE), "-o", str(tape)).returncode == 0
    good = SAMPLE.read_text().replace("gws-dnc-0001", "second")
    source = tmp_path / "bad.jsonl"
    source.write_text(good + "garbage\n")
    for mode in ("--append", "--overwrite"):
        result = run("import", str(source), "-o", str(tape), mode)
        assert result.returncode == 1
        assert "line 12" in result.stderr
        conn = duckdb.connect(str(tape), read_only=True)
        rows = conn.execute("SELECT DISTINCT session_id FROM frames").fetchall()
        assert rows == [("gws-dnc-0001",)]
        conn.close()


def test_session_endpoints_lose_their_credentials(tmp_path: Path) -> None:
    source = tmp_path / "s.jsonl"
    source.write_text(
        '{"session":{"session_id":"s","endpoint":"https://agent:hunter2@gws/api?password=x"}}\n'
    )
    tape = tmp_path / "t.duckdb"
    assert run("import", str(source), "-o", str(tape)).returncode == 0
    conn = duckdb.connect(str(tape), read_only=True)
    assert conn.execute("SELECT endpoint FROM sessions").fetchall() == [
        ("https://gws/api?password=[REDACTED]",)
    ]
    conn.close()
