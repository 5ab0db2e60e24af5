"""Injected faults without sockets: the spec grammar, the message faults of the fault core, and
the session faults of the sans-I/O Bayeux server, driven by hand-built batches and `now`."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from replay.events import FaultInjected, TransportFaultDue
from replay.fault_core import FaultInjector
from replay.faults import FaultError, parse_fault, parse_faults
from replay.protocol import BayeuxServer
from tests.replay.test_protocol import LP, WS, Client, subscribe


def messages(count: int, channel: str = "/foo") -> list[dict[str, Any]]:
    return [{"channel": channel, "data": {"n": n}} for n in range(count)]


def through(specs: list[str], count: int, *, seed: int = 0, now: float = 0.0) -> list[int]:
    """The `n` of what one client is sent of `count` deliveries, one call each."""
    injector = FaultInjector(parse_faults(specs), seed=seed, clock=0.0)
    injector.on_handshake("c", 0.0)
    out = []
    for message in messages(count):
        out += injector.deliver("c", [message], now)[0]
    return [m["data"]["n"] for m in out]


# --- the grammar -----------------------------------------------------------------------------


def test_specs_read_as_documented() -> None:
    assert parse_fault("drop:10%").fraction == pytest.approx(0.1)
    fault = parse_fault("drop:nth=3,channel=/v2/me/outbound")
    assert (fault.nth, fault.channel) == (3, "/v2/me/outbound")
    delay = parse_fault("delay:100ms-2s").delay
    assert delay is not None
    assert (delay.low, delay.high) == (0.1, 2.0)
    assert parse_fault("unknown-client:at=5s").at == 5.0
    close = parse_fault("close:code=4000,after=20")
    assert (close.code, close.after, close.layer) == (4000, 20, "transport")
    assert parse_fault("http-503:at=2s,count=3").count == 3
    assert parse_fault("advice:handshake,at=1s").reconnect == "handshake"
    assert parse_fault("corrupt").nth == 1


@pytest.mark.parametrize(
    ("spec", "says"),
    [
        ("explode", "unknown fault 'explode'"),
        ("drop", "drop needs a fraction"),
        ("drop:150%", "not between 0 and 100%"),
        ("delay", "delay needs a time"),
        ("delay:2s-1s", "runs from the smaller"),
        ("unknown-client", "needs at=TIME or after=N"),
        ("close:code=999,at=1s", "1000"),
        ("close:code=1005,at=1s", "cannot be sent"),
        ("slow", "slow needs over=TIME"),
        ("advice:reconnect=later,at=1s", "retry, handshake, none"),
        ("drop:nth=0", "at least 1"),
        ("drop:10%,colour=red", "unknown setting 'colour'"),
        ("delay:soon", "not a duration"),
    ],
)
def test_a_bad_spec_says_what_to_write(spec: str, says: str) -> None:
    with pytest.raises(FaultError, match=None) as caught:
        parse_fault(spec)
    assert says in str(caught.value)


# --- message faults --------------------------------------------------------------------------


def test_drop_nth_on_a_channel_takes_exactly_that_one() -> None:
    injector = FaultInjector([parse_fault("drop:nth=2,channel=/b")], clock=0.0)
    injector.on_handshake("c", 0.0)
    sent = []
    for message in [*messages(2, "/a"), *messages(3, "/b")]:
        sent += injector.deliver("c", [message], 1.0)[0]
    assert [(m["channel"], m["data"]["n"]) for m in sent] == [
        ("/a", 0),
        ("/a", 1),
        ("/b", 0),
        ("/b", 2),
    ]
    (logged,) = injector.log
    assert (logged.kind, logged.client_id, logged.target, logged.time) == ("drop", "c", "/b", 1.0)


@given(seed=st.integers(0, 2**32), fraction=st.sampled_from(["10%", "50%", "90%"]))
@settings(max_examples=25, deadline=None)
def test_a_fraction_is_the_same_for_the_same_seed(seed: int, fraction: str) -> None:
    first = through([f"drop:{fraction}"], 200, seed=seed)
    assert first == through([f"drop:{fraction}"], 200, seed=seed)
    assert first == sorted(first)
    assert len(set(first)) == len(first)


def test_a_fraction_drops_about_that_fraction() -> None:
    kept = through(["drop:25%"], 4000, seed=7)
    assert 2800 < len(kept) < 3200


def test_duplicate_and_corrupt() -> None:
    assert through(["duplicate:nth=3"], 5) == [0, 1, 2, 2, 3, 4]
    injector = FaultInjector([parse_fault("corrupt:nth=2")], clock=0.0)
    injector.on_handshake("c", 0.0)
    out = [injector.deliver("c", [m], 0.0)[0] for m in messages(3)]
    with pytest.raises(orjson.JSONDecodeError):
        orjson.loads(orjson.dumps(out[1]))
    assert orjson.loads(orjson.dumps(out[2])) == [messages(3)[2]]


def test_delay_holds_a_delivery_until_it_is_due() -> None:
    injector = FaultInjector([parse_fault("delay:nth=1,500ms")], clock=0.0)
    injector.on_handshake("c", 0.0)
    assert injector.deliver("c", messages(2), 1.0)[0] == [messages(2)[1]]
    assert injector.next_wakeup() == pytest.approx(1.5)
    assert injector.released(1.4) == {}
    assert injector.released(1.5) == {"c": [messages(1)[0]]}
    assert injector.sizes()["fault_delayed"] == 0


def test_reorder_shuffles_a_window_and_keeps_every_message() -> None:
    sent = through(["reorder:window=4"], 8, seed=3)
    assert sorted(sent) == list(range(8))
    assert sent[:4] != [0, 1, 2, 3]
    assert sent[4:] != [4, 5, 6, 7]
    assert set(sent[:4]) == {0, 1, 2, 3}


def test_an_unfilled_reorder_window_goes_after_its_hold() -> None:
    injector = FaultInjector([parse_fault("reorder:window=5")], clock=0.0)
    injector.on_handshake("c", 0.0)
    assert injector.deliver("c", messages(2), 0.0)[0] == []
    released = injector.released(1.0)["c"]
    assert sorted(m["data"]["n"] for m in released) == [0, 1]


def test_a_session_that_ends_frees_what_was_held_for_it() -> None:
    injector = FaultInjector(parse_faults(["delay:10s", "unknown-client:at=60s"]), clock=0.0)
    injector.on_handshake("c", 0.0)
    injector.deliver("c", messages(100), 0.0)
    assert injector.sizes() == {"fault_clients": 1, "fault_delayed": 100, "fault_timers": 1}
    injector.forget("c")
    assert injector.sizes() == {"fault_clients": 0, "fault_delayed": 0, "fault_timers": 0}


# --- session faults in the Bayeux server -----------------------------------------------------


def server(*specs: str, **options: Any) -> BayeuxServer:
    return BayeuxServer(faults=FaultInjector(parse_faults(list(specs)), clock=0.0), **options)


def held_client(bayeux: BayeuxServer, transport: Any = LP) -> tuple[Client, str]:
    client = Client(bayeux, transport)
    client.connected(0.0)
    subscribe(client, 0.0, "/foo")
    reply = client.connect(
        0.1,
    )
    assert reply.held
    return client, "poll-2" if transport == LP else "ws"


def answers(bayeux: BayeuxServer) -> list[dict[str, Any]]:
    return [m for out in bayeux.data_to_send() for m in out.messages]


def test_unknown_client_answers_the_held_connect_with_the_configured_error() -> None:
    bayeux = server("unknown-client:at=1s", unknown_client_error="401::session_unknown")
    client, _ = held_client(bayeux)
    bayeux.tick(0.5)
    assert answers(bayeux) == []
    assert bayeux.next_wakeup() == pytest.approx(1.0)
    bayeux.tick(1.0)
    (answer,) = answers(bayeux)
    assert answer["channel"] == "/meta/connect"
    assert answer["successful"] is False
    assert answer["error"] == "401::session_unknown"
    assert answer["advice"] == {"reconnect": "handshake", "interval": 0}
    assert not bayeux.has_client(client.client_id)
    assert FaultInjected(client.client_id, "unknown-client", True) in bayeux.events_received()
    (reply,) = client.connect(1.1).messages  # its next message: the same error
    assert reply["error"] == "401::session_unknown"
    assert bayeux.faults is not None
    assert [f.kind for f in bayeux.faults.log] == ["unknown-client"]


def test_unknown_client_after_n_deliveries_fires_right_after_the_nth() -> None:
    bayeux = server("unknown-client:after=3")
    client, _ = held_client(bayeux, WS)
    for n in range(2):
        bayeux.publish("/foo", n, 0.2)
    assert bayeux.has_client(client.client_id)
    bayeux.publish("/foo", 2, 0.3)
    assert not bayeux.has_client(client.client_id)  # at once, not at the next tick


def test_a_batch_is_cut_at_the_delivery_that_makes_a_fault_due() -> None:
    injector = FaultInjector([parse_fault("close:after=3")], clock=0.0)
    injector.on_handshake("c", 0.0)
    sent, rest = injector.deliver("c", messages(10), 0.0)
    assert [m["data"]["n"] for m in sent] == [0, 1, 2]
    assert [m["data"]["n"] for m in rest] == list(range(3, 10))
    assert injector.due_now
    assert [f.kind for _c, f in injector.timed_due(0.0)] == ["close"]
    assert injector.deliver("c", rest, 0.0) == (rest, [])  # fired: the rest goes through


def test_after_zero_fires_at_the_handshake() -> None:
    bayeux = server("unknown-client:after=0")
    client, _ = held_client(bayeux, WS)
    bayeux.tick(0.2)
    assert not bayeux.has_client(client.client_id)


def test_two_equal_specs_are_two_faults() -> None:
    bayeux = server("close:at=1s", "close:at=1s")
    for _ in range(2):
        Client(bayeux, WS).handshake(0.0)
    bayeux.events_received()
    bayeux.tick(1.0)
    assert len([e for e in bayeux.events_received() if isinstance(e, TransportFaultDue)]) == 2


@pytest.mark.parametrize(
    ("spec", "advice"),
    [
        ("advice:none,at=1s", {"reconnect": "none", "interval": 0}),
        ("advice:handshake,interval=700,at=1s", {"reconnect": "handshake", "interval": 700}),
        ("disconnect:at=1s", {"reconnect": "none", "interval": 0}),
    ],
)
def test_what_a_fault_says_reaches_a_client_between_polls(spec: str, advice: Any) -> None:
    bayeux = server(spec)
    client = Client(bayeux, LP)
    client.connected(0.0)  # its first connect answered; its next not sent yet
    bayeux.tick(1.0)
    assert not bayeux.has_client(client.client_id)
    replies = client.connect(1.05).messages
    assert replies[-1]["advice"] == advice
    assert replies[-1]["successful"] is False
    if spec.startswith("disconnect"):
        assert replies[0] == {
            "channel": "/meta/disconnect",
            "successful": True,
            "clientId": client.client_id,
        }
    assert client.connect(1.1).messages[-1]["advice"]["reconnect"] == "handshake"  # once only


def test_a_corrupted_delivery_survives_other_faults_and_an_unsubscribe() -> None:
    bayeux = server("corrupt:nth=1", "duplicate:nth=1", "delay:nth=2,1s", "reorder:window=2")
    client = Client(bayeux, LP)
    client.connected(0.0)
    subscribe(client, 0.0, ["/foo", "/bar"])
    for n in range(4):
        bayeux.publish("/foo", n, 0.1)
    client.send(0.2, {"channel": "/meta/unsubscribe", "subscription": "/bar"})
    bayeux.tick(2.0)
    with pytest.raises(orjson.JSONDecodeError):
        orjson.loads(orjson.dumps(client.connect(2.1).messages))
    assert bayeux.faults is not None
    assert [f.kind for f in bayeux.faults.log][:2] == ["corrupt", "duplicate"]  # spec order


def test_disconnect_sends_meta_disconnect_and_reconnect_none() -> None:
    bayeux = server("disconnect:at=1s")
    client, _ = held_client(bayeux)
    bayeux.tick(1.0)
    sent = answers(bayeux)
    assert {"channel": "/meta/disconnect", "successful": True, "clientId": client.client_id} in sent
    connect = next(m for m in sent if m["channel"] == "/meta/connect")
    assert connect["advice"] == {"reconnect": "none"}
    assert not bayeux.has_client(client.client_id)


def test_hold_connect_keeps_deliveries_back_until_the_timeout() -> None:
    bayeux = server("hold-connect:at=1s")
    client, _ = held_client(bayeux)  # held until 0.1 + 30 s
    bayeux.tick(1.0)
    bayeux.publish("/foo", "late", 2.0)
    assert answers(bayeux) == []
    bayeux.tick(30.1)
    sent = answers(bayeux)
    assert [m.get("data") for m in sent if m["channel"] == "/foo"] == ["late"]
    reply = client.connect(30.2)  # the next connect is served as usual again
    assert reply.held
    bayeux.publish("/foo", "on time", 30.3)
    assert [m.get("data") for m in answers(bayeux) if m["channel"] == "/foo"] == ["on time"]


def test_advice_goes_out_on_the_held_connect() -> None:
    bayeux = server("advice:retry,interval=2500,at=1s")
    client, _ = held_client(bayeux)
    bayeux.tick(1.0)
    (connect,) = answers(bayeux)
    assert connect["advice"] == {"reconnect": "retry", "interval": 2500, "timeout": 30000}
    assert bayeux.has_client(client.client_id)


def test_a_transport_fault_is_handed_to_the_server_once() -> None:
    bayeux = server("close:at=1s,code=4000")
    _client, _ = held_client(bayeux, WS)
    other = Client(bayeux, WS)
    other.handshake(0.0)
    bayeux.events_received()
    bayeux.tick(1.0)
    due = [e for e in bayeux.events_received() if isinstance(e, TransportFaultDue)]
    assert len(due) == 1
    assert due[0].fault.code == 4000
