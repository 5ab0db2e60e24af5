"""What both Node client harnesses (Faye's client and the CometD client, on the shared
tests/peers/node_client.py) do alike, against the real Faye server."""

from __future__ import annotations

import time

import pytest

from tests.constants import TIMEOUT
from tests.peers.cometd_client import CometdClient
from tests.peers.faye import FayeServer
from tests.peers.faye_client import FayeClient, Transport

TRANSPORTS: tuple[Transport, ...] = ("websocket", "long-polling")
Kind = type[FayeClient] | type[CometdClient]
KINDS = pytest.mark.parametrize("kind", [FayeClient, CometdClient], ids=["faye", "cometd"])


@KINDS
async def test_t_is_pythons_monotonic_clock(faye_server: FayeServer, kind: Kind) -> None:
    async with kind() as client:
        await client.start(faye_server.url, "websocket", ["/clock"])
        await faye_server.await_subscribed(["/clock"])
        before_mono, before_wall = time.monotonic() * 1000, time.time() * 1000
        await faye_server.apublish("/clock", [1])
        (message,) = await client.wait_messages(1)
        after_mono, after_wall = time.monotonic() * 1000, time.time() * 1000
    assert before_mono <= message["t"] <= after_mono
    assert before_wall - 5 <= message["wall"] <= after_wall + 5  # Date.now() is whole ms
    assert not client.running  # stopped on leaving the block


@KINDS
@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_stop_disconnects_cleanly(
    faye_server: FayeServer, kind: Kind, transport: Transport
) -> None:
    client = kind()
    await client.start(faye_server.url, transport, ["/a"])
    assert (await faye_server.aclients())["clients"] == 1
    assert client.pid > 0
    started = time.monotonic()
    await client.stop()
    assert time.monotonic() - started < TIMEOUT / 4  # exited at stdin EOF, not terminated
    assert client.returncode == 0
    assert not client.running
    if isinstance(client, CometdClient):
        (stopped,) = client.named("stopped")
        assert client.statuses[-1] == "disconnected"
    else:
        (stopped,) = client.named("disconnected")
    assert stopped["ok"] is True
    state = await faye_server.aclients()
    assert (state["clients"], state["disconnects"]) == (0, 1)
    await client.stop()  # idempotent
