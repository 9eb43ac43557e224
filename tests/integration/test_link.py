"""nasd.mqtt.Link on a real Mosquitto: it notices a dead connection even if the loop does not.

uvloop stops watching a socket on which the kernel flags an error and tells no reader, so paho
would learn of a broker that went away only from its keep-alive. The link's once-a-second check
(:func:`nasd.mqtt.peer_gone`) covers that; here the loop is made blind on purpose (its reader for
the socket removed) and the keep-alive set to a minute, so only that check can notice in time.
"""

from __future__ import annotations

import asyncio
import socket
import struct
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

import pytest

from nasd.mqtt import SOCKET_CHECK_S, BrokerUrl, Link, peer_gone
from nasd.mqtt.adapters import paho_client
from tests.brokers import MosquittoProcess

T = TypeVar("T")

pytestmark = pytest.mark.timeout(120)


def _run_on(loop_name: str, main: Callable[[], Awaitable[T]]) -> T:
    async def wrapper() -> T:
        return await main()

    if loop_name == "uvloop":
        uvloop = pytest.importorskip("uvloop")
        return uvloop.run(wrapper())
    return asyncio.run(wrapper())


@pytest.mark.parametrize("loop_name", ["asyncio", "uvloop"])
def test_link_notices_a_broker_gone_while_the_loop_is_blind(
    mosquitto: MosquittoProcess, loop_name: str
) -> None:
    async def main() -> float:
        link = Link(BrokerUrl.parse(mosquitto.url), "blind", keepalive=60)
        task = asyncio.create_task(link.run())
        try:
            await asyncio.wait_for(link.connected.wait(), 20)
            assert link._client is not None
            sock = paho_client(link._client).socket()
            assert sock is not None
            asyncio.get_running_loop().remove_reader(sock.fileno())  # as uvloop does on POLLERR
            await asyncio.to_thread(mosquitto.kill)
            started = time.monotonic()
            while link.connected.is_set():
                await asyncio.sleep(0.05)
                assert time.monotonic() - started < 30, "the link never noticed"
            return time.monotonic() - started
        finally:
            await link.close()
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    noticed_after = _run_on(loop_name, main)
    # paho alone would wait for its keep-alive (60 s); the socket check runs every second.
    assert noticed_after < SOCKET_CHECK_S + 5, noticed_after


def test_peer_gone_sees_eof_and_reset_but_not_an_open_socket() -> None:
    pairs = [socket.socketpair() for _ in range(2)]
    try:
        (open_a, open_b), (fin_a, fin_b) = pairs
        assert not peer_gone(open_a)
        open_b.send(b"pending data is not an end")
        assert not peer_gone(open_a)
        assert open_a.recv(100) == b"pending data is not an end"  # the peek consumed nothing
        fin_b.close()
        assert peer_gone(fin_a)
    finally:
        for a, b in pairs:
            a.close()
            b.close()
    server = socket.create_server(("127.0.0.1", 0))
    with server, socket.create_connection(server.getsockname()) as client:
        accepted, _ = server.accept()
        accepted.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        accepted.close()  # an RST, not a FIN
        time.sleep(0.05)
        assert peer_gone(client)
