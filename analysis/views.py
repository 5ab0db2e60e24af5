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

from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import duckdb

from analysis.cache import BASE_TABLES, attached_select, base_selects, materialized, tables_of
from analysis.definitions import TIME_COLUMN, sql_files, sql_literal, view_names
from analysis.lake import manifest_capture, manifest_select
from analysis.latency import Connection
from analysis.stored import stored
from tape.projection import MESSAGE_DATA_VIEW
from tape.schema import TapeError, check_version, connect
from tape.tapeset import is_manifest

# The relations --campaign narrows: those about requests.
CAMPAIGN_FILTERED = (
    "requests",
    "acks",
    "request_latency",
    "latency_parts",
    "unmatched_requests",
)


# The relations with no session_id: --session leaves them whole.
NOT_BY_SESSION = ("capture_offsets",)


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
        if self.sessions and name not in NOT_BY_SESSION:
            listed = ", ".join(sql_literal(s) for s in self.sessions)
            terms.append(f"session_id IN ({listed})")
        return f" WHERE {' AND '.join(terms)}" if terms else ""


def open_tapes(
    paths: Sequence[Path],
    filters: Filters | None = None,
    *,
    cache: bool = True,
    views: Collection[str] | None = None,
) -> duckdb.DuckDBPyConnection:
    """Every tape (or Parquet export folder) as one; see the module docstring.

    The base tables of every source are unioned first and the views computed once over the
    union: a request in one segment (or in a proxy's tape) meets its ack in the next (or in a
    recorder's tape). Their result is cached (analysis/cache.py) per list of tapes; `views`
    names those the caller will read (None: all of them), the only ones cached. Any view can
    still be queried; the others are computed when read. A single tape's view stored as it
    closed (analysis/stored.py) is read from the tape, never cached.
    """
    if not paths:
        raise TapeError("give at least one tape")
    filters = filters or Filters()
    conn = duckdb.connect()
    conn.execute("SET enable_progress_bar = false")  # never in a command's output
    names = view_names()
    wanted = names if views is None else [v for v in names if v in views]
    from_tape: dict[str, str] = {}
    captures = []
    selects: list[dict[str, str]] = []
    for n, path in enumerate(paths):
        schema = f"source{n}"
        conn.execute(f"CREATE SCHEMA {schema}")
        if is_manifest(path):  # one tape of a Parquet lake
            tables = base_selects(partial(manifest_select, path), set(BASE_TABLES))
            captures.append(manifest_capture(path))
        elif path.is_dir():
            have = {t for t in BASE_TABLES if any((path / t).rglob("*.parquet"))}
            tables = base_selects(partial(_parquet, path), have)
            captures.append(str(path))
        else:
            _check(path)
            conn.execute(f"ATTACH {sql_literal(str(path))} AS tape{n} (READ_ONLY)")
            tables = base_selects(partial(attached_select, f"tape{n}"), tables_of(conn, f"tape{n}"))
            captures.append(_capture(conn, f"tape{n}"))
            if cache and len(paths) == 1:
                from_tape = stored(conn, f"tape{n}")
        selects.append(tables)
        for table, select in tables.items():
            conn.execute(f"CREATE VIEW {schema}.{table} AS SELECT * FROM ({select})")
        conn.execute(  # every session, whatever --session says: to check what it names
            f"CREATE VIEW {schema}.session_ids AS SELECT session_id FROM ({tables['sessions']})"
        )
        # The tape's own message_data view (its join stays within one source).
        conn.execute(f"SET schema = '{schema}'")
        conn.execute(MESSAGE_DATA_VIEW)
        conn.execute("SET schema = 'main'")
    conn.execute(
        "CREATE VIEW main.session_ids AS "
        + " UNION ALL ".join(f"SELECT * FROM source{n}.session_ids" for n in range(len(paths)))
    )
    conn.execute("CREATE TABLE main.source_captures (source INTEGER, capture VARCHAR)")
    conn.executemany("INSERT INTO main.source_captures VALUES (?, ?)", list(enumerate(captures)))
    repeats = _repeats(conn, len(paths))
    conn.execute(
        "CREATE TABLE main.repeated_sources (source INTEGER, repeats INTEGER, session_id VARCHAR)"
    )
    if repeats:
        conn.executemany("INSERT INTO main.repeated_sources VALUES (?, ?, ?)", repeats)
    for n, tables in enumerate(selects):
        repeated = [sql_literal(s) for b, _, s in repeats if b == n]
        if repeated:  # the later copy of a repeated session is left out
            for table, select in tables.items():
                conn.execute(
                    f"CREATE OR REPLACE VIEW source{n}.{table} AS SELECT * FROM ({select}) "
                    f"WHERE session_id NOT IN ({', '.join(repeated)})"
                )
    kept = list(range(len(paths)))
    _union(conn, paths, captures, kept)
    conn.execute("SET schema = 'tape_all'")
    for sql in sql_files():
        conn.execute(sql)
    conn.execute(_CAPTURE_POINTS)
    conn.execute("SET schema = 'main'")
    # A stored or cached view replaces its definition; the views reading it bind to it by name.
    for name, select in from_tape.items():
        conn.execute(f"CREATE OR REPLACE VIEW tape_all.{name} AS SELECT * FROM ({select})")
    files = all(not p.is_dir() for p in paths)
    cached = {}
    if cache and files:
        todo = [v for v in wanted if v not in from_tape]
        cached = materialized(paths, todo, partial(open_tapes, paths, cache=False))
    for name, file in cached.items():
        alias = f"cache_{name}"
        conn.execute(f"ATTACH {sql_literal(str(file))} AS {alias} (READ_ONLY)")
        conn.execute(f"CREATE OR REPLACE VIEW tape_all.{name} AS SELECT * FROM {alias}.main.{name}")
    for name in (*BASE_TABLES, *names):
        conn.execute(
            f"CREATE VIEW main.{name} AS SELECT * FROM tape_all.{name}{filters.where(name)}"
        )
    union = " UNION ALL ".join(f"SELECT * FROM source{n}.message_data" for n in kept)
    conn.execute(
        f"CREATE VIEW main.message_data AS SELECT * FROM ({union}) d "
        "SEMI JOIN (SELECT session_id, seq, idx FROM main.messages) m USING (session_id, seq, idx)"
    )
    return conn


# Which capture point (clock) recorded each session: the sources' sessions (_union) as
# tape_all.session_sources say it. Replaces the one-capture definition of the SQL files.
_CAPTURE_POINTS = """
CREATE OR REPLACE VIEW capture_points AS
SELECT session_id, min(capture) AS capture FROM session_sources GROUP BY session_id
"""


def _union(
    conn: duckdb.DuckDBPyConnection, paths: Sequence[Path], captures: list[str], sources: list[int]
) -> None:
    """tape_all: the base tables of `sources` as one, a session's rows (one per segment it has
    frames in) as its latest, with the segments listed; and which capture point recorded it."""
    conn.execute("CREATE SCHEMA tape_all")
    for table in BASE_TABLES:
        if table == "sessions":
            continue
        union = " UNION ALL BY NAME ".join(f"SELECT * FROM source{n}.{table}" for n in sources)
        conn.execute(f"CREATE VIEW tape_all.{table} AS {union}")
    rows = " UNION ALL BY NAME ".join(
        f"SELECT COLUMNS(lambda c: c <> 'segments'), {n} AS source_n, "
        f"{sql_literal(paths[n].name)} AS source_name, {sql_literal(captures[n])} AS capture "
        f"FROM source{n}.sessions"
        for n in sources
    )
    conn.execute(f"CREATE VIEW tape_all.session_sources AS {rows}")
    conn.execute(
        "CREATE VIEW tape_all.sessions AS "
        "SELECT * EXCLUDE (source_n, source_name, capture, latest, segments), segments FROM ("
        "  SELECT *, row_number() OVER (PARTITION BY session_id"
        "         ORDER BY ended_ns IS NOT NULL DESC, source_n DESC) AS latest,"
        "         list(source_name ORDER BY source_n) OVER (PARTITION BY session_id) AS segments"
        "  FROM tape_all.session_sources) WHERE latest = 1"
    )


def _capture(conn: duckdb.DuckDBPyConnection, database: str) -> str:
    """The capture point of an attached tape: the host in its created_by (`cometd-tape 1.0
    (user@host)`); tapes made on one host share its clock."""
    try:
        rows = conn.execute(
            f"SELECT value FROM {database}.main.tape_meta WHERE key = 'created_by'"
        ).fetchall()
    except duckdb.Error:
        return ""
    text = str(rows[0][0]) if rows else ""
    return text.rpartition("@")[2].rstrip(")") if "@" in text else text


def repeated_sources(conn: Connection) -> list[tuple[int, int, str]]:
    """(source, earlier source, session) for each session a source repeats (frames of the same
    session and seq as an earlier source): the later copy is left out (see _repeats)."""
    rows = conn.execute("SELECT * FROM main.repeated_sources ORDER BY 1, 3").fetchall()
    return [(int(a), int(b), str(c)) for a, b, c in rows]


def _repeats(conn: duckdb.DuckDBPyConnection, sources: int) -> list[tuple[int, int, str]]:
    """(source, earlier source, session) for each session whose frames a source repeats from
    an earlier one (the same tape given twice, a tape and its own export: frames of the same
    session and seq). Segments of one recording hold different seqs and are not reported."""
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
        f"WITH r AS ({ranges}) SELECT DISTINCT a.n, b.n, a.session_id FROM r a JOIN r b "
        "ON a.session_id = b.session_id AND a.n < b.n AND a.lo <= b.hi AND b.lo <= a.hi "
        "ORDER BY 1, 2, 3"
    ).fetchall()

    def shares(a: int, b: int, session: str) -> bool:
        rows = conn.execute(
            f"SELECT 1 FROM source{a}.frames x JOIN source{b}.frames y USING (session_id, seq) "
            "WHERE session_id = ? LIMIT 1",
            [session],
        ).fetchall()
        return bool(rows)

    return greedy_repeats([(int(a), int(b), str(s)) for a, b, s in pairs], shares)


def greedy_repeats(
    pairs: list[tuple[int, int, str]], shares: Callable[[int, int, str], bool]
) -> list[tuple[int, int, str]]:
    """(source, earlier source, session) for each pair (earlier, later, session), in order,
    whose sources `shares` frames of the session; a source whose copy of the session was
    already left out no longer counts (both engines: this view and analysis/spark.py)."""
    repeats: list[tuple[int, int, str]] = []
    done: set[tuple[int, str]] = set()
    for a, b, session in pairs:
        if (b, session) in done or (a, session) in done or not shares(a, b, session):
            continue
        repeats.append((b, a, session))
        done.add((b, session))
    return repeats


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
