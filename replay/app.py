"""A running replayer: the sans-I/O server, its HTTP/WebSocket front and the player, together.
Used by the CLI and by the pytest fixture."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from replay.events import Event
from replay.player import ClientSeen, Player, PlayOptions
from replay.protocol import BayeuxServer
from replay.server import DEFAULT_PATHS, ReplayServer
from replay.timeline import TimelineOptions, load


@dataclass(frozen=True, slots=True)
class ReplayOptions:
    timeline: TimelineOptions = field(default_factory=TimelineOptions)
    play: PlayOptions = field(default_factory=PlayOptions)
    paths: tuple[str, ...] = DEFAULT_PATHS
    unknown_client_error: str = "402::Unknown client"
    timeout_ms: int = 30_000


class Replayer:
    """Start with `await Replayer.start(tape, options)`; stop with `await replayer.stop()`."""

    def __init__(self, server: ReplayServer, player: Player) -> None:
        self.server, self.player = server, player

    @classmethod
    async def start(
        cls,
        tape: Path | str,
        options: ReplayOptions | None = None,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        log: Callable[[str], None] | None = None,
    ) -> Replayer:
        options = options or ReplayOptions()
        timeline = load(Path(tape), options.timeline)
        protocol = BayeuxServer(
            timeout_ms=options.timeout_ms, unknown_client_error=options.unknown_client_error
        )
        holder: list[Player] = []

        def listener(event: Event) -> None:
            holder[0].on_event(event)

        server = ReplayServer(protocol, paths=options.paths, listener=listener)
        player = Player(server, timeline, options.play, log)
        holder.append(player)
        await server.start(host, port)
        return cls(server, player)

    async def stop(self) -> None:
        await self.player.close()
        await self.server.stop()

    @property
    def url(self) -> str:
        return self.server.url()

    @property
    def ws_url(self) -> str:
        return self.server.url(scheme="ws")

    @property
    def clients(self) -> list[ClientSeen]:
        return list(self.player.clients.values())

    async def wait_emitted(self, count: int | None = None, timeout: float = 30.0) -> int:
        return await self.player.wait_emitted(count, timeout)
