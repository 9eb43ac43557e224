"""Scenario 12: forged results, refused by the daemon whatever the broker lets through.

An attacker on a broker without ACLs reads the assignments (``nasd/v1/agents/+/assign``) and,
for each of the first jobs it sees, at once publishes:

* on **another** agent's topic, a result for that job carrying the job's real token (leaked):
  ``wrong_agent``;
* on the **holder's own** topic, a result with a wrong token (a forger who cannot read the
  assignment): ``bad_token``; and a forged ``released`` with a wrong token, which must not
  mark the honest agent draining;
* on the holder's topic, a result for an epoch that was never leased: ``never_issued``.

Every forged result claims ``val_acc = 0.999``, which is not the fault trainer's metric for any
genotype, so one that slipped through would also show as ``wrong_metric`` in the checker. The
ACL half (an agent refused by the broker on another's topic) is ``tests/integration/test_acl.py``.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from nasd.core.wire import decode, encode
from nasd.mqtt import BrokerUrl
from tests.clients import mqtt_client
from tests.faults.checker import check
from tests.faults.cluster import Cluster

JOBS_ATTACKED = 6
FORGED_VAL_ACC = 0.999
WRONG_TOKEN = "0123456789abcdef" * 2


def forged_result(job_id: str, epoch: int, token: str, status: str = "ok") -> bytes:
    body = {
        "job_id": job_id,
        "epoch": epoch,
        "token": token,
        "status": status,
        "metrics": {"val_acc": FORGED_VAL_ACC} if status == "ok" else {},
        "error": None,
        "started_at": 1.0,
        "finished_at": 2.0,
        "checkpoint": None,
    }
    return encode("trial.result", body)


async def attack(url: str, agents: list[str]) -> list[dict[str, Any]]:
    """Forge results for the first :data:`JOBS_ATTACKED` assignments; return those assignments."""
    broker = BrokerUrl.parse(url)
    attacked: list[dict[str, Any]] = []
    async with mqtt_client(broker.host, broker.port, "forger") as client:
        await client.subscribe("nasd/v1/agents/+/assign", qos=1)
        async with asyncio.timeout(60):
            async for message in client.messages:
                holder = str(message.topic).split("/")[3]
                assign = decode(message.payload, expect="trial.assign").body
                job_id, epoch, token = assign["job_id"], assign["epoch"], assign["token"]
                other = next(a for a in agents if a != holder)
                topic = "nasd/v1/agents/{}/result"
                forgeries = [
                    (topic.format(other), forged_result(job_id, epoch, token)),
                    (topic.format(holder), forged_result(job_id, epoch, WRONG_TOKEN)),
                    (topic.format(holder), forged_result(job_id, epoch, WRONG_TOKEN, "released")),
                    (topic.format(holder), forged_result(job_id, epoch + 100, WRONG_TOKEN)),
                ]
                for forged_topic, payload in forgeries:
                    await client.publish(forged_topic, payload, qos=1)
                attacked.append({**assign, "agent": holder})
                if len(attacked) == JOBS_ATTACKED:
                    return attacked
    raise AssertionError("unreachable")


def rows(db: Path, sql: str) -> list[tuple[Any, ...]]:
    with contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True)) as conn:
        return conn.execute(sql).fetchall()


@pytest.mark.slow
def test_forged_results_are_refused_and_counted(tmp_path: Path) -> None:
    cluster = Cluster(tmp_path, agents=2, slots=1, budget=16, min_s=0.5, max_s=1.0)
    try:
        cluster.start()
        attacked = asyncio.run(attack(cluster.broker_url, cluster.agent_names()))
        cluster.wait_done(timeout=90)
        report = check(cluster.db, cluster.experiment)
        report.line("forged_results")
        report.assert_clean()
        db = cluster.db
        # Every stored result came from the agent that held that very lease.
        stolen = rows(
            db,
            "SELECT r.job_id FROM results r JOIN leases l ON l.job_id = r.job_id"
            " AND l.epoch = r.epoch WHERE l.agent != r.agent",
        )
        assert stolen == []
        counts = dict(rows(db, "SELECT kind, count FROM security_events"))
        print(f"security_events: {counts}")
        assert counts.get("wrong_agent", 0) >= len(attacked), counts
        assert counts.get("bad_token", 0) >= 2 * len(attacked), counts
        assert counts.get("never_issued", 0) >= len(attacked), counts
        assert cluster.count_log_events("agent.draining") == 0, "a forged release drained an agent"
    finally:
        cluster.close()
