"""Turning free credits into trials, and pending trials into leases.

Credit-based flow: the daemon only asks strategies for as many new trials as online agents have
free credits not already covered by pending trials, so the queue stays short and a strategy always
decides with the latest results. Experiments share the credits in rotation. Each assignment is a
new lease epoch (the fencing token a result must carry) recorded before ``trial.assign`` is sent.

Trainers: an agent is only sent jobs whose experiment's trainer its birth profile offers, and an
experiment is only offered credits of agents that run its trainer; pending trials nobody free can
run do not count against the credits either, so one experiment waiting for its trainer never
starves another.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence

from nasd.core.events import SlotsOpen
from nasd.core.scheduler import plan_assignments
from nasd.core.strategy import Candidate
from nasd.engine.experiment import ExperimentRuntime
from nasd.engine.ledger import Ledger
from nasd.engine.lifecycle import Experiments
from nasd.engine.outbox import Outbox
from nasd.engine.records import LiveTrial, TrialStatus, job_id_of
from nasd.store import repo


class Planner:
    """Proposes and assigns work; owns the rotation that makes experiments take turns."""

    def __init__(self, experiments: Experiments, ledger: Ledger, outbox: Outbox) -> None:
        self._experiments = experiments
        self._ledger = ledger
        self._outbox = outbox
        self._rotation = 0

    def propose(self, conn: sqlite3.Connection, now: float) -> None:
        """Offer the free credits not covered by pending trials to running experiments, fairly."""
        capacities = self._ledger.capacities(now)
        offered = frozenset(t for c in capacities for t in (c.trainers or ()))
        runnable = [e for e in self._experiments.runnable() if e.config.trainer in offered]
        if not runnable:
            return
        waiting = sum(1 for j in self._ledger.pending_ids() if self._trainer_of(j) in offered)
        spare = sum(c.free for c in capacities) - waiting
        if spare <= 0:
            return
        self._rotation = (self._rotation + 1) % len(runnable)
        ordered = runnable[self._rotation :] + runnable[: self._rotation]
        share = max(1, spare // len(ordered))
        for exp in ordered:
            offer = min(share, spare, exp.remaining)
            if offer <= 0:
                continue
            ids = tuple(range(exp.next_trial_id, exp.next_trial_id + offer))
            candidates = exp.feed(conn, SlotsOpen(ids), now)
            self._admit(conn, exp, ids, candidates, now)
            spare -= len(candidates)
            exp.waiting = len(candidates) < offer

    def _trainer_of(self, job_id: str) -> str:
        trial = self._ledger.get(job_id)
        assert trial is not None  # pending ids are live trials (ledger invariant)
        return self._experiments[trial.experiment].config.trainer

    def _admit(
        self,
        conn: sqlite3.Connection,
        exp: ExperimentRuntime,
        ids: tuple[int, ...],
        candidates: Sequence[Candidate],
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
            trial = LiveTrial(
                job_id=job_id_of(exp.name, cand.trial_id),
                experiment=exp.name,
                trial_id=cand.trial_id,
                genotype=dict(cand.genotype),
                parent_id=cand.parent_id,
                morphisms=[dict(m) for m in cand.morphisms],
                epochs=cand.budget,
                status=TrialStatus.PENDING,
            )
            self._ledger.add(trial)
            rows.append(
                repo.trial_row(
                    trial.job_id,
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

    def assign(self, conn: sqlite3.Connection, now: float) -> None:
        """Lease pending trials (oldest first) to agents with free credits; queue assignments.

        Each goes to an agent that offers its experiment's trainer (see the module docstring).
        """
        if not self._ledger.pending_count:
            return
        capacities = self._ledger.capacities(now)
        if not capacities:
            return
        queue = self._ledger.pending_ids()
        trainers = {job_id: self._trainer_of(job_id) for job_id in queue}
        for job_id, name in plan_assignments(queue, capacities, trainers):
            trial = self._ledger.get(job_id)
            assert trial is not None  # pending ids are live trials (ledger invariant)
            config = self._experiments[trial.experiment].config
            epoch = self._ledger.lease(trial, name, now + config.lease_ttl_s)
            repo.assign_trial(conn, job_id, epoch, name, now)
            self._outbox.assign(trial, config)
