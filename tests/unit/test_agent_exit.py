"""However an agent stops, it says "offline" first: a crashed agent leaves no ghost.

A clean disconnect suppresses the broker's last will, so an agent that stopped on an unexpected
error used to vanish silently: the daemon kept its leases until they expired. :meth:`Agent.run`
now publishes the retained "offline" state on every exit path, through its link while that is up
and through a short-lived connection of its own when the link itself failed.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine, Sequence
from pathlib import Path
from typing import Any

import pytest

from agents.spool import Spool
from agents.worker import Agent, AgentOptions
from nasd.core.wire import AgentLeaf, agent_topic, decode
from nasd.mqtt import BrokerUrl, Publication
from tests.unit.test_worker import (
    AGENT,
    GATE,
    PROFILE,
    WAIT_S,
    FakeLink,
    Gate,
    assign,
    run,
    running_agent,
)

pytestmark = pytest.mark.timeout(60)

OFFLINE = {"state": "offline"}


def _farewell_bodies(link: FakeLink) -> list[dict[str, Any]] | None:
    if link.farewell is None:
        return None
    return [decode(p.payload).body for p in link.farewell]


def test_an_unexpected_error_still_publishes_offline(tmp_path: Path) -> None:
    gate = Gate()
    gate.open.set()

    class FullDisk(Spool):
        def put(self, job_id: str, epoch: int, token: str, payload: bytes) -> None:
            raise OSError(28, "No space left on device")

    async def main() -> None:
        async with running_agent(tmp_path, {GATE: gate.train}) as (agent, link, task):
            agent.spool = FullDisk(tmp_path / "full")
            link.deliver(AgentLeaf.ASSIGN, "trial.assign", assign("exp:1"))
            done, _ = await asyncio.wait([task], timeout=WAIT_S)
            assert done, "the agent kept running after its spool failed"
            error = task.exception()
            assert isinstance(error, BaseExceptionGroup) and error.subgroup(OSError) is not None
            assert _farewell_bodies(link) == [OFFLINE]
            farewell = link.farewell
            assert farewell is not None
            assert farewell[0].retain and farewell[0].topic == agent_topic(AGENT, AgentLeaf.STATE)

    run(main)


class BrokenLink(FakeLink):
    """A link that fails right after connecting (its on_connect hook has run)."""

    async def run(self) -> None:
        self.connected.set()
        if self.on_connect is not None:
            await self.on_connect()
        raise RuntimeError("the link broke")


def _factory(links: list[FakeLink]) -> Callable[..., FakeLink]:
    def build(
        url: BrokerUrl,
        client_id: str,
        *,
        subscriptions: Sequence[tuple[str, int]],
        will: Publication | None,
        on_connect: Callable[[], Coroutine[Any, Any, None]] | None,
    ) -> FakeLink:
        kind = BrokenLink if not links else FakeLink
        link = kind(url, client_id, subscriptions=subscriptions, will=will, on_connect=on_connect)
        links.append(link)
        return link

    return build


def test_a_failed_link_says_offline_through_a_connection_of_its_own(tmp_path: Path) -> None:
    links: list[FakeLink] = []
    options = AgentOptions(
        broker=BrokerUrl.parse("mqtt://127.0.0.1:1"),
        name=AGENT,
        profile=PROFILE,
        spool_dir=tmp_path / "spool",
        heartbeat_s=3600.0,
    )
    agent = Agent(options, load_trainer=lambda name: Gate().train, link_factory=_factory(links))

    async def main() -> None:
        with pytest.raises(BaseExceptionGroup) as raised:
            await asyncio.wait_for(agent.run(), WAIT_S)
        assert raised.value.subgroup(RuntimeError) is not None
        assert len(links) == 2
        first, farewell = links
        assert first.farewell is None  # its connection was gone
        assert farewell.client_id == first.client_id and farewell.subscriptions == []
        assert _farewell_bodies(farewell) == [OFFLINE]

    run(main)
