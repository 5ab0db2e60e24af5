"""FrameSink: what every tape form accepts; light, so a type costs no DuckDB or Arrow import."""

from __future__ import annotations

from typing import Protocol

from tape.frame import Frame, Session


class FrameSink(Protocol):
    """What every tape form accepts: frames, session rows, and a durable flush."""

    def write(self, frame: Frame) -> None: ...
    def put_session(self, session: Session) -> None: ...
    def check(self) -> None: ...
    def flush(self) -> None: ...
    def close(self) -> None: ...


class NullSink:
    """A FrameSink that keeps nothing (a Bayeux client whose frames no one records)."""

    def write(self, frame: Frame) -> None:
        pass

    def put_session(self, session: Session) -> None:
        pass

    def check(self) -> None:
        pass

    def flush(self) -> None:
        pass

    def close(self) -> None:
        pass
