"""A child process for tests/tape/test_big_frames.py: a TapeWriter takes long-poll replies read
from files (each with the request before it, as a recorder logs them) and prints, as JSON, how
far the process's peak RSS rose above its RSS while each reply was written, and at the close.

    python -m tests.tape.big_reply_child TAPE REPLY_FILE...

The replies are read from files, one at a time, so that building them leaves no freed memory
for the writer to reuse unseen (the rise would read low).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from tape.frame import Session
from tape.session import SessionLog
from tape.writer import TapeWriter

REQUEST = b'[{"id":"9","channel":"/meta/connect","clientId":"c1","connectionType":"long-polling"}]'


def rss_mb(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) >> 10
    raise RuntimeError(f"no {field} in /proc/self/status")


def reset_peak() -> int:
    """Start VmHWM again from the current RSS (Linux: clear_refs 5); return that RSS."""
    Path("/proc/self/clear_refs").write_text("5")
    return rss_mb("VmRSS")


def main(tape: str, replies: list[str]) -> None:
    writer = TapeWriter(tape)
    log = SessionLog(writer, Session(session_id="lp", transport="long-polling"))
    rises = []
    for k, name in enumerate(replies):
        body = Path(name).read_bytes()
        start = reset_peak()
        log.append("out", REQUEST, exchange_id=f"x{k}", http_method="POST", checked=True)
        log.append("in", body, exchange_id=f"x{k}", http_status=200, checked=True)
        del body
        writer.flush()
        rises.append(rss_mb("VmHWM") - start)
    start = reset_peak()
    log.close("stopped")
    writer.close()
    print(json.dumps({"rises": rises, "close": rss_mb("VmHWM") - start}))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2:])
