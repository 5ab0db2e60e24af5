"""Shared test helpers: one timeout constant that every wait scales from, and frame factories."""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile

import orjson
from hypothesis import settings

from tape.frame import Frame
from tape.sink import NullSink
from tests.constants import ROOT, SAMPLE, TIMEOUT
from tests.peers.cometd_client import cometd_client
from tests.peers.faye import faye_server
from tests.peers.faye_client import faye_client

__all__ = ["ROOT", "SAMPLE", "TIMEOUT", "cometd_client", "faye_client", "faye_server"]

# The analysis cache goes to a folder of this test run's own (subprocesses inherit it), never to
# the user's ~/.cache. It is removed when the run ends: caches of big tapes reach ~80 MB. A helper
# process of the run that imports this module (one the crash test kills) uses the run's folder.
if "COMETD_TAPE_TEST_CACHE" in os.environ:
    os.environ["COMETD_TAPE_CACHE"] = os.environ["COMETD_TAPE_TEST_CACHE"]
else:
    _CACHE = tempfile.mkdtemp(prefix="cometd-tape-cache-")
    os.environ["COMETD_TAPE_CACHE"] = os.environ["COMETD_TAPE_TEST_CACHE"] = _CACHE
    atexit.register(shutil.rmtree, _CACHE, ignore_errors=True)

# CI explores the same examples every run, so a red CI is a real regression, not a new draw;
# local runs keep exploring new ones.
settings.register_profile("ci", derandomize=True, deadline=None)
if os.environ.get("CI"):
    settings.load_profile("ci")


def gws_frame_raw(i: int) -> bytes:
    """A realistic ~800-byte GWS frame: an ack and its metrics event, as GWS batches them."""
    return orjson.dumps(
        [
            {
                "data": {
                    "record": {
                        "devicePath": "/devices/c259da54-7c22-4a43-9440-77a92facc86b",
                        "callingList": "CallingList1",
                        "applicationId": 134,
                        "recordHandle": i,
                        "campaignName": f"Campaign{i % 7}",
                    },
                    "notificationType": "DoNotCallAcknowledge",
                    "messageType": "OutboundRecordMessage",
                    "referenceId": f"ref-{i}",
                },
                "channel": "/v2/me/outbound",
                "id": str(2 * i),
            },
            {
                "data": {
                    "metrics": {
                        "eventProcessing": {
                            "serverGenerationTimestamp": 1433915450788 + i,
                            "nodeProcessingTimeNanos": 4352048 + i,
                            "serverProcessingTimeTotalMs": 5,
                        }
                    },
                    "userData": {
                        "GSW_APPLICATION_ID": 134,
                        "GSW_RECORD_HANDLE": i,
                        "GSW_USER_EVENT": "DoNotCallAcknowledge",
                        "GSW_CALLING_LIST": "CallingList1",
                        "GSW_CAMPAIGN_NAME": f"Campaign{i % 7}",
                        "GSW_PHONE": f"300{i}",
                    },
                    "deviceId": "c259da54-7c22-4a43-9440-77a92facc86b",
                    "messageType": "DeviceUserEventMessage",
                },
                "channel": "/me/internal",
                "id": str(2 * i + 1),
            },
        ]
    )


def make_frame(session_id: str, seq: int, raw: bytes, **extra: object) -> Frame:
    values: dict[str, object] = {
        "session_id": session_id,
        "seq": seq,
        "t_wall_ns": 1_700_000_000_000_000_000 + seq * 1_000_000,
        "t_mono_ns": seq * 1_000_000,
        "direction": "in",
        "transport": "websocket",
        "kind": "bayeux",
        "raw": raw,
    }
    values.update(extra)
    return Frame(**values)  # type: ignore[arg-type]


class ListSink(NullSink):
    """A FrameSink that keeps frames in a list, for code under test that needs one."""

    def __init__(self) -> None:
        self.frames: list[Frame] = []

    def write(self, frame: Frame) -> None:
        self.frames.append(frame)
