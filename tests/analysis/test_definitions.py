"""The views' SQL and tape/gws.py agree on which ack answers which operation: the table is
written into the SQL from tape.gws.EXPECTED_ACK, never copied into it."""

from __future__ import annotations

import re
from importlib import resources
from pathlib import Path

import duckdb

from analysis.definitions import EXPECTED_ACK_MARK, sql_files
from analysis.generate import OPERATIONS, generate
from analysis.views import open_tapes
from replay.simulator import ACKS, PREVIEW
from tape.gws import EXPECTED_ACK

_EXPECTED = re.compile(
    r"WITH expected\(operation_name, expected_ack\) AS \((.*?)\), first_ack", re.DOTALL
)


def test_the_request_latency_view_expects_the_acks_of_tape_gws() -> None:
    [sql] = [text for text in sql_files() if "VIEW request_latency" in text]
    match = _EXPECTED.search(sql)
    assert match is not None, "request_latency no longer has its `expected` table"
    rows = duckdb.connect().execute(f"SELECT * FROM ({match.group(1)})").fetchall()
    assert dict(rows) == EXPECTED_ACK
    assert len(rows) == len(EXPECTED_ACK)


def test_no_sql_file_spells_out_an_ack_of_its_own() -> None:
    folder = resources.files("analysis") / "sql"
    raw = "\n".join(p.read_text() for p in folder.iterdir() if p.name.endswith(".sql"))
    assert EXPECTED_ACK_MARK in raw
    for operation, ack in EXPECTED_ACK.items():
        assert f"'{operation}'" not in raw
        assert f"'{ack}'" not in raw


def test_the_simulator_and_the_generator_use_tape_gws() -> None:
    assert {**ACKS, PREVIEW[0]: PREVIEW[1]} == EXPECTED_ACK
    assert dict(OPERATIONS) == ACKS


def test_every_generated_request_expects_the_ack_of_tape_gws(tmp_path: Path) -> None:
    tape = tmp_path / "g.duckdb"
    generate(tape, 200, 5, error_rate=0, missing_ack_rate=0)
    rows = (
        open_tapes([tape], cache=False)
        .execute(
            "SELECT operation_name, expected_ack, notification_type, ack_as_expected "
            "FROM request_latency"
        )
        .fetchall()
    )
    assert {operation for operation, *_ in rows} == set(ACKS)
    for operation, expected, received, as_expected in rows:
        assert expected == received == EXPECTED_ACK[operation]
        assert as_expected
