"""nasd.mqtt.Link's per-connection task group, on an in-process embedded broker.

A lost connection ends the group and the link reconnects (running ``on_connect`` again); a
failure that is not a lost connection (a bug in ``on_connect``) ends :meth:`Link.run` with it
instead of vanishing; cancelling the link leaves none of its tasks behind.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import pytest
from aiomqtt.exceptions import MqttCodeError, MqttError
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.reasoncodes import ReasonCode

from nasd.mqtt import BrokerUrl, Link, Publication
from nasd.mqtt.broker import EmbeddedBroker
from nasd.mqtt.link import session_taken_over

pytestmark = pytest.mark.timeout(60)

WAIT_S = 15.0


async def _until(condition: Callable[[], bool], what: str) -> None:
    async with asyncio.timeout(WAIT_S):
        while not condition():
            await asyncio.sleep(0.02)
    assert condition(), what


def _link(broker: EmbeddedBroker, name: str, hook: Callable[[], Awaitable[None]]) -> Link:
    async def on_connect() -> None:
        await hook()

    return Link(BrokerUrl.parse(broker.url), name, on_connect=on_connect, clean_session=True)


def _tasks_of(name: str) -> list[asyncio.Task[object]]:
    return [t for t in asyncio.all_tasks() if t.get_name().startswith(f"{name}-")]


def test_a_lost_connection_reconnects_and_runs_on_connect_again() -> None:
    async def main() -> None:
        broker = EmbeddedBroker()
        await broker.start()
        port = broker.port
        connects = 0

        async def hook() -> None:
            nonlocal connects
            connects += 1

        link = _link(broker, "reconnecting", hook)
        task = asyncio.create_task(link.run())
        replacement = EmbeddedBroker(port=port)
        try:
            await _until(lambda: connects == 1, "the first connection")
            await broker.stop()
            await _until(lambda: not link.connected.is_set(), "the loss to be noticed")
            assert not task.done(), task
            await replacement.start()
            await _until(lambda: connects == 2, "a reconnection")
            assert await link.publish(Publication("nasd/test/again", b"x"))
        finally:
            await link.close()
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            await replacement.stop()

    asyncio.run(main())


def test_a_failing_on_connect_ends_run_with_its_error() -> None:
    async def main() -> None:
        async def hook() -> None:
            raise RuntimeError("birth message could not be built")

        async with EmbeddedBroker() as broker:
            link = _link(broker, "failing", hook)
            with pytest.raises(BaseExceptionGroup) as raised:
                await asyncio.wait_for(link.run(), WAIT_S)
            assert raised.value.subgroup(RuntimeError) is not None, raised.value
            assert not link.connected.is_set()
            assert _tasks_of("failing") == []

    asyncio.run(main())


def test_cancelling_run_leaves_no_connection_task_behind() -> None:
    async def main() -> None:
        started = asyncio.Event()

        async def hook() -> None:
            started.set()
            await asyncio.Event().wait()  # a hook still busy when the owner stops the link

        async with EmbeddedBroker() as broker:
            link = _link(broker, "cancelled", hook)
            task = asyncio.create_task(link.run())
            await asyncio.wait_for(started.wait(), WAIT_S)
            assert {t.get_name() for t in _tasks_of("cancelled")} == {
                "cancelled-pump",
                "cancelled-watch",
                "cancelled-on-connect",
            }
            await link.close()
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            assert task.cancelled()
            assert _tasks_of("cancelled") == []

    asyncio.run(main())


def test_a_session_taken_over_is_told_apart_from_other_disconnections() -> None:
    taken = ReasonCode(PacketTypes.DISCONNECT, identifier=142)
    assert session_taken_over(MqttCodeError(taken, "Disconnected during message iteration"))
    assert session_taken_over(MqttCodeError(142))
    assert session_taken_over(MqttError("Session taken over"))
    assert not session_taken_over(MqttCodeError(7, "The connection was lost."))
    assert not session_taken_over(MqttError("Disconnected during message iteration"))
