"""Child process for the crash test: writes frames at a steady rate and reports progress.

Each stdout line is `enqueued committed`. The parent kills this process with SIGKILL.
`--flat-out` writes as fast as it can instead, so both writer threads have a batch in flight.
"""

from __future__ import annotations

import sys
import time

from tape.frame import Session
from tape.session import SessionLog
from tape.writer import TapeWriter
from tests.conftest import gws_frame_raw

RATE = 20_000  # frames/s
CHUNK = 200


def main(path: str, flat_out: bool = False) -> None:
    writer = TapeWriter(path)
    log = SessionLog(writer, Session(session_id="crash", transport="websocket"))
    raw = gws_frame_raw(1)
    start = time.monotonic()
    sent = 0
    while time.monotonic() - start < 60:  # bounded: the parent kills us long before this
        for _ in range(CHUNK):
            log.append("in", raw)
        sent += CHUNK
        print(sent, writer.committed_frames, flush=True)
        if not flat_out:
            time.sleep(max(0.0, start + sent / RATE - time.monotonic()))


if __name__ == "__main__":
    main(sys.argv[1], "--flat-out" in sys.argv[2:])
