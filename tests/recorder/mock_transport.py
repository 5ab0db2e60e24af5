"""A Transport without sockets, for recorder tests: it keeps what was sent, a test feeds replies."""

from __future__ import annotations

import asyncio
from typing import Any

import orjson

from recorder.auth import Handover
from recorder.events import Outgoing
from recorder.record import Deliver, Fail
from recorder.websocket import UpgradeError
from tape.bayeux import decode_frame
from tests.conftest import TIMEOUT


class MockTransport:
    """One transport as the Recorder sees it. `sent` holds every batch it was given; `expect()`
    waits for the next message on a channel; `reply()` and `fail()` play the server's part."""

    def __init__(
        self, name: str, deliver: Deliver, fail: Fail, handover: Handover, *, refuse: bool
    ) -> None:
        self.name = name
        self.bytes_in = 0
        self.handed = handover  # what it was made carrying
        self.sent: list[Outgoing] = []
        self.logins: list[str] = []
        self.resets = 0
        self.opened = self.closed = self.upgraded = False
        self._deliver, self._fail, self._refuse = deliver, fail, refuse
        self._taken = 0  # messages of `sent` handed to expect() so far, in order
        self._changed = asyncio.Event()

    # --- the Transport protocol --------------------------------------------------------------

    async def open(self) -> None:
        self.opened = True

    async def close(self) -> None:
        self.closed = True

    def send(self, batch: Outgoing) -> None:
        self.sent.append(batch)
        self._changed.set()

    async def login(self, login_url: str) -> None:
        self.logins.append(login_url)

    def reset(self) -> None:
        self.resets += 1

    async def upgrade(self) -> None:
        if self._refuse:
            raise UpgradeError("server rejected WebSocket connection: HTTP 400", 400)
        self.upgraded = True

    def handover(self) -> Handover:
        return Handover({"JSESSIONID": f"{self.name}-cookie"}, {"X-CSRF-TOKEN": "t"})

    # --- the test's side --------------------------------------------------------------------

    @property
    def messages(self) -> list[dict[str, Any]]:
        return [m for batch in self.sent for m in batch.messages]

    async def expect(self, channel: str) -> dict[str, Any]:
        """The next message sent, which must be on `channel` (waits for it)."""
        async with asyncio.timeout(TIMEOUT):
            while len(self.messages) <= self._taken:
                self._changed.clear()
                await self._changed.wait()
        message = self.messages[self._taken]
        self._taken += 1
        assert message["channel"] == channel, (channel, message)
        return message

    def reply(self, *messages: dict[str, Any]) -> None:
        """Messages from the server, as one frame (one HTTP body, one WebSocket message)."""
        raw = orjson.dumps(list(messages))
        self.bytes_in += len(raw)
        self._deliver(decode_frame(raw))

    def fail(self, reason: str, status: int | None = None, ids: list[str] | None = None) -> None:
        self._fail(reason, status, ids)


class MockTransports:
    """A TransportFactory of MockTransports, which keeps them: `made[-1]` is the current one.
    With `refuse_upgrade`, a WebSocket one refuses its upgrade."""

    def __init__(self, *, refuse_upgrade: bool = False) -> None:
        self.made: list[MockTransport] = []
        self._refuse = refuse_upgrade

    def __call__(
        self, name: str, deliver: Deliver, fail: Fail, handover: Handover
    ) -> MockTransport:
        refuse = self._refuse and name == "websocket"
        transport = MockTransport(name, deliver, fail, handover, refuse=refuse)
        self.made.append(transport)
        return transport

    @property
    def current(self) -> MockTransport:
        return self.made[-1]
