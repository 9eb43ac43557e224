"""The CLI's side of the control protocol: one request, one correlated response, over MQTT."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from typing import Any

import aiomqtt

from nasd.core.wire import (
    control_request_topic,
    control_response_topic,
    daemon_state_topic,
    decode,
    encode,
)
from nasd.errors import BrokerUnavailable, NasdError, WireError
from nasd.mqtt import BrokerUrl
from nasd.mqtt.link import PAHO_LOG


class DaemonError(NasdError):
    """The daemon is not there, did not answer, or refused the request."""


async def request(
    broker: BrokerUrl, command: str, args: dict[str, Any], *, timeout: float = 10.0
) -> Any:
    """Send ``command`` to the daemon and return its result (DaemonError if refused)."""
    client_id = f"nasd-cli-{uuid.uuid4().hex[:16]}"
    correlation_id = uuid.uuid4().hex
    try:
        async with aiomqtt.Client(
            **broker.client_options(),
            identifier=client_id,
            clean_session=True,
            timeout=timeout,
            logger=PAHO_LOG,
        ) as client:
            await client.subscribe(daemon_state_topic(), qos=1)
            await client.subscribe(control_response_topic(client_id), qos=1)
            await _expect_daemon_online(client, broker)
            body = {
                "client": client_id,
                "correlation_id": correlation_id,
                "command": command,
                "args": args,
            }
            await client.publish(
                control_request_topic(command), encode("control.request", body), qos=1
            )
            try:
                async with asyncio.timeout(timeout):
                    async for message in client.messages:
                        reply = _reply(message, correlation_id)
                        if reply is not None:
                            if not reply["ok"]:
                                raise DaemonError(str(reply["error"]))
                            return reply["result"]
            except TimeoutError:
                raise DaemonError(f"the daemon did not answer within {timeout:g} s") from None
    except aiomqtt.MqttError as exc:
        raise BrokerUnavailable(f"cannot reach the MQTT broker at {broker}: {exc}") from None
    raise DaemonError("connection closed before the daemon answered")


async def _expect_daemon_online(client: aiomqtt.Client, broker: BrokerUrl) -> None:
    """The retained daemon state arrives right after subscribing; it must say "online"."""
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(3.0):
            async for message in client.messages:
                if str(message.topic) != daemon_state_topic():
                    continue
                try:
                    state = decode(message.payload, expect="daemon.state")
                except WireError:
                    continue
                if state.body["state"] == "online":
                    return
                break
    raise DaemonError(
        f"no nasd daemon is running on the broker at {broker} "
        "(start one with `nasd serve --config nasd.toml`)"
    )


def _reply(message: aiomqtt.Message, correlation_id: str) -> dict[str, Any] | None:
    try:
        envelope = decode(message.payload, expect="control.response")
    except WireError:
        return None
    if envelope.body["correlation_id"] != correlation_id:
        return None
    return envelope.body
