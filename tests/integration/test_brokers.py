"""The MQTT behaviour nasd relies on, checked on Mosquitto and on the embedded broker alike.

Each ``broker`` test runs twice (``[mosquitto]`` and ``[embedded]``). Clients are aiomqtt, as in
the product; abrupt disconnections use a bare socket or a SIGKILLed subprocess.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

import aiomqtt
import pytest

from nasd.errors import ConfigError
from nasd.mqtt.broker import EmbeddedBroker, free_port, serve_forever
from tests import brokers
from tests.brokers import BrokerHandle, MosquittoProcess, raw_connect, wait_port
from tests.clients import mqtt_client

T = TypeVar("T")

pytestmark = pytest.mark.timeout(120)

_RECEIVE_TIMEOUT_S = 10.0


def run(main: Callable[[], Awaitable[T]]) -> T:
    """Run one async test body on a fresh event loop."""

    async def wrapper() -> T:
        return await main()

    return asyncio.run(wrapper())


def client(
    handle: BrokerHandle, identifier: str, **kwargs: object
) -> contextlib.AbstractAsyncContextManager[aiomqtt.Client]:
    """A connected aiomqtt client for ``handle`` (kwargs as for aiomqtt.Client)."""
    return mqtt_client(handle.host, handle.port, identifier, **kwargs)


async def next_message(
    mqtt: aiomqtt.Client, timeout: float = _RECEIVE_TIMEOUT_S
) -> aiomqtt.Message:
    """The next message delivered to ``mqtt``; TimeoutError if none comes in ``timeout`` s."""
    async with asyncio.timeout(timeout):
        async for message in mqtt.messages:
            return message
    raise AssertionError("the message iterator ended")  # pragma: no cover


async def no_message(mqtt: aiomqtt.Client, wait: float = 0.5) -> None:
    """Assert that nothing is delivered to ``mqtt`` for ``wait`` seconds."""
    with contextlib.suppress(TimeoutError):
        message = await next_message(mqtt, timeout=wait)
        raise AssertionError(f"unexpected message on {message.topic}: {message.payload!r}")


def test_retained_message_reaches_later_subscriber(broker: BrokerHandle) -> None:
    async def main() -> None:
        async with client(broker, "birth") as publisher:
            await publisher.publish("nasd/test/daemon/state", b"online", qos=1, retain=True)
        async with client(broker, "late") as late:
            await late.subscribe("nasd/test/daemon/state", qos=1)
            message = await next_message(late)
        assert message.payload == b"online"
        assert message.retain

    run(main)


def test_retained_messages_only_for_own_subscriptions(broker: BrokerHandle) -> None:
    """A newcomer gets no retained message for topics only *other* clients subscribed to."""

    async def main() -> None:
        async with client(broker, "retainer") as publisher:
            await publisher.publish("nasd/test/other/state", b"x", qos=1, retain=True)
        async with client(broker, "watcher") as watcher:
            await watcher.subscribe("nasd/test/other/#", qos=1)
            assert (await next_message(watcher)).payload == b"x"
            async with client(broker, "newcomer") as newcomer:  # connects after that subscription
                await newcomer.subscribe("nasd/test/mine/#", qos=1)
                await no_message(newcomer)

    run(main)


def test_qos1_round_trip_of_200_kib_payload(broker: BrokerHandle) -> None:
    payload = os.urandom(200 * 1024)

    async def main() -> None:
        async with client(broker, "big-sub") as subscriber, client(broker, "big-pub") as publisher:
            await subscriber.subscribe("nasd/test/big", qos=1)
            await publisher.publish("nasd/test/big", payload, qos=1)
            message = await next_message(subscriber)
        assert message.qos == 1
        assert message.payload == payload

    run(main)


def test_last_will_when_socket_closes_abruptly(broker: BrokerHandle) -> None:
    async def main() -> None:
        async with client(broker, "will-watcher") as watcher:
            await watcher.subscribe("nasd/test/agents/raw/state", qos=1)
            sock = raw_connect(
                broker.host,
                broker.port,
                "raw",
                will_topic="nasd/test/agents/raw/state",
                will_payload=b"offline",
                will_qos=1,
                will_retain=True,
            )
            await no_message(watcher, wait=0.2)
            sock.close()  # no DISCONNECT packet
            message = await next_message(watcher)
        assert message.payload == b"offline"
        async with client(broker, "will-late") as late:  # the will was retained
            await late.subscribe("nasd/test/agents/raw/state", qos=1)
            assert (await next_message(late)).payload == b"offline"

    run(main)


def test_clean_disconnect_publishes_no_will(broker: BrokerHandle) -> None:
    async def main() -> None:
        will = aiomqtt.Will("nasd/test/polite/state", b"offline", qos=1)
        async with client(broker, "polite-watcher") as watcher:
            await watcher.subscribe("nasd/test/polite/state", qos=1)
            async with client(broker, "polite", will=will):
                pass
            await no_message(watcher)

    run(main)


_VICTIM = """
import asyncio, sys
import aiomqtt

async def main() -> None:
    will = aiomqtt.Will("nasd/test/agents/victim/state", b"offline", qos=1, retain=True)
    async with aiomqtt.Client("127.0.0.1", int(sys.argv[1]), identifier="victim", will=will) as c:
        await c.publish("nasd/test/agents/victim/state", b"online", qos=1, retain=True)
        print("ready", flush=True)
        await asyncio.sleep(600)

asyncio.run(main())
"""


def test_last_will_when_client_process_is_sigkilled(broker: BrokerHandle) -> None:
    async def main() -> None:
        async with client(broker, "victim-watcher") as watcher:
            await watcher.subscribe("nasd/test/agents/victim/state", qos=1)
            victim = await asyncio.create_subprocess_exec(
                sys.executable,
                "-c",
                _VICTIM,
                str(broker.port),
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
            )
            try:
                assert victim.stdout is not None
                line = await asyncio.wait_for(victim.stdout.readline(), _RECEIVE_TIMEOUT_S)
                assert line.strip() == b"ready", line
                assert (await next_message(watcher)).payload == b"online"
            finally:
                victim.kill()
                _, stderr = await victim.communicate()
            assert victim.returncode == -signal.SIGKILL, stderr.decode(errors="replace")
            message = await next_message(watcher)
        assert message.payload == b"offline"

    run(main)


def test_silent_client_is_dropped_after_keepalive_and_its_will_published(
    broker: BrokerHandle,
) -> None:
    """A frozen client (SIGSTOP, dead network) must not look alive forever: 1.5 x keep-alive."""

    async def main() -> None:
        async with client(broker, "frozen-watcher") as watcher:
            await watcher.subscribe("nasd/test/frozen/state", qos=1)
            sock = raw_connect(
                broker.host,
                broker.port,
                "frozen",
                keepalive=1,
                will_topic="nasd/test/frozen/state",
                will_payload=b"offline",
                will_qos=1,
            )
            try:
                started = time.monotonic()
                message = await next_message(watcher, timeout=15)
                elapsed = time.monotonic() - started
            finally:
                sock.close()
        assert message.payload == b"offline"
        # Mosquitto 2.0 checks keep-alives every few seconds, hence the generous upper bound.
        assert 0.9 <= elapsed <= 12, elapsed

    run(main)


def test_persistent_session_queues_qos1_while_client_is_away(broker: BrokerHandle) -> None:
    async def main() -> None:
        async with client(broker, "agent-a", clean_session=False) as agent:
            await agent.subscribe("nasd/test/agents/agent-a/assign", qos=1)
        async with client(broker, "daemon") as daemon:
            for index in range(3):
                await daemon.publish("nasd/test/agents/agent-a/assign", b"job%d" % index, qos=1)
        async with client(broker, "agent-a", clean_session=False) as agent:
            payloads = [(await next_message(agent)).payload for _ in range(3)]
        assert payloads == [b"job0", b"job1", b"job2"]

    run(main)


def test_twenty_concurrent_clients(broker: BrokerHandle) -> None:
    count = 20

    async def main() -> None:
        async with contextlib.AsyncExitStack() as stack:
            agents = [
                await stack.enter_async_context(client(broker, f"many-{index}"))
                for index in range(count)
            ]
            for index, agent in enumerate(agents):
                await agent.subscribe(f"nasd/test/many/{index}", qos=1)
                await agent.subscribe("nasd/test/many/all", qos=1)
            daemon = await stack.enter_async_context(client(broker, "many-daemon"))
            await daemon.publish("nasd/test/many/all", b"hello", qos=1)
            for index in range(count):
                await daemon.publish(f"nasd/test/many/{index}", b"%d" % index, qos=1)
            for index, agent in enumerate(agents):
                first, second = await next_message(agent), await next_message(agent)
                assert {first.payload, second.payload} == {b"hello", b"%d" % index}

    run(main)


def test_restart_keeps_port_and_clients_reconnect(broker: BrokerHandle) -> None:
    port = broker.port

    async def round_trip(tag: bytes) -> bytes:
        async with client(broker, "rt-sub") as subscriber, client(broker, "rt-pub") as publisher:
            await subscriber.subscribe("nasd/test/restart", qos=1)
            await publisher.publish("nasd/test/restart", tag, qos=1)
            payload = (await next_message(subscriber)).payload
            assert isinstance(payload, bytes)
            return payload

    assert asyncio.run(round_trip(b"before")) == b"before"
    broker.restart()
    assert broker.port == port
    assert asyncio.run(round_trip(b"after")) == b"after"


def test_mosquitto_restart_drops_connected_clients_that_then_reconnect(
    mosquitto: MosquittoProcess,
) -> None:
    """The fault nasd's MQTT adapter must survive: the connection dies, a new one succeeds."""

    async def main() -> None:
        async with client(mosquitto, "survivor") as survivor:
            await survivor.subscribe("nasd/test/x", qos=1)
            await asyncio.to_thread(mosquitto.restart)
            with pytest.raises(aiomqtt.MqttError):
                await next_message(survivor)
        async with client(mosquitto, "survivor") as survivor:
            await survivor.publish("nasd/test/x", b"again", qos=1)

    run(main)
    assert "in use" not in mosquitto.log_tail()


def test_shared_mosquitto_serves_a_round_trip(shared_mosquitto: MosquittoProcess) -> None:
    async def main() -> None:
        async with client(shared_mosquitto, "shared-sub") as subscriber:
            await subscriber.subscribe("nasd/test/shared", qos=1)
            async with client(shared_mosquitto, "shared-pub") as publisher:
                await publisher.publish("nasd/test/shared", b"hi", qos=1)
            assert (await next_message(subscriber)).payload == b"hi"

    run(main)


def test_missing_mosquitto_is_reported_with_the_fix(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", "/nonexistent")
    monkeypatch.setattr(brokers, "_MOSQUITTO_FALLBACKS", ("/nonexistent/mosquitto",))
    with pytest.raises(brokers.MosquittoNotFound, match="run `make test`, which installs it"):
        brokers.find_mosquitto()


def test_mosquitto_kill_frees_the_port_for_a_restart(mosquitto: MosquittoProcess) -> None:
    port = mosquitto.port
    mosquitto.kill()
    assert not mosquitto.running
    mosquitto.start()
    assert mosquitto.port == port
    wait_port(mosquitto.host, port, timeout=2)


# --- the embedded broker's own API -------------------------------------------------------------


def test_embedded_broker_picks_a_port_and_reports_its_url() -> None:
    async def main() -> None:
        async with EmbeddedBroker() as embedded:
            assert embedded.running
            assert embedded.port > 0
            assert embedded.url == f"mqtt://127.0.0.1:{embedded.port}"
        assert not embedded.running
        await embedded.stop()  # idempotent

    run(main)


def test_embedded_broker_on_a_busy_port_raises_config_error() -> None:
    async def main() -> None:
        async with EmbeddedBroker() as first:
            with pytest.raises(ConfigError, match="cannot listen"):
                await EmbeddedBroker(port=first.port).start()

    run(main)


def test_free_port_is_bindable() -> None:
    port = free_port()
    assert 0 < port < 65536


def test_serve_forever_reports_ready_and_stops_when_cancelled() -> None:
    async def main() -> None:
        urls: list[str] = []
        ready = asyncio.Event()

        def on_ready(url: str) -> None:
            urls.append(url)
            ready.set()

        task = asyncio.create_task(serve_forever("127.0.0.1", 0, ready=on_ready))
        await asyncio.wait_for(ready.wait(), _RECEIVE_TIMEOUT_S)
        port = int(urls[0].rsplit(":", 1)[1])
        async with mqtt_client("127.0.0.1", port, "sf"):
            pass
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        with pytest.raises(OSError):
            await asyncio.open_connection("127.0.0.1", port)

    run(main)


def test_run_broker_exits_cleanly_on_sigterm() -> None:
    port = free_port()
    code = f"from nasd.mqtt.broker import run_broker; run_broker('127.0.0.1', {port})"
    process = subprocess.Popen(
        [sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    try:
        wait_port("127.0.0.1", port, timeout=_RECEIVE_TIMEOUT_S)
        process.send_signal(signal.SIGTERM)
        stdout, stderr = process.communicate(timeout=_RECEIVE_TIMEOUT_S)
    finally:
        process.kill()
    assert process.returncode == 0, stderr.decode(errors="replace")
    assert f"mqtt://127.0.0.1:{port}" in stdout.decode()
    assert b"Traceback" not in stderr


def test_test_client_retries_a_connect_whose_connack_never_comes(
    mosquitto: MosquittoProcess,
) -> None:
    """tests.clients.mqtt_client: a swallowed first CONNECT costs one retry, with a warning."""

    async def main() -> None:
        connections = 0
        held: list[asyncio.StreamWriter] = []

        async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            with contextlib.suppress(ConnectionError):
                while data := await reader.read(65536):
                    writer.write(data)
                    await writer.drain()
            writer.close()

        async def on_connection(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            nonlocal connections
            connections += 1
            if connections == 1:  # swallow the CONNECT: no CONNACK ever
                held.append(writer)
                await reader.read()
                return
            up_reader, up_writer = await asyncio.open_connection(mosquitto.host, mosquitto.port)
            await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))

        server = await asyncio.start_server(on_connection, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        async with server:
            with pytest.warns(RuntimeWarning, match="'retrier'.*retrying"):
                async with mqtt_client("127.0.0.1", port, "retrier", timeout=1) as retrier:
                    await retrier.publish("nasd/test/retry", b"x", qos=1)
        assert connections == 2

    run(main)
