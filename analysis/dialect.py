"""The analysis's SQL (DuckDB's dialect) as Spark SQL, by sqlglot, and the names it reads there.

One definition serves both engines where the SQL allows: each view of analysis/sql/ is
transpiled, except those that use what Spark lacks (ASOF joins, json_transform), whose Spark
formulation is in analysis/sql/spark/ under the same file name. Commands' queries are
transpiled as they run.

Names. Spark's temporary views have no schema, so the two sets of relations of
analysis/views.py are told apart by a prefix: `all_X` is relation X unfiltered (DuckDB's
`tape_all.X`), `X` is X with the command's filters (DuckDB's `main.X`).
"""

from __future__ import annotations

from functools import cache
from importlib import resources

import sqlglot
from sqlglot import exp

from analysis.definitions import EXPECTED_ACK_MARK, expected_ack_values, sql_files

UNFILTERED = "all_"


def to_spark(sql: str, relations: frozenset[str], *, unfiltered: bool = False) -> str:
    """One DuckDB statement as Spark SQL. `tape_all.X` reads X unfiltered, `main.X` and X the
    filtered X; with `unfiltered` (a view's definition) a bare X is X unfiltered."""
    return _spark(sqlglot.parse_one(sql, read="duckdb"), relations, unfiltered=unfiltered)


def spark_views(relations: frozenset[str]) -> list[tuple[str, str]]:
    """(view, Spark statement) for every view of analysis/sql/, in dependency order, each over
    unfiltered relations and defining all_<view>."""
    done = []
    for name, text in _files():
        spark_text = _spark_file(name)
        for statement in sqlglot.parse(
            spark_text or text, read="spark" if spark_text else "duckdb"
        ):
            if statement is None:
                continue
            view = statement.this.name if isinstance(statement, exp.Create) else ""
            done.append((view, _spark(statement, relations, unfiltered=True)))
    return done


def _spark(tree: exp.Expr, relations: frozenset[str], *, unfiltered: bool) -> str:
    ctes = {c.alias_or_name for c in tree.find_all(exp.CTE)}

    def rename(node: exp.Expr) -> exp.Expr:
        if isinstance(node, exp.DataType) and node.this == exp.DataType.Type.INT128:
            return exp.DataType.build("DECIMAL(38, 0)")  # HUGEINT: exact, as wide
        if isinstance(node, exp.Div) and not isinstance(node.this, exp.Cast):
            # DuckDB's `/` is a double's division; Spark keeps a DECIMAL (100.0 * n / m)
            node.set("this", exp.cast(node.this, "DOUBLE"))
            return node
        if isinstance(node, exp.Anonymous) and node.name.lower() == "epoch_ns":
            micros = exp.Anonymous(this="unix_micros", expressions=node.expressions)
            return exp.Mul(this=micros, expression=exp.Literal.number(1000))
        if not isinstance(node, exp.Table) or not node.name:
            return node
        schema, name = node.db, node.name
        if name in ctes and not schema:
            return node
        if schema == "tape_all" or (not schema and unfiltered and name in relations):
            node = node.copy()
            node.set("this", exp.to_identifier(UNFILTERED + name))
            node.set("db", None)
        elif schema == "main":
            node = node.copy()
            node.set("db", None)
        return node

    tree = tree.transform(rename)
    if isinstance(tree, exp.Create):
        tree.set("kind", "VIEW")
        properties = exp.Properties(expressions=[exp.TemporaryProperty()])
        tree.set("properties", properties)
    return tree.sql(dialect="spark")


@cache
def _files() -> tuple[tuple[str, str], ...]:
    folder = resources.files("analysis") / "sql"
    names = sorted(p.name for p in folder.iterdir() if p.name.endswith(".sql"))
    return tuple(zip(names, sql_files(), strict=True))


def _spark_file(name: str) -> str | None:
    path = resources.files("analysis") / "sql" / "spark" / name
    if not path.is_file():
        return None
    return path.read_text().replace(EXPECTED_ACK_MARK, expected_ack_values())
