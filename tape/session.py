"""A session's log: assigns the gapless `seq` and the timestamps, then hands frames to a sink.

One `SessionLog` per recorded Bayeux session. It is used from one thread (the event loop), so
the counter needs no lock; the sink does the cross-thread hand-off.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from tape.frame import Direction, Frame, Kind, ReceivedRun, Session, Transport
from tape.redact import headers_json
from tape.sink import FrameSink

HOLD = 512  # received frames held at most before they go to the sink (see SessionLog._raws)


def new_session_id() -> str:
    return uuid.uuid4().hex


@dataclass(slots=True)
class HttpMessage:
    """One side of an HTTP exchange as it was on the wire: body, when, headers, HTTP fields."""

    raw: bytes
    at: tuple[int, int]  # (time.time_ns(), time.monotonic_ns()) when it was seen
    headers: Sequence[tuple[str, str]]
    secret_headers: Collection[str] = ()  # exact names redacted besides the Privacy's (CSRF)
    method: str | None = None
    path: str | None = None
    status: int | None = None


@dataclass(slots=True)
class HttpExchange:
    """A request and its response; SessionLog.exchange() records what of it is not yet stored.

    A Bayeux exchange (a long-polling POST) is stored as two Bayeux frames, any other as an
    http-request and an http-response frame."""

    exchange_id: str
    bayeux: bool = False
    request: HttpMessage | None = None
    response: HttpMessage | None = None
    request_logged: bool = False
    response_logged: bool = False


class SessionLog:
    def __init__(self, sink: FrameSink, session: Session, *, mono0_ns: int | None = None) -> None:
        """`mono0_ns` (time.monotonic_ns()) is when the session began, if before now."""
        self._sink = sink
        self._seq = 0
        self._mono0 = time.monotonic_ns() if mono0_ns is None else mono0_ns
        started = session.started_ns if session.started_ns is not None else time.time_ns()
        self.session = session.with_changes(started_ns=started)
        self._session_id = session.session_id
        self._transport = session.transport or Transport.HTTP
        # Frames received in one socket read, handed to the sink together by release(): one
        # call and one lock for ~100 of Faye's one-message frames, not one each (that was ~8%
        # of the event loop's GIL time at one message a frame). Any other write releases them
        # first, so the sink still gets every frame in seq order; and at most HOLD frames are
        # held, so a caller that never releases (the ingest benchmark) still streams them.
        # They are held as a ReceivedRun's columns, which a sink with `write_run` (the tape
        # writer) takes as they are; any other sink gets them as Frames.
        self._raws: list[bytes] = []
        self._walls: list[int] = []
        self._monos: list[int] = []
        self._errors: list[str | None] = []
        self._run_transport = ""
        self._write_run = getattr(sink, "write_run", None)
        self._write_many = getattr(sink, "write_many", None)
        sink.put_session(self.session)

    @property
    def frames(self) -> int:
        return self._seq

    def append(
        self,
        direction: Direction | str,
        raw: bytes,
        *,
        kind: Kind | str = Kind.BAYEUX,
        transport: Transport | str | None = None,
        exchange_id: str | None = None,
        http_method: str | None = None,
        http_path: str | None = None,
        http_status: int | None = None,
        headers: str | None = None,
        parse_error: str | None = None,
        checked: bool = False,
        at: tuple[int, int] | None = None,
    ) -> Frame:
        """Record one frame. Pass `checked=True` when the codec already decoded `raw`, and
        `at=(time.time_ns(), time.monotonic_ns())` when it was seen earlier than now."""
        if self._raws:
            self.release()
        self._seq += 1
        wall, mono = at if at is not None else (time.time_ns(), time.monotonic_ns())
        frame = Frame(
            self._session_id,
            self._seq,
            wall,
            mono - self._mono0,
            direction,
            transport or self._transport,
            kind,
            raw,
            exchange_id,
            http_method,
            http_path,
            http_status,
            headers,
            parse_error,
            checked,
        )
        self._sink.write(frame)
        return frame

    def received(self, raw: bytes, transport: str, parse_error: str | None) -> None:
        """`append("in", raw, transport=transport, parse_error=parse_error, checked=True)` at a
        fraction of its call cost, for the hot path: a frame received, with no HTTP fields.
        The frame is held until release() (the transport calls it after each socket read), or
        until HOLD frames are held."""
        if transport != self._run_transport:  # a run has one transport
            if self._raws:
                self.release()
            self._run_transport = transport
        self._seq += 1
        self._raws.append(raw)
        self._walls.append(time.time_ns())
        self._monos.append(time.monotonic_ns() - self._mono0)
        self._errors.append(parse_error)
        if len(self._raws) >= HOLD:
            self.release()

    def release(self) -> None:
        """Hand the frames received() holds to the sink, in order. With none held it does
        nothing: a read with no frame in it (a ping, a close) must not raise a dead sink's
        error out of the socket's callback."""
        raws = self._raws
        if not raws:
            return
        run = ReceivedRun(
            self._session_id,
            self._seq - len(raws) + 1,
            self._run_transport,
            raws,
            self._walls,
            self._monos,
            self._errors,
        )
        self._raws, self._walls, self._monos, self._errors = [], [], [], []
        if self._write_run is not None:
            self._write_run(run)
        elif self._write_many is not None:
            self._write_many(run.frames())
        else:
            for frame in run.frames():
                self._sink.write(frame)

    def exchange(
        self, exchange: HttpExchange, headers_of: Callable[[HttpMessage], str] | None = None
    ) -> None:
        """Record an HTTP exchange: its request and its response, each once, as far as they
        are known (a request recorded as it comes, its response when it does, keeps the seq
        order of the exchanges that overlap it). The headers are stored as
        tape.redact.headers_json() gives them, or `headers_of` (the same text, worked out
        another way: the proxy caches it per header list); the sink's Privacy redacts the
        rest."""
        text = headers_of or _headers_text
        if exchange.bayeux:
            kinds, transport = (Kind.BAYEUX, Kind.BAYEUX), Transport.LONG_POLLING
        else:
            kinds, transport = (Kind.HTTP_REQUEST, Kind.HTTP_RESPONSE), Transport.HTTP
        request = exchange.request
        if request is not None and not exchange.request_logged:
            exchange.request_logged = True
            self.append(
                Direction.OUT,
                request.raw,
                at=request.at,
                kind=kinds[0],
                transport=transport,
                exchange_id=exchange.exchange_id,
                http_method=request.method,
                http_path=request.path,
                headers=text(request),
            )
        response = exchange.response
        if response is not None and not exchange.response_logged:
            exchange.response_logged = True
            self.append(
                Direction.IN,
                response.raw,
                at=response.at,
                kind=kinds[1],
                transport=transport,
                exchange_id=exchange.exchange_id,
                http_status=response.status,
                headers=text(response),
            )

    def lifecycle(self, event: str, **details: Any) -> Frame:
        """Record what the recorder itself saw: connected, gap, rehandshake, stopped..."""
        raw = orjson.dumps({"event": event, **details})
        return self.append(Direction.IN, raw, kind=Kind.LIFECYCLE)

    def update(self, **changes: Any) -> None:
        if self._raws:
            self.release()
        self.session = self.session.with_changes(**changes)
        self._sink.put_session(self.session)

    def check(self) -> None:
        """Raise TapeError if the sink can no longer store frames."""
        if self._raws:
            self.release()
        self._sink.check()

    def close(self, reason: str) -> None:
        self.update(ended_ns=time.time_ns(), end_reason=reason)


def _headers_text(message: HttpMessage) -> str:
    return headers_json(message.headers, message.secret_headers)
