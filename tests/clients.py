"""A plain aiomqtt client for tests, with the connect retry the product's ``Link`` also has.

Tests that talk MQTT directly (not through nasd's reconnecting :class:`nasd.mqtt.Link`) use
:func:`mqtt_client`. It waits as long as the product does for a CONNACK (30 s) and, should one
still never come, closes that socket and connects once more, with a warning that names the
client. CI once saw a CONNACK from the embedded broker never arrive (a one-off not reproduced in
hundreds of local runs); the product survives that by reconnecting, and so must a test whose
subject is something else. The warning shows in pytest's summary, so a recurrence is visible.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import AsyncIterator
from typing import Any

import aiomqtt

from nasd.mqtt.adapters import paho_client

__all__ = ["CONNECT_ATTEMPTS", "CONNECT_TIMEOUT_S", "mqtt_client"]

#: As long as nasd's Link waits for a CONNACK.
CONNECT_TIMEOUT_S = 30.0
#: One retry: a second lost CONNACK in a row is a real failure worth seeing.
CONNECT_ATTEMPTS = 2


@contextlib.asynccontextmanager
async def mqtt_client(
    host: str, port: int, identifier: str | None = None, **kwargs: Any
) -> AsyncIterator[aiomqtt.Client]:
    """``async with mqtt_client(host, port, "id", will=...) as client:`` (kwargs as aiomqtt's).

    The connect is retried once, with a warning, when the CONNACK does not come.
    """
    kwargs.setdefault("timeout", CONNECT_TIMEOUT_S)
    async with contextlib.AsyncExitStack() as stack:
        for attempt in range(1, CONNECT_ATTEMPTS + 1):
            client = aiomqtt.Client(host, port, identifier=identifier, **kwargs)
            try:
                await stack.enter_async_context(client)
            except aiomqtt.MqttError as exc:
                if attempt == CONNECT_ATTEMPTS:
                    raise
                warnings.warn(
                    f"MQTT connect of {identifier!r} to {host}:{port} failed ({exc}); retrying",
                    RuntimeWarning,
                    stacklevel=2,
                )
                # The half-open connection must not linger. paho's own close unregisters the
                # socket from the event loop first (through aiomqtt's callback), then closes it.
                paho_client(client)._sock_close()
                continue
            break
        yield client
