"""How an agent is configured and what it needs of its broker connection.

:class:`AgentOptions` is everything :class:`agents.worker.Agent` is started with (the CLI builds
it); :class:`AgentLink` and :class:`LinkFactory` describe the connection, so that tests can give
an agent a stand-in link. Split out of :mod:`agents.worker` to keep the work loop's module small.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import aiomqtt

from nasd.mqtt import BrokerUrl, Publication

__all__ = ["AgentLink", "AgentOptions", "LinkFactory"]


@dataclass(frozen=True, slots=True)
class AgentOptions:
    """How an agent runs; ``profile`` is its hardware announcement (see ``agents.probe``)."""

    broker: BrokerUrl
    name: str
    profile: Mapping[str, Any]
    spool_dir: Path
    device: str = "cpu"
    slots: int = 1
    checkpoint_dir: Path | None = None
    heartbeat_s: float = 2.0
    trainers: tuple[str, ...] = ()
    """Trainers offered beyond the installed ones: ``module:function`` paths (``--trainer``)."""
    free_memory: Callable[[], int | None] | None = None
    """Reads the device's free bytes for each ``ready`` (``agents.profile.ready_free_memory``);
    None, or a None reading, leaves ``free_memory_bytes`` out of it."""


class AgentLink(Protocol):
    """What an agent needs of its connection: :class:`nasd.mqtt.Link`, or a stand-in in tests."""

    @property
    def inbox(self) -> asyncio.Queue[aiomqtt.Message]:
        """Every message received on the agent's subscriptions."""

    @property
    def connected(self) -> asyncio.Event:
        """Set while connected to the broker."""

    async def run(self) -> None:
        """Stay connected (reconnecting) until cancelled."""

    async def publish(self, message: Publication) -> bool:
        """Publish once connected; False if that failed."""

    async def publish_many(self, messages: Iterable[Publication]) -> None:
        """Publish a batch."""

    async def close(self, farewell: Iterable[Publication] = ()) -> None:
        """Publish ``farewell`` and stop reconnecting."""


class LinkFactory(Protocol):
    """Builds an agent's link; :class:`nasd.mqtt.Link` itself is one."""

    def __call__(
        self,
        url: BrokerUrl,
        client_id: str,
        *,
        subscriptions: Sequence[tuple[str, int]],
        will: Publication | None,
        on_connect: Callable[[], Coroutine[Any, Any, None]] | None,
    ) -> AgentLink:
        """A link that is not connected yet."""
