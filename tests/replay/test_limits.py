"""The sans-I/O server under many clients and hostile input: bounded queues, batches and
timeouts, unsubscribe, work that grows with subscribers, and everything freed at expiry."""

from __future__ import annotations

import time

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from replay.events import ClientExpired, ClientFellBehind
from replay.protocol import MAX_TIMEOUT_MS, PUBLISH_DENIED, BayeuxServer
from replay.routing import SubscriberIndex, Wakeups
from tape.channel import matches
from tests.replay.test_protocol import LP, WS, Client, ready, subscribe


def test_unsubscribe_stops_deliveries_queued_ones_too() -> None:
    server = BayeuxServer()
    client = ready(Client(server, WS), ["/a", "/b"])
    server.publish("/a", "before", 1.0)  # queued, not yet pushed
    server.publish("/b", "kept", 1.0)
    reply = client.send(1.0, {"channel": "/meta/unsubscribe", "subscription": "/a"})
    assert reply.messages[0]["successful"] is True
    assert server.publish("/a", "after", 2.0) == 0
    assert not server.deliver_to(
        client.client_id, {"channel": "/a", "data": 1}, 2.0, subscribed_only=True
    )
    pushed = [m for out in server.data_to_send() for m in out.messages]
    assert [m["data"] for m in pushed] == ["kept"]
    assert server.is_subscribed(client.client_id, "/b")


def test_a_client_that_falls_behind_loses_its_oldest_messages_counted() -> None:
    server = BayeuxServer(max_queue=5)
    client = ready(Client(server), "/a")  # long-polling, no connect held: nothing drains
    server.events_received()
    for n in range(8):
        server.publish("/a", n, 1.0)
    assert server.queued(client.client_id) == 5
    assert server.dropped == 3
    assert server.events_received() == [ClientFellBehind(client.client_id, 5)]
    reply = client.connect(2.0)
    assert [m.get("data") for m in reply.messages[1:]] == [3, 4, 5, 6, 7]


def test_a_batch_over_the_limit_is_refused_whole() -> None:
    server = BayeuxServer(max_batch=10)
    client = Client(server)
    client.handshake()
    handshakes = [{"channel": "/meta/handshake", "version": "1.0", "id": str(n)} for n in range(11)]
    reply = server.handle(orjson.dumps(handshakes), 0.0, transport=LP, connection="p")
    assert reply.bad_request
    assert reply.messages[0]["successful"] is False
    assert reply.messages[0]["error"].startswith("400::a batch of 11 messages")
    assert len(server.client_ids) == 1


def test_a_clients_timeout_advice_is_capped() -> None:
    server = BayeuxServer()
    client = Client(server).connected(0.0)
    reply = client.connect(1.0, advice={"timeout": 10**19})
    assert reply.hold is not None
    assert reply.hold.deadline == 1.0 + MAX_TIMEOUT_MS / 1000


@pytest.mark.parametrize(
    "body",
    [b"1e999", b'[{"channel":123,"x":1e999}]', b'[{"channel":"/meta/handshake","id":1e999}]'],
)
def test_numbers_beyond_a_double_get_a_bayeux_400(body: bytes) -> None:
    reply = BayeuxServer().handle(body, 0.0, transport=LP, connection="p")
    assert reply.bad_request
    assert reply.messages[0]["error"].startswith("400::")


def test_publish_on_a_denied_channel_gets_403() -> None:
    server = BayeuxServer(publish_denied=("/v2/me/**",))
    listener = ready(Client(server, WS), "/v2/me/outbound")
    publisher = ready(Client(server), "/x")
    (reply,) = publisher.send(1.0, {"channel": "/v2/me/outbound", "data": {}}).messages
    assert reply["successful"] is False
    assert reply["error"] == PUBLISH_DENIED
    (allowed,) = publisher.send(1.0, {"channel": "/x", "data": {}}).messages
    assert allowed["successful"] is True
    assert server.queued(listener.client_id) == 0


def test_ten_thousand_expired_clients_leave_nothing_behind() -> None:
    server = BayeuxServer(max_interval_ms=1000)
    for n in range(10_000):
        transport = WS if n % 2 else LP
        client = ready(Client(server, transport), ["/a", f"/c/{n}", "/b/**"], now=n / 10_000)
        if n % 3 == 0:
            client.connect(n / 10_000)  # held over long-polling, or pushed over WebSocket
        server.publish(f"/c/{n}", n, n / 10_000)
    assert len(server.client_ids) == 10_000
    server.data_to_send()
    server.tick(100.0)  # held connects answered at their timeout...
    server.data_to_send()
    server.tick(200.0)  # ...and every session expired after maxInterval
    events = server.events_received()
    assert sum(isinstance(e, ClientExpired) for e in events) == 10_000
    assert server.sizes() == {
        "sessions": 0,
        "queued": 0,
        "patterns": 0,
        "wakeups": 0,
        "connections": 0,
    }
    assert server.next_wakeup() is None


def test_publish_cost_grows_with_subscribers_not_sessions() -> None:
    """10,000 sessions on other channels: a publish reaching one client stays cheap (it was
    ~0.26 us per session, 2.6 ms a publish, when every publish scanned every session)."""
    server = BayeuxServer()
    for n in range(10_000):
        ready(Client(server, WS), f"/other/{n}")
    target = ready(Client(server, WS), "/mine/**")
    started = time.perf_counter()
    for n in range(2_000):
        assert server.publish("/mine/x", n, 1.0) == 1
    elapsed = time.perf_counter() - started
    assert server.queued(target.client_id) == 2_000
    assert elapsed < 2_000 * 0.26e-6 * 10_000 / 5  # five times under the scan, on a slow box


@given(
    st.lists(
        st.sampled_from(["/a", "/a/b", "/a/*", "/a/**", "/a/b/*", "/a/b/c", "/**", "/*", "/c"]),
        max_size=6,
    ),
    st.sampled_from(["/a", "/a/b", "/a/b/c", "/a/b/c/d", "/c", "/d/e"]),
)
def test_the_index_finds_exactly_the_matching_subscriptions(
    patterns: list[str], channel: str
) -> None:
    index = SubscriberIndex()
    for n, pattern in enumerate(patterns):
        index.add(f"c{n}", [pattern])
        index.add("all", [pattern])
    expected = {f"c{n}" for n, p in enumerate(patterns) if matches(p, channel)}
    found = index.subscribers(channel)
    assert set(found) - {"all"} == expected
    assert found.count("all") == (1 if expected else 0)
    for n, pattern in enumerate(patterns):
        index.remove(f"c{n}", [pattern])
        index.remove("all", [pattern])
    assert len(index) == 0


def test_wakeups_stay_bounded_under_constant_rescheduling() -> None:
    wakeups = Wakeups()
    for n in range(100_000):
        wakeups.set(f"k{n % 100}", 1000.0 - n / 1000)
    assert len(wakeups) == 100
    assert wakeups.heap_size <= 2 * 100 + 64 + 1
    assert wakeups.earliest() == pytest.approx(1000.0 - 99_999 / 1000)
    due = wakeups.pop_due(2000.0)
    assert sorted(due) == sorted(f"k{n}" for n in range(100))
    assert wakeups.earliest() is None


def test_a_subscription_while_unsubscribing_keeps_other_patterns() -> None:
    server = BayeuxServer()
    client = ready(Client(server, WS), ["/a/*", "/a/b"])
    client.send(1.0, {"channel": "/meta/unsubscribe", "subscription": "/a/b"})
    assert server.publish("/a/b", 1, 2.0) == 1  # still under /a/*
    assert subscribe(client, 2.0, "/a/b")["successful"] is True
    assert server.publish("/a/b", 2, 2.0) == 1  # once, not twice


def test_subscriptions_per_client_are_capped() -> None:
    server = BayeuxServer(max_subscriptions=3)
    client = ready(Client(server), ["/a", "/b"])
    assert subscribe(client, 1.0, ["/a", "/c"])["successful"] is True  # /a again: no new one
    refused = subscribe(client, 1.0, "/d")
    assert refused["successful"] is False
    assert refused["error"] == "403:/d:Too many subscriptions"
    assert set(server.subscriptions(client.client_id)) == {"/a", "/b", "/c"}
