"""A small TCP proxy for partition tests: put it between a client and the broker, then break it.

The proxy listens on a free loopback port and forwards every connection to one target (the
broker). It runs its own asyncio loop in a background thread so a test controls it with plain
calls (:meth:`Proxy.set_mode`) while real processes talk through it. Modes, switchable at any
time, apply to every connection, current and future:

``pass``
    Forward both ways.
``blackhole``
    Keep every socket open and forward nothing either way, not even a close: a network
    partition. New connections are accepted and held without reaching the target. Bytes are
    held, never discarded (the proxy stops reading, so TCP back-pressure builds up as it would
    behind a dead link); on healing they flow again, unless one end gave up meanwhile (a
    keep-alive timeout), in which case the close then reaches the other end.
``drop_up`` / ``drop_down``
    One-way links: nothing flows from the client to the target (``up``), or from the target to
    the client (``down``); the other direction works. Held as in ``blackhole``.
``slow``
    Forward both ways, each chunk delayed by ``delay_ms`` (:meth:`Proxy.set_mode`).
``cut``
    Close every connection now, and every new one as soon as it is accepted, until the mode
    changes: a proxy that resets its peers.

Holding rather than discarding matters: an MQTT stream with bytes missing in its middle is
garbage, which no real network produces; TCP retransmits until it succeeds or times out.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Coroutine
from enum import StrEnum
from typing import Any, Self, TypeVar

__all__ = ["Direction", "Mode", "Proxy"]

T = TypeVar("T")

CHUNK_BYTES = 65536
"""The most bytes read (and forwarded) at once."""
CONNECT_TIMEOUT_S = 5.0
"""How long to wait for the target to accept a connection before giving up on the client."""


class Mode(StrEnum):
    """What the proxy does with traffic (module docstring)."""

    PASS = "pass"
    BLACKHOLE = "blackhole"
    DROP_UP = "drop_up"
    DROP_DOWN = "drop_down"
    SLOW = "slow"
    CUT = "cut"


class Direction(StrEnum):
    """``up``: client to target (towards the broker); ``down``: target to client."""

    UP = "up"
    DOWN = "down"


_BLOCKED: dict[Mode, frozenset[Direction]] = {
    Mode.BLACKHOLE: frozenset(Direction),
    Mode.CUT: frozenset(Direction),
    Mode.DROP_UP: frozenset({Direction.UP}),
    Mode.DROP_DOWN: frozenset({Direction.DOWN}),
}


class Proxy:
    """A TCP proxy from ``host:port`` (a free port unless given) to ``target_host:target_port``.

    ``with Proxy(broker.host, broker.port) as proxy:`` starts it; :attr:`url` is the broker URL
    to hand to whatever should go through it. Thread-safe control from the test's thread.
    """

    def __init__(
        self, target_host: str, target_port: int, *, host: str = "127.0.0.1", port: int = 0
    ) -> None:
        self.target = (target_host, target_port)
        self.host = host
        self._requested_port = port
        self._port = 0
        self._mode = Mode.PASS
        self._delay_s = 0.0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._server: asyncio.Server | None = None
        self._changed: asyncio.Event | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._closing = False  # shutting down: new connections are refused
        self._forwarded = {Direction.UP: 0, Direction.DOWN: 0}
        self._accepted = 0

    # -- lifecycle -------------------------------------------------------------------------------

    def start(self) -> None:
        """Start the loop thread and listen; returns once the port accepts connections."""
        if self._thread is not None:
            raise RuntimeError("the proxy is already running")
        loop = asyncio.new_event_loop()
        self._loop = loop
        self._thread = threading.Thread(
            target=loop.run_forever, name=f"proxy->{self.target[1]}", daemon=True
        )
        self._thread.start()
        self._call(self._listen())

    def close(self) -> None:
        """Stop listening, close every connection and the loop thread (idempotent)."""
        loop, thread = self._loop, self._thread
        if loop is None or thread is None:
            return
        with contextlib.suppress(RuntimeError):
            self._call(self._shutdown())
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()
        self._loop = self._thread = None

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- control -----------------------------------------------------------------------------------

    @property
    def port(self) -> int:
        """The port the proxy listens on (valid after :meth:`start`)."""
        return self._port

    @property
    def url(self) -> str:
        """``mqtt://HOST:PORT`` of the proxy: a broker URL for clients that should go through it."""
        return f"mqtt://{self.host}:{self._port}"

    @property
    def mode(self) -> Mode:
        """The current mode."""
        return self._mode

    def set_mode(self, mode: Mode | str, *, delay_ms: float | None = None) -> None:
        """Switch every connection to ``mode`` (``delay_ms`` is the per-chunk delay of ``slow``).

        Returns once the switch is done: with ``cut``, once every connection is closed.
        """
        mode = Mode(mode)
        if mode is Mode.SLOW and delay_ms is None:
            raise ValueError("slow mode needs delay_ms")
        self._call(self._switch(mode, (delay_ms or 0.0) / 1000.0))

    def heal(self) -> None:
        """Back to ``pass``: held bytes flow again."""
        self.set_mode(Mode.PASS)

    @property
    def connections(self) -> int:
        """How many client connections are open through the proxy now."""
        return self._call(self._count())

    @property
    def accepted(self) -> int:
        """How many client connections the proxy has accepted since it started."""
        return self._accepted

    def forwarded(self, direction: Direction | str) -> int:
        """Bytes forwarded so far in ``direction`` (``up`` or ``down``)."""
        return self._forwarded[Direction(direction)]

    # -- the loop's side ---------------------------------------------------------------------------

    def _call(self, coroutine: Coroutine[Any, Any, T]) -> T:
        if self._loop is None:
            coroutine.close()
            raise RuntimeError("the proxy is not running")
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result(30)

    async def _listen(self) -> None:
        self._changed = asyncio.Event()
        self._server = await asyncio.start_server(self._accept, self.host, self._requested_port)
        self._port = int(self._server.sockets[0].getsockname()[1])

    async def _shutdown(self) -> None:
        self._closing = True
        if self._server is not None:
            self._server.close()
        # Until none is left: a connection accepted just before the close may add one, and a
        # task left pending would be destroyed with the loop ("Event loop is closed").
        while self._tasks:
            await self._close_all()

    async def _count(self) -> int:
        return len(self._tasks)

    async def _switch(self, mode: Mode, delay_s: float) -> None:
        self._mode = mode
        self._delay_s = delay_s
        if mode is Mode.CUT:
            await self._close_all()
        self._notify()

    async def _close_all(self) -> None:
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def _notify(self) -> None:
        assert self._changed is not None
        self._changed.set()
        self._changed = asyncio.Event()

    async def _wait_for(self, ready: Any) -> None:
        """Block until ``ready()`` is true; re-checked after every mode switch."""
        while not ready():
            assert self._changed is not None
            await self._changed.wait()

    def _flows(self, direction: Direction) -> bool:
        return direction not in _BLOCKED.get(self._mode, frozenset())

    def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._accepted += 1
        if self._mode is Mode.CUT or self._closing:
            writer.transport.abort()
            return
        task = asyncio.get_running_loop().create_task(self._serve(reader, writer))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        upstream: asyncio.StreamWriter | None = None
        try:
            # A partition holds a new connection too: the target hears of it only once healed.
            await self._wait_for(lambda: self._mode not in (Mode.BLACKHOLE, Mode.CUT))
            async with asyncio.timeout(CONNECT_TIMEOUT_S):
                target_reader, upstream = await asyncio.open_connection(*self.target)
            async with asyncio.TaskGroup() as group:
                group.create_task(self._pump(reader, upstream, Direction.UP))
                group.create_task(self._pump(target_reader, writer, Direction.DOWN))
        except (OSError, TimeoutError, ExceptionGroup):
            pass  # one side went away: close both (below)
        finally:
            writer.transport.abort()
            if upstream is not None:
                upstream.transport.abort()

    async def _pump(
        self, source: asyncio.StreamReader, sink: asyncio.StreamWriter, direction: Direction
    ) -> None:
        """Copy ``source`` to ``sink`` while ``direction`` flows; an end of stream ends both."""
        while True:
            data = await source.read(CHUNK_BYTES)
            # Held, never dropped: neither data nor the end of the stream pass a blocked link.
            await self._wait_for(lambda: self._flows(direction))
            if not data:
                raise ConnectionResetError(f"{direction} side closed")
            if self._mode is Mode.SLOW and self._delay_s > 0:
                await asyncio.sleep(self._delay_s)
            self._forwarded[direction] += len(data)
            sink.write(data)
            await sink.drain()
