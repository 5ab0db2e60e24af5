"""Open tapes for analysis: one or more tapes (attached read-only) or folders of Parquet
exports, unioned into one in-memory DuckDB, with the SQL views of analysis/sql/ on top and the
user's filters applied.

Layout of the connection: schema `tape_all` holds the base tables (`frames`, `messages`,
`sessions`, session filter applied) and every view, unfiltered; the default schema holds the
same names again with the time window and campaign filters applied. Views bind names in their
own schema, so the request <-> ack matching always sees every ack, and a request sent just
before `--until` still finds the ack that came after it.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import duckdb

from analysis.cache import BASE_TABLES, attached_select, base_selects, materialized, tables_of
from analysis.definitions import TIME_COLUMN, sql_files, sql_literal, view_names
from analysis.stored import stored
from tape.projection import MESSAGE_DATA_VIEW
from tape.schema import TapeError, check_version, connect

# The relations --campaign narrows: those about requests.
CAMPAIGN_FILTERED = (
    "requests",
    "acks",
    "request_latency",
    "latency_parts",
    "unmatched_requests",
)


@dataclass(frozen=True, slots=True)
class Filters:
    since_ns: int | None = None
    until_ns: int | None = None
    sessions: tuple[str, ...] = ()
    campaign: str | None = None

    def where(self, name: str) -> str:
        """The WHERE clause (or '') that narrows relation `name`."""
        terms = []
        column = TIME_COLUMN.get(name)
        if name == "sessions":
            if self.until_ns is not None:
                terms.append(f"started_ns < {self.until_ns}")
            if self.since_ns is not None:
                terms.append(f"coalesce(ended_ns, started_ns, {self.since_ns}) >= {self.since_ns}")
        elif column is not None:
            if self.since_ns is not None:
                terms.append(f"{column} >= {self.since_ns}")
            if self.until_ns is not None:
                terms.append(f"{column} < {self.until_ns}")
        if self.campaign is not None and name in CAMPAIGN_FILTERED:
            terms.append(f"campaign_name = {sql_literal(self.campaign)}")
        return f" WHERE {' AND '.join(terms)}" if terms else ""


def open_tapes(
    paths: Sequence[Path],
    filters: Filters | None = None,
    *,
    cache: bool = True,
    views: Collection[str] | None = None,
) -> duckdb.DuckDBPyConnection:
    """Every tape (or Parquet export folder) as one; see the module docstring.

    Every view partitions by session, so each source's views are computed (or read from its
    cache, see analysis/cache.py) on their own and unioned: the same rows as computing them
    over the union. `views` names those the caller will read (None: all of them): only those
    are cached. Any view can still be queried; the others are computed when read. A view the
    tape stored as it closed (analysis/stored.py) is read from the tape, never cached.
    """
    if not paths:
        raise TapeError("give at least one tape")
    filters = filters or Filters()
    conn = duckdb.connect()
    conn.execute("SET enable_progress_bar = false")  # never in a command's output
    names = view_names()
    wanted = names if views is None else [v for v in names if v in views]
    keep = ""
    if filters.sessions:
        keep = f" WHERE session_id IN ({', '.join(sql_literal(s) for s in filters.sessions)})"
    for n, path in enumerate(paths):
        schema = f"source{n}"
        conn.execute(f"CREATE SCHEMA {schema}")
        cached: dict[str, Path] = {}
        from_tape: dict[str, str] = {}
        if path.is_dir():
            have = {t for t in BASE_TABLES if any((path / t).rglob("*.parquet"))}
            tables = base_selects(partial(_parquet, path), have)
        else:
            _check(path)
            conn.execute(f"ATTACH {sql_literal(str(path))} AS tape{n} (READ_ONLY)")
            tables = base_selects(partial(attached_select, f"tape{n}"), tables_of(conn, f"tape{n}"))
            if cache:
                from_tape = stored(conn, f"tape{n}")
            if cache and wanted:
                cached = materialized(path, [v for v in wanted if v not in from_tape])
        for table, select in tables.items():
            conn.execute(f"CREATE VIEW {schema}.{table} AS SELECT * FROM ({select}){keep}")
        conn.execute(  # every session, whatever --session says: to check what it names
            f"CREATE VIEW {schema}.session_ids AS SELECT session_id FROM ({tables['sessions']})"
        )
        conn.execute(f"SET schema = '{schema}'")
        for sql in sql_files():
            conn.execute(sql)
        conn.execute("SET schema = 'main'")
        # A stored or cached view replaces its definition; the views reading it bind to it by
        # name.
        for name, select in from_tape.items():
            conn.execute(
                f"CREATE OR REPLACE VIEW {schema}.{name} AS SELECT * FROM ({select}){keep}"
            )
        for name, file in cached.items():
            alias = f"cache{n}_{name}"
            conn.execute(f"ATTACH {sql_literal(str(file))} AS {alias} (READ_ONLY)")
            conn.execute(
                f"CREATE OR REPLACE VIEW {schema}.{name} AS SELECT * FROM {alias}.main.{name}{keep}"
            )
    conn.execute(
        "CREATE VIEW main.session_ids AS "
        + " UNION ALL ".join(f"SELECT * FROM source{n}.session_ids" for n in range(len(paths)))
    )
    conn.execute("CREATE SCHEMA tape_all")
    for name in (*BASE_TABLES, *names):
        union = " UNION ALL BY NAME ".join(
            f"SELECT * FROM source{n}.{name}" for n in range(len(paths))
        )
        conn.execute(f"CREATE VIEW tape_all.{name} AS {union}")
        conn.execute(
            f"CREATE VIEW main.{name} AS SELECT * FROM tape_all.{name}{filters.where(name)}"
        )
    # The tape's own message_data view, per source (its join stays within one source), then
    # narrowed to the messages the filters keep.
    for n in range(len(paths)):
        conn.execute(f"SET schema = 'source{n}'")
        conn.execute(MESSAGE_DATA_VIEW)
    conn.execute("SET schema = 'main'")
    union = " UNION ALL ".join(f"SELECT * FROM source{n}.message_data" for n in range(len(paths)))
    conn.execute(
        f"CREATE VIEW main.message_data AS SELECT * FROM ({union}) d "
        "SEMI JOIN (SELECT session_id, seq, idx FROM main.messages) m USING (session_id, seq, idx)"
    )
    return conn


def repeated_sessions(conn: duckdb.DuckDBPyConnection, sources: int) -> list[str]:
    """Sessions that more than one source holds frames of the same seq of: the same tape
    given twice, or a tape and its own export. Segments of one recording hold different seqs
    and are not reported."""
    if sources < 2:
        return []
    ranges = " UNION ALL ".join(
        f"SELECT {n} AS n, session_id, min(seq) AS lo, max(seq) AS hi "
        f"FROM source{n}.frames GROUP BY session_id"
        for n in range(sources)
    )
    # Overlapping seq ranges first (cheap), then the frames themselves: segments may overlap
    # in range without sharing a seq (frames appended out of time order).
    pairs = conn.execute(
        f"WITH r AS ({ranges}) SELECT a.n, b.n, a.session_id FROM r a JOIN r b "
        "ON a.session_id = b.session_id AND a.n < b.n AND a.lo <= b.hi AND b.lo <= a.hi"
    ).fetchall()
    repeated = set()
    for a, b, session in pairs:
        if session in repeated:
            continue
        rows = conn.execute(
            f"SELECT 1 FROM source{a}.frames x JOIN source{b}.frames y USING (session_id, seq) "
            "WHERE session_id = ? LIMIT 1",
            [session],
        ).fetchall()
        if rows:
            repeated.add(str(session))
    return sorted(repeated)


def _parquet(folder: Path, table: str) -> str:
    """A table of a Parquet export (analyze export --format parquet), minus its partition key."""
    files = folder / table
    if not files.is_dir():
        raise TapeError(
            f"{folder} is a folder but not a Parquet export: it has no {table}/ inside. "
            "Give tape files, or folders written by `cometd-tape analyze export --format parquet`."
        )
    pattern = sql_literal(str(files / "**" / "*.parquet"))
    return f"SELECT * EXCLUDE (date) FROM read_parquet({pattern}, hive_partitioning = true)"


def _check(path: Path) -> None:
    probe = connect(path, read_only=True)
    try:
        check_version(probe, path)
    finally:
        probe.close()
