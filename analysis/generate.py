"""Generate a tape of GWS Outbound traffic with known latencies, for tests and benchmarks.

    cometd-tape analyze generate -o OUT.duckdb --requests 100000 --seed 7

Each request is a POST to /api/v2/me/outbound-records/<handle> (operationName cycles through
the Outbound API, referenceId unique), answered by an HTTP response; then, unless it is one of
the unmatched ones, an ack on /v2/me/outbound and its /me/internal eventProcessing metrics.
Every `split_every`-th ack's metrics arrive in a separate, later frame. Latencies are drawn
from lognormal distributions with numpy's seeded generator, in whole microseconds, so every
recorded difference is exact. Frames are made in DuckDB SQL; `messages` and `http_fields` are
derived by the tape's own projections, the same code the recorder's writer runs.

`generate()` returns what was drawn, so a test can compare the analysis against it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import click
import numpy as np
import numpy.typing as npt
import pyarrow as pa

from tape.gws import RECORD_ACKS
from tape.outputs import claim_output, overwrite_option
from tape.projection import project, project_http
from tape.schema import finalize, open_for_writing
from tape.writer import ROW_GROUP_ROWS

OPERATIONS = tuple(RECORD_ACKS.items())  # (operationName, its ack); a request draws an index
T0_NS = 1_767_225_600_000_000_000  # 2026-01-01T00:00:00Z


@dataclass(frozen=True, slots=True)
class Generated:
    """What was drawn, one entry per request, in request order."""

    operation: npt.NDArray[np.int64]  # index into OPERATIONS
    campaign: npt.NDArray[np.int64]  # campaign number: campaign_name is f"Campaign{n}"
    http_us: npt.NDArray[np.int64]  # request -> HTTP response
    ack_us: npt.NDArray[np.int64]  # request -> ack frame; meaningful where `acked`
    server_ms: npt.NDArray[np.int64]  # serverProcessingTimeTotalMs
    acked: npt.NDArray[np.bool_]  # False: refused (statusCode 1) or no ack at all
    refused: npt.NDArray[np.bool_]  # statusCode 1 in the response (never acked)

    @property
    def unmatched(self) -> int:
        return int((~self.acked).sum())


def draw(
    requests: int,
    seed: int,
    *,
    campaigns: int = 10,
    error_rate: float = 0.01,
    missing_ack_rate: float = 0.01,
) -> Generated:
    rng = np.random.default_rng(seed)
    http_us = np.rint(rng.lognormal(np.log(4000), 0.5, requests)).astype(np.int64) + 1
    server_ms = np.rint(rng.lognormal(np.log(5), 0.6, requests)).astype(np.int64)
    extra_us = np.rint(rng.lognormal(np.log(3000), 0.7, requests)).astype(np.int64)
    ack_us = http_us + server_ms * 1000 + extra_us
    refused = rng.random(requests) < error_rate
    acked = ~refused & (rng.random(requests) >= missing_ack_rate)
    return Generated(
        operation=rng.integers(0, len(OPERATIONS), requests),
        campaign=rng.integers(0, campaigns, requests),
        http_us=http_us,
        ack_us=ack_us,
        server_ms=server_ms,
        acked=acked,
        refused=refused,
    )


_FRAMES_SQL = """
WITH r AS (
    SELECT g.*, $prefix || (i % $sessions) AS session_id,
           $t0 + i * $spacing AS t_ns,
           ops.operation_name, ops.notification_type,
           '{"data":{"record":{"recordHandle":' || i || ',"campaignName":"Campaign' || campaign
             || '","callingList":"List1"},"notificationType":"' || ops.notification_type
             || '","messageType":"OutboundRecordMessage","referenceId":"ref-' || i
             || '"},"channel":"/v2/me/outbound"}' AS ack_json,
           '{"data":{"metrics":{"eventProcessing":{"serverGenerationTimestamp":'
             || ((($t0 + i * $spacing + http_us * 1000) // 1000000) + server_ms)
             || ',"nodeProcessingTimeNanos":' || (server_ms * 900000 + i % 1000)
             || ',"serverProcessingTimeTotalMs":' || server_ms
             || '}},"userData":{"GSW_RECORD_HANDLE":' || i || ',"GSW_USER_EVENT":"'
             || ops.notification_type || '","GSW_CAMPAIGN_NAME":"Campaign' || campaign
             || '"},"messageType":"DeviceUserEventMessage"},"channel":"/me/internal"}'
             AS metrics_json
    FROM drawn g JOIN ops USING (operation)
), f AS (
    SELECT session_id, t_ns, 0 AS part, 'out' AS direction, 'http' AS transport,
           'http-request' AS kind, 'x' || i AS exchange_id, 'POST' AS http_method,
           '/api/v2/me/outbound-records/' || i AS http_path, NULL::INTEGER AS http_status,
           '{"operationName":"' || operation_name || '","referenceId":"ref-' || i
             || '","campaignName":"Campaign' || campaign
             || '","callingList":"List1","applicationId":134}' AS body
    FROM r
    UNION ALL
    SELECT session_id, t_ns + http_us * 1000, 1, 'in', 'http', 'http-response', 'x' || i,
           NULL, NULL, 200, '{"statusCode":' || (CASE WHEN refused THEN 1 ELSE 0 END) || '}'
    FROM r
    UNION ALL
    SELECT session_id, t_ns + ack_us * 1000, 2, 'in', 'long-polling', 'bayeux', 'lp' || i,
           NULL, NULL, 200,
           '[' || ack_json || CASE WHEN i % $split_every = 0 THEN '' ELSE ',' || metrics_json END
             || ']'
    FROM r WHERE acked
    UNION ALL
    SELECT session_id, t_ns + ack_us * 1000 + 1000, 3, 'in', 'long-polling', 'bayeux',
           'lpm' || i, NULL, NULL, 200, '[' || metrics_json || ']'
    FROM r WHERE acked AND i % $split_every = 0
)
SELECT session_id,
       row_number() OVER (PARTITION BY session_id ORDER BY t_ns, part) AS seq,
       t_ns AS t_wall_ns, t_ns - $t0 AS t_mono_ns, direction, transport, kind, exchange_id,
       http_method, http_path, http_status, NULL AS headers, encode(body) AS raw,
       NULL AS parse_error
FROM f
"""


def generate(
    path: Path,
    requests: int,
    seed: int,
    *,
    sessions: int = 4,
    session_prefix: str = "gen-",
    t0_ns: int = T0_NS,
    spacing_us: int = 1000,
    split_every: int = 3,
    error_rate: float = 0.01,
    missing_ack_rate: float = 0.01,
    row_group_size: int | None = ROW_GROUP_ROWS,
    finish: bool = True,
) -> Generated:
    """Write a new tape at `path` (it must not exist) and return what was drawn.

    Its row groups are the size the tape writer's are (`row_group_size`), so that analysis is
    measured on the tape a recording makes; None gives DuckDB's default. Sessions are named
    `session_prefix` and a number; the first request is sent at `t0_ns`."""
    if path.exists():
        raise FileExistsError(f"{path} exists; give a new path")
    drawn = draw(requests, seed, error_rate=error_rate, missing_ack_rate=missing_ack_rate)
    table = pa.table(
        {
            "i": np.arange(requests, dtype=np.int64),
            "operation": drawn.operation,
            "campaign": drawn.campaign,
            "http_us": drawn.http_us,
            "ack_us": drawn.ack_us,
            "server_ms": drawn.server_ms,
            "acked": drawn.acked,
            "refused": drawn.refused,
        }
    )
    ops = pa.table(
        {
            "operation": np.arange(len(OPERATIONS), dtype=np.int64),
            "operation_name": [o for o, _ in OPERATIONS],
            "notification_type": [n for _, n in OPERATIONS],
        }
    )
    conn = open_for_writing(path, row_group_size=row_group_size)
    try:
        conn.register("drawn", table)
        conn.register("ops", ops)
        sql = _FRAMES_SQL
        for name, value in (
            ("$sessions", sessions),
            ("$t0", t0_ns),
            ("$spacing", spacing_us * 1000),
            ("$split_every", split_every),
        ):
            sql = sql.replace(name, str(int(value)))
        sql = sql.replace("$prefix", "'" + session_prefix.replace("'", "''") + "'")
        conn.execute("BEGIN")
        conn.execute(f"INSERT INTO frames {sql}")
        conn.execute(
            "INSERT INTO sessions (session_id, mode, transport, started_ns, ended_ns, "
            "end_reason, recorder_version) SELECT session_id, 'generated', 'long-polling', "
            "min(t_wall_ns), max(t_wall_ns), 'generated', 'analysis.generate' "
            "FROM frames GROUP BY session_id"
        )
        project(conn, "frames")
        project_http(conn, "frames")
        conn.execute("COMMIT")
        conn.execute("CHECKPOINT")
        if finish:  # as a writer closing the tape does (the benchmark times it on its own)
            finalize(conn)
    finally:
        conn.close()
    return drawn


@click.command("generate")
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False, path_type=Path),
    required=True,
    help="The tape to write.",
)
@overwrite_option
@click.option(
    "-n",
    "--requests",
    type=click.IntRange(1),
    default=100_000,
    show_default=True,
    help="Requests to generate.",
)
@click.option("--seed", type=int, default=7, show_default=True, help="Seed for the draws.")
@click.option(
    "--sessions",
    type=click.IntRange(1),
    default=4,
    show_default=True,
    help="Sessions the requests are spread over.",
)
def generate_command(
    output: Path, overwrite: bool, requests: int, seed: int, sessions: int
) -> None:
    """Write a tape of GWS Outbound API traffic with known, seeded latencies (lognormal), 1%
    refused and 1% never acked: to try the analysis, or measure it at scale."""
    claim_output(output, overwrite=overwrite, tape=True)
    drawn = generate(output, requests, seed, sessions=sessions)
    click.echo(
        f"{output}: {requests} requests, {requests - drawn.unmatched} acked, "
        f"{drawn.unmatched} unmatched ({int(drawn.refused.sum())} refused)"
    )
