"""The sans-I/O Bayeux server, driven by hand-built client batches: no sockets, no loop."""

from __future__ import annotations

import itertools
import string
from collections.abc import Hashable
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from replay.events import (
    ClientDisconnected,
    ClientExpired,
    ClientHandshaken,
    ClientSubscribed,
    ClientUnsubscribed,
    HeldConnect,
    MessagePublished,
    Reply,
    Transport,
)
from replay.protocol import BayeuxServer
from tape.bayeux import parse_error_string

LP: Transport = "long-polling"
WS: Transport = "websocket"
TYPES = ["websocket", "long-polling"]


class Client:
    """A scripted client: numbers its requests, and remembers every id it used."""

    def __init__(self, server: BayeuxServer, transport: Transport = LP) -> None:
        self.server, self.transport = server, transport
        self.ids = itertools.count()
        self.used: set[str] = set()
        self.client_id = ""
        self.polls = itertools.count()

    def send(self, now: float, *messages: dict[str, Any], connection: Hashable = None) -> Reply:
        batch = []
        for message in messages:
            request_id = str(next(self.ids))
            self.used.add(request_id)
            batch.append({"id": request_id, "clientId": self.client_id} | message)
        if connection is None:
            connection = "ws" if self.transport == WS else f"poll-{next(self.polls)}"
        return self.server.handle(batch, now, transport=self.transport, connection=connection)

    def handshake(self, now: float = 0.0, **fields: Any) -> dict[str, Any]:
        request = {"channel": "/meta/handshake", "version": "1.0"}
        request |= {"supportedConnectionTypes": TYPES} | fields
        (reply,) = self.send(now, request).messages
        self.client_id = reply.get("clientId", "")
        return reply

    def connect(self, now: float, **fields: Any) -> Reply:
        request = {"channel": "/meta/connect", "connectionType": self.transport}
        return self.send(now, request | fields)

    def connected(self, now: float = 0.0) -> Client:
        """Handshake and answer the first connect, so the next connect is held."""
        self.handshake(now)
        assert not self.connect(now).held
        return self


def subscribe(client: Client, now: float, subscription: Any) -> dict[str, Any]:
    (reply,) = client.send(
        now, {"channel": "/meta/subscribe", "subscription": subscription}
    ).messages
    return reply


def ready(client: Client, channels: Any = "/foo", now: float = 0.0) -> Client:
    client.connected(now)
    assert subscribe(client, now, channels)["successful"] is True
    return client


# --- handshake ----------------------------------------------------------------------------


def test_handshake_negotiates_types_and_echoes_id() -> None:
    server = BayeuxServer(timeout_ms=45000, interval_ms=5)
    reply = Client(server).handshake(supportedConnectionTypes=["long-polling", "callback-polling"])
    assert reply["successful"] is True
    assert reply["id"] == "0"
    assert reply["version"] == "1.0"
    assert reply["supportedConnectionTypes"] == ["long-polling"]
    assert reply["advice"] == {"reconnect": "retry", "interval": 5, "timeout": 45000}
    assert server.client_ids == (reply["clientId"],)
    assert server.events_received() == [ClientHandshaken(reply["clientId"])]


def test_handshake_with_no_common_type_fails() -> None:
    server = BayeuxServer(connection_types=["long-polling"])
    reply = Client(server).handshake(supportedConnectionTypes=["iframe", "flash"])
    assert reply["successful"] is False
    assert reply["error"] == "301:iframe,flash:Connection types not supported"
    assert reply["supportedConnectionTypes"] == ["long-polling"]
    assert reply["advice"]["reconnect"] == "none"
    assert reply["id"] == "0"
    assert "clientId" not in reply
    assert server.client_ids == ()


@pytest.mark.parametrize(
    ("fields", "ok"),
    [
        ({"version": "1.0"}, True),
        ({"version": "2.0", "minimumVersion": "1.0beta"}, True),
        ({"version": "1.0", "minimumVersion": "0.9"}, True),
        ({"version": "2.0"}, False),
        ({"version": "2.0", "minimumVersion": "1.1"}, False),
    ],
)
def test_handshake_version(fields: dict[str, str], ok: bool) -> None:
    reply = Client(BayeuxServer()).handshake(0.0, **fields)
    assert reply["successful"] is ok
    if not ok:
        assert parse_error_string(reply["error"]).code == 300


def test_handshake_without_types_fails() -> None:
    reply = Client(BayeuxServer()).send(0.0, {"channel": "/meta/handshake", "version": "1.0"})
    assert reply.messages[0]["error"] == "402:supportedConnectionTypes:Missing required parameter"


def test_client_ids_have_160_random_bits_in_base36() -> None:
    server = BayeuxServer()
    ids = {Client(server).handshake()["clientId"] for _ in range(1000)}
    assert len(ids) == 1000
    alphabet = set(string.digits + string.ascii_lowercase)
    assert all(len(i) == 31 and set(i) <= alphabet for i in ids)
    zeros = BayeuxServer(random_bytes=lambda n: bytes(n))
    assert Client(zeros).handshake()["clientId"] == "0" * 31


# --- connect ------------------------------------------------------------------------------


def test_first_connect_answered_at_once_later_held_until_publish() -> None:
    server = BayeuxServer(timeout_ms=30000)
    client = ready(Client(server))
    first = client.connect(0.0)  # ready() already answered one: this one is the second
    assert first.held
    assert first.messages == []
    assert first.hold is not None
    assert first.hold.deadline == 30.0
    assert server.data_to_send() == []
    assert server.publish("/foo", {"n": 1}, 1.0) == 1
    (out,) = server.data_to_send()
    assert out.connection == first.hold.connection
    assert out.completes == first.hold
    connect_reply, event = out.messages
    assert connect_reply["successful"] is True
    assert connect_reply["id"] == "3"
    assert event["channel"] == "/foo"
    assert event["data"] == {"n": 1}


def test_first_connect_reply_is_immediate_and_echoes_id() -> None:
    client = Client(BayeuxServer())
    client.handshake()
    reply = client.connect(0.0)
    assert not reply.held
    (message,) = reply.messages
    assert message == {
        "channel": "/meta/connect",
        "successful": True,
        "clientId": client.client_id,
        "advice": {"reconnect": "retry", "interval": 0, "timeout": 30000},
        "id": "1",
    }


def test_held_connect_answered_when_timeout_passes() -> None:
    server = BayeuxServer(timeout_ms=30000)
    client = Client(server).connected()
    reply = client.connect(10.0)
    assert server.next_wakeup() == 40.0
    server.tick(39.9)
    assert server.data_to_send() == []
    server.tick(40.0)
    (out,) = server.data_to_send()
    assert out.completes == reply.hold
    assert [m["channel"] for m in out.messages] == ["/meta/connect"]
    assert server.next_wakeup() == 40.0 + 10.0  # expiry, maxInterval after that answer


def test_client_advice_timeout_is_honoured() -> None:
    server = BayeuxServer(timeout_ms=30000)
    client = Client(server).connected()
    assert not client.connect(1.0, advice={"timeout": 0}).held
    held = client.connect(2.0, advice={"timeout": 500})
    assert held.hold is not None
    assert held.hold.deadline == 2.5


def test_second_connect_completes_the_first_and_is_held() -> None:
    server = BayeuxServer()
    client = Client(server).connected()
    first = client.connect(1.0)
    second = client.connect(2.0)
    assert first.hold is not None
    assert second.hold is not None
    (out,) = server.data_to_send()
    assert out.completes == first.hold
    assert [m["id"] for m in out.messages] == ["2"]
    server.deliver_to(client.client_id, {"channel": "/x", "data": 1}, 3.0)
    (out,) = server.data_to_send()
    assert out.completes == second.hold
    assert len(out.messages) == 2


def test_batch_with_held_connect_waits_whole_over_long_polling() -> None:
    server = BayeuxServer()
    client = Client(server).connected()
    reply = client.send(
        1.0,
        {"channel": "/meta/subscribe", "subscription": "/foo"},
        {"channel": "/meta/connect", "connectionType": LP},
    )
    assert reply.held
    assert reply.messages == []
    server.publish("/foo", "x", 2.0)
    (out,) = server.data_to_send()
    assert [m["channel"] for m in out.messages] == ["/meta/subscribe", "/meta/connect", "/foo"]


def test_websocket_pushes_at_once_and_holds_connect() -> None:
    server = BayeuxServer()
    client = Client(server, WS)
    client.handshake()
    assert not client.connect(0.0).held
    reply = client.send(
        1.0,
        {"channel": "/meta/subscribe", "subscription": "/foo"},
        {"channel": "/meta/connect", "connectionType": WS},
    )
    assert reply.held
    assert [m["channel"] for m in reply.messages] == ["/meta/subscribe"]
    server.publish("/foo", 1, 2.0)
    server.publish("/foo", 2, 2.0)
    (out,) = server.data_to_send()
    assert out.connection == "ws"
    assert out.completes is None
    assert [m["data"] for m in out.messages] == [1, 2]


def test_ten_thousand_queued_messages_go_in_one_batch() -> None:
    server = BayeuxServer()
    client = ready(Client(server))
    for n in range(10_000):
        server.publish("/foo", n, 1.0)
    reply = client.connect(2.0)
    assert not reply.held
    assert len(reply.messages) == 10_001
    assert [m["data"] for m in reply.messages[1:]] == list(range(10_000))


def test_messages_queued_while_held_drain_in_one_batch() -> None:
    server = BayeuxServer()
    client = ready(Client(server))
    client.connect(1.0)
    for n in range(10_000):
        server.publish("/foo", n, 1.0)
    (out,) = server.data_to_send()
    assert len(out.messages) == 10_001


# --- subscriptions and publishing -----------------------------------------------------------


def test_subscribe_list_and_wildcards_then_unsubscribe() -> None:
    server = BayeuxServer()
    client = Client(server).connected()
    server.events_received()
    reply = subscribe(client, 0.0, ["/a/*", "/b/**", "/c"])
    assert reply["successful"] is True
    assert reply["subscription"] == ["/a/*", "/b/**", "/c"]
    assert reply["id"] == "2"
    for channel in ["/a/1", "/a/1/2", "/b/1/2", "/c", "/d"]:
        server.publish(channel, channel, 1.0)
    got = [m["data"] for m in client.connect(2.0).messages[1:]]
    assert got == ["/a/1", "/b/1/2", "/c"]
    (unsub,) = client.send(3.0, {"channel": "/meta/unsubscribe", "subscription": "/a/*"}).messages
    assert unsub["successful"] is True
    assert unsub["subscription"] == "/a/*"
    assert server.subscriptions(client.client_id) == ("/b/**", "/c")
    assert server.events_received() == [
        ClientSubscribed(client.client_id, ("/a/*", "/b/**", "/c")),
        ClientUnsubscribed(client.client_id, ("/a/*",)),
    ]


@pytest.mark.parametrize(
    ("subscription", "code"),
    [("/meta/connect", 403), ("/meta/*", 403), ("foo", 405), ("/a/*/b", 405), ([], 402)],
)
def test_bad_subscriptions_fail(subscription: Any, code: int) -> None:
    server = BayeuxServer()
    client = Client(server).connected()
    reply = subscribe(client, 0.0, subscription)
    assert reply["successful"] is False
    assert reply["id"] == "2"
    assert parse_error_string(reply["error"]).code == code
    assert server.subscriptions(client.client_id) == ()


def test_publish_fans_out_only_to_matching_subscribers() -> None:
    server = BayeuxServer()
    a, b, c = (
        ready(Client(server), "/foo"),
        ready(Client(server), "/*"),
        ready(Client(server), "/bar"),
    )
    data = {"big": [1, 2, 3]}
    assert server.publish("/foo", data, 1.0) == 2
    assert [m["data"] for m in a.connect(2.0).messages[1:]] == [data]
    assert b.connect(2.0).messages[1]["data"] is data  # passed through untouched
    assert c.connect(2.0).held


def test_publish_refuses_patterns_and_meta() -> None:
    server = BayeuxServer()
    for channel in ["/foo/*", "/meta/connect", "/service/x"]:
        with pytest.raises(ValueError, match="cannot broadcast"):
            server.publish(channel, 1, 0.0)


def test_delivered_ids_never_equal_client_ids() -> None:
    server = BayeuxServer()
    client = ready(Client(server), "/**")
    delivered_ids = set()
    for n in range(200):
        server.publish("/foo", n, n)
        server.deliver_to(client.client_id, {"channel": "/x", "data": n, "id": str(n)}, n)
        reply = client.connect(float(n), advice={"timeout": 0})
        delivered_ids |= {m["id"] for m in reply.messages if m["channel"] != "/meta/connect"}
    assert len(delivered_ids) == 400
    assert not delivered_ids & client.used


def test_deliver_to_keeps_the_message_and_data() -> None:
    server = BayeuxServer()
    client = Client(server).connected()
    data = orjson.Fragment(b'{"raw":1}')
    message = {"channel": "/v2/me/outbound", "data": data, "ext": {"k": 1}}
    assert server.deliver_to(client.client_id, message, 1.0)
    assert not server.deliver_to("nobody", message, 1.0)
    (sent,) = client.connect(2.0).messages[1:]
    assert sent["data"] is data
    assert sent["ext"] == {"k": 1}
    assert "id" not in message
    assert orjson.dumps(sent).startswith(b'{"channel":"/v2/me/outbound","data":{"raw":1}')


def test_client_publish_is_answered_broadcast_and_reported() -> None:
    server = BayeuxServer()
    listener = ready(Client(server), "/chat")
    talker = Client(server).connected()
    server.events_received()
    (reply,) = talker.send(1.0, {"channel": "/chat", "data": "hi"}).messages
    assert reply == {"channel": "/chat", "successful": True, "id": "2"}
    assert [m["data"] for m in listener.connect(2.0).messages[1:]] == ["hi"]
    assert server.events_received() == [MessagePublished(talker.client_id, "/chat", "hi")]
    (bad,) = talker.send(3.0, {"channel": "/chat/*", "data": 1}).messages
    assert bad["successful"] is False
    assert bad["error"].startswith("405:")


# --- unknown clients, malformed input ------------------------------------------------------


@pytest.mark.parametrize(
    "channel", ["/meta/connect", "/meta/subscribe", "/meta/unsubscribe", "/meta/disconnect", "/a"]
)
def test_unknown_client_gets_handshake_advice(channel: str) -> None:
    client = Client(BayeuxServer())
    client.client_id = "nobody"
    (reply,) = client.send(0.0, {"channel": channel, "subscription": "/a", "data": 1}).messages
    assert reply["channel"] == channel
    assert reply["id"] == "0"
    assert reply["successful"] is False
    assert reply["error"] == "402::Unknown client"
    assert reply["advice"] == {"reconnect": "handshake", "interval": 0}


def test_unknown_client_error_is_configurable() -> None:
    server = BayeuxServer(unknown_client_error="402::session_unknown")
    reply = server.handle(
        [{"channel": "/meta/connect", "connectionType": LP}], 0.0, transport=LP, connection=1
    )
    assert reply.messages[0]["error"] == "402::session_unknown"


@pytest.mark.parametrize(
    ("batch", "channel", "kind"),
    [
        (b"not json", "/meta/unknown", "invalid JSON"),
        (b"42", "/meta/unknown", "invalid shape"),
        (b'[{"id": "7"}]', "/meta/unknown", "missing channel"),
        (b'[{"channel": "/meta/connect", "id": "7", "advice": []}]', "/meta/connect", "invalid"),
        ("[1]", "/meta/unknown", "invalid shape"),
        ([{"channel": 5}], "/meta/unknown", "invalid field"),
        ([{"channel": "/a", "id": True}], "/a", "invalid field"),
        ("oops", "/meta/unknown", "invalid JSON"),
    ],
)
def test_malformed_input_gets_400(batch: Any, channel: str, kind: str) -> None:
    reply = BayeuxServer().handle(batch, 0.0, transport=LP, connection=1)
    assert reply.bad_request
    assert not reply.held
    (message,) = reply.messages
    assert message["channel"] == channel
    assert message["successful"] is False
    error = parse_error_string(message["error"])
    assert error.code == 400
    assert error.message.startswith(kind)
    if channel != "/meta/unknown" and "7" in str(batch):
        assert message["id"] == "7"


def test_unknown_meta_channel_is_refused() -> None:
    (reply,) = (
        BayeuxServer()
        .handle(b'[{"channel": "/meta/nope", "id": 1}]', 0.0, transport=LP, connection=1)
        .messages
    )
    assert reply == {
        "channel": "/meta/nope",
        "successful": False,
        "error": "404:/meta/nope:Unknown channel",
        "id": 1,
    }


def test_raw_bytes_and_single_object_are_accepted() -> None:
    server = BayeuxServer()
    raw = b'{"channel":"/meta/handshake","version":"1.0","supportedConnectionTypes":["websocket"]}'
    reply = server.handle(raw, 0.0, transport=WS, connection="ws")
    assert reply.messages[0]["successful"] is True
    assert not reply.bad_request


# --- disconnect and expiry -----------------------------------------------------------------


def test_disconnect_completes_held_connect_and_removes_session() -> None:
    server = BayeuxServer()
    client = ready(Client(server))
    held = client.connect(1.0)
    server.publish("/foo", 1, 1.0)  # completes the held connect...
    server.events_received()
    (reply,) = client.send(2.0, {"channel": "/meta/disconnect"}).messages
    assert reply == {
        "channel": "/meta/disconnect",
        "successful": True,
        "clientId": client.client_id,
        "id": "4",
    }
    (out,) = server.data_to_send()  # ...whose queue went with the session
    assert out.completes == held.hold
    assert server.client_ids == ()
    assert server.next_wakeup() is None
    assert server.events_received() == [ClientDisconnected(client.client_id)]
    assert client.connect(3.0).messages[0]["error"] == "402::Unknown client"


def test_disconnect_while_held_answers_with_reconnect_none() -> None:
    server = BayeuxServer()
    client = Client(server).connected()
    client.connect(1.0)
    client.send(2.0, {"channel": "/meta/disconnect"})
    (out,) = server.data_to_send()
    assert out.messages[0]["advice"] == {"reconnect": "none"}


def test_silent_client_expires_and_is_freed() -> None:
    server = BayeuxServer(max_interval_ms=10000)
    clients = [ready(Client(server), "/**") for _ in range(50)]
    for n in range(100):
        server.publish("/foo", n, 1.0)
    server.events_received()
    assert server.next_wakeup() == 10.0
    server.tick(9.0)
    assert len(server.client_ids) == 50
    server.tick(10.0)
    assert server.client_ids == ()
    assert server.next_wakeup() is None
    assert server._sessions == {}
    assert server._push == {}
    assert server._due == []
    assert server.events_received() == [ClientExpired(c.client_id) for c in clients]


def test_held_connect_keeps_a_session_alive() -> None:
    server = BayeuxServer(timeout_ms=60000, max_interval_ms=10000)
    client = Client(server).connected()
    client.connect(1.0)
    server.tick(30.0)
    assert server.client_ids == (client.client_id,)
    server.tick(61.0)
    server.data_to_send()
    server.tick(70.9)
    assert server.client_ids == (client.client_id,)
    server.tick(71.0)
    assert not server.client_ids


def test_closed_connection_drops_its_held_connect() -> None:
    server = BayeuxServer()
    client = ready(Client(server))
    held = client.connect(1.0)
    assert held.hold is not None
    server.connection_closed(held.hold.connection, 2.0)
    server.publish("/foo", 1, 3.0)
    assert server.data_to_send() == []
    assert [m["data"] for m in client.connect(4.0).messages[1:]] == [1]


# --- property -------------------------------------------------------------------------------

ACTIONS = st.lists(
    st.tuples(
        st.sampled_from(
            [
                "handshake",
                "connect",
                "connect0",
                "subscribe",
                "unsubscribe",
                "disconnect",
                "publish",
                "client_publish",
                "tick",
                "drain",
                "close",
                "garbage",
                "deliver",
            ]
        ),
        st.integers(0, 2),
        st.floats(0, 20),
    ),
    max_size=60,
)


@settings(max_examples=300, deadline=None)
@given(ACTIONS, st.sampled_from([LP, WS]))
def test_random_actions_never_raise_or_double_hold(
    actions: list[Any], transport: Transport
) -> None:
    server = BayeuxServer(timeout_ms=5000, max_interval_ms=8000)
    clients = [Client(server, transport) for _ in range(3)]
    outstanding: dict[str, set[HeldConnect]] = {}  # holds answered by no Outbound yet
    now = 0.0
    for action, who, step in actions:
        now += step
        reply = run(action, clients[who], server, now, outstanding)
        if reply is not None and reply.hold is not None:
            outstanding.setdefault(reply.hold.client_id, set()).add(reply.hold)
        answer(server, outstanding)
        assert all(len(holds) <= 1 for holds in outstanding.values())
    server.tick(now + 3600.0)  # every hold times out...
    answer(server, outstanding)
    server.tick(now + 7200.0)  # ...and, maxInterval after its answer, every session expires
    assert not any(outstanding.values())
    assert not server.client_ids


def answer(server: BayeuxServer, outstanding: dict[str, set[HeldConnect]]) -> None:
    for out in server.data_to_send():
        if out.completes is not None:
            outstanding[out.client_id].remove(out.completes)  # KeyError: a phantom answer


def run(
    action: str,
    client: Client,
    server: BayeuxServer,
    now: float,
    outstanding: dict[str, set[HeldConnect]],
) -> Reply | None:
    if action == "handshake":
        client.handshake(now)
    elif action in ("connect", "connect0"):
        return client.connect(now, **({"advice": {"timeout": 0}} if action == "connect0" else {}))
    elif action in ("subscribe", "unsubscribe"):
        client.send(now, {"channel": f"/meta/{action}", "subscription": ["/a/*", "/b"]})
    elif action == "disconnect":
        client.send(now, {"channel": "/meta/disconnect"})
    elif action == "publish":
        server.publish("/a/x", now, now)
    elif action == "client_publish":
        client.send(now, {"channel": "/b", "data": now})
    elif action == "deliver":
        server.deliver_to(client.client_id, {"channel": "/z", "data": 1}, now)
    elif action == "tick":
        server.tick(now)
    elif action == "close":
        close(server, outstanding, client.client_id, now)
    else:
        assert server.handle(b"[{", now, transport=client.transport, connection=0).bad_request
    return None


def close(
    server: BayeuxServer,
    outstanding: dict[str, set[HeldConnect]],
    client_id: str | None,
    now: float,
) -> None:
    """The transport drops a held connect's connection (or the WebSocket, if none is held).

    Every hold on that connection goes with it, whichever client it belongs to: the test's
    WebSocket clients all share the connection "ws".
    """
    holds = outstanding.get(client_id, set()) if client_id is not None else set()
    connection = next(iter(holds)).connection if holds else "ws"
    server.connection_closed(connection, now)
    for client_holds in outstanding.values():
        client_holds.difference_update({h for h in client_holds if h.connection == connection})
