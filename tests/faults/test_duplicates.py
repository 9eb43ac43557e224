"""Scenario 8: a duplicate storm. Every result arrives three times, every assignment twice.

No product code changes: a :class:`Duplicator`, an ordinary MQTT client on the same broker,
subscribes to ``nasd/v1/agents/+/result`` and ``nasd/v1/agents/+/assign`` and publishes each
message it sees again, byte for byte (same envelope id, same lease token): two more copies of
every result, one more of every assignment, each after its own random delay, so the copies
arrive out of order, interleaved with later messages, some after the lease moved on or the trial
finished. That is what QoS 1 redelivery, spool re-sends and a daemon's re-sent assignments
produce, only far more of it.

The checker must stay clean (each evaluation counted once, with its true metric), every spool
must drain, and the storm must really have happened (the duplicator counts its copies).
"""

from __future__ import annotations

import asyncio
import hashlib
import random
import threading
import time
from pathlib import Path

import aiomqtt
import pytest

from nasd.mqtt import BrokerUrl
from tests.clients import mqtt_client
from tests.faults.checker import check
from tests.faults.cluster import Cluster

RESULTS = "nasd/v1/agents/+/result"
ASSIGNS = "nasd/v1/agents/+/assign"
MAX_DELAY_S = 1.5


class Duplicator:
    """Re-publishes every result ``result_copies`` more times and every assign ``assign_copies``.

    Runs its own event loop in a thread. A message is recognised by its bytes, so its own copies
    (which it also receives) are never copied again.
    """

    def __init__(
        self,
        url: str,
        *,
        result_copies: int = 2,
        assign_copies: int = 1,
        max_delay_s: float = MAX_DELAY_S,
        seed: int = 8,
    ) -> None:
        self.broker = BrokerUrl.parse(url)
        self.copies = {"result": result_copies, "assign": assign_copies}
        self.max_delay_s = max_delay_s
        self.rng = random.Random(seed)
        self.seen: dict[str, int] = {"result": 0, "assign": 0}
        self.sent: dict[str, int] = {"result": 0, "assign": 0}
        self._digests: set[bytes] = set()
        self._pending = 0
        self._copies: set[asyncio.Task[None]] = set()
        self._ready = threading.Event()
        self._stop: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._main, name="duplicator", daemon=True)

    def start(self) -> None:
        """Connect and subscribe; returns once the subscriptions are in place."""
        self._thread.start()
        if not self._ready.wait(30):
            raise TimeoutError(f"the duplicator did not connect: {self._error!r}")

    def stop(self) -> None:
        """Disconnect (copies still waiting are dropped) and join the thread."""
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(30)
        if self._error is not None:
            raise AssertionError("the duplicator failed") from self._error

    @property
    def pending(self) -> int:
        """Copies scheduled but not yet published."""
        return self._pending

    def wait_idle(self, timeout: float) -> None:
        """Wait until every scheduled copy has been published."""
        deadline = time.monotonic() + timeout
        while self._pending and time.monotonic() < deadline:
            time.sleep(0.05)
        assert self._pending == 0, f"{self._pending} copies still pending"

    def _main(self) -> None:
        try:
            asyncio.run(self._run())
        except BaseException as exc:  # reported by stop()
            self._error = exc
            self._ready.set()

    async def _run(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        async with (
            mqtt_client(self.broker.host, self.broker.port, "duplicator") as client,
            asyncio.TaskGroup() as group,
        ):
            await client.subscribe(RESULTS, qos=1)
            await client.subscribe(ASSIGNS, qos=1)
            self._ready.set()
            reader = group.create_task(self._read(client, group))
            await self._stop.wait()
            reader.cancel()
            for task in list(self._copies):  # copies still waiting: dropped
                task.cancel()

    async def _read(self, client: aiomqtt.Client, group: asyncio.TaskGroup) -> None:
        async for message in client.messages:
            payload = bytes(message.payload)
            digest = hashlib.sha256(payload).digest()
            if digest in self._digests:
                continue  # one of our copies, or a copy the system made itself
            self._digests.add(digest)
            leaf = str(message.topic).rsplit("/", 1)[1]
            self.seen[leaf] += 1
            for _ in range(self.copies[leaf]):
                delay = self.rng.uniform(0.0, self.max_delay_s)
                self._pending += 1
                task = group.create_task(
                    self._copy(client, str(message.topic), payload, leaf, delay)
                )
                self._copies.add(task)
                task.add_done_callback(self._copies.discard)

    async def _copy(
        self, client: aiomqtt.Client, topic: str, payload: bytes, leaf: str, delay: float
    ) -> None:
        try:
            await asyncio.sleep(delay)
            await client.publish(topic, payload, qos=1)
            self.sent[leaf] += 1
        finally:
            self._pending -= 1


@pytest.mark.slow
def test_a_duplicate_storm_counts_every_evaluation_once(tmp_path: Path) -> None:
    budget = 40
    cluster = Cluster(tmp_path, agents=0, slots=2, budget=budget, lease_ttl_s=3.0, max_s=0.6)
    duplicator = Duplicator(cluster.broker_url)
    try:
        cluster.broker.start()
        duplicator.start()
        cluster.start_agent()
        cluster.start_agent()
        cluster.start_daemon()
        cluster.wait_done(120)
        duplicator.wait_idle(MAX_DELAY_S + 10)
        cluster.wait_spools_drained(30)
        time.sleep(0.5)  # the last copies reach the daemon and are acknowledged
        report = check(cluster.db, cluster.experiment)
        report.line("duplicate_storm")
        report.assert_clean()
        assert cluster.daemon_exit_code() is None, "the daemon died:\n" + cluster.log_tail()
        print(f"duplicator: seen {duplicator.seen}, copies sent {duplicator.sent}")
        assert duplicator.seen["result"] >= budget and duplicator.seen["assign"] >= budget
        assert duplicator.sent["result"] == 2 * duplicator.seen["result"]
        assert duplicator.sent["assign"] == duplicator.seen["assign"]
    finally:
        duplicator.stop()
        cluster.close()
