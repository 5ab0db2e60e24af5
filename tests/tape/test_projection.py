"""The messages projection: the writer's rows, `rebuild`'s rows and the Python codec agree."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import duckdb
import orjson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tape.bayeux import decode_frame
from tape.frame import Frame
from tape.gws import gws_fields
from tape.jsonl import JsonlReader
from tape.projection import rebuild
from tape.reader import TapeReader
from tape.schema import open_for_writing
from tape.tapeio import import_items
from tape.writer import TapeWriter
from tests.conftest import SAMPLE, gws_frame_raw, make_frame


def _all_rows(path: Path, table: str = "messages") -> list[tuple[Any, ...]]:
    conn = duckdb.connect(str(path), read_only=True)
    try:
        return conn.execute(f"SELECT * FROM {table} ORDER BY ALL").fetchall()
    finally:
        conn.close()


REST_BODIES = (
    b'{"operationName":"DoNotCallRecord","referenceId":"r1","campaignName":"C1",'
    b'"callingList":"L1","applicationId":134}',
    b'{"statusCode":0}',
    b"not json",
    b"[1, 2]",
    b'{"referenceId": 42, "applicationId": "x"}',
    b"\xff\xfe",
    b"",
)


def _rest_frame(seq: int) -> Frame:
    body = REST_BODIES[seq % len(REST_BODIES)]
    request = seq % 2 == 0
    return make_frame(
        "s",
        seq,
        body,
        kind="http-request" if request else "http-response",
        direction="out" if request else "in",
        transport="http",
        exchange_id=f"x{seq // 2}",
        http_method="POST" if request else None,
        http_path="/api/v2/me/outbound-records/13" if request else None,
        http_status=None if request else 200,
    )


def test_rebuild_equals_what_the_writer_produced(tmp_path: Path) -> None:
    path = tmp_path / "t.duckdb"
    with TapeWriter(path) as writer:
        for seq in range(1, 2001):
            if seq % 7 == 0:
                writer.write(_rest_frame(seq))
                continue
            raw = gws_frame_raw(seq) if seq % 5 else b'{"channel":"/meta/connect","id":1}'
            writer.write(make_frame("s", seq, raw))
    written = _all_rows(path)
    http_written = _all_rows(path, "http_fields")
    conn = open_for_writing(path)
    assert rebuild(conn) == len(written)
    conn.close()
    assert _all_rows(path) == written
    assert _all_rows(path, "http_fields") == http_written
    rest = 2000 // 7
    assert len(http_written) == rest
    bayeux = 2000 - rest
    connects = len([s for s in range(1, 2001) if s % 7 and s % 5 == 0])
    assert len(written) == (bayeux - connects) * 2 + connects


def test_http_fields_hold_the_body_fields_and_null_for_bodies_that_are_not_objects(
    tmp_path: Path,
) -> None:
    path = tmp_path / "t.duckdb"
    with TapeWriter(path) as writer:
        for seq in range(len(REST_BODIES)):
            writer.write(_rest_frame(seq))
    conn = duckdb.connect(str(path), read_only=True)
    rows = conn.execute(
        "SELECT seq, kind, operation_name, reference_id, campaign_name, calling_list, "
        "application_id, status_code FROM http_fields ORDER BY seq"
    ).fetchall()
    conn.close()
    assert rows == [
        (0, "http-request", "DoNotCallRecord", "r1", "C1", "L1", 134, None),
        (1, "http-response", None, None, None, None, None, 0),
        (2, "http-request", None, None, None, None, None, None),
        (3, "http-response", None, None, None, None, None, None),
        (4, "http-request", None, "42", None, None, None, None),
        (5, "http-response", None, None, None, None, None, None),
        (6, "http-request", None, None, None, None, None, None),
    ]


def test_sample_gives_exactly_the_documented_messages(tmp_path: Path) -> None:
    path = tmp_path / "t.duckdb"
    import_items(JsonlReader(SAMPLE).items(), path)
    with TapeReader(path) as reader:
        rows = list(reader.messages())
    delivered = [r for r in rows if not r.channel.startswith("/meta/")]
    ack, metrics = delivered
    assert (ack.channel, ack.notification_type, ack.reference_id, ack.record_handle) == (
        "/v2/me/outbound",
        "DoNotCallAcknowledge",
        "123456789",
        "13",
    )
    assert ack.message_type == "OutboundRecordMessage"
    assert (metrics.channel, metrics.message_type) == ("/me/internal", "DeviceUserEventMessage")
    assert (metrics.server_generation_ts, metrics.node_processing_ns) == (1433915450788, 4352048)
    assert metrics.server_processing_ms == 5
    assert (metrics.record_handle, metrics.user_event) == ("13", "DoNotCallAcknowledge")
    connect = rows[-1]
    assert (connect.channel, connect.successful, ack.seq) == ("/meta/connect", True, connect.seq)
    assert orjson.loads(connect.advice or "") == {
        "interval": 0,
        "timeout": 30000,
        "reconnect": "retry",
    }
    assert [r.channel for r in rows[:2]] == ["/meta/handshake", "/meta/handshake"]


_text = st.text(max_size=12)
_handle = st.one_of(st.integers(0, 10**12), st.text(max_size=8))
_gws_data = st.fixed_dictionaries(
    {},
    optional={
        "messageType": _text,
        "notificationType": _text,
        "referenceId": st.one_of(_text, st.integers(-(2**62), 2**62)),
        "operationName": _text,
        "record": st.fixed_dictionaries({}, optional={"recordHandle": _handle}),
        "userData": st.fixed_dictionaries(
            {}, optional={"GSW_RECORD_HANDLE": _handle, "GSW_USER_EVENT": _text}
        ),
        "metrics": st.fixed_dictionaries(
            {
                "eventProcessing": st.fixed_dictionaries(
                    {},
                    optional={
                        "serverGenerationTimestamp": st.integers(0, 2**62),
                        "nodeProcessingTimeNanos": st.integers(0, 2**62),
                        "serverProcessingTimeTotalMs": st.integers(0, 10**6),
                    },
                )
            }
        ),
    },
)
_message = st.fixed_dictionaries(
    {"channel": st.sampled_from(["/v2/me/outbound", "/me/internal", "/meta/connect"])},
    optional={
        "data": _gws_data,
        "id": st.text(min_size=1, max_size=6),
        "successful": st.booleans(),
    },
)


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(batches=st.lists(st.lists(_message, min_size=1, max_size=4), min_size=1, max_size=5))
def test_sql_projection_agrees_with_the_python_codec(tmp_path: Path, batches: list[Any]) -> None:
    path = tmp_path / "p.duckdb"
    path.unlink(missing_ok=True)
    raws = [orjson.dumps(batch) for batch in batches]
    with TapeWriter(path) as writer:
        for seq, raw in enumerate(raws, start=1):
            writer.write(make_frame("s", seq, raw))
    with TapeReader(path) as reader:
        rows = [(r.channel, r.id, r.successful, _gws(r)) for r in reader.messages()]
    expected = []
    for raw in raws:
        for m in decode_frame(raw):
            fields = gws_fields(m.to_wire().get("data"))
            expected.append((m.channel, m.id, m.successful, fields))
    assert rows == expected


def _gws(row: Any) -> Any:
    from tape.gws import GwsFields

    return GwsFields(
        row.message_type,
        row.notification_type,
        row.reference_id,
        row.record_handle,
        row.operation_name,
        row.user_event,
        row.server_generation_ts,
        row.node_processing_ns,
        row.server_processing_ms,
    )
