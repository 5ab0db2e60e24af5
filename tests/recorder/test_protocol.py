"""The sans-I/O Bayeux client, driven by hand-built server replies: no sockets, no loop."""

from __future__ import annotations

import itertools
from collections import Counter
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from recorder.backoff import backoff
from recorder.protocol import (
    CONNECT_GRACE_S,
    BayeuxClient,
    ConnectionLost,
    HandshakeFailed,
    HandshakeSucceeded,
    MessagesDelivered,
    Outgoing,
    Rehandshaking,
    ReplyUnmatched,
    State,
    Stopped,
    Subscribed,
    SubscribeFailed,
    Unsubscribed,
)
from recorder.replay_ext import ReplayExtension, parse_replay_from
from tape.bayeux import LazyDelivery, Message, decode_frame, decode_frame_lazily

CHANNELS = ["/v2/me/outbound", "/me/internal"]


def reply(request: dict[str, Any], successful: bool = True, **fields: Any) -> Message:
    """The server's answer to one request we sent."""
    wire = {"channel": request["channel"], "id": request["id"], "successful": successful}
    if "subscription" in request:
        wire["subscription"] = request["subscription"]
    return Message.from_wire(wire | fields)


def event(channel: str, data: Any, id: str = "x1") -> Message:
    return Message.from_wire({"channel": channel, "data": data, "id": id})


def sent(client: BayeuxClient, kind: str | None = None) -> list[dict[str, Any]]:
    """Every wire message sent since the last call, optionally of one kind only."""
    return [m for out in client.data_to_send() if kind in (None, out.kind) for m in out.messages]


def started(channels: list[str] | None = None, **options: Any) -> BayeuxClient:
    client = BayeuxClient(CHANNELS if channels is None else channels, **options)
    client.start(0.0)
    return client


def handshaken(
    client: BayeuxClient, now: float = 0.0, client_id: str = "c1", **advice: Any
) -> list[Outgoing]:
    """Answer the outstanding handshake; returns what the client sent in response."""
    (hs,) = sent(client, "handshake")
    fields: dict[str, Any] = {"clientId": client_id}
    if advice:
        fields["advice"] = advice
    client.receive([reply(hs, **fields)], now)
    return client.data_to_send()


def connected(**options: Any) -> tuple[BayeuxClient, dict[str, Any]]:
    """A client past its handshake and subscriptions; returns it and its outstanding connect."""
    client = started(**options)
    batches = handshaken(client)
    subs = [m for out in batches if out.kind == "subscribe" for m in out.messages]
    client.receive([reply(m) for m in subs], 0.0)
    (connect,) = [m for out in batches if out.kind == "connect" for m in out.messages]
    client.events_received()
    return client, connect


# --- handshake and connect -----------------------------------------------------------------


def test_handshake_carries_version_and_connection_types() -> None:
    client = BayeuxClient(CHANNELS, supported_connection_types=["long-polling"])
    client.start(0.0)
    (out,) = client.data_to_send()
    assert out.kind == "handshake"
    (hs,) = out.messages
    assert hs["channel"] == "/meta/handshake"
    assert hs["version"] == "1.0"
    assert hs["minimumVersion"] == "1.0"
    assert hs["supportedConnectionTypes"] == ["long-polling"]
    assert isinstance(hs["id"], str)
    assert client.state is State.HANDSHAKING


def test_handshake_success_subscribes_all_in_one_batch_then_connects_with_timeout_0() -> None:
    client = started()
    batches = handshaken(client, reconnect="retry", interval=0, timeout=60000)
    assert [out.kind for out in batches] == ["subscribe", "connect"]
    subs, connects = batches[0].messages, batches[1].messages
    assert [m["subscription"] for m in subs] == CHANNELS
    assert all(m["clientId"] == "c1" for m in subs)
    assert connects[0]["advice"] == {"timeout": 0}
    assert connects[0]["connectionType"] == "long-polling"
    (ev,) = client.events_received()
    assert isinstance(ev, HandshakeSucceeded)
    assert ev.client_id == "c1"
    assert ev.advice.timeout == 60000


def test_later_connects_carry_no_advice() -> None:
    client, connect = connected()
    client.receive([reply(connect)], 1.0)
    (later,) = sent(client, "connect")
    assert "advice" not in later
    assert later["id"] != connect["id"]


def test_message_ids_are_distinct_strings() -> None:
    client, connect = connected()
    client.receive([reply(connect)], 1.0)
    ids = ["0", connect["id"]] + [m["id"] for m in sent(client)]
    assert all(isinstance(i, str) for i in ids)
    assert len(set(ids)) == len(ids)


def test_a_connect_with_no_reply_counts_as_lost_after_timeout_plus_grace() -> None:
    """A live socket behind which the server stopped answering: the connect is given up after
    the advised timeout plus the grace, reported as a timed-out loss, and sent again."""
    client = started(connect_grace_s=5.0)
    batches = handshaken(client, 0.0, timeout=2000)
    subs = [m for out in batches if out.kind == "subscribe" for m in out.messages]
    (connect,) = [m for out in batches if out.kind == "connect" for m in out.messages]
    client.receive([reply(m) for m in subs], 0.0)
    client.receive([reply(connect)], 0.1)  # the first connect (timeout 0) is answered
    (held,) = sent(client, "connect")
    client.events_received()
    assert client.next_wakeup() == pytest.approx(0.1 + 2.0 + 5.0)
    client.tick(7.0)
    assert client.events_received() == []
    client.tick(7.2)
    (lost,) = client.events_received()
    assert isinstance(lost, ConnectionLost)
    assert lost.timed_out
    assert lost.reason == "no /meta/connect reply within 7.1 s"  # sent at 0.1, given up at 7.2
    assert sent(client, "connect") == []  # the transport gets a moment to drop the socket
    assert client.next_wakeup() == pytest.approx(7.25)
    client.tick(7.25)
    (again,) = sent(client, "connect")
    assert again["id"] != held["id"]
    client.receive([reply(held)], 8.0)  # the old one, late: not taken for the new one
    assert [type(e).__name__ for e in client.events_received()] == ["ReplyUnmatched"]
    assert client.next_wakeup() is not None  # the new connect is still guarded


def test_never_two_connects_outstanding() -> None:
    client, _ = connected()
    client.subscribe(["/extra"], 0.0)
    client.tick(10.0)  # long before the connect could count as lost
    batches = client.data_to_send()
    assert [o.kind for o in batches] == ["subscribe"]


def test_a_new_session_connects_at_once_while_the_old_sessions_connect_is_held() -> None:
    """One outstanding connect per *client*: a re-handshake while the old client's connect is
    held gets the new client connected at once. Waiting for the old one (up to its timeout +
    grace) would outlast a CometD server's maxInterval (10 s), which drops a session that has
    not connected by then."""
    client, connect = connected()
    client.subscribe(["/extra"], 0.0)
    (sub,) = client.data_to_send()[0].messages
    client.receive([reply(sub, successful=False, error="402::Unknown client")], 1.0)
    batches = handshaken(client, now=1.5, client_id="c2")
    assert [o.kind for o in batches] == ["subscribe", "connect"]
    (first,) = batches[1].messages
    assert first["advice"] == {"timeout": 0}
    assert (connect["clientId"], first["clientId"]) == ("c1", "c2")
    # The old connect comes back late: ignored, and the new one is still the one out.
    client.receive([reply(connect, successful=False, error="402::Unknown client")], 20.0)
    assert client.data_to_send() == []
    assert client.state is State.CONNECTED
    client.receive([reply(first)], 21.0)
    (again,) = sent(client, "connect")
    assert again["clientId"] == "c2"
    assert "advice" not in again


def test_a_late_failure_of_the_old_sessions_connect_takes_nothing_down() -> None:
    """Long-polling: the old session's held connect is an HTTP request of its own; when it
    times out or fails after the re-handshake, the new session's connect stays the only one."""
    client, connect = connected()
    client.subscribe(["/extra"], 0.0)
    (sub,) = client.data_to_send()[0].messages
    client.receive([reply(sub, successful=False, error="402::Unknown client")], 1.0)
    batches = handshaken(client, now=1.5, client_id="c2")
    (first,) = batches[1].messages
    client.events_received()
    client.request_failed(10.0, "connect request failed: timed out", ids=[connect["id"]])
    client.tick(10.1)
    assert client.events_received() == []
    assert client.data_to_send() == []
    # The current connect failing is an outage as before.
    client.request_failed(11.0, "connect answered HTTP 500", ids=[first["id"]])
    assert [type(e) for e in client.events_received()] == [ConnectionLost]
    client.tick(60.0)
    (retry,) = sent(client, "connect")
    assert retry["clientId"] == "c2"


def test_interval_is_waited_before_the_next_connect() -> None:
    client, connect = connected()
    client.receive([reply(connect, advice={"reconnect": "retry", "interval": 2500})], 10.0)
    assert sent(client, "connect") == []
    assert client.next_wakeup() == pytest.approx(12.5)
    client.tick(12.0)
    assert sent(client, "connect") == []
    client.tick(12.5)
    assert len(sent(client, "connect")) == 1
    assert client.next_wakeup() == pytest.approx(12.5 + CONNECT_GRACE_S)  # its reply deadline


# --- re-handshake and stopping -------------------------------------------------------------

UNKNOWN_CLIENT_FORMS = [
    "401:c1:Unknown client",  # Faye
    "402::Unknown client",  # CometD 3
    "402::session_unknown",  # CometD >= 4.0.4
    "403::Unknown client",  # Salesforce
]


@pytest.mark.parametrize("error", UNKNOWN_CLIENT_FORMS)
def test_unknown_client_on_connect_rehandshakes_and_resubscribes(error: str) -> None:
    client, connect = connected()
    client.receive([reply(connect, successful=False, error=error)], 1.0)
    (ev,) = client.events_received()
    assert isinstance(ev, Rehandshaking)
    assert error in ev.reason
    assert client.state is State.HANDSHAKING
    batches = handshaken(client)
    assert [o.kind for o in batches] == ["subscribe", "connect"]
    assert [m["subscription"] for m in batches[0].messages] == CHANNELS
    assert batches[1].messages[0]["advice"] == {"timeout": 0}


@pytest.mark.parametrize("error", UNKNOWN_CLIENT_FORMS)
def test_unknown_client_on_subscribe_rehandshakes(error: str) -> None:
    client = started()
    batches = handshaken(client)
    client.events_received()
    client.receive([reply(batches[0].messages[0], successful=False, error=error)], 1.0)
    assert [type(e) for e in client.events_received()] == [Rehandshaking]
    assert len(sent(client, "handshake")) == 1


def test_other_errors_do_not_rehandshake() -> None:
    client = started()
    batches = handshaken(client)
    client.events_received()
    denied = "403:c1,/v2/me/outbound:Subscription denied"
    client.receive([reply(batches[0].messages[0], successful=False, error=denied)], 1.0)
    assert client.events_received() == [SubscribeFailed("/v2/me/outbound", denied)]
    assert sent(client) == []
    assert client.subscriptions == ("/me/internal",)


def test_handshake_advice_rehandshakes_even_when_successful() -> None:
    client, connect = connected()
    client.receive([reply(connect, advice={"reconnect": "handshake"})], 1.0)
    assert [type(e) for e in client.events_received()] == [Rehandshaking]
    assert len(sent(client, "handshake")) == 1


def test_reconnect_none_stops_with_reason() -> None:
    client, connect = connected()
    bye = reply(connect, successful=False, error="403::Forbidden", advice={"reconnect": "none"})
    client.receive([bye], 1.0)
    (ev,) = client.events_received()
    assert isinstance(ev, Stopped)
    assert "reconnect none" in ev.reason
    assert "403::Forbidden" in ev.reason
    assert client.state is State.STOPPED
    client.tick(1000.0)
    client.request_failed(1000.0, "late")
    assert sent(client) == []
    assert client.next_wakeup() is None


def test_refused_handshake_with_reconnect_none_stops() -> None:
    client = started()
    (hs,) = sent(client)
    no = reply(hs, successful=False, error="401::Bad credentials", advice={"reconnect": "none"})
    client.receive([no], 0.0)
    assert client.events_received() == [
        HandshakeFailed("401::Bad credentials"),
        Stopped("handshake refused: 401::Bad credentials (advice reconnect: none)"),
    ]


def test_refused_handshake_backs_off() -> None:
    client = started(backoff_factory=lambda: iter([1.0, 2.0]))
    for now, expected in ((0.0, 1.0), (1.0, 3.0)):
        (hs,) = sent(client)
        client.receive([reply(hs, successful=False, error="500::busy")], now)
        assert client.next_wakeup() == pytest.approx(expected)
        client.tick(expected)
    assert len(sent(client, "handshake")) == 1


# --- failures and backoff ------------------------------------------------------------------


def test_backoff_generator_sequence_and_cap() -> None:
    delays = backoff(initial=0.5, maximum=30.0)
    assert [next(delays) for _ in range(9)] == [0, 0.5, 1, 2, 4, 8, 16, 30, 30]


def test_backoff_jitter_uses_injected_random() -> None:
    delays = backoff(initial=1.0, random=lambda: 0.0)
    assert [next(delays) for _ in range(3)] == [0, 0.5, 1.0]


def retry_wakeup(client: BayeuxClient) -> float | None:
    """next_wakeup() without a (far-off) connect reply deadline."""
    wakeup = client.next_wakeup()
    return None if wakeup is None or wakeup > 1e8 else wakeup


def test_request_failed_backs_off_and_success_resets() -> None:
    client, connect = connected(connect_grace_s=1e9)
    now, seen = 0.0, []
    for _ in range(4):
        client.request_failed(now, "connection refused")
        assert client.events_received() == [ConnectionLost("connection refused")]
        wakeup = retry_wakeup(client)
        seen.append(0.0 if wakeup is None else wakeup - now)
        now = now if wakeup is None else wakeup
        client.tick(now)
        (connect,) = sent(client, "connect")
    assert seen == [0.0, 0.5, 1.0, 2.0]
    assert "advice" not in connect  # not a new session
    client.receive([reply(connect)], now)
    sent(client)
    client.request_failed(now, "reset by peer")
    assert retry_wakeup(client) is None  # backoff starts over at 0: retried at once
    assert len(sent(client, "connect")) == 1


def test_failed_handshake_request_backs_off() -> None:
    client = started()
    sent(client)
    client.request_failed(0.0, "refused")
    assert len(sent(client, "handshake")) == 1
    client.request_failed(1.0, "refused")
    assert sent(client) == []
    assert client.next_wakeup() == pytest.approx(1.5)


def test_parallel_failures_of_one_outage_count_once() -> None:
    client, _ = connected()
    client.request_failed(0.0, "a")  # retried at once (delay 0)
    client.request_failed(0.0, "b")  # the retry failed: waits 0.5
    client.request_failed(0.0, "c")  # nothing outstanding: same outage
    assert len(client.events_received()) == 2
    assert client.next_wakeup() == pytest.approx(0.5)


def test_lost_subscriptions_are_resent_on_retry() -> None:
    client = started()
    handshaken(client)
    client.request_failed(0.0, "socket closed")
    batches = client.data_to_send()
    assert [o.kind for o in batches] == ["subscribe", "connect"]
    assert [m["subscription"] for m in batches[0].messages] == CHANNELS


# --- replies, events, hooks ----------------------------------------------------------------


def test_replies_are_matched_by_id() -> None:
    client, connect = connected()
    stray = Message.from_wire({"channel": "/meta/connect", "id": "999", "successful": True})
    wrong_channel = Message.from_wire({"channel": "/meta/subscribe", "id": connect["id"]})
    client.receive([stray, wrong_channel], 1.0)
    assert client.events_received() == [ReplyUnmatched(stray), ReplyUnmatched(wrong_channel)]
    assert sent(client) == []


def test_events_are_delivered_in_order_even_with_colliding_ids() -> None:
    client, connect = connected()
    events = [event("/v2/me/outbound", i, id=connect["id"]) for i in range(3)]
    client.receive([events[0], reply(connect), events[1], events[2]], 1.0)
    # One event per run of deliveries: the reply between them splits the runs.
    assert client.events_received() == [
        MessagesDelivered((events[0],)),
        MessagesDelivered((events[1], events[2])),
    ]
    assert len(sent(client, "connect")) == 1


def test_a_lazily_decoded_frame_is_handled_as_the_decoded_one() -> None:
    """The recorder decodes with decode_frame_lazily: the same events, deliveries unparsed."""
    outcomes = []
    for decode in (decode_frame, decode_frame_lazily):
        client, connect = connected()
        frame = orjson.dumps(
            [
                {"channel": "/v2/me/outbound", "id": connect["id"], "data": {"n": 1}},
                reply(connect).to_wire(),
                {"channel": "/me/internal", "data": {"n": 2}},
                {"channel": "/me/internal", "id": 7, "data": None},
            ]
        )
        client.receive(decode(frame), 1.0)
        outcomes.append((client.events_received(), sent(client)))
    (eager_events, eager_sent), (lazy_events, lazy_sent) = outcomes
    assert lazy_events == eager_events
    assert lazy_sent == eager_sent
    delivered = [m for e in lazy_events if isinstance(e, MessagesDelivered) for m in e.messages]
    assert [type(m) for m in delivered] == [LazyDelivery] * 3
    assert [(m.channel, m.id, m.data) for m in delivered] == [
        ("/v2/me/outbound", connect["id"], {"n": 1}),
        ("/me/internal", None, {"n": 2}),
        ("/me/internal", "7", None),
    ]


def test_ext_hooks_apply_to_every_message() -> None:
    def stamp(wire: dict[str, Any]) -> dict[str, Any]:
        return wire | {"ext": {"ack": True}}

    def tag(message: Message) -> Message:
        return Message.from_wire(message.to_wire() | {"ext": {"seen": 1}})

    client = started(ext_out=stamp, ext_in=tag)
    batches = handshaken(client)
    assert all(m["ext"] == {"ack": True} for o in batches for m in o.messages)
    client.receive([event("/me/internal", 1)], 1.0)
    delivered = client.events_received()[-1]
    assert isinstance(delivered, MessagesDelivered)
    assert [m.ext for m in delivered.messages] == [{"seen": 1}]


def test_runtime_subscribe_and_unsubscribe_with_wildcards() -> None:
    client, _ = connected(channels=[])
    client.subscribe(["/a/*", "/b/**"], 1.0)
    subs = sent(client, "subscribe")
    assert [m["subscription"] for m in subs] == ["/a/*", "/b/**"]
    client.receive([reply(m) for m in subs], 1.0)
    assert client.events_received() == [Subscribed(("/a/*",)), Subscribed(("/b/**",))]
    client.unsubscribe("/a/*", 2.0)
    (unsub,) = sent(client, "unsubscribe")
    client.receive([reply(unsub)], 2.0)
    assert client.events_received() == [Unsubscribed(("/a/*",))]
    assert client.subscriptions == ("/b/**",)


def test_subscribe_before_handshake_waits_for_it() -> None:
    client = started(channels=[])
    client.subscribe("/late", 0.0)
    (subs, _) = handshaken(client)
    assert [m["subscription"] for m in subs.messages] == ["/late"]


def test_disconnect_sends_and_stops_on_reply() -> None:
    client, connect = connected()
    client.disconnect(1.0)
    (bye,) = sent(client, "disconnect")
    assert bye["clientId"] == "c1"
    client.receive([reply(connect)], 1.0)  # the held connect comes back: not renewed
    assert sent(client) == []
    client.receive([reply(bye)], 1.0)
    assert client.events_received() == [Stopped("disconnected")]


def test_disconnect_that_fails_still_stops() -> None:
    client, _ = connected()
    client.disconnect(1.0)
    client.request_failed(1.0, "refused")
    assert client.events_received() == [Stopped("disconnected")]


def test_disconnect_before_handshake_stops_at_once() -> None:
    client = started()
    client.disconnect(0.0)
    assert client.events_received() == [Stopped("disconnected")]


# --- property: random server behaviour -----------------------------------------------------

_ADVICE = st.one_of(
    st.none(),
    st.fixed_dictionaries(
        {},
        optional={
            "reconnect": st.sampled_from(["retry", "handshake", "none"]),
            "interval": st.integers(0, 5000),
            "timeout": st.integers(0, 60000),
        },
    ),
)
_ERRORS = st.sampled_from([None, *UNKNOWN_CLIENT_FORMS, "500::oops", "garbage"])


_CLIENT_IDS = (f"c{n}" for n in itertools.count())


def _random_reply(data: st.DataObject, request: dict[str, Any]) -> Message:
    ok = data.draw(st.booleans())
    # each successful handshake gives a new client, as servers do
    client_id = next(_CLIENT_IDS) if request["channel"] == "/meta/handshake" else "c9"
    fields: dict[str, Any] = {"clientId": client_id} if ok else {}
    advice, error = data.draw(_ADVICE), data.draw(_ERRORS)
    if advice is not None:
        fields["advice"] = advice
    if error is not None and not ok:
        fields["error"] = error
    return reply(request, successful=ok, **fields)


def _step(
    data: st.DataObject, client: BayeuxClient, pending: list[dict[str, Any]], now: float
) -> None:
    action = data.draw(st.sampled_from(["reply", "fail", "tick", "event", "sub", "unsub", "bye"]))
    if action == "reply" and pending:
        request = pending.pop(data.draw(st.integers(0, len(pending) - 1)))
        client.receive([_random_reply(data, request), event("/x", now)], now)
    elif action == "fail":
        pending.clear()
        client.request_failed(now, "boom")
    elif action == "tick":
        client.tick(now)
    elif action == "event":
        client.receive([event("/x", now)], now)
    elif action in ("sub", "unsub"):
        names = data.draw(st.lists(st.sampled_from(["/a", "/b/*", "/c/**"]), max_size=2))
        (client.subscribe if action == "sub" else client.unsubscribe)(names, now)
    elif action == "bye" and data.draw(st.integers(0, 9)) == 0:
        client.disconnect(now)


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_random_inputs_never_raise_nor_overlap_connects(data: st.DataObject) -> None:
    client = BayeuxClient(["/a"], backoff_factory=lambda: backoff(random=lambda: 0.7))
    client.start(0.0)
    pending: list[dict[str, Any]] = []
    now = 0.0
    for _ in range(data.draw(st.integers(1, 40))):
        pending += [m for out in client.data_to_send() for m in out.messages]
        # Bayeux: one outstanding /meta/connect per client. A re-handshake makes a new client;
        # the old one's connect may still be out (the client gives up on it after its deadline).
        connects = Counter(m["clientId"] for m in pending if m["channel"] == "/meta/connect")
        assert all(n <= 1 for n in connects.values()), connects
        now += data.draw(st.floats(0, 40))
        _step(data, client, pending, now)
        if any(isinstance(e, ConnectionLost) and e.timed_out for e in client.events_received()):
            pending.clear()  # a connect that timed out counts as lost, with all in flight
    assert client.state is not State.IDLE


def test_an_ext_hook_that_raises_still_leaves_earlier_deliveries_delivered() -> None:
    def picky(message: Message) -> Message:
        if message.data == {"bad": True}:
            raise ValueError("cannot read this one")
        return message

    client = started(ext_in=picky)
    handshaken(client)
    good = event("/me/internal", 1)
    bad = Message.from_wire({"channel": "/me/internal", "data": {"bad": True}})
    with pytest.raises(ValueError, match="cannot read"):
        client.receive([good, bad], 1.0)
    assert client.events_received()[-1] == MessagesDelivered((good,))


@pytest.mark.parametrize("interval", [0, 250])
def test_after_an_outage_the_unknown_client_error_rehandshakes_after_the_interval_alone(
    interval: int,
) -> None:
    """A server restart: connects fail while it is down (the backoff grows to 4 s), then it
    answers 402 with advice handshake. As CometD's own client does, the handshake goes out after
    advice.interval, not after the grown backoff (it waited 4-16 s, up to 30 s)."""
    client, connect = connected(connect_grace_s=1e9)
    client.receive([reply(connect)], 0.0)  # connected: a held connect is out
    (held,) = sent(client, "connect")
    now = 0.0
    for _ in range(5):
        client.request_failed(now, "connection refused")
        now = retry_wakeup(client) or now
        client.tick(now)
        (held,) = sent(client, "connect")
    assert now == pytest.approx(0.0 + 0.5 + 1.0 + 2.0 + 4.0)  # it grew
    gone = {"reconnect": "handshake", "interval": interval}
    client.receive([reply(held, successful=False, error="402::session_unknown", advice=gone)], now)
    if interval == 0:
        assert len(sent(client, "handshake")) == 1  # at once
    else:
        assert sent(client, "handshake") == []
        assert retry_wakeup(client) == pytest.approx(now + interval / 1000)
        client.tick(now + interval / 1000)
        assert len(sent(client, "handshake")) == 1


def test_a_session_that_never_connects_backs_off_between_rehandshakes() -> None:
    """A server that answers every new session's first connect with 402: the re-handshakes
    back off instead of looping."""
    client = started(connect_grace_s=1e9)
    now, delays = 0.0, []
    for n in range(4):
        batches = handshaken(client, now, client_id=f"c{n}")
        (connect,) = [m for out in batches if out.kind == "connect" for m in out.messages]
        client.receive([reply(connect, successful=False, error="402::session_unknown")], now)
        wakeup = retry_wakeup(client)
        delays.append(0.0 if wakeup is None else wakeup - now)
        now = now if wakeup is None else wakeup
        client.tick(now)
    assert delays == [0.0, 0.5, 1.0, 2.0]


# --- advice as CometD's Client.js follows it (docs/recording.md compares the two) ------------


def test_a_successful_handshake_with_reconnect_none_stops_without_connecting() -> None:
    client = started()
    (hs,) = sent(client)
    client.receive([reply(hs, clientId="c1", advice={"reconnect": "none"})], 0.0)
    assert client.events_received() == [Stopped("server advised reconnect none on /meta/handshake")]
    assert sent(client) == []  # neither subscribe nor connect
    assert client.state is State.STOPPED
    assert client.next_wakeup() is None


def test_reconnect_none_on_a_successful_connect_stops() -> None:
    client, connect = connected()
    client.receive([reply(connect, advice={"reconnect": "none"})], 1.0)
    assert client.events_received() == [Stopped("server advised reconnect none on /meta/connect")]
    client.tick(100.0)
    assert sent(client) == []


def test_an_unsuccessful_connect_with_retry_waits_the_interval() -> None:
    client, connect = connected(connect_grace_s=1e9)
    client.receive([reply(connect)], 0.0)
    (connect,) = sent(client, "connect")
    retry = {"reconnect": "retry", "interval": 1500}
    client.receive([reply(connect, successful=False, error="500::busy", advice=retry)], 1.0)
    assert client.events_received() == []  # the session goes on: no re-handshake, no stop
    assert sent(client) == []
    assert retry_wakeup(client) == pytest.approx(2.5)  # the interval alone: backoff starts at 0
    client.tick(2.5)
    (again,) = sent(client, "connect")
    assert again["clientId"] == "c1"
    # A server that keeps refusing is not polled in a loop: the backoff adds up, as Client.js
    # (which adds 1 s a time) does.
    client.receive([reply(again, successful=False, error="500::busy")], 3.0)
    assert retry_wakeup(client) == pytest.approx(3.0 + 1.5 + 0.5)


def test_backoff_grows_while_unreachable_and_starts_over_after_the_rehandshake() -> None:
    client, connect = connected(connect_grace_s=1e9)
    client.receive([reply(connect)], 0.0)
    (held,) = sent(client, "connect")
    now = 0.0
    for _ in range(6):  # the server is down: 0, 0.5, 1, 2, 4, 8 s between tries
        client.request_failed(now, "connection refused")
        now = retry_wakeup(client) or now
        client.tick(now)
        (held,) = sent(client, "connect")
    assert now == pytest.approx(15.5)
    gone = {"reconnect": "handshake", "interval": 0}
    client.receive([reply(held, successful=False, error="402::session_unknown", advice=gone)], now)
    batches = handshaken(client, now, client_id="c2")  # at once
    (connect,) = [m for out in batches if out.kind == "connect" for m in out.messages]
    client.events_received()
    # The new session's first failure waits the sequence's first step, not the 16 s it had reached.
    client.request_failed(now, "reset by peer", ids=[connect["id"]])
    assert retry_wakeup(client) == pytest.approx(now + 0.5)


# --- the replay extension (recorder/replay_ext.py) ------------------------------------------


def replaying(start: int = -1, **per_channel: int) -> tuple[BayeuxClient, ReplayExtension]:
    extension = ReplayExtension(start, {f"/{k}": v for k, v in per_channel.items()})
    client = started(ext_out=extension.outgoing, ext_in=extension.incoming)
    return client, extension


def salesforce_event(channel: str, replay_id: int) -> Message:
    data = {"event": {"replayId": replay_id}, "payload": {"n": replay_id}}
    return Message.from_wire({"channel": channel, "data": data, "id": f"e{replay_id}"})


def replay_asked(batches: list[Outgoing]) -> dict[str, int | None]:
    """Per channel subscribed, the replayId its subscribe's ext.replay gave (None: no ext)."""
    asked: dict[str, int | None] = {}
    for out in batches:
        for message in out.messages:
            if out.kind == "subscribe":
                replay = message.get("ext", {}).get("replay", {})
                asked[message["subscription"]] = replay.get(message["subscription"])
    return asked


def test_replay_asks_on_the_handshake_and_resumes_from_the_start_given() -> None:
    client, extension = replaying(-2, v2_me=5)  # per channel: "/v2_me" (not one we subscribe)
    (hs,) = sent(client, "handshake")
    assert hs["ext"] == {"replay": True}
    client.receive([reply(hs, clientId="c1", ext={"replay": True})], 0.0)
    assert extension.supported
    assert replay_asked(client.data_to_send()) == {c: -2 for c in CHANNELS}


def test_a_server_that_does_not_acknowledge_gets_plain_subscribes_and_the_user_is_told() -> None:
    client, extension = replaying()
    batches = handshaken(client)
    assert replay_asked(batches) == {c: None for c in CHANNELS}  # no ext.replay on either
    assert extension.refusal() is not None
    assert extension.refusal() is None  # once


@pytest.mark.parametrize("lazy", [False, True], ids=["parsed", "lazy"])
def test_after_an_unknown_client_error_each_channel_resumes_after_its_last_event(
    lazy: bool,
) -> None:
    client, extension = replaying(-1, **{"me/internal": 40})
    (hs,) = sent(client, "handshake")
    client.receive([reply(hs, clientId="c1", ext={"replay": True})], 0.0)
    batches = client.data_to_send()
    assert replay_asked(batches) == {CHANNELS[0]: -1, CHANNELS[1]: 40}
    (connect,) = [m for out in batches if out.kind == "connect" for m in out.messages]
    events = [salesforce_event(CHANNELS[0], n) for n in (7, 8, 9)]
    wire = orjson.dumps([reply(connect).fields, *(e.fields for e in events)])
    client.receive(decode_frame_lazily(wire) if lazy else decode_frame(wire), 1.0)
    (connect,) = sent(client, "connect")
    gone = {"reconnect": "handshake", "interval": 0}
    client.receive([reply(connect, successful=False, error="402::Unknown client", advice=gone)], 2)
    (hs,) = sent(client, "handshake")
    assert hs["ext"] == {"replay": True}
    client.receive([reply(hs, clientId="c2", ext={"replay": True})], 2.0)
    # The channel with events resumes after the last; the other still from where it started.
    assert replay_asked(client.data_to_send()) == {CHANNELS[0]: 9, CHANNELS[1]: 40}
    assert extension.last == {CHANNELS[0]: 9}


def test_events_without_a_replay_id_leave_the_position_alone() -> None:
    _, extension = replaying(-2)
    for data in ({"event": {"replayId": "3"}}, {"event": 3}, [3], {"event": {"replayId": True}}):
        extension.incoming(Message.from_wire({"channel": "/a", "data": data}))
    assert extension.last == {}
    assert extension.position("/a") == -2


@pytest.mark.parametrize(
    ("values", "parsed"),
    [
        ((), (-1, {})),
        (("-2",), (-2, {})),
        (("15", "/a=3", "/b/c=-1"), (15, {"/a": 3, "/b/c": -1})),
    ],
)
def test_replay_from_values(values: tuple[str, ...], parsed: tuple[int, dict[str, int]]) -> None:
    assert parse_replay_from(values) == parsed


@pytest.mark.parametrize("value", ["x", "-3", "a=1", "/a=", "/a=1.5"])
def test_replay_from_refuses_what_is_not_an_id(value: str) -> None:
    with pytest.raises(ValueError, match=repr(value)):
        parse_replay_from([value])


def test_confirmed_holds_only_the_subscriptions_the_server_acknowledged() -> None:
    client = started()
    subscribe_batch = handshaken(client)[0]
    assert client.subscriptions == tuple(CHANNELS)
    assert client.confirmed == ()
    first = subscribe_batch.messages[0]
    client.receive([reply(first)], 1.0)
    assert client.confirmed == (CHANNELS[0],)
