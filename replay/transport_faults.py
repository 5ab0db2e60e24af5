"""Transport faults, applied by the replayer's HTTP/WebSocket server when the fault core says
they are due: a WebSocket closed with a code, a TCP connection reset, long-polls answered with
HTTP 500 or 503, answers dribbled out slowly, and a server that accepts and never answers.

Which client's connection: the WebSocket its messages are pushed on, or the TCP connection of
its held long-poll. What happened goes to the fault log (FaultInjector.record).
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
import time
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import orjson
from websockets.frames import Frame, Opcode

from replay.events import TransportFaultDue
from replay.fault_core import FaultInjector
from replay.faults import Fault

if TYPE_CHECKING:
    from replay.server import ReplayServer

DRIBBLE_STEP_S = 0.05  # a slow answer goes out in pieces this far apart
MAX_STALLED = 10_000  # requests a stalled server sits on; past it, they are answered 503
# close/reset of a long-polling client with no poll held (its answer just left, the next poll
# is on its way; always so for after=N, as the Nth delivery answers the poll): cut that next
# poll, looking this often for this long.
CUT_STEP_S, CUT_WAIT_S = 0.005, 1.0


class Dribble:
    """Bytes written to one transport a piece at a time over `over` seconds each, in order."""

    def __init__(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport
        self.queue: deque[tuple[bytes, float, Callable[[], None] | None]] = deque()
        self.busy = False
        self.pending: list[bytes] = []  # what is left of the answer being dribbled
        self.generation = 0

    def write(self, data: bytes, over: float, then: Callable[[], None] | None = None) -> None:
        self.queue.append((data, over, then))
        if not self.busy:
            self._next()

    def flush(self) -> None:
        """Write everything left at once (before a close frame must follow whole frames)."""
        self.generation += 1  # the pieces already scheduled find themselves stale
        rest, self.pending = self.pending, []
        if not self.transport.is_closing():
            for chunk in rest:
                self.transport.write(chunk)  # type: ignore[attr-defined]
            for data, _over, then in self.queue:
                self.transport.write(data)  # type: ignore[attr-defined]
                if then is not None:
                    then()
        self.queue.clear()
        self.busy = False

    def _next(self) -> None:
        if not self.queue:
            self.busy = False
            return
        self.busy = True
        data, over, then = self.queue.popleft()
        pieces = max(2, min(len(data), round(over / DRIBBLE_STEP_S) + 1))
        size = -(-len(data) // pieces)
        self.pending = [data[i : i + size] for i in range(0, len(data), size)]
        step = over / max(1, len(self.pending) - 1)
        self._piece(step, then, self.generation)

    def _piece(self, step: float, then: Callable[[], None] | None, generation: int) -> None:
        transport = self.transport
        if generation != self.generation:
            return  # flushed meanwhile
        if transport.is_closing():
            self.queue.clear()
            self.pending, self.busy = [], False
            return
        transport.write(self.pending.pop(0))  # type: ignore[attr-defined]
        if self.pending:
            loop = asyncio.get_running_loop()
            loop.call_later(step, self._piece, step, then, generation)
            return
        if then is not None:
            then()
        self._next()


class TransportFaults:
    """The server's side of fault injection: state per client, bounded by the sessions."""

    def __init__(self, server: ReplayServer, injector: FaultInjector) -> None:
        self.server, self.injector = server, injector
        self.failing: dict[str, tuple[int, int]] = {}  # client -> (status, polls left)
        self.slow: dict[str, float] = {}  # client -> seconds over which each answer goes
        self.stalled_until: float | None = None
        self._dribbles: dict[asyncio.BaseTransport, Dribble] = {}
        self.wanted = any(f.layer == "transport" for f in injector.faults)
        self.slow_asked = any(f.kind == "slow" for f in injector.faults)

    # --- when due ---------------------------------------------------------------------------

    def apply(self, event: TransportFaultDue) -> None:
        fault: Fault = event.fault
        client_id, kind = event.client_id, fault.kind
        now = time.monotonic()
        if kind in ("http-500", "http-503") and self.server.pushes_to_socket(client_id):
            self._log(now, fault, client_id, "websocket", "on WebSocket: no long-poll to fail")
        elif kind in ("http-500", "http-503"):
            self.failing[client_id] = (int(kind[-3:]), fault.count)
            self._log(now, fault, client_id, "long-polling", f"next {fault.count} poll(s)")
        elif kind == "slow":
            assert fault.duration is not None
            self.slow[client_id] = fault.duration
            self._log(now, fault, client_id, "answers", f"each over {fault.duration:g} s")
        elif kind == "stall":
            self.stalled_until = float("inf") if fault.duration is None else now + fault.duration
            if fault.duration is not None:  # what waited in the protocol goes out then
                asyncio.get_running_loop().call_later(fault.duration, self.server.pump)
            span = "for good" if fault.duration is None else f"for {fault.duration:g} s"
            self._log(now, fault, "*", "server", f"requests read and not answered {span}")
        else:
            self._cut(client_id, fault, now)

    def _log(self, now: float, fault: Fault, client_id: str, target: str, detail: str) -> None:
        self.injector.record(now, fault.kind, client_id, target, detail)

    def _cut(self, client_id: str, fault: Fault, now: float, waited: float = 0.0) -> None:
        """close or reset the client's connection: its WebSocket, or its held long-poll's."""
        from replay.server import _Socket

        push = self.server.protocol.push_connection(client_id)
        if isinstance(push, _Socket):
            if push.request.transport is not None:
                self.flush(push.request.transport)  # whole frames before the close frame
            if fault.kind == "close":
                push.close(fault.code, b"closed by an injected fault")
                self._log(now, fault, client_id, "websocket", f"closed with {fault.code}")
                return
            transport: Any = push.request.transport
            where = "websocket"
        else:
            transport, where = self._poll_transport(client_id), "long-polling"
            if transport is None and waited < CUT_WAIT_S:
                loop = asyncio.get_running_loop()
                loop.call_later(CUT_STEP_S, self._cut_later, client_id, fault, waited + CUT_STEP_S)
                return
        if transport is None:
            self._log(now, fault, client_id, where, "no connection open: nothing to cut")
            return
        if fault.kind == "reset":
            reset(transport)
            self._log(now, fault, client_id, where, "TCP connection reset (RST)")
        else:
            transport.close()
            self._log(now, fault, client_id, where, "TCP connection closed, poll unanswered")

    def _cut_later(self, client_id: str, fault: Fault, waited: float) -> None:
        self._cut(client_id, fault, time.monotonic(), waited)

    def _poll_transport(self, client_id: str) -> asyncio.BaseTransport | None:
        token = self.server.protocol.held_connection(client_id)
        if token is None:
            return None
        for connection in self.server.fast_connections:
            if connection.token is token:
                return connection.transport
        return self.server.poll_transports.get(token)

    # --- asked by the server ----------------------------------------------------------------

    def is_stalled(self) -> bool:
        until = self.stalled_until
        if until is None:
            return False
        if time.monotonic() >= until:
            self.stalled_until = None
            return False
        return True

    def poll_status(self, body: bytes) -> int:
        """An HTTP status to answer this long-poll with instead (0: handle it)."""
        if not self.failing:
            return 0
        client_id = _client_of(body)
        status, left = self.failing.get(client_id or "", (0, 0))
        if not status:
            return 0
        if left <= 1:
            del self.failing[client_id or ""]
        else:
            self.failing[client_id or ""] = (status, left - 1)
        return status

    def slow_for(self, messages: list[Any], client_id: str | None = None) -> float | None:
        if not self.slow:
            return None
        if client_id is None:
            client_id = _client_in(messages)
        return self.slow.get(client_id or "")

    def dribble(
        self, transport: asyncio.BaseTransport, data: bytes, over: float, then: Any = None
    ) -> None:
        found = self._dribbles.get(transport)
        if found is None or found.transport.is_closing():
            # Entries of transports done with are dropped as new ones come (bounded by the
            # connections open, plus those closed since the last sweep).
            self._dribbles = {k: v for k, v in self._dribbles.items() if v.busy}
            found = self._dribbles[transport] = Dribble(transport)
        found.write(data, over, then)

    def flush(self, transport: asyncio.BaseTransport) -> None:
        found = self._dribbles.pop(transport, None)
        if found is not None:
            found.flush()

    def flush_all(self) -> None:
        """Before the server closes its sockets: every frame whole first."""
        for transport in list(self._dribbles):
            self.flush(transport)

    def dribble_frame(self, transport: asyncio.BaseTransport, data: bytes, over: float) -> None:
        """One WebSocket text frame, dribbled (the socket was opened without compression)."""
        self.dribble(transport, Frame(Opcode.TEXT, data).serialize(mask=False), over)

    def forget(self, client_id: str) -> None:
        self.failing.pop(client_id, None)
        self.slow.pop(client_id, None)


def reset(transport: Any) -> None:
    """Abort with SO_LINGER 0: the peer sees a TCP RST, not a FIN."""
    sock = transport.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    transport.abort()


def _client_of(body: bytes) -> str | None:
    try:
        batch = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
    return _client_in(batch if isinstance(batch, list) else [batch])


def _client_in(messages: list[Any]) -> str | None:
    for message in messages:
        if isinstance(message, dict) and isinstance(message.get("clientId"), str):
            return str(message["clientId"])
    return None
