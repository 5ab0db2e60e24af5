"""A running replayer: the sans-I/O server, its HTTP/WebSocket front and the player, together.
Used by the CLI and by the pytest fixture."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from replay.events import Event
from replay.fault_core import FaultInjector, InjectedFault
from replay.faults import Fault
from replay.player import ClientSeen, Player, PlayOptions
from replay.protocol import BayeuxServer
from replay.reactive import ReactiveFront
from replay.responder import DEFAULT_MATCHERS, Matcher, Responder, Unmatched, load_exchanges
from replay.server import DEFAULT_PATHS, HasCookies, ReplayServer
from replay.timeline import TimelineOptions, as_duckdb, load


@dataclass(frozen=True, slots=True)
class ReplayOptions:
    timeline: TimelineOptions = field(default_factory=TimelineOptions)
    play: PlayOptions = field(default_factory=PlayOptions)
    paths: tuple[str, ...] = DEFAULT_PATHS
    unknown_client_error: str = "402::Unknown client"
    timeout_ms: int = 30_000
    max_interval_ms: int = 10_000  # a session that stops connecting expires after this
    # Reactive replay: answer REST requests from the tape and deliver what they caused (their
    # follow-up messages then leave the timeline).
    reactive: bool = False
    matchers: tuple[Matcher, ...] = DEFAULT_MATCHERS
    faults: tuple[Fault, ...] = ()  # injected faults (replay/faults.py), deterministic by seed
    seed: int = 0


class Replayer:
    """Start with `await Replayer.start(tape, options)`; stop with `await replayer.stop()`."""

    def __init__(
        self, server: ReplayServer, player: Player, front: ReactiveFront | None = None
    ) -> None:
        self.server, self.player, self.front = server, player, front

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
        with as_duckdb(Path(tape)) as path:
            responder = None
            if options.reactive:
                responder = Responder(load_exchanges(path), options.matchers)
            skip = responder.follow_up_keys if responder else frozenset()
            timeline = load(
                path,
                options.timeline,
                skip=skip,
                allow_empty=bool(responder and skip),
                shown=Path(tape),
            )
        injector = FaultInjector(options.faults, seed=options.seed) if options.faults else None
        if injector is not None and log is not None:
            injector.listener = lambda fault: log(f"fault: {fault}")
        protocol = BayeuxServer(
            timeout_ms=options.timeout_ms,
            max_interval_ms=options.max_interval_ms,
            unknown_client_error=options.unknown_client_error,
            faults=injector,
        )
        holder: list[Player] = []
        fronts: list[ReactiveFront] = []

        def listener(event: Event) -> None:
            holder[0].on_event(event)
            for front in fronts:
                front.on_event(event)

        def handshaken(request: HasCookies, client_id: str) -> None:
            for front in fronts:
                front.handshaken(request, client_id)

        server = ReplayServer(
            protocol, paths=options.paths, listener=listener, on_handshake=handshaken
        )
        player = Player(server, timeline, options.play, log)
        holder.append(player)
        if responder is not None:
            fronts.append(ReactiveFront(server, responder, options.play.speed, log))
        await server.start(host, port)
        return cls(server, player, fronts[0] if fronts else None)

    @property
    def faults(self) -> list[InjectedFault]:
        """Every fault injected so far, in order (time in seconds since the replay started)."""
        injector = self.server.protocol.faults
        return [] if injector is None else list(injector.log)

    @property
    def unmatched(self) -> list[Unmatched]:
        """REST requests no recorded request matched (each was answered 404)."""
        return [] if self.front is None else list(self.front.responder.unmatched)

    async def stop(self) -> None:
        if self.front is not None:
            self.front.close()
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
        """The live clients, after the last clients that left (at most player.HISTORY)."""
        return [*self.player.departed, *self.player.clients.values()]

    def sizes(self) -> dict[str, int]:
        """What the replayer holds now: sessions, queued messages, timelines, connections."""
        front = {} if self.front is None else self.front.sizes()
        return self.server.sizes() | self.player.sizes() | front

    async def wait_emitted(self, count: int | None = None, timeout: float = 30.0) -> int:
        return await self.player.wait_emitted(count, timeout)
