"""HAR import: a browser's capture of an agent desktop (as Chrome saves it) becomes a tape whose
Bayeux frames, REST exchanges and WebSocket messages analyse like a recorded one; secrets in
its headers are redacted; a file that is not a HAR is a one-line error."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import duckdb
import orjson

from tests.cli import cometd_tape

ACK = [
    {
        "channel": "/v2/me/outbound",
        "data": {
            "notificationType": "DoNotCallAcknowledge",
            "referenceId": "r-1",
            "messageType": "OutboundRecordMessage",
            "record": {"recordHandle": 13},
        },
    },
    {
        "channel": "/me/internal",
        "data": {
            "metrics": {
                "eventProcessing": {
                    "serverGenerationTimestamp": 1767225600120,
                    "nodeProcessingTimeNanos": 4000000,
                    "serverProcessingTimeTotalMs": 5,
                }
            },
            "userData": {"GSW_RECORD_HANDLE": 13, "GSW_USER_EVENT": "DoNotCallAcknowledge"},
        },
    },
    {"channel": "/meta/connect", "successful": True, "clientId": "c1", "id": "3"},
]


def entry(
    start: str, ms: float, method: str, url: str, sent: Any, got: Any, status: int = 200
) -> dict[str, Any]:
    request: dict[str, Any] = {
        "method": method,
        "url": url,
        "headers": [
            {"name": "Cookie", "value": "JSESSIONID=s3cr3t"},
            {"name": "Authorization", "value": "Basic YWdlbnQ6czNjcjN0"},
        ],
    }
    if sent is not None:
        request["postData"] = {"mimeType": "application/json", "text": orjson.dumps(sent).decode()}
    return {
        "startedDateTime": start,
        "time": ms,
        "request": request,
        "response": {
            "status": status,
            "headers": [{"name": "Set-Cookie", "value": "JSESSIONID=s3cr3t"}],
            "content": {"mimeType": "application/json", "text": orjson.dumps(got).decode()},
        },
    }


def har(tmp_path: Path) -> Path:
    base = "http://gws:8090"
    entries = [
        entry("2026-01-01T00:00:00.000Z", 5, "GET", f"{base}/api/v2/me", None, {"statusCode": 0}),
        entry(
            "2026-01-01T00:00:00.010Z",
            4,
            "POST",
            f"{base}/api/v2/notifications",
            [{"channel": "/meta/handshake", "id": "1", "version": "1.0"}],
            [{"channel": "/meta/handshake", "id": "1", "successful": True, "clientId": "c1"}],
        ),
        entry(
            "2026-01-01T00:00:00.050Z",
            75.5,
            "POST",
            f"{base}/api/v2/notifications",
            [{"channel": "/meta/connect", "id": "3", "clientId": "c1"}],
            ACK,
        ),
        entry(
            "2026-01-01T00:00:00.100Z",
            9,
            "POST",
            f"{base}/api/v2/me/outbound-records/13",
            {"operationName": "DoNotCallRecord", "referenceId": "r-1", "campaignName": "C1"},
            {"statusCode": 0},
        ),
        {
            "startedDateTime": "2026-01-01T00:00:01.000Z",
            "time": 0,
            "request": {"method": "GET", "url": "ws://gws:8090/cometd", "headers": []},
            "response": {"status": 101, "headers": [], "content": {}},
            "_webSocketMessages": [
                {
                    "type": "send",
                    "time": 1767225601.1,
                    "opcode": 1,
                    "data": '[{"channel":"/meta/connect","clientId":"c2","id":"9"}]',
                },
                {
                    "type": "receive",
                    "time": 1767225601.2,
                    "opcode": 1,
                    "data": '[{"channel":"/v2/me/outbound","data":{"referenceId":"x"}}]',
                },
            ],
        },
    ]
    path = tmp_path / "desk.har"
    path.write_bytes(orjson.dumps({"log": {"version": "1.2", "entries": entries}}))
    return path


def test_a_har_imports_and_analyses_like_a_recording(tmp_path: Path) -> None:
    tape = tmp_path / "h.duckdb"
    done = cometd_tape("import", str(har(tmp_path)), "-o", str(tape))
    assert done.returncode == 0, done.stderr
    assert "imported 10 frames in 1 sessions" in done.stdout
    conn = duckdb.connect(str(tape), read_only=True)
    kinds = conn.execute(
        "SELECT kind, transport, count(*) FROM frames GROUP BY ALL ORDER BY ALL"
    ).fetchall()
    assert kinds == [
        ("bayeux", "long-polling", 4),
        ("bayeux", "websocket", 2),
        ("http-request", "http", 2),
        ("http-response", "http", 2),
    ]
    (row,) = conn.execute(
        "SELECT operation_name, ack_ms, http_ms, server_ms FROM request_latency"
    ).fetchall()
    # the ack came with the connect that ended at 0.050 + 75.5 ms; the request left at 0.100
    assert row == ("DoNotCallRecord", 25.5, 9.0, 5.0)
    assert b"s3cr3t" not in tape.read_bytes()
    assert b"YWdlbnQ6czNjcjN0" not in tape.read_bytes()
    (session,) = conn.execute("SELECT session_id, mode, endpoint FROM sessions").fetchall()
    assert session == ("har-desk", "har", "http://gws:8090/api/v2/notifications")


def test_a_file_that_is_not_a_har_is_one_line(tmp_path: Path) -> None:
    bad = tmp_path / "x.har"
    bad.write_text('{"log": {}}')
    done = cometd_tape("import", str(bad), "-o", str(tmp_path / "x.duckdb"))
    assert done.returncode == 1
    assert "has no log.entries list; is it a HAR file?" in done.stderr
    assert "Traceback" not in done.stderr
    assert not (tmp_path / "x.duckdb").exists()
