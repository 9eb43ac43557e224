"""The daemon alone on a real Mosquitto, fed crafted control requests: it answers and stays up.

No agents run here: a plain aiomqtt client plays the CLI (or an attacker) and the daemon runs
in-process (:func:`serving`), so a crash surfaces as the exception that ended it. The helpers are
shared by the other ``test_daemon_*`` modules.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import aiomqtt
import pytest

from nasd.config import ExperimentConfig
from nasd.core.wire import (
    control_request_topic,
    control_response_topic,
    decode,
    encode,
)
from nasd.mqtt import BrokerUrl
from nasd.service.daemon import Daemon, DaemonOptions
from tests.brokers import MosquittoProcess
from tests.clients import mqtt_client

pytestmark = pytest.mark.timeout(120)


@contextlib.asynccontextmanager
async def serving(
    url: str,
    db: Path,
    *,
    experiments: Sequence[ExperimentConfig] = (),
    install_signals: bool = False,
    **options: Any,
) -> AsyncIterator[Daemon]:
    """Run a :class:`Daemon` in this loop until the block ends; its crash fails the test."""
    daemon = Daemon(DaemonOptions(BrokerUrl.parse(url), db, **options), experiments)
    task = asyncio.create_task(
        daemon.run(install_signals=install_signals), name="daemon-under-test"
    )
    ready = asyncio.create_task(daemon.ready.wait())
    done, _ = await asyncio.wait({task, ready}, timeout=30, return_when=asyncio.FIRST_COMPLETED)
    if task in done:
        ready.cancel()
        task.result()  # raises what ended it
        raise AssertionError("the daemon returned before it was ready")
    if not done:
        ready.cancel()
        task.cancel()
        raise AssertionError("the daemon was not ready within 30 s")
    try:
        yield daemon
        if task.done():
            task.result()
            raise AssertionError("the daemon stopped on its own")
    finally:
        daemon.stop()
        await asyncio.wait_for(asyncio.shield(task), 30)


@contextlib.asynccontextmanager
async def cli_client(url: str, name: str) -> AsyncIterator[aiomqtt.Client]:
    """A raw MQTT client subscribed to its own control responses."""
    broker = BrokerUrl.parse(url)
    async with mqtt_client(broker.host, broker.port, name, clean_session=True) as client:
        await client.subscribe(control_response_topic(name), qos=1)
        yield client


def request_payload(
    command: str, args: dict[str, Any], *, client: str, correlation_id: str
) -> bytes:
    """A control request packed WITHOUT the sender-side checks (hostile ones must get through)."""
    body = {"client": client, "correlation_id": correlation_id, "command": command, "args": args}
    return encode("control.request", body, checked=False)


async def next_reply(
    client: aiomqtt.Client, correlation_id: str, timeout: float = 15.0
) -> dict[str, Any]:
    """The body of the control response carrying ``correlation_id``."""
    async with asyncio.timeout(timeout):
        async for message in client.messages:
            body = decode(message.payload, expect="control.response").body
            if body["correlation_id"] == correlation_id:
                return body
    raise AssertionError("the subscription ended")


async def ask(
    client: aiomqtt.Client, command: str, args: dict[str, Any], *, timeout: float = 15.0
) -> dict[str, Any]:
    """Send one request as the client ``client.identifier`` and return the response body."""
    correlation_id = uuid.uuid4().hex
    payload = request_payload(
        command, args, client=str(client.identifier), correlation_id=correlation_id
    )
    await client.publish(control_request_topic(command), payload, qos=1)
    return await next_reply(client, correlation_id, timeout)


def test_a_retained_pause_naming_a_huge_experiment_is_answered_and_survives_restarts(
    mosquitto: MosquittoProcess, tmp_path: Path
) -> None:
    """Defect 1: the reply repeated the 5,000-character name, failed to encode, killed the
    daemon, and the retained request killed every restart."""
    url, db = mosquitto.url, tmp_path / "nasd.db"
    huge = "x" * 5000

    async def main() -> None:
        async with cli_client(url, "mallory") as mallory:
            payload = request_payload(
                "pause", {"experiment": huge}, client="mallory", correlation_id="huge"
            )
            await mallory.publish(control_request_topic("pause"), payload, qos=1, retain=True)
            for _start in range(2):  # the retained request greets every start
                async with serving(url, db):
                    reply = await next_reply(mallory, "huge")
                    assert reply["ok"] is False
                    assert 0 < len(reply["error"]) < 4000
                    assert huge not in reply["error"]
                    assert (await ask(mallory, "status", {}))["ok"] is True
            await mallory.publish(control_request_topic("pause"), b"", qos=1, retain=True)

    asyncio.run(main())
