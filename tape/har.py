"""HAR files (HTTP Archive 1.2, as browsers' DevTools save them) into tape items.

Support engineers are often handed a HAR of an agent desktop rather than a capture. Each entry
becomes a request frame and a response frame, with its headers (redacted when stored):
- a POST to a Bayeux path (`/api/v2/notifications`, `/cometd`, or any POST whose body is a
  JSON array of objects with a `channel`) becomes long-polling `bayeux` frames;
- a WebSocket entry (Chrome's `_webSocketMessages`) becomes one `bayeux` frame per message,
  `send` as out and `receive` as in, at the message's own time;
- everything else becomes `http-request`/`http-response` frames (transport `http`).

Times: the request at `startedDateTime`, the response at its end (`startedDateTime` + `time`).
A response body the browser did not keep is stored empty, as HAR has it. All entries go into
one session, named after the file, with `mode` "har".
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import orjson

from tape.frame import Frame, Kind, Session, Transport
from tape.redact import headers_json, redact_url
from tape.schema import TapeError

BAYEUX_PATHS = ("/api/v2/notifications", "/cometd")


class HarError(TapeError):
    """The file is not a HAR this reader understands; the message says where."""


def is_har(path: Path) -> bool:
    return path.suffix.lower() == ".har"


def har_items(path: Path) -> list[Frame | Session]:
    """Every frame of the HAR, in time order with gapless seq, after its session row."""
    try:
        document = orjson.loads(path.read_bytes())
    except orjson.JSONDecodeError as exc:
        raise HarError(f"{path} is not JSON: {exc}") from None
    entries = document.get("log", {}).get("entries") if isinstance(document, dict) else None
    if not isinstance(entries, list):
        raise HarError(f"{path} has no log.entries list; is it a HAR file?")
    session_id = f"har-{path.stem}"
    seen: list[tuple[int, int, Frame]] = []  # (time, order, frame) before seq is assigned
    endpoint = None
    for n, entry in enumerate(entries):
        try:
            frames = list(_entry_frames(session_id, n, entry))
        except (KeyError, TypeError, ValueError, binascii.Error) as exc:
            raise HarError(f"{path}: entry {n} is not a HAR entry ({exc!r})") from None
        for frame in frames:
            seen.append((frame.t_wall_ns, len(seen), frame))
            if endpoint is None and frame.kind == Kind.BAYEUX:
                endpoint = _url(entry)
    if not seen:
        raise HarError(f"{path} holds no entries")
    seen.sort(key=lambda item: (item[0], item[1]))
    first = seen[0][0]
    frames = [
        frame.with_changes(seq=seq, t_mono_ns=frame.t_wall_ns - first)
        for seq, (_, _, frame) in enumerate(seen, start=1)
    ]
    transports = {f.transport for f in frames if f.kind == Kind.BAYEUX}
    session = Session(
        session_id=session_id,
        mode="har",
        endpoint=redact_url(endpoint),
        transport="websocket" if "websocket" in transports else "long-polling",
        started_ns=first,
        ended_ns=frames[-1].t_wall_ns,
        end_reason="end of HAR",
        labels={"source": path.name},
    )
    return [session, *frames]


def _entry_frames(session_id: str, n: int, entry: dict[str, Any]) -> Iterator[Frame]:
    request, response = entry["request"], entry["response"]
    started = _ns(entry["startedDateTime"])
    ended = started + int(float(entry.get("time") or 0) * 1e6)
    parts = urlsplit(request["url"])
    path = parts.path + (f"?{parts.query}" if parts.query else "")
    method = str(request["method"]).upper()
    exchange = f"h{n + 1}"
    sent = _post_data(request)
    messages = entry.get("_webSocketMessages")
    if isinstance(messages, list):
        for message in messages:
            raw = _ws_data(message)
            direction = "out" if message["type"] == "send" else "in"
            at = int(float(message["time"]) * 1e9)
            yield Frame(session_id, 0, at, 0, direction, Transport.WEBSOCKET, Kind.BAYEUX, raw)
        return
    bayeux = method == "POST" and (
        any(parts.path == p or parts.path.startswith(p + "/") for p in BAYEUX_PATHS)
        or _looks_bayeux(sent)
    )
    kind_out = Kind.BAYEUX if bayeux else Kind.HTTP_REQUEST
    kind_in = Kind.BAYEUX if bayeux else Kind.HTTP_RESPONSE
    transport = Transport.LONG_POLLING if bayeux else Transport.HTTP
    yield Frame(
        session_id,
        0,
        started,
        0,
        "out",
        transport,
        kind_out,
        sent,
        exchange_id=exchange,
        http_method=method,
        http_path=path,
        headers=_headers(request.get("headers")),
    )
    status = int(response.get("status") or 0)
    if status > 0:  # 0: the browser got no response (blocked, aborted)
        yield Frame(
            session_id,
            0,
            max(ended, started),
            0,
            "in",
            transport,
            kind_in,
            _content(response.get("content") or {}),
            exchange_id=exchange,
            http_status=status,
            headers=_headers(response.get("headers")),
        )


def _ns(text: str) -> int:
    moment = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=dt.UTC)
    whole = int(moment.replace(microsecond=0).timestamp()) * 1_000_000_000
    return whole + moment.microsecond * 1000


def _post_data(request: dict[str, Any]) -> bytes:
    data = request.get("postData") or {}
    text = data.get("text")
    return text.encode() if isinstance(text, str) else b""


def _content(content: dict[str, Any]) -> bytes:
    text = content.get("text")
    if not isinstance(text, str):
        return b""
    if content.get("encoding") == "base64":
        return base64.b64decode(text, validate=True)
    return text.encode()


def _ws_data(message: dict[str, Any]) -> bytes:
    data = message.get("data", "")
    if message.get("opcode") == 2:  # binary: Chrome keeps it base64
        return base64.b64decode(data)
    return str(data).encode()


def _headers(items: Any) -> str | None:
    if not isinstance(items, list):
        return None
    return headers_json([(str(h["name"]), str(h["value"])) for h in items])


def _looks_bayeux(body: bytes) -> bool:
    if not body.lstrip().startswith(b"["):
        return False
    try:
        parsed = orjson.loads(body)
    except orjson.JSONDecodeError:
        return False
    return bool(parsed) and all(isinstance(m, dict) and "channel" in m for m in parsed)


def _url(entry: dict[str, Any]) -> str:
    return str(entry["request"]["url"])
