"""Real MQTT brokers for tests: a Mosquitto subprocess and the embedded broker in a thread.

Both expose the same small surface (:class:`BrokerHandle`): ``url``, ``host``, ``port`` and
``start`` / ``stop`` / ``restart`` / ``kill``, so a test parametrized over brokers can restart
either one. The fixtures in ``conftest.py`` build on these classes; scripts may use them directly.
:class:`MosquittoProcess` and :func:`wait_port` live in :mod:`tests.harness`, which the benchmarks
share; they are re-exported here, where the tests have always imported them.

Also here: a raw MQTT 3.1.1 client (:func:`raw_connect`) that opens a session over a plain socket,
so a test can drop the connection abruptly (no DISCONNECT packet) without killing a process.
"""

from __future__ import annotations

import asyncio
import socket
import struct
import threading
from collections.abc import Coroutine
from concurrent.futures import Future
from typing import Any, Protocol

from nasd.mqtt.broker import EmbeddedBroker
from tests import harness
from tests.harness import (
    MOSQUITTO_MISSING,
    START_TIMEOUT_S,
    STOP_TIMEOUT_S,
    MosquittoNotFound,
    MosquittoProcess,
    wait_port,
)

__all__ = [
    "MOSQUITTO_MISSING",
    "BrokerHandle",
    "MosquittoNotFound",
    "MosquittoProcess",
    "ThreadedEmbeddedBroker",
    "find_mosquitto",
    "raw_connect",
    "wait_port",
]

_MOSQUITTO_FALLBACKS = harness.MOSQUITTO_FALLBACKS


class BrokerHandle(Protocol):
    """What the ``broker`` fixture yields, whichever broker runs behind it."""

    @property
    def url(self) -> str:
        """``mqtt://HOST:PORT``."""
        ...

    @property
    def host(self) -> str:
        """The loopback address the broker listens on."""
        ...

    @property
    def port(self) -> int:
        """The TCP port, the same across restarts."""
        ...

    def start(self) -> None:
        """Start the broker (on the same port as before, when restarted)."""
        ...

    def stop(self) -> None:
        """Stop the broker gracefully."""
        ...

    def restart(self) -> None:
        """Stop, then start again on the same port."""
        ...

    def kill(self) -> None:
        """Stop the broker abruptly (SIGKILL where it is a process)."""
        ...


def find_mosquitto() -> str:
    """Path of the mosquitto binary: on PATH, else in the usual sbin folders.

    Reads this module's ``_MOSQUITTO_FALLBACKS`` at each call, so a test can replace them.
    """
    return harness.find_mosquitto(_MOSQUITTO_FALLBACKS)


class ThreadedEmbeddedBroker:
    """The embedded broker on its own event loop in a daemon thread.

    Sync tests and tests that talk to the broker from subprocesses use it like Mosquitto. It keeps
    its port across restarts; a restart forgets every session and retained message, as the real
    embedded broker does. ``kill`` is the same as ``stop``: a thread cannot be killed.
    """

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self._host = host
        self._port = port
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._broker: EmbeddedBroker | None = None

    @property
    def host(self) -> str:
        """The loopback address the broker listens on."""
        return self._host

    @property
    def port(self) -> int:
        """The TCP port (known once started; then the same across restarts)."""
        if self._port == 0:
            raise RuntimeError("the embedded broker has not been started yet")
        return self._port

    @property
    def url(self) -> str:
        """``mqtt://HOST:PORT``."""
        return f"mqtt://{self._host}:{self.port}"

    @property
    def running(self) -> bool:
        """Whether the broker is serving."""
        return self._broker is not None

    def start(self) -> None:
        """Start a fresh loop thread and broker; wait until the port accepts connections."""
        if self._broker is not None:
            raise RuntimeError("the embedded broker is already running")
        loop = asyncio.new_event_loop()
        thread = threading.Thread(
            target=loop.run_forever, name=f"embedded-broker-{self._port}", daemon=True
        )
        thread.start()
        broker = EmbeddedBroker(self._host, self._port)
        try:
            self._call(loop, broker.start())
        except BaseException:
            self._close_loop(loop, thread)
            raise
        self._loop, self._thread, self._broker = loop, thread, broker
        self._port = broker.port
        wait_port(self._host, self._port)

    def stop(self) -> None:
        """Stop the broker, then its loop and thread (idempotent)."""
        loop, thread, broker = self._loop, self._thread, self._broker
        self._loop = self._thread = self._broker = None
        if loop is None or thread is None or broker is None:
            return
        try:
            self._call(loop, broker.stop())
        finally:
            self._close_loop(loop, thread)

    def kill(self) -> None:
        """Same as :meth:`stop` (a thread cannot be killed)."""
        self.stop()

    def restart(self) -> None:
        """Stop, then start again on the same port, empty."""
        self.stop()
        self.start()

    @staticmethod
    def _call(loop: asyncio.AbstractEventLoop, coro: Coroutine[Any, Any, None]) -> None:
        future: Future[None] = asyncio.run_coroutine_threadsafe(coro, loop)
        future.result(timeout=START_TIMEOUT_S + STOP_TIMEOUT_S)

    @staticmethod
    def _close_loop(loop: asyncio.AbstractEventLoop, thread: threading.Thread) -> None:
        async def cancel_leftovers() -> None:
            current = asyncio.current_task()
            leftovers = [task for task in asyncio.all_tasks() if task is not current]
            for task in leftovers:
                task.cancel()
            await asyncio.gather(*leftovers, return_exceptions=True)

        try:
            asyncio.run_coroutine_threadsafe(cancel_leftovers(), loop).result(STOP_TIMEOUT_S)
        finally:
            loop.call_soon_threadsafe(loop.stop)
            thread.join(STOP_TIMEOUT_S)
            if not thread.is_alive():
                loop.close()

    def __repr__(self) -> str:
        state = "running" if self.running else "stopped"
        return f"ThreadedEmbeddedBroker({self._host}:{self._port}, {state})"


def _mqtt_string(value: bytes) -> bytes:
    return struct.pack("!H", len(value)) + value


def _remaining_length(length: int) -> bytes:
    encoded = bytearray()
    while True:
        digit, length = length % 128, length // 128
        encoded.append(digit | (0x80 if length else 0))
        if not length:
            return bytes(encoded)


def connect_packet(
    client_id: str,
    *,
    keepalive: int = 60,
    clean_session: bool = True,
    will_topic: str | None = None,
    will_payload: bytes = b"",
    will_qos: int = 0,
    will_retain: bool = False,
) -> bytes:
    """An MQTT 3.1.1 CONNECT packet (no credentials), optionally with a last will."""
    flags = 0x02 if clean_session else 0x00
    payload = _mqtt_string(client_id.encode())
    if will_topic is not None:
        flags |= 0x04 | (will_qos << 3) | (0x20 if will_retain else 0)
        payload += _mqtt_string(will_topic.encode()) + _mqtt_string(will_payload)
    variable_header = _mqtt_string(b"MQTT") + bytes([4, flags]) + struct.pack("!H", keepalive)
    body = variable_header + payload
    return b"\x10" + _remaining_length(len(body)) + body


def raw_connect(
    host: str,
    port: int,
    client_id: str,
    *,
    timeout: float = 5.0,
    keepalive: int = 60,
    clean_session: bool = True,
    will_topic: str | None = None,
    will_payload: bytes = b"",
    will_qos: int = 0,
    will_retain: bool = False,
) -> socket.socket:
    """Open an MQTT session over a bare socket and return the socket once CONNACK accepted it.

    Closing the returned socket without sending DISCONNECT is an abrupt disconnection: the broker
    must publish the will. Nothing else is spoken on it.
    """
    sock = socket.create_connection((host, port), timeout=timeout)
    try:
        sock.sendall(
            connect_packet(
                client_id,
                keepalive=keepalive,
                clean_session=clean_session,
                will_topic=will_topic,
                will_payload=will_payload,
                will_qos=will_qos,
                will_retain=will_retain,
            )
        )
        connack = b""
        while len(connack) < 4:
            chunk = sock.recv(4 - len(connack))
            if not chunk:
                raise ConnectionError("broker closed the connection before CONNACK")
            connack += chunk
        if connack[0] != 0x20 or connack[3] != 0:
            raise ConnectionError(f"broker refused the connection: CONNACK {connack.hex()}")
    except BaseException:
        sock.close()
        raise
    return sock
