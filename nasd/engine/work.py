"""Turning free credits into trials, and pending trials into leases.

Credit-based flow: the daemon only asks strategies for as many new trials as online agents have
free credits not already covered by pending trials, so the queue stays short and a strategy always
decides with the latest results. Experiments share the credits in rotation. Each assignment is a
new lease epoch (the fencing token a result must carry) recorded before ``trial.assign`` is sent.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from nasd.engine.experiment import ExperimentRuntime
from nasd.engine.records import ExperimentStatus, LiveTrial, Outbound, TrialStatus, job_id_of
from nasd.events import SlotsOpen
from nasd.scheduler import AgentCapacity, plan_assignments
from nasd.store import repo
from nasd.wire import AgentLeaf, agent_topic

if TYPE_CHECKING:
    from nasd.engine.core import Engine


def propose(engine: Engine, conn: sqlite3.Connection, now: float) -> None:
    """Offer the free credits not covered by pending trials to running experiments, fairly."""
    spare = sum(a.free for a in engine.agents.values()) - len(engine.pending)
    runnable = [
        e
        for e in engine.experiments.values()
        if e.status is ExperimentStatus.RUNNING and e.remaining > 0 and not e.waiting
    ]
    if spare <= 0 or not runnable:
        return
    engine.rotation = (engine.rotation + 1) % len(runnable)
    ordered = runnable[engine.rotation :] + runnable[: engine.rotation]
    share = max(1, spare // len(ordered))
    for exp in ordered:
        offer = min(share, spare, exp.remaining)
        if offer <= 0:
            continue
        ids = tuple(range(exp.next_trial_id, exp.next_trial_id + offer))
        candidates = exp.feed(conn, SlotsOpen(ids), now)
        _admit(engine, conn, exp, ids, candidates, now)
        spare -= len(candidates)
        exp.waiting = len(candidates) < offer


def _admit(
    engine: Engine,
    conn: sqlite3.Connection,
    exp: ExperimentRuntime,
    ids: tuple[int, ...],
    candidates: Iterable[Any],
    now: float,
) -> None:
    rows = []
    for index, cand in enumerate(candidates):
        if index >= len(ids) or cand.trial_id != ids[index]:
            raise RuntimeError(
                f"strategy {exp.config.strategy_name!r} broke the protocol: candidate "
                f"{cand.trial_id} is not offered id #{index} of {ids}"
            )
        exp.space.validate(cand.genotype)
        job_id = job_id_of(exp.name, cand.trial_id)
        trial = LiveTrial(
            job_id=job_id,
            experiment=exp.name,
            trial_id=cand.trial_id,
            genotype=dict(cand.genotype),
            parent_id=cand.parent_id,
            morphisms=[dict(m) for m in cand.morphisms],
            epochs=cand.budget,
            status=TrialStatus.PENDING,
        )
        engine.trials[job_id] = trial
        engine.pending[job_id] = None
        rows.append(
            repo.trial_row(
                job_id,
                exp.name,
                cand.trial_id,
                trial.genotype,
                cand.parent_id,
                trial.morphisms,
                cand.budget,
                TrialStatus.PENDING,
                now,
            )
        )
        exp.next_trial_id += 1
    repo.insert_trials(conn, rows)


def assign(engine: Engine, conn: sqlite3.Connection, now: float) -> None:
    """Lease pending trials (oldest first) to agents with free credits; queue the assignments."""
    if not engine.pending:
        return
    capacities = [
        AgentCapacity(a.name, a.free, a.throughput) for a in engine.agents.values() if a.free
    ]
    if not capacities:
        return
    for job_id, name in plan_assignments(list(engine.pending), capacities):
        trial = engine.trials[job_id]
        ttl = engine.experiments[trial.experiment].config.lease_ttl_s
        trial.epoch += 1
        trial.status = TrialStatus.RUNNING
        trial.agent = name
        trial.assignments[trial.epoch] = name
        engine.agent(name).leases.add(job_id)
        del engine.pending[job_id]
        repo.assign_trial(conn, job_id, trial.epoch, name, now)
        engine.lease_clock.start(job_id, trial.epoch, now + ttl)
        engine.emit(assign_message(engine, trial))


def assign_message(engine: Engine, trial: LiveTrial) -> Outbound:
    """The ``trial.assign`` of the current lease of ``trial`` (also used to re-send it)."""
    config = engine.experiments[trial.experiment].config
    assert trial.agent is not None
    body = {
        "job_id": trial.job_id,
        "experiment": trial.experiment,
        "trial_id": trial.trial_id,
        "epoch": trial.epoch,
        "genotype": trial.genotype,
        "space": config.space,
        "task": {"trainer": config.trainer, "options": config.task.get("options", {})},
        "epochs": trial.epochs if trial.epochs is not None else config.epochs,
        "seed": (config.seed * 1_000_003 + trial.trial_id) % (2**31),
        "parent_id": trial.parent_id,
        "morphisms": trial.morphisms,
    }
    return Outbound(agent_topic(trial.agent, AgentLeaf.ASSIGN), "trial.assign", body)
