"""The library internals nasd relies on still exist in the installed releases.

nasd reaches past the public API of two libraries, each in one place: aiomqtt's paho client
(:mod:`nasd.mqtt.adapters`) and amqtt's broker internals (:mod:`nasd.mqtt.broker`). A release that
renames them would otherwise break nasd quietly (an override nobody calls is simply dead), so
these tests name each member and fail with a message that says what moved.
"""

from __future__ import annotations

import asyncio
import inspect
from importlib.metadata import version

import aiomqtt
import paho.mqtt.client as paho_mqtt
import pytest
from amqtt.broker import Broker
from amqtt.mqtt.protocol.broker_handler import BrokerProtocolHandler
from amqtt.mqtt.protocol.handler import ProtocolHandler

from nasd.mqtt.adapters import PAHO_MEMBERS_USED, paho_client
from nasd.mqtt.broker import AMQTT_OVERRIDES, EmbeddedBroker, _NasdBroker

# -- aiomqtt / paho ------------------------------------------------------------------------------


def test_paho_client_of_a_fresh_aiomqtt_client_is_a_paho_client() -> None:
    async def main() -> None:
        client = aiomqtt.Client("127.0.0.1", 1, identifier="adapter-test")
        paho = paho_client(client)
        assert isinstance(paho, paho_mqtt.Client), type(paho)
        assert paho is paho_client(client)  # the client's own, not a new one

    asyncio.run(main())


def test_paho_client_refuses_what_is_not_a_paho_client() -> None:
    class NotAClient:
        _client = object()

    with pytest.raises(RuntimeError, match=r"nasd\.mqtt\.adapters"):
        paho_client(NotAClient())  # type: ignore[arg-type]


@pytest.mark.parametrize("member", PAHO_MEMBERS_USED)
def test_paho_still_has_the_members_nasd_calls(member: str) -> None:
    """A method nasd calls, or a callback property it sets (``on_disconnect``)."""
    found = inspect.getattr_static(paho_mqtt.Client, member, None)
    assert callable(found) or isinstance(found, property), (
        f"paho-mqtt {version('paho-mqtt')} has no Client.{member}; see nasd.mqtt.adapters"
    )


def test_paho_publish_still_takes_topic_payload_qos_retain_and_reports_rc() -> None:
    """Link.publish_nowait passes these four positionally and reads ``rc`` of the result."""
    parameters = list(inspect.signature(paho_mqtt.Client.publish).parameters)
    assert parameters[:5] == ["self", "topic", "payload", "qos", "retain"], parameters

    async def main() -> None:
        paho = paho_client(aiomqtt.Client("127.0.0.1", 1, identifier="adapter-publish"))
        info = paho.publish("nasd/test/adapter", b"x", 1, False)  # queued: not connected
        assert isinstance(info.rc, int)

    asyncio.run(main())


def test_paho_socket_is_none_before_connecting() -> None:
    """The socket watch treats None as "no connection to look at"."""

    async def main() -> None:
        paho = paho_client(aiomqtt.Client("127.0.0.1", 1, identifier="adapter-socket"))
        assert paho.socket() is None

    asyncio.run(main())


# -- amqtt ---------------------------------------------------------------------------------------


def _parameters(function: object) -> tuple[str, ...]:
    return tuple(inspect.signature(function).parameters)  # type: ignore[arg-type]


@pytest.mark.parametrize("name", sorted(AMQTT_OVERRIDES))
def test_amqtt_still_has_each_private_method_nasd_overrides(name: str) -> None:
    original = getattr(Broker, name, None)
    assert original is not None, (
        f"amqtt's Broker has no {name} any more: nasd.mqtt.broker._NasdBroker's override of it is "
        "dead; find what replaced it and update the override and AMQTT_OVERRIDES"
    )
    assert inspect.iscoroutinefunction(original), f"Broker.{name} is no longer a coroutine"
    expected = AMQTT_OVERRIDES[name]
    assert _parameters(original) == expected, (
        f"amqtt's Broker.{name} now takes {_parameters(original)}, the override expects "
        f"{expected}; see nasd.mqtt.broker"
    )
    assert _parameters(getattr(_NasdBroker, name)) == expected, "override and list disagree"


def test_every_override_of_a_private_amqtt_name_is_listed() -> None:
    """A private helper of ours that collides with an amqtt name would override it unnoticed."""
    ours = {
        name
        for name, value in vars(_NasdBroker).items()
        if name.startswith("_") and not name.startswith("__") and callable(value)
    }
    overriding = {name for name in ours if hasattr(Broker, name)}
    assert overriding == set(AMQTT_OVERRIDES), overriding ^ set(AMQTT_OVERRIDES)
    assert "_on_keepalive_expired" in ours - overriding  # ours alone: amqtt never calls it


def test_amqtt_protocol_handler_still_calls_handle_read_timeout() -> None:
    """The keep-alive enforcement replaces this no-argument hook on each connection's handler."""
    assert _parameters(BrokerProtocolHandler.handle_read_timeout) == ("self",)
    assert inspect.iscoroutinefunction(BrokerProtocolHandler.handle_connection_closed)
    reader_loop = inspect.getsource(ProtocolHandler._reader_loop)
    assert "self.handle_read_timeout()" in reader_loop, (
        "amqtt's reader loop no longer calls handle_read_timeout(): the embedded broker's "
        "keep-alive enforcement (nasd.mqtt.broker) is dead"
    )


def test_amqtt_broker_exposes_subscriptions_publicly() -> None:
    assert isinstance(inspect.getattr_static(Broker, "subscriptions"), property)


def test_embedded_broker_learns_the_port_it_bound() -> None:
    """bound_port() reads amqtt's private listener map; start() fails if that moved."""

    async def main() -> int:
        async with EmbeddedBroker(port=0) as broker:
            return broker.port

    assert asyncio.run(main()) > 0
