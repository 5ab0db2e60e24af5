"""The views' SQL and tape/gws.py agree on which ack answers which operation: the table is
written into the SQL from tape.gws.EXPECTED_ACK, never copied into it. The one map of each
relation's time names a column every relation has."""

from __future__ import annotations

import re
from importlib import resources
from pathlib import Path

import duckdb

from analysis.cache import BASE_TABLES
from analysis.definitions import EXPECTED_ACK_MARK, TIME_COLUMN, sql_files, view_names
from analysis.export import export
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


def test_every_relation_has_the_time_the_map_names(tmp_path: Path) -> None:
    tape = tmp_path / "g.duckdb"
    generate(tape, 50, 3)
    conn = open_tapes([tape], cache=False)
    relations = [*BASE_TABLES, *view_names()]
    no_time = {"clock_offsets", "capture_points", "capture_offsets"}  # no time of their own
    assert set(TIME_COLUMN) == set(relations) - no_time
    [(first, last)] = conn.execute("SELECT min(t_wall_ns), max(t_wall_ns) FROM frames").fetchall()
    empty = []
    for name, column in TIME_COLUMN.items():
        [(low, high)] = conn.execute(f"SELECT min({column}), max({column}) FROM {name}").fetchall()
        if low is None:  # the query bound the column all the same
            empty.append(name)
            continue
        # every time is one of the recording's (channel_rates: of its whole seconds)
        assert first - 10**9 < low <= high <= last, name
    assert empty == ["gaps"]  # a generated tape has none


def test_export_partitions_every_timed_relation_by_the_date_of_its_time(tmp_path: Path) -> None:
    tape = tmp_path / "g.duckdb"
    generate(tape, 50, 3)  # 2026-01-01, in its first second
    export(open_tapes([tape], cache=False), tmp_path / "out", "parquet")
    for name in TIME_COLUMN:
        dates = sorted(p.name for p in (tmp_path / "out" / name).iterdir())
        assert dates == (["date=none"] if name == "gaps" else ["date=2026-01-01"]), name
    assert [p.name for p in (tmp_path / "out" / "clock_offsets").iterdir()] == [
        "clock_offsets.parquet"
    ]
