"""The analysis on Apache Spark (`--engine spark`): the views of analysis/sql/ over a Parquet
lake (analysis/lake.py), in local mode on one machine or on any cluster (`--master`).

A lake's manifests name its files; each table is read once from all of them, each row's tape
known by its file's name (TAPEID-EXPORTNS-UUID.parquet). Then, as analysis/views.py does for
DuckDB: a session exported in several tapes is one session (its latest row); a session whose
frames a later tape repeats is read from the first; each session's capture point is its
manifest's. The views are analysis/dialect.py's. A command reads them through SparkConnection,
which takes DuckDB's SQL and runs it on Spark.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import re
import shutil
from collections.abc import Collection, Iterator, Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from analysis.cache import BASE_TABLES
from analysis.definitions import sql_literal, view_names
from analysis.lake import manifest_capture, manifest_field, manifest_select
from analysis.views import greedy_repeats
from tape.schema import TapeError
from tape.tapeset import is_manifest

DEFAULT_MASTER = "local[*]"
INSTALL = "pip install 'cometd-tape[spark]'"


class SparkMissingError(TapeError):
    """Java or pyspark is not there: the one line says which, and what to do."""


@dataclass
class SparkResult:
    columns: list[str]
    rows: list[tuple[Any, ...]]

    @property
    def description(self) -> list[tuple[str]]:
        return [(c,) for c in self.columns]

    def fetchall(self) -> list[tuple[Any, ...]]:
        return self.rows


@dataclass
class SparkConnection:
    """A DuckDB-like connection to a Spark session holding the lake's relations and views:
    execute() takes the analysis's SQL (DuckDB's dialect) and runs it as Spark SQL."""

    session: Any
    relations: frozenset[str]
    dialect: str = "spark"
    owned: bool = True
    repeats: list[tuple[int, int, str]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # for the user, on stderr

    def execute(self, query: str) -> SparkResult:
        with spark_errors():
            frame = self.sql(query)
            stamps = [f.dataType.typeName() == "timestamp" for f in frame.schema.fields]
            rows = [
                tuple(_utc(v) if t else _plain(v) for v, t in zip(r, stamps, strict=True))
                for r in frame.collect()
            ]
        return SparkResult(list(frame.columns), rows)

    def sql(self, query: str) -> Any:
        """The query (DuckDB's dialect) as a Spark DataFrame."""
        from analysis.dialect import to_spark

        return self.session.sql(to_spark(query, self.relations))

    def close(self) -> None:
        if self.owned:
            self.session.stop()


def _utc(value: Any) -> Any:
    """A timestamp as DuckDB gives it: naive, in UTC (PySpark gives this machine's time)."""
    if value is None:
        return None
    return value.astimezone(dt.UTC).replace(tzinfo=None)


def _plain(value: Any) -> Any:
    """Spark's values as DuckDB's Python API gives them (a Row is a tuple, an array a list)."""
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


_EXCLUDED = "org.apache.spark.sql.catalyst.optimizer.InferFiltersFromConstraints"


def session(master: str = DEFAULT_MASTER) -> Any:
    """A Spark session, or SparkMissingError saying what to install."""
    if not (os.environ.get("JAVA_HOME") or shutil.which("java")):
        raise SparkMissingError(
            "--engine spark needs Java (17, 11 or 8): install a JRE (Debian: apt-get install "
            "default-jre-headless) or set JAVA_HOME"
        )
    try:
        from pyspark.sql import SparkSession
    except ImportError:
        raise SparkMissingError(f"--engine spark needs pyspark: {INSTALL}") from None
    logging = resources.files("analysis") / "spark_conf" / "log4j2.properties"
    builder = (
        SparkSession.builder.master(master)
        .appName("cometd-tape")
        .config("spark.ui.enabled", "false")
        .config("spark.ui.showConsoleProgress", "false")
        .config("spark.sql.session.timeZone", "UTC")
        # the admins' slot, so that a user's own extraJavaOptions still apply
        .config("spark.driver.defaultJavaOptions", f"-Dlog4j2.configurationFile=file:{logging}")
        # Spark 3.5.3 infers filters for acks' plan that bind columns of the wrong relation
        # ("Couldn't find reference_id in [...]"); without that rule the plan is correct.
        .config("spark.sql.optimizer.excludedRules", _EXCLUDED)
    )
    if master.startswith("local"):  # this machine only: loopback, and few shuffle partitions
        cores = master.partition("[")[2].rstrip("]")
        width = (os.cpu_count() or 2) if cores in ("", "*") else int(cores.split(",")[0])
        builder = (
            builder.config("spark.driver.host", "127.0.0.1")
            .config("spark.driver.bindAddress", "127.0.0.1")
            .config("spark.sql.shuffle.partitions", str(2 * width))
        )
    with spark_errors("Spark did not start"):
        spark = builder.getOrCreate()
    spark.sparkContext.setLogLevel("ERROR")
    return spark


@contextlib.contextmanager
def spark_errors(what: str = "Spark failed") -> Iterator[None]:
    """Spark's and Py4J's exceptions as a TapeError of their first line (a CLI error, no
    traceback: Spark's own log, on stderr, has the rest)."""
    from py4j.protocol import Py4JError  # type: ignore[import-untyped]
    from pyspark.errors import PySparkException

    try:
        yield
    except (PySparkException, Py4JError, OSError) as exc:
        first = next((line for line in str(exc).splitlines() if line.strip()), type(exc).__name__)
        raise TapeError(f"{what}: {first.strip()[:300]}") from None


def open_lake(
    paths: Sequence[Path],
    where: dict[str, str] | None = None,
    *,
    master: str = DEFAULT_MASTER,
    spark: Any = None,
    views: Collection[str] | None = None,
) -> SparkConnection:
    """The lake's manifests `paths` (tapeset.expand of a lake folder) on Spark, with the views,
    filtered by `where` (relation -> WHERE clause, DuckDB's dialect). `views`: those the caller
    reads (None: all). `spark`: a session to use (and leave running), else one is started."""
    others = [p for p in paths if not is_manifest(p)]
    if others:
        raise TapeError(
            f"--engine spark reads a Parquet lake, and {others[0]} is not one: add tapes to a "
            "lake with `cometd-tape analyze export TAPE... --to LAKE`, then give the lake"
        )
    seen: dict[str, Path] = {}  # tape id -> its first manifest
    notes = []
    for manifest in paths:  # a tape given twice (the same lake twice, two lakes) is read once
        ident = str(manifest_field(manifest, "tape_id"))
        if ident in seen:
            notes.append(f"warning: {manifest} is the tape of {seen[ident]}; it is read once")
        else:
            seen[ident] = manifest
        for table in BASE_TABLES:
            manifest_select(manifest, table)  # says which manifest names no files, and why
    owned = spark is None
    spark = spark if spark is not None else session(master)
    relations = frozenset(
        [*BASE_TABLES, *view_names(), "session_sources", "session_ids", "repeated_sources"]
    )
    conn = SparkConnection(spark, relations, owned=owned, notes=notes)
    try:
        with spark_errors():
            _load(conn, seen)
            _install(conn, where or {}, views)
    except BaseException:
        conn.close()
        raise
    return conn


def _load(conn: SparkConnection, tapes: dict[str, Path]) -> None:
    """The base tables of the tapes (tape id -> manifest, in the order given) as views."""
    from pyspark.sql import functions

    spark = conn.session
    ids, manifests = list(tapes), list(tapes.values())
    order = functions.create_map(
        *[x for n, i in enumerate(ids) for x in (functions.lit(i), functions.lit(n))]
    )
    # Each row's tape, from its file's name (deterministic, unlike input_file_name()).
    path = functions.col("_metadata.file_path")
    tape = functions.regexp_extract(path, r"([0-9a-f]{16})-[^/]*$", 1)
    for table in BASE_TABLES:
        files = [
            str(m.parent.parent / name)
            for m in manifests
            for name in manifest_field(m, "files").get(table, [])
        ]
        frame = spark.read.option("mergeSchema", "true").parquet(*files)
        keep = [c for c in frame.columns if c not in ("segments",)]
        frame.select(*keep, order[tape].alias("source_n")).createOrReplaceTempView(f"src_{table}")
    captures = [(n, manifest_capture(m), m.name) for n, m in enumerate(manifests)]
    _values(spark, "source_captures", "source_n INT, capture STRING, source_name STRING", captures)
    conn.repeats = _repeats(spark) if len(manifests) > 1 else []
    _values(spark, "repeated_sources", "source INT, repeats INT, session_id STRING", conn.repeats)
    dropped = (
        "LEFT ANTI JOIN repeated_sources r ON r.source = t.source_n AND r.session_id = t.session_id"
        if conn.repeats
        else ""
    )
    for table in BASE_TABLES:
        names = [f"`{c}`" for c in spark.table(f"src_{table}").columns if c != "source_n"]
        columns = ", ".join(f"t.{c}" for c in names)
        if table == "sessions":
            spark.sql(
                "CREATE OR REPLACE TEMP VIEW all_session_sources AS "
                f"SELECT {columns}, t.source_n, c.source_name, c.capture FROM src_sessions t "
                f"JOIN source_captures c USING (source_n) {dropped}"
            )
            spark.sql(
                f"CREATE OR REPLACE TEMP VIEW all_sessions AS SELECT {', '.join(names)}, "
                "transform(array_sort(named), x -> x.source_name) AS segments FROM ("
                "  SELECT *, row_number() OVER (PARTITION BY session_id"
                "         ORDER BY ended_ns IS NOT NULL DESC, source_n DESC) AS latest,"
                "         collect_list(struct(source_n, source_name)) OVER ("
                "             PARTITION BY session_id"
                "             ROWS BETWEEN UNBOUNDED PRECEDING AND UNBOUNDED FOLLOWING) AS named"
                "  FROM all_session_sources) WHERE latest = 1"
            )
        else:
            spark.sql(
                f"CREATE OR REPLACE TEMP VIEW all_{table} AS SELECT {columns} "
                f"FROM src_{table} t {dropped}"
            )
    spark.sql("CREATE OR REPLACE TEMP VIEW session_ids AS SELECT session_id FROM src_sessions")


def _values(spark: Any, name: str, columns: str, rows: Sequence[tuple[Any, ...]]) -> None:
    """A small table of the driver's values as a view, in SQL: a DataFrame made from Python
    objects would need Python on every executor, and nothing else here does."""

    def literal(value: Any) -> str:
        return sql_literal(value) if isinstance(value, str) else str(int(value))

    names = [c.split()[0] for c in columns.split(", ")]
    kinds = [c.split()[1] for c in columns.split(", ")]
    if rows:
        listed = ", ".join("(" + ", ".join(map(literal, row)) + ")" for row in rows)
        select = f"SELECT * FROM VALUES {listed} AS v({', '.join(names)})"
    else:
        typed = ", ".join(f"CAST(NULL AS {k}) AS {n}" for n, k in zip(names, kinds, strict=True))
        select = f"SELECT {typed} WHERE FALSE"
    spark.sql(f"CREATE OR REPLACE TEMP VIEW {name} AS {select}")


def _repeats(spark: Any) -> list[tuple[int, int, str]]:
    """(source, earlier source, session) for each session whose frames a later tape repeats,
    by analysis/views.py's _repeats rule: pairs of tapes whose seq ranges of a session overlap
    (cheap), then whether they share a frame; a tape whose copy was already left out does not
    count."""
    ranges = spark.sql(
        "SELECT source_n, session_id, min(seq), max(seq) FROM src_frames "
        "GROUP BY source_n, session_id"
    ).collect()
    by_session: dict[str, list[tuple[int, int, int]]] = {}
    for source, session, lo, hi in ranges:
        by_session.setdefault(str(session), []).append((int(source), int(lo), int(hi)))
    pairs = sorted(
        (a, b, session)
        for session, found in by_session.items()
        for a, lo_a, hi_a in found
        for b, lo_b, hi_b in found
        if a < b and lo_a <= hi_b and lo_b <= hi_a
    )
    if not pairs:
        return []
    listed = ", ".join(f"({a}, {b}, {sql_literal(s)})" for a, b, s in pairs)
    shared = {
        (int(a), int(b), str(s))
        for a, b, s in spark.sql(
            f"WITH p AS (SELECT * FROM VALUES {listed} AS p(a, b, session_id)) "
            "SELECT DISTINCT p.a, p.b, p.session_id FROM p "
            "JOIN src_frames x ON x.source_n = p.a AND x.session_id = p.session_id "
            "JOIN src_frames y ON y.source_n = p.b AND y.session_id = p.session_id "
            "AND y.seq = x.seq"
        ).collect()
    }
    found = greedy_repeats(pairs, lambda a, b, session: (a, b, session) in shared)
    return sorted(found, key=lambda r: (r[0], r[2]))


def _install(conn: SparkConnection, where: dict[str, str], wanted: Collection[str] | None) -> None:
    """The views `wanted` reads (None: all), and the ones they read; each also filtered.
    Spark analyses a view's whole plan as it is made (about 1 s for each view over acks
    here), so only what the command reads is made."""
    from analysis.dialect import UNFILTERED, spark_views, to_spark

    spark = conn.session
    views = spark_views(conn.relations)
    needed = set(view_names() if wanted is None else wanted)
    for view, statement in reversed(views):  # each view's reads, later views first
        if view.removeprefix(UNFILTERED) in needed:
            needed |= set(re.findall(r"\b" + UNFILTERED + r"(\w+)", statement))
    for view, statement in views:
        name = view.removeprefix(UNFILTERED)
        if name not in needed:
            continue
        if name == "capture_points":  # each session's capture point is its manifest's
            statement = (
                "CREATE OR REPLACE TEMP VIEW all_capture_points AS "
                "SELECT session_id, min(capture) AS capture FROM all_session_sources "
                "GROUP BY session_id"
            )
        spark.sql(statement)
        if name == "acks" and (wanted is None or len(wanted) > 1):
            # Read by most views: computed once, when first read. (A view of SQL with CTEs is
            # analysed afresh wherever it is read, and never matches its cache: the view is
            # made again of the cached DataFrame itself, which the later views then read.)
            spark.table("all_acks").persist().createOrReplaceTempView("all_acks")
    for name in (*BASE_TABLES, *view_names()):
        if name in BASE_TABLES or name in needed:
            select = to_spark(f"SELECT * FROM tape_all.{name}{where.get(name, '')}", conn.relations)
            spark.sql(f"CREATE OR REPLACE TEMP VIEW {name} AS {select}")


def export_spark(conn: SparkConnection, folder: Path, fmt: str) -> dict[str, int]:
    """analysis/export.py's export, written by Spark: Parquet Hive-partitioned by date (Spark's
    part files), CSV and JSON one file per relation. Returns the row count of each."""
    folder.mkdir(parents=True, exist_ok=True)
    with spark_errors():
        return {
            name: _export_one(conn, folder, name, fmt) for name in (*BASE_TABLES, *view_names())
        }


def _export_one(conn: SparkConnection, folder: Path, name: str, fmt: str) -> int:
    from pyspark.sql import functions

    from analysis.definitions import TIME_COLUMN
    from analysis.dialect import to_spark

    frame = conn.session.sql(_export_select(conn, name, fmt)).cache()
    count = int(frame.count())
    if fmt == "parquet" and name in TIME_COLUMN and count:
        select = to_spark(f"SELECT {TIME_COLUMN[name]} // 1000 AS t", conn.relations)
        time_us = select.removeprefix("SELECT ").removesuffix(" AS t")
        date = f"coalesce(date_format(timestamp_micros({time_us}), 'yyyy-MM-dd'), 'none')"
        dated = frame.withColumn("date", functions.expr(date))
        dated.write.partitionBy("date").parquet(str(folder / name))
    elif fmt == "parquet" and name in TIME_COLUMN:  # no rows: one file keeps the columns
        frame.write.parquet(str(folder / name / "date=none"))
    elif fmt == "parquet":
        frame.coalesce(1).write.parquet(str(folder / name))
    else:
        _one_file(frame, folder, name, fmt)
    frame.unpersist()
    return count


def _export_select(conn: SparkConnection, name: str, fmt: str) -> str:
    if name == "frames" and fmt != "parquet":  # raw as text when UTF-8, else base64
        columns = [
            "CASE WHEN valid THEN decode(raw, 'UTF-8') ELSE base64(raw) END AS raw"
            if c == "raw"
            else f"`{c}`"
            for c in conn.session.table("frames").columns
        ]
        return (
            f"SELECT {', '.join(columns)}, NOT valid AS raw_base64 FROM (SELECT *, "
            "encode(decode(raw, 'UTF-8'), 'UTF-8') = raw AS valid FROM frames)"
        )
    return f"SELECT * FROM {name}"


def _one_file(frame: Any, folder: Path, name: str, fmt: str) -> None:
    """One CSV or JSON (one object a line) file, as DuckDB writes it: Spark writes a folder of
    parts; one part, moved to its name."""
    from pyspark.sql import functions

    work = folder / f".{name}.{os.getpid()}.tmp"
    if fmt == "csv":  # CSV has no lists or maps: as JSON text
        complex_types = ("array", "map", "struct")
        frame = frame.select(
            *[
                functions.to_json(c).alias(c) if t.startswith(complex_types) else functions.col(c)
                for c, t in frame.dtypes
            ]
        )
        writer = frame.coalesce(1).write.option("header", "true").option("escape", '"')
        writer = writer.option("ignoreLeadingWhiteSpace", "false")
        writer.option("ignoreTrailingWhiteSpace", "false").csv(str(work))
    else:
        frame.coalesce(1).write.option("ignoreNullFields", "false").json(str(work))
    try:
        parts = [p for p in work.iterdir() if p.name.startswith("part-")]
        if len(parts) != 1:
            raise TapeError(
                f"Spark wrote {name} where this machine does not see it ({work}): give -o a "
                "folder on storage the driver and the executors share"
            )
        os.replace(parts[0], folder / f"{name}.{fmt}")
    finally:
        shutil.rmtree(work, ignore_errors=True)
