"""The agent's side of the lease-token protocol and of per-epoch results (defect 7).

Every result echoes its assignment's token; an ack drops a spooled result only when job, epoch and
token all match; a cancel stops a job only with the job's token. A job assigned again under a
newer epoch while the older epoch's result waits for its ack is trained, not answered with the
stale result, and both results stay spooled until each is acknowledged. The agent runs on the
in-memory link of :mod:`tests.unit.test_worker`.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from nasd.core.wire import AgentLeaf
from tests.unit.test_worker import GATE, Gate, assign, run, running_agent, token, until

pytestmark = pytest.mark.timeout(60)

FORGED = "f" * 32
"""A well-formed token that is no lease's."""


def _events(logs: list[dict[str, object]], name: str) -> list[dict[str, object]]:
    return [entry for entry in logs if entry["event"] == name]


def test_a_cancel_with_a_forged_token_is_logged_and_the_job_goes_on(tmp_path: Path) -> None:
    gate = Gate()

    async def main() -> None:
        async with running_agent(tmp_path, {GATE: gate.train}) as (agent, link, _task):
            link.deliver(AgentLeaf.ASSIGN, "trial.assign", assign("exp:1", epoch=2))
            await until(lambda: len(gate.calls) == 1, "training to start")
            with capture_logs() as logs:
                for forged in (FORGED, token("exp:1", 1), token("other:1", 2)):
                    cancel = {"job_id": "exp:1", "epoch": 2, "token": forged}
                    link.deliver(AgentLeaf.CANCEL, "trial.cancel", cancel)
                await until(lambda: link.inbox.empty(), "the cancels to be read")
                await asyncio.sleep(0.05)
            forged_cancels = _events(logs, "security.forged_cancel")
            assert [(e["job_id"], e["epoch"]) for e in forged_cancels] == [("exp:1", 2)] * 3
            assert not agent.running["exp:1"].stop.is_set()
            gate.open.set()
            await until(lambda: bool(link.sent(AgentLeaf.RESULT)), "the result")
            (result,) = link.sent(AgentLeaf.RESULT)
            assert (result.body["status"], result.body["token"]) == ("ok", token("exp:1", 2))

    run(main)


def test_a_cancel_with_the_jobs_token_stops_it(tmp_path: Path) -> None:
    """The positive control of the test above: the same cancel with the real token works."""
    gate = Gate()

    async def main() -> None:
        async with running_agent(tmp_path, {GATE: gate.train}) as (agent, link, _task):
            link.deliver(AgentLeaf.ASSIGN, "trial.assign", assign("exp:1", epoch=2))
            await until(lambda: len(gate.calls) == 1, "training to start")
            cancel = {"job_id": "exp:1", "epoch": 2, "token": token("exp:1", 2)}
            link.deliver(AgentLeaf.CANCEL, "trial.cancel", cancel)
            await until(lambda: not agent.running, "the job to stop")
            assert link.sent(AgentLeaf.RESULT) == []  # a cancelled job reports nothing

    run(main)


def test_an_ack_with_a_forged_token_keeps_the_result(tmp_path: Path) -> None:
    gate = Gate()
    gate.open.set()

    async def main() -> None:
        async with running_agent(tmp_path, {GATE: gate.train}) as (agent, link, _task):
            link.deliver(AgentLeaf.ASSIGN, "trial.assign", assign("exp:1"))
            await until(lambda: bool(link.sent(AgentLeaf.RESULT)), "the result")
            with capture_logs() as logs:
                forged = {"job_id": "exp:1", "epoch": 1, "token": FORGED}
                link.deliver(AgentLeaf.ACK, "trial.ack", forged)
                unknown = {"job_id": "exp:7", "epoch": 1, "token": FORGED}  # nothing spooled
                link.deliver(AgentLeaf.ACK, "trial.ack", unknown)
                await until(lambda: link.inbox.empty(), "the acks to be read")
                await asyncio.sleep(0.05)
            assert agent.spool.get("exp:1", 1) is not None
            assert [e["job_id"] for e in _events(logs, "security.forged_ack")] == ["exp:1"]
            ack = {"job_id": "exp:1", "epoch": 1, "token": token("exp:1", 1)}
            link.deliver(AgentLeaf.ACK, "trial.ack", ack)
            await until(lambda: len(agent.spool) == 0, "the real ack to drop the result")

    run(main)


def test_a_newer_epoch_is_trained_while_the_older_result_stays_spooled(tmp_path: Path) -> None:
    """Defect 7: the re-assigned job must not be answered with the stale epoch-1 result."""
    gate = Gate()
    gate.open.set()

    async def main() -> None:
        async with running_agent(tmp_path, {GATE: gate.train}) as (agent, link, _task):
            link.deliver(AgentLeaf.ASSIGN, "trial.assign", assign("exp:1", epoch=1))
            await until(lambda: len(link.sent(AgentLeaf.RESULT)) == 1, "the epoch-1 result")
            link.deliver(AgentLeaf.ASSIGN, "trial.assign", assign("exp:1", epoch=2))
            await until(lambda: len(link.sent(AgentLeaf.RESULT)) == 2, "the epoch-2 result")
            assert len(gate.calls) == 2  # trained again, not answered from the spool
            bodies = [r.body for r in link.sent(AgentLeaf.RESULT)]
            assert [(b["epoch"], b["token"], b["status"]) for b in bodies] == [
                (1, token("exp:1", 1), "ok"),
                (2, token("exp:1", 2), "ok"),
            ]
            assert agent.spool.epochs("exp:1") == [1, 2]  # both wait for their own ack

            # Both are re-sent when the daemon comes back, until each is acknowledged.
            link.deliver(None, "daemon.state", {"state": "online"})
            await until(lambda: len(link.sent(AgentLeaf.RESULT)) == 4, "the spool re-sent")
            assert [r.body["epoch"] for r in link.sent(AgentLeaf.RESULT)[2:]] == [1, 2]

            # The same epoch again is answered from the spool (no third training).
            link.deliver(AgentLeaf.ASSIGN, "trial.assign", assign("exp:1", epoch=2))
            await until(lambda: len(link.sent(AgentLeaf.RESULT)) == 5, "the re-sent result")
            assert link.sent(AgentLeaf.RESULT)[4].body["epoch"] == 2 and len(gate.calls) == 2

            # An ack for epoch 1 drops epoch 1 only.
            ack = {"job_id": "exp:1", "epoch": 1, "token": token("exp:1", 1)}
            link.deliver(AgentLeaf.ACK, "trial.ack", ack)
            await until(lambda: agent.spool.epochs("exp:1") == [2], "epoch 1 to be dropped")

            # A late re-send of the epoch-1 assignment is out of date: neither trained nor
            # answered, since the job's epoch-2 result is spooled.
            link.deliver(AgentLeaf.ASSIGN, "trial.assign", assign("exp:1", epoch=1))
            await until(lambda: link.inbox.empty(), "the stale assign to be read")
            await asyncio.sleep(0.05)
            assert len(link.sent(AgentLeaf.RESULT)) == 5 and len(gate.calls) == 2
            assert agent.running == {}

    run(main)


def test_a_running_job_takes_a_newer_leases_token_but_not_an_older_ones(
    tmp_path: Path,
) -> None:
    gate = Gate()

    async def main() -> None:
        async with running_agent(tmp_path, {GATE: gate.train}) as (agent, link, _task):
            link.deliver(AgentLeaf.ASSIGN, "trial.assign", assign("exp:1", epoch=2))
            await until(lambda: len(gate.calls) == 1, "training to start")
            link.deliver(AgentLeaf.ASSIGN, "trial.assign", assign("exp:1", epoch=3))
            link.deliver(AgentLeaf.ASSIGN, "trial.assign", assign("exp:1", epoch=1))
            await until(lambda: link.inbox.empty(), "the re-leases to be read")
            await asyncio.sleep(0.05)
            job = agent.running["exp:1"]
            assert (job.epoch, job.token) == (3, token("exp:1", 3))
            gate.open.set()
            await until(lambda: bool(link.sent(AgentLeaf.RESULT)), "the result")
            (result,) = link.sent(AgentLeaf.RESULT)
            assert (result.body["epoch"], result.body["token"]) == (3, token("exp:1", 3))
            assert agent.spool.token("exp:1", 3) == token("exp:1", 3)

    run(main)
