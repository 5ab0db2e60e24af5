"""The replay extension's sans-I/O parts: replayIds read or stamped byte for byte, the
protocol's acknowledgement and checks, and where a resumed timeline starts and what a
subscriber is sent at once. A real BayeuxServer, driven by hand-built batches: no sockets."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson
import pytest

from replay.events import ClientSubscribed
from replay.protocol import BayeuxServer
from replay.resume import INVALID, Resume
from replay.resume_ids import ReplayIds, recorded_id, stamped

TYPES = ["websocket", "long-polling"]
A, B = "/topic/a", "/topic/b"


def delivery(channel: str, data: bytes, ext: bytes | None = None) -> dict[str, Any]:
    message: dict[str, Any] = {"channel": channel, "data": orjson.Fragment(data)}
    if ext is not None:
        message["ext"] = orjson.Fragment(ext)
    return message


def wire(message: dict[str, Any]) -> dict[str, Any]:
    """What a client receives."""
    return dict(orjson.loads(orjson.dumps(message)))


def timeline(count: int = 6) -> list[dict[str, Any]]:
    """A, B, A, B...: the data of the n-th (from 0) is {"n": n, "ratio": 1.50}."""
    return [delivery((A, B)[n % 2], b'{"n":%d,"ratio":1.50}' % n) for n in range(count)]


@dataclass
class Cursor:
    index: int


class Scripted:
    """A client of a real BayeuxServer, over long-polling, with numbered requests."""

    def __init__(self, server: BayeuxServer) -> None:
        self.server, self.next_id, self.client_id = server, 0, ""

    def send(self, message: dict[str, Any]) -> dict[str, Any]:
        self.next_id += 1
        request = {"id": str(self.next_id), "clientId": self.client_id} | message
        reply = self.server.handle([request], 0.0, transport="long-polling", connection=object())
        return dict(reply.messages[0])

    def handshake(self, **fields: Any) -> dict[str, Any]:
        request = {"channel": "/meta/handshake", "version": "1.0"}
        reply = self.send(request | {"supportedConnectionTypes": TYPES} | fields)
        self.client_id = reply["clientId"]
        return reply

    def subscribe(self, replay: Any = None, *names: str) -> dict[str, Any]:
        request: dict[str, Any] = {"channel": "/meta/subscribe", "subscription": list(names)}
        if replay is not None:
            request["ext"] = {"replay": replay}
        return self.send(request)

    def queued(self) -> list[dict[str, Any]]:
        """Everything queued for it, as it would receive it (its first connect takes it)."""
        reply = self.server.handle(
            [{"channel": "/meta/connect", "clientId": self.client_id, "id": "c"}],
            0.0,
            transport="long-polling",
            connection=object(),
        )
        return [wire(m) for m in reply.messages if m["channel"] != "/meta/connect"]


def setup(
    messages: list[dict[str, Any]], offsets: list[float] | None = None
) -> tuple[BayeuxServer, Resume]:
    server = BayeuxServer()
    offsets = offsets if offsets is not None else [float(n) for n in range(len(messages))]
    return server, Resume(server, messages, offsets)


# --- replayIds ---------------------------------------------------------------------------------


def test_recorded_ids_are_kept_and_their_messages_sent_as_recorded() -> None:
    messages = [delivery(A, b'{"event":{"replayId":%d},"payload":{}}' % n) for n in (7, 9)]
    ids = ReplayIds(messages)
    assert [(e.index, e.replay_id) for e in ids.channels[A]] == [(0, 7), (1, 9)]
    assert ids.entry(messages[1]).message is messages[1]
    assert ids.last(A) == 9
    assert ids.last(B) is None


def test_a_channel_without_ids_is_numbered_and_stamped_byte_for_byte() -> None:
    messages = timeline(4)
    ids = ReplayIds(messages)
    assert [e.replay_id for e in ids.channels[A]] == [1, 2]
    assert [e.replay_id for e in ids.channels[B]] == [1, 2]
    sent = orjson.dumps(ids.entry(messages[2]).message)
    assert b'"data":{"event":{"replayId":2},"n":2,"ratio":1.50}' in sent  # 1.50 as recorded
    assert "replayId" not in str(orjson.loads(orjson.dumps(messages[2])))  # never changed


@pytest.mark.parametrize(
    ("data", "ext", "expected"),
    [
        (b'{"event":{"type":"x"}}', None, {"data": {"event": {"replayId": 3, "type": "x"}}}),
        (b"{}", None, {"data": {"event": {"replayId": 3}}}),
        (b'"text"', None, {"data": "text", "ext": {"replayId": 3}}),
        (b"[1]", b'{"k":1}', {"data": [1], "ext": {"replayId": 3, "k": 1}}),
        (b'{"event":5}', None, {"data": {"event": 5}, "ext": {"replayId": 3}}),
    ],
)
def test_where_a_stamped_replay_id_goes(data: bytes, ext: bytes | None, expected: Any) -> None:
    assert wire(stamped(delivery(A, data, ext), 3)) == {"channel": A} | expected


@pytest.mark.parametrize(
    ("data", "found"),
    [
        (b'{"event":{"replayId":12}}', 12),
        (b'{"event":{"replayId":"12"}}', None),
        (b'{"event":{"replayId":1.5}}', None),
        (b'{"replayId":12}', None),
        (b"[12]", None),
    ],
)
def test_recorded_id_is_an_integer_in_data_event(data: bytes, found: int | None) -> None:
    assert recorded_id(orjson.Fragment(data)) == found


# --- the protocol's part -----------------------------------------------------------------------


def test_the_handshake_is_acknowledged_only_when_asked() -> None:
    server, _ = setup(timeline())
    asking, plain = Scripted(server), Scripted(server)
    assert asking.handshake(ext={"replay": True})["ext"] == {"replay": True}
    assert "ext" not in plain.handshake()
    assert server.replay.uses(asking.client_id)
    assert not server.replay.uses(plain.client_id)
    asking.send({"channel": "/meta/disconnect"})
    assert not server.replay.active  # forgotten with its session


@pytest.mark.parametrize("value", ["5", 1.5, True, -3, 4, None])
def test_a_replay_id_that_cannot_be_honoured_is_refused_in_salesforces_words(value: Any) -> None:
    server, _ = setup(timeline())  # /topic/a is numbered 1, 2, 3
    client = Scripted(server)
    client.handshake(ext={"replay": True})
    reply = client.subscribe({A: value}, A)
    assert reply["successful"] is False
    assert reply["error"] == INVALID.format(value)
    assert reply["error"].startswith("400::The replayId {")
    assert server.subscriptions(client.client_id) == ()


def test_a_pattern_cannot_be_resumed_and_other_channels_entries_are_ignored() -> None:
    server, _ = setup(timeline())
    client = Scripted(server)
    client.handshake(ext={"replay": True})
    assert client.subscribe({"/topic/*": 1}, "/topic/*")["successful"] is False
    # EMP Connector sends its whole map on every subscribe: entries for others are ignored.
    assert client.subscribe({A: 2, "/elsewhere": "junk"}, A)["successful"] is True
    assert server.replay.asked(client.client_id) == {A: 2}


# --- the player's part -------------------------------------------------------------------------


def test_a_resumed_per_client_timeline_starts_after_the_id_at_the_settles_end() -> None:
    server, resume = setup(timeline(), offsets=[0.0, 1.0, 2.0, 3.0, 4.0, 5.0])
    client = Scripted(server)
    client.handshake(ext={"replay": True})
    client.subscribe({A: 1}, A)  # A is timeline 0, 2, 4 as replayIds 1, 2, 3
    assert resume.begin(client.client_id, False, 100.0) == (98.0, 2)  # index 2 due at 100


@pytest.mark.parametrize("value", [-1, -2])
def test_new_only_and_all_start_a_fresh_timeline_at_its_beginning(value: int) -> None:
    server, resume = setup(timeline())
    client = Scripted(server)
    client.handshake(ext={"replay": True})
    client.subscribe({A: value}, A)
    assert resume.begin(client.client_id, False, 100.0) == (100.0, 0)


def test_the_earliest_resumed_channel_decides_and_the_other_skips_what_it_saw() -> None:
    server, resume = setup(messages := timeline())
    client = Scripted(server)
    client.handshake(ext={"replay": True})
    client.subscribe({A: 2, B: 1}, A, B)  # A resumes at index 4, B at index 3
    assert resume.begin(client.client_id, False, 10.0)[1] == 3
    resume.deliver(client.client_id, messages[3:], 0.0, None)  # the player plays from 3
    got = client.queued()
    assert [(m["channel"], m["data"]["event"]["replayId"]) for m in got] == [(B, 2), (A, 3), (B, 3)]


def test_a_shared_timeline_is_not_moved_but_skips_for_the_resumed_client() -> None:
    server, resume = setup(messages := timeline())
    client = Scripted(server)
    client.handshake(ext={"replay": True})
    client.subscribe({A: 2}, A)
    assert resume.begin(client.client_id, True, 10.0) == (10.0, 0)
    assert resume.publish(messages, 0.0) == 1  # A's replayId 3 only
    assert [m["data"]["event"]["replayId"] for m in client.queued()] == [3]


@pytest.mark.parametrize(
    ("value", "expected"), [(-1, []), (-2, [1, 2]), (1, [2]), (2, [])], ids=str
)
def test_joining_a_playing_timeline_sends_the_retained_events_asked_for(
    value: int, expected: list[int]
) -> None:
    server, resume = setup(timeline())
    client = Scripted(server)
    client.handshake(ext={"replay": True})
    client.subscribe({A: value}, A)
    event = ClientSubscribed(client.client_id, (A,))
    assert resume.joined(event, Cursor(index=3), 0.0) == len(expected)  # A's 0 and 2 are past
    assert [m["data"]["event"]["replayId"] for m in client.queued()] == expected


def test_an_id_ahead_of_the_position_skips_up_to_it_then_stops_skipping() -> None:
    server, resume = setup(messages := timeline())
    client = Scripted(server)
    client.handshake(ext={"replay": True})
    client.subscribe({A: 2}, A)
    assert resume.joined(ClientSubscribed(client.client_id, (A,)), Cursor(index=1), 0.0) == 0
    resume.deliver(client.client_id, messages[1:], 0.0, None)
    assert [m["data"]["n"] for m in client.queued()] == [4]  # replayIds 1 (index 0) and 2 seen
    assert server.replay.skips(client.client_id) == {}


def test_clients_not_asking_get_the_timeline_untouched() -> None:
    server, resume = setup(messages := timeline())
    asking, plain = Scripted(server), Scripted(server)
    asking.handshake(ext={"replay": True})
    plain.handshake()
    for client in (asking, plain):
        client.subscribe(None, A)
    assert resume.publish(messages, 0.0) == 6
    assert [m["data"] for m in plain.queued()] == [{"n": n, "ratio": 1.5} for n in (0, 2, 4)]
    assert [m["data"]["event"]["replayId"] for m in asking.queued()] == [1, 2, 3]
