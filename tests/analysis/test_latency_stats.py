"""The latency statistics both engines share (analysis/latency.py), with no Spark: the
interpolation Spark's ranks go through is DuckDB's quantile_cont to the last bit, the mean is
the exact one; and every view has a Spark statement (analysis/dialect.py)."""

from __future__ import annotations

import math
from fractions import Fraction

import duckdb
import sqlglot
from hypothesis import given, settings
from hypothesis import strategies as st

from analysis.cache import BASE_TABLES
from analysis.definitions import view_names
from analysis.latency import QUANTILES, SUMS, _interpolate, mean

values = st.lists(
    st.one_of(
        st.floats(-1e7, 1e7, allow_nan=False, allow_infinity=False),
        st.integers(0, 10**12).map(lambda ns: ns / 1e6),  # as ack_ms: nanoseconds / 1e6
        st.sampled_from([1.5, 2.25, 3.0, 7.125]),  # ties
    ),
    min_size=1,
    max_size=300,
)


@settings(max_examples=300, deadline=None)
@given(values)
def test_ranks_interpolated_as_duckdbs_quantile_cont(found: list[float]) -> None:
    """What Spark computes from the two ranks around each position is DuckDB's own figure."""
    listed = ", ".join(map(str, QUANTILES))
    ((want,),) = _parts(found).execute(f"SELECT quantile_cont(v, [{listed}]) FROM parts").fetchall()
    ordered = sorted(found)
    got = []
    for q in QUANTILES:
        position = (len(ordered) - 1) * q
        lo, hi = ordered[int(position // 1)], ordered[-int(-position // 1)]
        got.append(_interpolate(len(ordered), q, lo, hi))
    assert got == want


@settings(max_examples=300, deadline=None)
@given(values)
def test_the_mean_is_exact(found: list[float]) -> None:
    """The mean of the values truncated to 2^-30 ms, rounded once; as both engines sum."""
    ((whole, fraction),) = _parts(found).execute(f"SELECT {SUMS} FROM parts").fetchall()
    # Each value's whole part and its fraction in 2^-30 units, by the same IEEE operations.
    units = sum(math.floor(v) * 2**30 + math.floor((v - math.floor(v)) * 2**30) for v in found)
    exact = Fraction(units, 2**30) / len(found)
    assert mean(whole, fraction, len(found)) == float(exact)


def _parts(found: list[float]) -> duckdb.DuckDBPyConnection:
    conn = duckdb.connect()
    conn.execute("CREATE TABLE parts (v DOUBLE)")
    conn.executemany("INSERT INTO parts VALUES (?)", [(v,) for v in found])
    return conn


def test_no_values_no_figures() -> None:
    assert _interpolate(0, 0.5, None, None) is None
    assert mean(None, None, 0) is None


def test_every_view_has_a_spark_statement_over_the_unfiltered_relations() -> None:
    from analysis.dialect import UNFILTERED, spark_views, to_spark

    relations = frozenset([*BASE_TABLES, *view_names()])
    made = spark_views(relations)
    assert [view for view, _ in made] == view_names()
    for view, statement in made:
        assert f"CREATE OR REPLACE TEMPORARY VIEW {UNFILTERED}{view} AS" in statement
        sqlglot.parse_one(statement, read="spark")  # Spark's dialect, as sqlglot knows it
        assert "tape_all" not in statement
    query = "SELECT count(*) FROM tape_all.acks JOIN main.requests USING (session_id)"
    assert to_spark(query, relations) == (
        "SELECT COUNT(*) FROM all_acks JOIN requests USING (session_id)"
    )
