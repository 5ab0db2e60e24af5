"""Session faults in the sans-I/O Bayeux server: the server forgetting a client (unknown-client),
disconnecting it (a server-side /meta/disconnect), sitting on its connect (hold-connect), and
pushing advice; plus handing transport faults, when due, to the HTTP/WebSocket server.

BayeuxServer (replay/protocol.py) inherits this; the FaultInjector (replay/fault_core.py) says
when each fault is due.
"""

from __future__ import annotations

from collections.abc import Hashable
from typing import Any

from replay import session as wire
from replay.events import (
    ClientDisconnected,
    ClientExpired,
    FaultInjected,
    HeldConnect,
    Outbound,
    TransportFaultDue,
    Wire,
)
from replay.fault_core import FaultInjector
from replay.faults import Fault
from replay.session import Session
from replay.session_table import SessionTable
from tape.bayeux import Message

TOMBSTONES = 1_000  # ended sessions whose last word waits for the client's next message


class SessionFaults(SessionTable):
    """The fault side of the session table. `faults` is None when no fault is configured."""

    def __init__(
        self, *, max_queue: int, max_interval_ms: int, faults: FaultInjector | None = None
    ) -> None:
        super().__init__(max_queue=max_queue, max_interval_ms=max_interval_ms)
        self.faults = faults if faults is not None and faults.active else None
        self._advise: dict[str, dict[str, Any]] = {}  # advice for a client's next connect reply
        self._out: list[Outbound] = []  # pushes a fault sends outside any held connect
        # Sessions a fault ended while no connect was held -> (when, advice, messages) for the
        # client's next message (bounded: TOMBSTONES, maxInterval).
        self._tombstones: dict[str, tuple[float, dict[str, Any], list[Wire]]] = {}
        self._unknown_client = "402::Unknown client"
        self._timeout_ms = 30_000

    def _end(self, found: Session, event: ClientDisconnected | ClientExpired) -> None:
        raise NotImplementedError

    def held_connection(self, client_id: str) -> Hashable | None:
        """The connection a live client's connect is held on, if any."""
        found = self._sessions.get(client_id)
        return None if found is None or found.held is None else found.held.info.connection

    # --- the protocol's hooks ---------------------------------------------------------------

    def _fault_handshake(self, client_id: str, now: float) -> None:
        if self.faults is not None:
            self.faults.on_handshake(client_id, now)

    def _fault_end(self, client_id: str) -> None:
        if self.faults is not None:
            self.faults.forget(client_id)
            self._frozen.pop(client_id, None)
            self._advise.pop(client_id, None)

    def _fault_connect(self, found: Session, reply: Wire, deadline: float) -> float:
        """A connect is about to be held: the advice a fault left for it, and its deadline
        (a hold-connect fault's for=, if it gave one)."""
        advice = self._advise.pop(found.client_id, None)
        if advice is not None:
            reply["advice"] = advice
        if found.client_id in self._frozen:
            until = self._frozen[found.client_id]
            return deadline if until is None else until  # for=: held that long, no longer
        return deadline

    def _fault_frozen(self, found: Session) -> bool:
        """Whether deliveries must not complete the client's held connect."""
        return found.client_id in self._frozen

    def _fault_unfreeze(self, found: Session) -> None:
        self._frozen.pop(found.client_id, None)

    def _fault_wakeup(self) -> float | None:
        return None if self.faults is None else self.faults.next_wakeup()

    def _fault_tick(self, now: float) -> None:
        faults = self.faults
        if faults is None:
            return
        for client_id, messages in faults.released(now).items():
            found = self._sessions.get(client_id)
            if found is not None and messages:
                self._queue(found, messages, now)
        for client_id, fault in faults.timed_due(now):
            found = self._sessions.get(client_id)
            if found is None:
                continue
            if fault.layer == "transport":
                self._events.append(TransportFaultDue(client_id, fault))
            else:
                self._inject(found, fault, now)

    # --- session faults ---------------------------------------------------------------------

    def _inject(self, found: Session, fault: Fault, now: float) -> None:
        kind = fault.kind
        if kind == "unknown-client":
            self._forget_client(found, now)
        elif kind == "disconnect":
            self._disconnect_client(found, now)
        elif kind == "hold-connect":
            self._hold_connect(found, fault, now)
        else:
            self._push_advice(found, fault, now)

    def _log(self, now: float, kind: str, found: Session, target: str, detail: str) -> None:
        assert self.faults is not None
        self.faults.record(now, kind, found.client_id, target, detail)

    def _forget_client(self, found: Session, now: float) -> None:
        """The server loses the session (a node restart, an expiry): the held connect, if any,
        is answered with the unknown-client error and advice to handshake again."""
        held = found.held
        how = "its next message will be answered"
        if held is not None:
            kept = {k: held.reply[k] for k in ("channel", "id") if k in held.reply}
            advice = {"reconnect": "handshake", "interval": 0}
            held.reply = kept | {"successful": False, "error": self._unknown_client}
            held.reply["advice"] = advice
            self._complete(found, now, with_queue=False)
            how = "the held connect answered"
        self._log(now, "unknown-client", found, "connect", f"{how} {self._unknown_client}")
        self._gone(found, "unknown-client", ClientExpired(found.client_id))

    def _disconnect_client(self, found: Session, now: float) -> None:
        """A server-side disconnect, as CometD's ServerSession.disconnect(): a /meta/disconnect
        message to the client, and the held connect answered with reconnect none."""
        message = {"channel": "/meta/disconnect", "successful": True, "clientId": found.client_id}
        held = found.held
        if held is not None:
            held.reply["advice"] = {"reconnect": "none"}
            held.pending.append(message)
            self._complete(found, now, with_queue=False)
        elif found.push is not None:
            self._out.append(Outbound(found.push, found.client_id, [message]))
        else:  # long-polling between polls: its next message gets it
            self._bury(found.client_id, now, {"reconnect": "none"}, [message])
        self._log(now, "disconnect", found, "connect", "/meta/disconnect sent, advice none")
        self._gone(found, "disconnect", ClientDisconnected(found.client_id))

    def _hold_connect(self, found: Session, fault: Fault, now: float) -> None:
        until = None if fault.duration is None else now + fault.duration
        self._frozen[found.client_id] = until
        held = found.held
        if held is not None and until is not None:  # for= shortens its timeout or lengthens it
            info = held.info
            held.info = HeldConnect(info.client_id, info.connection, until)
            self._reschedule(found)
        span = "its timeout" if until is None else f"{fault.duration:g} s"
        what = "the held connect" if held is not None else "the next connect"
        self._log(now, "hold-connect", found, "connect", f"{what} held for {span}")

    def _push_advice(self, found: Session, fault: Fault, now: float) -> None:
        advice: dict[str, Any] = {"reconnect": fault.reconnect, "interval": fault.interval}
        if fault.reconnect == "retry":
            advice["timeout"] = self._timeout_ms
        held = found.held
        if held is not None:
            held.reply["advice"] = advice
            if fault.reconnect == "handshake":
                # As CometD's server advises it: on an unsuccessful reply (402). CometD's client
                # (Client.js #connectResponse) throws on handshake advice in a successful one.
                held.reply["successful"] = False
                held.reply["error"] = self._unknown_client
            self._complete(found, now, with_queue=True)
        elif fault.reconnect != "retry":  # the session ends: its next message gets the advice
            self._bury(found.client_id, now, advice, [])
        else:
            self._advise[found.client_id] = advice
        where = "on the held connect" if held is not None else "on the next connect"
        self._log(now, "advice", found, "connect", f"{advice} {where}")
        if fault.reconnect != "retry":  # the server has let the session go
            self._gone(found, "advice", ClientExpired(found.client_id))

    def _bury(self, client_id: str, now: float, advice: dict[str, Any], extra: list[Wire]) -> None:
        """What a session a fault ended still has to tell its client, who has no connect held:
        kept for its next message, for maxInterval at most, and for TOMBSTONES clients."""
        self._tombstones[client_id] = (now, advice, extra)
        if len(self._tombstones) > TOMBSTONES:
            del self._tombstones[next(iter(self._tombstones))]

    def unknown_reply(self, message: Message, now: float) -> list[Wire]:
        """The answer to a message from an unknown client: the unknown-client error with advice
        to handshake, or what a fault that ended its session left for it."""
        left = self._tombstones.pop(message.client_id or "", None)
        if left is None or now - left[0] > self._max_interval:
            return [wire.unknown_client(message, self._unknown_client)]
        advice = {"interval": 0} | left[1]
        reply = wire.answer(message, successful=False, error=self._unknown_client, advice=advice)
        return [*left[2], reply]

    def _gone(self, found: Session, kind: str, event: ClientDisconnected | ClientExpired) -> None:
        self._events.append(FaultInjected(found.client_id, kind, ends_session=True))
        self._end(found, event)

    def _take_fault_pushes(self) -> list[Outbound]:
        out, self._out = self._out, []
        return out
