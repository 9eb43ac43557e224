"""Scenario 7: network partitions between agents and the broker, and between daemon and broker.

Each link goes through a :class:`tests.faults.proxy.Proxy`, which the test turns into a black
hole (sockets open, nothing flows: a partition), a one-way link (``drop_up``: what the client
sends is held; ``drop_down``: what it should receive is held), a slow link, and a cut (every
connection reset), then heals. Phases are timed against the protocol's clocks: leases of
:data:`LEASE_TTL_S` seconds expire during every partition longer than that, and a black hole of
:data:`LONG_S` outlasts the MQTT keep-alive (5 s, so the broker drops the client after 7.5 s and
fires its last will) while a short one does not.

Afterwards the search must end and the checker must be clean: no evaluation lost, none counted
twice, every metric true, the log replaying to the same state; and every agent's spool drained
(every result acknowledged in the end).
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from nasd.mqtt import BrokerUrl
from nasd.mqtt.link import Link
from tests.faults.checker import check
from tests.faults.cluster import Cluster
from tests.faults.proxy import Mode, Proxy
from tests.harness import MosquittoProcess

LEASE_TTL_S = 2.0
DAEMON_LEASE_TTL_S = 4.0
"""Longer than the daemon's short partitions: see :func:`_partition_daemon`."""
SHORT_S = 3.0
"""A partition longer than a lease, shorter than the keep-alive."""
LONG_S = 9.0
"""A partition past the keep-alive: the broker drops the client, its last will fires."""
SLOW_MS = 150
DONE_TIMEOUT_S = 120
RECONNECT_S = 5.0
"""How soon a link must be back once the broker accepts connections again."""


def proxy_to(cluster: Cluster) -> Proxy:
    proxy = Proxy(cluster.broker.host, cluster.broker.port)
    proxy.start()
    return proxy


def hold(proxy: Proxy, mode: Mode, seconds: float, *, delay_ms: float | None = None) -> None:
    """Put ``proxy`` in ``mode`` for ``seconds``, then heal it."""
    proxy.set_mode(mode, delay_ms=delay_ms)
    time.sleep(seconds)
    proxy.heal()


def cut(proxy: Proxy) -> None:
    """Reset every connection through ``proxy``; reconnections go through at once.

    A reconnection reset before its CONNACK is retried at once too (the last test of this
    module), where aiomqtt alone would wait its whole 30 s connect timeout.
    """
    proxy.set_mode(Mode.CUT)
    proxy.heal()


def still_running(cluster: Cluster, phase: str) -> None:
    """The fault must land on a live search, or the scenario proves nothing."""
    assert cluster.status() != "done", f"the search ended before {phase}: raise the budget"


@contextlib.contextmanager
def cluster_of(tmp_path: Path, budget: int, lease_ttl_s: float) -> Iterator[Cluster]:
    """A cluster with no agents yet (each test starts its own, behind proxies or not).

    One slot per agent and jobs of 0.3-1.0 s, so that a search of ``budget`` trials lasts
    through every phase.
    """
    cluster = Cluster(
        tmp_path, agents=0, slots=1, budget=budget, lease_ttl_s=lease_ttl_s, min_s=0.3, max_s=1.0
    )
    try:
        yield cluster
    finally:
        cluster.close()


@pytest.mark.slow
def test_partitioned_agents_lose_and_duplicate_nothing(tmp_path: Path) -> None:
    """Two agents, each behind its own proxy; the third connects directly and keeps working."""
    with cluster_of(tmp_path, 60, LEASE_TTL_S) as cluster:
        cluster.broker.start()
        proxies = [proxy_to(cluster), proxy_to(cluster)]
        try:
            _partition_agents(cluster, proxies)
        finally:
            for proxy in proxies:
                proxy.close()


def _partition_agents(cluster: Cluster, proxies: list[Proxy]) -> None:
    """Short black hole, one-way links both ways, a cut, a long black hole beside a slow link.

    The cut comes before the long black hole, as it was written while a reconnection reset
    before its CONNACK still stalled for 30 s (fixed in ``Link._enter``, see the last test).
    """
    behind = [cluster.start_agent(broker_url=p.url, wait=False) for p in proxies]
    cluster.start_agent(wait=False)
    cluster.start_daemon()
    cluster.wait_results(5, 60)

    still_running(cluster, "the short black hole")
    hold(proxies[0], Mode.BLACKHOLE, SHORT_S)
    still_running(cluster, "the one-way links")
    proxies[0].set_mode(Mode.DROP_UP)  # results and heartbeats held: leases expire
    hold(proxies[1], Mode.DROP_DOWN, SHORT_S)  # assignments and acks held
    proxies[0].heal()
    still_running(cluster, "the cut")
    cut(proxies[1])
    time.sleep(1.0)
    still_running(cluster, "the long black hole")
    proxies[1].set_mode(Mode.SLOW, delay_ms=SLOW_MS)
    hold(proxies[0], Mode.BLACKHOLE, LONG_S)
    proxies[1].heal()

    cluster.wait_done(DONE_TIMEOUT_S)
    cluster.wait_spools_drained(30)
    report = check(cluster.db, cluster.experiment)
    report.line("partition_agents")
    report.assert_clean()
    assert all(p.accepted >= 2 for p in proxies), "the partitions forced no reconnection"
    assert behind == cluster.agent_names()[:2], "an agent died in a partition"


@pytest.mark.slow
def test_a_partitioned_daemon_loses_and_duplicates_nothing(tmp_path: Path) -> None:
    """The daemon behind a proxy; three agents connect directly."""
    with cluster_of(tmp_path, 45, DAEMON_LEASE_TTL_S) as cluster:
        cluster.broker.start()
        proxy = proxy_to(cluster)
        try:
            _partition_daemon(cluster, proxy)
        finally:
            proxy.close()


def _partition_daemon(cluster: Cluster, proxy: Proxy) -> None:
    """The same phases, one after the other, on the daemon's only link.

    Leases outlive the short partitions here and expire only in the long one. With leases that
    expired in every partition, every agent was quarantined for 60 s (the daemon blamed them for
    its own partition) and the search stalled for a minute: correct in the end, but too slow for
    the suite (reported on issue 6).
    """
    for _ in range(3):
        cluster.start_agent(wait=False)
    cluster.start_daemon(broker_url=proxy.url)
    cluster.wait_results(5, 60)

    still_running(cluster, "the short black hole")
    hold(proxy, Mode.BLACKHOLE, SHORT_S)
    still_running(cluster, "the one-way links")
    hold(proxy, Mode.DROP_DOWN, SHORT_S)  # results and heartbeats held: leases expire
    hold(proxy, Mode.DROP_UP, SHORT_S)  # assignments, acks and cancels held
    hold(proxy, Mode.SLOW, 2.0, delay_ms=SLOW_MS)
    still_running(cluster, "the cut")
    cut(proxy)
    time.sleep(1.0)
    still_running(cluster, "the long black hole")
    hold(proxy, Mode.BLACKHOLE, LONG_S)

    cluster.wait_done(DONE_TIMEOUT_S)
    cluster.wait_spools_drained(30)
    assert cluster.daemon_exit_code() is None, "the daemon died:\n" + cluster.log_tail()
    report = check(cluster.db, cluster.experiment)
    report.line("partition_daemon")
    report.assert_clean()
    assert proxy.accepted >= 2, "the partitions forced no reconnection"


def test_a_link_retries_at_once_after_a_reset_connect(mosquitto: MosquittoProcess) -> None:
    """A broker that resets connections for a second (restarting, at max_connections) costs
    about a second, not the 30 s connect timeout."""

    async def connect_through(proxy: Proxy) -> float:
        link = Link(BrokerUrl.parse(proxy.url), "reset-connect")
        started = time.monotonic()
        async with asyncio.TaskGroup() as group:
            runner = group.create_task(link.run())
            await asyncio.sleep(1.0)
            proxy.heal()
            took = math.inf
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(RECONNECT_S + 1.0):
                    await link.connected.wait()
                    took = time.monotonic() - started
            runner.cancel()
        return took

    with Proxy(mosquitto.host, mosquitto.port) as proxy:
        proxy.set_mode(Mode.CUT)
        took = asyncio.run(connect_through(proxy))
    assert took < RECONNECT_S, f"connected only after {took:.1f} s"
