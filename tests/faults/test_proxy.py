"""The partition proxy (``tests/faults/proxy.py``) with plain sockets: each mode does what it says.

The target is a tiny threaded TCP server that records what it receives and answers each chunk
with ``b"re:" + chunk``, so a test sees separately what reached the target and what came back.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Callable, Iterator

import pytest

from tests.faults.proxy import Mode, Proxy

QUIET_S = 0.3
"""How long "nothing arrives" is watched for."""


class Target:
    """A TCP server on loopback: records every chunk it gets and replies ``re:<chunk>``."""

    def __init__(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self.listener.getsockname()[1]
        self.received = bytearray()
        self.peers: list[socket.socket] = []
        self._lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            self.peers.append(conn)
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while chunk := conn.recv(4096):
                with self._lock:
                    self.received += chunk
                conn.sendall(b"re:" + chunk)

    def got(self) -> bytes:
        with self._lock:
            return bytes(self.received)

    def close(self) -> None:
        self.listener.close()
        for peer in self.peers:
            with contextlib.suppress(OSError):
                peer.close()


@pytest.fixture
def target() -> Iterator[Target]:
    server = Target()
    yield server
    server.close()


@pytest.fixture
def proxy(target: Target) -> Iterator[Proxy]:
    with Proxy("127.0.0.1", target.port) as running:
        yield running


def connect(proxy: Proxy) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", proxy.port), timeout=5)
    return sock


def recv_exactly(sock: socket.socket, size: int, timeout: float = 5.0) -> bytes:
    sock.settimeout(timeout)
    data = b""
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        if not chunk:
            raise ConnectionError(f"closed after {data!r}")
        data += chunk
    return data


def nothing_arrives(sock: socket.socket) -> bool:
    """True if the socket neither delivers data nor closes within QUIET_S."""
    sock.settimeout(QUIET_S)
    try:
        sock.recv(1)
    except TimeoutError:
        return True
    return False


def wait_for(predicate: Callable[[], bool], timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.01)
    return False


def test_pass_forwards_both_ways(proxy: Proxy, target: Target) -> None:
    with connect(proxy) as sock:
        sock.sendall(b"hello")
        assert recv_exactly(sock, 8) == b"re:hello"
    assert target.got() == b"hello"
    assert proxy.forwarded("up") == 5 and proxy.forwarded("down") == 8


def test_blackhole_holds_everything_and_keeps_the_socket_open_until_healed(
    proxy: Proxy, target: Target
) -> None:
    with connect(proxy) as sock:
        sock.sendall(b"a")
        assert recv_exactly(sock, 4) == b"re:a"
        proxy.set_mode(Mode.BLACKHOLE)
        sock.sendall(b"b")
        assert nothing_arrives(sock)
        assert target.got() == b"a"
        assert proxy.connections == 1
        proxy.heal()
        assert recv_exactly(sock, 4) == b"re:b"
    assert target.got() == b"ab"


def test_a_new_connection_during_a_blackhole_reaches_the_target_only_when_healed(
    proxy: Proxy, target: Target
) -> None:
    proxy.set_mode("blackhole")
    with connect(proxy) as sock:
        sock.sendall(b"x")
        assert nothing_arrives(sock)
        assert target.peers == []
        proxy.heal()
        assert recv_exactly(sock, 4) == b"re:x"


def test_drop_up_stops_client_to_target_only(proxy: Proxy, target: Target) -> None:
    with connect(proxy) as sock:
        sock.sendall(b"1")
        assert recv_exactly(sock, 4) == b"re:1"
        proxy.set_mode(Mode.DROP_UP)
        sock.sendall(b"2")
        assert nothing_arrives(sock)
        assert target.got() == b"1"
        proxy.heal()
        assert recv_exactly(sock, 4) == b"re:2"


def test_drop_down_stops_target_to_client_only(proxy: Proxy, target: Target) -> None:
    with connect(proxy) as sock:
        sock.sendall(b"1")
        assert recv_exactly(sock, 4) == b"re:1"
        proxy.set_mode(Mode.DROP_DOWN)
        sock.sendall(b"2")
        assert wait_for(lambda: target.got() == b"12"), "the up direction must still flow"
        assert nothing_arrives(sock)
        proxy.heal()
        assert recv_exactly(sock, 4) == b"re:2"


def test_slow_delays_each_chunk(proxy: Proxy) -> None:
    proxy.set_mode(Mode.SLOW, delay_ms=150)
    with connect(proxy) as sock:
        started = time.monotonic()
        sock.sendall(b"s")
        assert recv_exactly(sock, 4) == b"re:s"
        # One delay up and one down.
        assert time.monotonic() - started >= 0.29
    with pytest.raises(ValueError, match="delay_ms"):
        proxy.set_mode(Mode.SLOW)


def test_cut_closes_connections_and_refuses_new_ones_until_the_mode_changes(
    proxy: Proxy, target: Target
) -> None:
    with connect(proxy) as sock:
        sock.sendall(b"a")
        assert recv_exactly(sock, 4) == b"re:a"
        proxy.set_mode(Mode.CUT)
        sock.settimeout(5)
        with contextlib.suppress(ConnectionResetError):
            assert sock.recv(1) == b""
    assert proxy.connections == 0
    with connect(proxy) as refused:
        refused.settimeout(5)
        with contextlib.suppress(ConnectionResetError):
            assert refused.recv(1) == b""
    proxy.heal()
    with connect(proxy) as sock:
        sock.sendall(b"z")
        assert recv_exactly(sock, 4) == b"re:z"


def test_a_close_by_the_target_reaches_the_client(proxy: Proxy, target: Target) -> None:
    with connect(proxy) as sock:
        sock.sendall(b"a")
        assert recv_exactly(sock, 4) == b"re:a"
        target.peers[0].shutdown(socket.SHUT_RDWR)
        sock.settimeout(5)
        with contextlib.suppress(ConnectionResetError):
            assert sock.recv(1) == b""
    assert wait_for(lambda: proxy.connections == 0)


def test_close_is_idempotent_and_frees_the_port(target: Target) -> None:
    proxy = Proxy("127.0.0.1", target.port)
    proxy.start()
    port = proxy.port
    with connect(proxy):
        pass
    proxy.close()
    proxy.close()
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
