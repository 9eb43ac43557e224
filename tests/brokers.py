"""Real MQTT brokers for tests: a Mosquitto subprocess and the embedded broker in a thread.

Both expose the same small surface (:class:`BrokerHandle`): ``url``, ``host``, ``port`` and
``start`` / ``stop`` / ``restart`` / ``kill``, so a test parametrized over brokers can restart
either one. The fixtures in ``conftest.py`` build on these classes; scripts may use them directly.

Also here: :func:`wait_port`, and a raw MQTT 3.1.1 client (:func:`raw_connect`) that opens a
session over a plain socket, so a test can drop the connection abruptly (no DISCONNECT packet)
without killing a process.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import socket
import struct
import subprocess
import threading
import time
from collections.abc import Coroutine
from concurrent.futures import Future
from pathlib import Path
from typing import IO, Any, Protocol

from nasd.broker import EmbeddedBroker, free_port

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

MOSQUITTO_MISSING = "mosquitto not found: run `make test`, which installs it"
_MOSQUITTO_FALLBACKS = ("/usr/sbin/mosquitto", "/usr/local/sbin/mosquitto", "/usr/bin/mosquitto")
_START_TIMEOUT_S = 10.0
_STOP_TIMEOUT_S = 10.0


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


class MosquittoNotFound(RuntimeError):
    """No mosquitto binary on this machine."""


def find_mosquitto() -> str:
    """Path of the mosquitto binary: on PATH, else in the usual sbin folders."""
    found = shutil.which("mosquitto")
    if found:
        return found
    for candidate in _MOSQUITTO_FALLBACKS:
        if os.access(candidate, os.X_OK):
            return candidate
    raise MosquittoNotFound(MOSQUITTO_MISSING)


def wait_port(host: str, port: int, timeout: float = _START_TIMEOUT_S) -> None:
    """Block until ``host:port`` accepts TCP connections; TimeoutError after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return
        except OSError as exc:
            if time.monotonic() >= deadline:
                raise TimeoutError(f"nothing listens on {host}:{port} after {timeout} s") from exc
            time.sleep(0.02)


def _port_is_closed(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.2):
            return False
    except OSError:
        return True


class MosquittoProcess:
    """A real Mosquitto on a loopback port, configured from a generated file in ``workdir``.

    The config is anonymous, without persistence, with deep queues (``max_queued_messages``) so
    that fault-injection tests measure nasd rather than broker limits. Its log (``log_path``)
    gathers the output of every start. The port is chosen once and kept across restarts.
    """

    def __init__(
        self,
        workdir: Path,
        *,
        host: str = "127.0.0.1",
        port: int | None = None,
        extra_config: str = "",
    ) -> None:
        self.binary = find_mosquitto()
        self.workdir = workdir
        self._host = host
        self._port = port if port is not None else free_port(host)
        self._port_was_chosen = port is None
        self.extra_config = extra_config
        self.config_path = workdir / "mosquitto.conf"
        self.log_path = workdir / "mosquitto.log"
        self._process: subprocess.Popen[bytes] | None = None
        self._log_file: IO[bytes] | None = None

    @property
    def host(self) -> str:
        """The loopback address Mosquitto listens on."""
        return self._host

    @property
    def port(self) -> int:
        """The TCP port, the same across restarts."""
        return self._port

    @property
    def url(self) -> str:
        """``mqtt://HOST:PORT``."""
        return f"mqtt://{self._host}:{self._port}"

    @property
    def pid(self) -> int | None:
        """The process id while running (for SIGSTOP tests), else None."""
        process = self._process
        return process.pid if process is not None and process.poll() is None else None

    @property
    def running(self) -> bool:
        """Whether the Mosquitto process is alive."""
        return self._process is not None and self._process.poll() is None

    def _write_config(self) -> None:
        # Logging goes to stderr, which start() sends to log_path: mosquitto drops privileges
        # when started as root and could not open a file in a root-owned tmp_path itself.
        lines = [
            f"listener {self._port} {self._host}",
            "allow_anonymous true",
            "persistence false",
            "set_tcp_nodelay true",
            "max_queued_messages 10000",
            "max_inflight_messages 100",
            "log_dest stderr",
            "log_type error",
            "log_type warning",
            "log_type notice",
            "log_type information",
            "connection_messages true",
            "log_timestamp_format %Y-%m-%dT%H:%M:%S",
            self.extra_config,
        ]
        self.config_path.write_text("\n".join(lines) + "\n", encoding="utf-8")

    def start(self) -> None:
        """Start Mosquitto and wait until its port accepts connections.

        If the port was picked here and another process took it meanwhile, a new one is picked
        (only before the first successful start: restarts keep the port).
        """
        if self.running:
            raise RuntimeError("mosquitto is already running")
        for _attempt in range(5):
            self._write_config()
            self._spawn()
            try:
                self._await_listening()
                self._port_was_chosen = False
                return
            except TimeoutError:
                self.kill()
                if not self._port_was_chosen or "in use" not in self.log_tail():
                    raise
                self._port = free_port(self._host)
        raise TimeoutError(f"mosquitto did not start; log tail:\n{self.log_tail()}")

    def _spawn(self) -> None:
        self._log_file = self.log_path.open("ab")
        self._process = subprocess.Popen(
            [self.binary, "-c", str(self.config_path)],
            stdin=subprocess.DEVNULL,
            stdout=self._log_file,
            stderr=subprocess.STDOUT,
            cwd=self.workdir,
            start_new_session=True,  # a Ctrl-C in the terminal must not reach it before teardown
        )

    def _await_listening(self) -> None:
        deadline = time.monotonic() + _START_TIMEOUT_S
        while time.monotonic() < deadline:
            if not self.running:
                raise TimeoutError(f"mosquitto exited at start; log tail:\n{self.log_tail()}")
            try:
                wait_port(self._host, self._port, timeout=0.2)
                return
            except TimeoutError:
                continue
        raise TimeoutError(f"mosquitto is not listening; log tail:\n{self.log_tail()}")

    def stop(self) -> None:
        """SIGTERM, wait for the exit (SIGKILL after 10 s) and for the port to close."""
        process = self._process
        if process is not None and process.poll() is None:
            process.send_signal(signal.SIGCONT)  # a SIGSTOPped broker cannot act on SIGTERM
            process.terminate()
            try:
                process.wait(timeout=_STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        self._reap()

    def kill(self) -> None:
        """SIGKILL: the broker vanishes without closing sessions cleanly."""
        process = self._process
        if process is not None and process.poll() is None:
            process.kill()
            process.wait()
        self._reap()

    def restart(self) -> None:
        """SIGTERM, then start again on the same port."""
        self.stop()
        self.start()

    def _reap(self) -> None:
        self._process = None
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None
        deadline = time.monotonic() + _STOP_TIMEOUT_S
        while not _port_is_closed(self._host, self._port) and time.monotonic() < deadline:
            time.sleep(0.02)

    def log_tail(self, max_bytes: int = 4000) -> str:
        """The end of the broker's log, for failure messages."""
        try:
            data = self.log_path.read_bytes()
        except FileNotFoundError:
            return ""
        return data[-max_bytes:].decode("utf-8", errors="replace")

    def __repr__(self) -> str:
        return f"MosquittoProcess(url={self.url!r}, running={self.running})"


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
        future.result(timeout=_START_TIMEOUT_S + _STOP_TIMEOUT_S)

    @staticmethod
    def _close_loop(loop: asyncio.AbstractEventLoop, thread: threading.Thread) -> None:
        async def cancel_leftovers() -> None:
            current = asyncio.current_task()
            leftovers = [task for task in asyncio.all_tasks() if task is not current]
            for task in leftovers:
                task.cancel()
            await asyncio.gather(*leftovers, return_exceptions=True)

        try:
            asyncio.run_coroutine_threadsafe(cancel_leftovers(), loop).result(_STOP_TIMEOUT_S)
        finally:
            loop.call_soon_threadsafe(loop.stop)
            thread.join(_STOP_TIMEOUT_S)
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
