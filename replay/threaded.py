"""A replayer on its own thread and event loop, so any test (sync, or async under any
plugin) can use it, and the test's own loop never delays the replayed timing."""

from __future__ import annotations

import asyncio
import threading
import time
from concurrent.futures import Future
from pathlib import Path

from replay.app import Replayer, ReplayOptions
from replay.fault_core import InjectedFault
from replay.player import ClientSeen
from replay.responder import Unmatched


class ThreadedReplayer:
    recording = False  # the pytest fixture's handle while recording (recording.py) says True

    def __init__(self, tape: Path, options: ReplayOptions, host: str = "127.0.0.1") -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="cometd-replay", daemon=True
        )
        self._thread.start()
        started: Future[Replayer] = asyncio.run_coroutine_threadsafe(
            Replayer.start(tape, options, host=host), self._loop
        )
        try:
            self.replayer = started.result(timeout=30)
        except BaseException:
            self._shutdown()
            raise

    @property
    def url(self) -> str:
        return self.replayer.url

    @property
    def ws_url(self) -> str:
        return self.replayer.ws_url

    @property
    def clients(self) -> list[ClientSeen]:
        """The client sessions seen so far: id, subscriptions, messages emitted."""
        return self.replayer.clients

    @property
    def unmatched(self) -> list[Unmatched]:
        """REST requests that matched no recorded request (each got a 404 naming the closest)."""
        return self.replayer.unmatched

    @property
    def faults(self) -> list[InjectedFault]:
        """Every fault injected so far: time (s since the replay started), kind, client_id,
        target and detail."""
        return self.replayer.faults

    @property
    def emitted(self) -> int:
        return self.replayer.player.emitted

    async def wait_emitted(self, count: int | None = None, timeout: float = 30.0) -> int:
        """Wait (in the caller's loop) until `count` messages went out, or by default until
        every subscribed client got its whole timeline."""
        deadline = time.monotonic() + timeout
        while not self.replayer.player._done(count):
            if time.monotonic() > deadline:
                raise TimeoutError(f"emitted {self.emitted}, expected {count or 'a timeline'}")
            await asyncio.sleep(0.01)
        return self.emitted

    def stop(self) -> None:
        asyncio.run_coroutine_threadsafe(self.replayer.stop(), self._loop).result(timeout=30)
        self._shutdown()

    def _shutdown(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=30)
        self._loop.close()
