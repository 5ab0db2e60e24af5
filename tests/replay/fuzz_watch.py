"""What the fuzz test (test_fuzz.py) watches besides the clients: records logged at ERROR, what
the event loop's exception handler is given, and the loop's stalls, with where its thread was."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import sys
import threading
import time
import traceback
from pathlib import Path
from typing import Any

STALL_SAMPLE = 0.5  # a stall this long has the loop's thread's stack sampled
QUIET = ("aiohttp", "asyncio")  # their errors go in the failure, grouped, not echoed by pytest


class Watch(logging.Handler):
    """Records logged at ERROR or above (aiohttp's "Error handling request" among them), what
    the event loop's exception handler is given, the loop's stalls (a 10 ms ticker's delay),
    and, from a thread, where the loop's thread was when a stall passed STALL_SAMPLE."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[logging.LogRecord] = []
        self.contexts: list[dict[str, Any]] = []
        self.stalls: list[tuple[float, float]] = []  # (when, how long)
        self.blocked_in: list[tuple[float, list[str]]] = []  # (stalled since, innermost frames)
        self._beat = time.monotonic()
        self._done = threading.Event()

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    async def __aenter__(self) -> Watch:
        gc.collect()  # what earlier tests left is theirs to report, not this test's
        self._loggers = [logging.getLogger(name) for name in ("", *QUIET)]
        for logger in self._loggers:
            logger.addHandler(self)
        self._propagate = [logger.propagate for logger in self._loggers]
        for logger in self._loggers[1:]:
            logger.propagate = False
        loop = asyncio.get_running_loop()
        self._previous = loop.get_exception_handler()
        loop.set_exception_handler(lambda _loop, context: self.contexts.append(context))
        self._ticker = loop.create_task(self._tick())
        loop_thread = threading.get_ident()
        self._sampler = threading.Thread(target=self._sample, args=(loop_thread,), daemon=True)
        self._sampler.start()
        return self

    async def __aexit__(self, *_: object) -> None:
        self._done.set()
        self._sampler.join()
        self._ticker.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._ticker
        gc.collect()  # "Task exception was never retrieved" is reported when a task is freed
        await asyncio.sleep(0)
        asyncio.get_running_loop().set_exception_handler(self._previous)
        for logger, propagate in zip(self._loggers, self._propagate, strict=True):
            logger.removeHandler(self)
            logger.propagate = propagate

    async def _tick(self) -> None:
        while True:
            before = self._beat = time.monotonic()
            await asyncio.sleep(0.01)
            late = time.monotonic() - before - 0.01
            if late > 0.05:
                self.stalls.append((before, late))

    def _sample(self, loop_thread: int) -> None:
        sampled = 0.0
        while not self._done.wait(0.05):
            beat = self._beat
            if time.monotonic() - beat > STALL_SAMPLE and beat != sampled:
                sampled = beat
                frame = sys._current_frames().get(loop_thread)
                stack = traceback.extract_stack(frame) if frame is not None else []
                self.blocked_in.append((beat, [frame_line(f) for f in innermost(stack)]))


def innermost(frames: list[traceback.FrameSummary]) -> list[traceback.FrameSummary]:
    """The three innermost frames outside site-packages: where in our code it happened."""
    return [f for f in frames if "site-packages" not in f.filename][-3:]


def frame_line(frame: traceback.FrameSummary) -> str:
    return f"{Path(frame.filename).name}:{frame.lineno} in {frame.name}: {frame.line}"
