"""GWS fields pulled out of a Bayeux message's `data` (the GWS Outbound API).

These rules mirror the SQL in `tape.projection`, and a test holds the two to the same answers.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

# operationName -> the notificationType of its acknowledgement on /v2/me/outbound: the one
# table the simulator, the tape generator and the request_latency view (analysis/definitions.py
# writes it into the SQL) all use.
EXPECTED_ACK: dict[str, str] = {
    "DoNotCallRecord": "DoNotCallAcknowledge",
    "CompleteRecord": "RecordProcessedAcknowledge",
    "RescheduleRecord": "ScheduledRecordRescheduleAcknowledge",
    "RejectRecord": "RecordRejectAcknowledge",
    "UpdateRecord": "UpdateCallCompletionStatsAcknowledge",
    "GetPreviewRecord": "PreviewRecord",
}
# The one operation posted to /api/v2/me/outbound-campaigns/<name>, not to a record.
PREVIEW_OPERATION = "GetPreviewRecord"
# The operations posted to /api/v2/me/outbound-records/<handle>, with their acks, in order.
RECORD_ACKS: dict[str, str] = {
    operation: ack for operation, ack in EXPECTED_ACK.items() if operation != PREVIEW_OPERATION
}


@dataclass(frozen=True, slots=True)
class GwsFields:
    message_type: str | None = None
    notification_type: str | None = None
    reference_id: str | None = None
    record_handle: str | None = None
    operation_name: str | None = None
    user_event: str | None = None
    server_generation_ts: int | None = None
    node_processing_ns: int | None = None
    server_processing_ms: float | None = None


def gws_fields(data: Any) -> GwsFields:
    """Extract the GWS fields; absent or wrongly typed ones are None."""
    if not isinstance(data, dict):
        return GwsFields()
    user_data = _obj(data.get("userData"))
    metrics = _obj(_obj(data.get("metrics")).get("eventProcessing"))
    return GwsFields(
        message_type=_text(data.get("messageType")),
        notification_type=_text(data.get("notificationType")),
        reference_id=_text(data.get("referenceId")),
        record_handle=_record_handle(data, user_data),
        operation_name=_text(data.get("operationName")),
        user_event=_text(user_data.get("GSW_USER_EVENT")),
        server_generation_ts=_int(metrics.get("serverGenerationTimestamp")),
        node_processing_ns=_int(metrics.get("nodeProcessingTimeNanos")),
        server_processing_ms=_number(metrics.get("serverProcessingTimeTotalMs")),
    )


def _record_handle(data: dict[str, Any], user_data: dict[str, Any]) -> str | None:
    """An ack carries it in data.record; the metrics event in userData.GSW_RECORD_HANDLE."""
    for value in (
        _obj(data.get("record")).get("recordHandle"),
        data.get("recordHandle"),
        user_data.get("GSW_RECORD_HANDLE"),
    ):
        if (text := _text(value)) is not None:
            return text
    return None


def _obj(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _text(value: Any) -> str | None:
    if isinstance(value, str):
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return None


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _number(value: Any) -> float | None:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    return None
