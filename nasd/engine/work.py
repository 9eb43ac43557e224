"""Turning free credits into trials, and pending trials into leases.

Credit-based flow: the daemon only asks strategies for as many new trials as online agents have
free credits not already covered by pending trials, so the queue stays short and a strategy always
decides with the latest results. Experiments share the credits by class (below). Each
assignment is a new lease epoch (the fencing token a result must carry) recorded before
``trial.assign`` is sent.

Placement follows SHADHO (:mod:`nasd.core.scheduler.shadho`): agents form compute classes, each
experiment (a "model" in SHADHO's terms) is assigned classes by its complexity and priority, free
slots are offered per class to the models assigned to it, and pending jobs go to the fastest
agents of their model's classes, largest first, never where their estimated memory does not fit.
A job that fits no agent known to run its trainer fails at once with the sizes in its error,
rather than waiting for ever. A job is not started on an agent at least twice as slow as one it
could wait for when waiting would finish it sooner (:func:`keep_off_stragglers`). What the
heuristics measure of jobs and agents lives in :mod:`nasd.engine.sizing`.

Trainers: an agent is only sent jobs whose experiment's trainer its birth profile offers, and an
experiment is only offered credits of agents that run its trainer; pending trials nobody free can
run do not count against the credits either, so one experiment waiting for its trainer never
starves another.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence

import structlog

from nasd.core.events import SlotsOpen
from nasd.core.scheduler import (
    ModelView,
    keep_off_stragglers,
    plan_assignments,
    rank_models,
    share_credits,
)
from nasd.core.strategy import Candidate
from nasd.engine.experiment import ExperimentRuntime
from nasd.engine.ledger import Ledger
from nasd.engine.lifecycle import Experiments
from nasd.engine.outbox import Outbox
from nasd.engine.placement import Placement
from nasd.engine.records import ExperimentStatus, LiveTrial, TrialStatus, job_id_of
from nasd.engine.sizing import Sizing
from nasd.store import repo

log = structlog.get_logger("nasd.engine.work")


class Planner:
    """Proposes and assigns work by SHADHO's heuristics (module docstring)."""

    def __init__(
        self,
        experiments: Experiments,
        ledger: Ledger,
        outbox: Outbox,
        placement: Placement | None = None,
    ) -> None:
        self._experiments = experiments
        self._ledger = ledger
        self._outbox = outbox
        self.placement = placement or Placement()
        self.sizing = Sizing(experiments, ledger, self.placement)

    def _model_classes(self, models: list[ExperimentRuntime]) -> dict[str, tuple[str, ...]]:
        """Each model's assigned classes that run its trainer (else every class that does).

        Judged over all online agents, busy ones included: a model whose class is busy waits
        for it rather than spilling onto classes it was not given.
        """
        online = [a for a in self._ledger.agents() if a.online]
        out = {}
        for exp in models:
            trainer = exp.config.trainer
            able = {self.placement.klass(a.name) for a in online if trainer in a.trainers}
            assigned = tuple(c for c in self.placement.classes_of(exp.name) if c in able)
            out[exp.name] = assigned or tuple(sorted(able))
        return out

    @staticmethod
    def _active(exp: ExperimentRuntime) -> bool:
        return exp.status is ExperimentStatus.RUNNING and not exp.complete

    def _active_models(self) -> list[ExperimentRuntime]:
        return [e for e in self._all_models() if self._active(e)]

    def _all_models(self) -> list[ExperimentRuntime]:
        return [self._experiments[name] for name in self._experiments]

    # -- proposing and assigning ------------------------------------------------------------------

    def propose(self, conn: sqlite3.Connection, now: float) -> None:
        """Ask running experiments for as many trials as their classes have free slots."""
        self.placement.refresh(conn, self._ledger.agents(), self._all_models(), self._active)
        capacities = self.sizing.capacities(now)
        offered = frozenset(t for c in capacities for t in (c.trainers or ()))
        runnable = [e for e in self._experiments.runnable() if e.config.trainer in offered]
        if not runnable:
            return
        free_by_class: dict[str, int] = {}
        for cap in capacities:
            free_by_class[cap.klass] = free_by_class.get(cap.klass, 0) + cap.free
        pending: dict[str, int] = {}
        for job_id in self._ledger.pending_ids():
            trial = self._ledger.get(job_id)
            assert trial is not None  # pending ids are live trials (ledger invariant)
            if self._experiments[trial.experiment].config.trainer in offered:
                pending[trial.experiment] = pending.get(trial.experiment, 0) + 1
        ranked = rank_models([ModelView(e.name, e.complexity, e.priority) for e in runnable])
        by_name = {e.name: e for e in runnable}
        offers = share_credits(
            free_by_class,
            self._model_classes(runnable),
            [m.name for m in ranked],
            pending,
        )
        for model in ranked:
            exp = by_name[model.name]
            offer = min(offers.get(exp.name, 0), exp.remaining)
            if exp.config.parallel is not None:
                live = len(self._ledger.of_experiment(exp.name))
                offer = min(offer, exp.config.parallel - live)
            if offer <= 0:
                continue
            ids = tuple(range(exp.next_trial_id, exp.next_trial_id + offer))
            candidates = exp.feed(conn, SlotsOpen(ids), now)
            self._admit(conn, exp, ids, candidates, now)
            exp.waiting = len(candidates) < offer

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

    def assign(self, conn: sqlite3.Connection, now: float) -> list[LiveTrial]:
        """Lease pending trials to agents by :func:`plan_assignments`; queue the assignments.

        Returns the pending trials no agent known to run their trainer could ever hold (their
        estimated memory exceeds every such agent's): the engine fails them.
        """
        sizing = self.sizing
        sizing.forget_finished()
        if not self._ledger.pending_count:
            return []
        capacities = sizing.capacities(now)
        queue = [self._ledger.get(job_id) for job_id in self._ledger.pending_ids()]
        trials = [t for t in queue if t is not None]
        jobs = [sizing.demand(t) for t in trials]
        classes = self._model_classes(self._active_models())
        plan = plan_assignments(jobs, capacities, classes, sizing.class_memory())
        pairs = keep_off_stragglers(
            plan.pairs,
            {j.job_id: j for j in jobs},
            sizing.timings(now),
            classes,
            now,
            sizing.scale(),
        )
        for job_id, name in pairs:
            trial = self._ledger.get(job_id)
            assert trial is not None  # pending ids are live trials (ledger invariant)
            config = self._experiments[trial.experiment].config
            epoch = self._ledger.lease(trial, name, now + config.lease_ttl_s)
            sizing.note_lease(job_id, now)
            repo.assign_trial(conn, job_id, epoch, name, now)
            self._outbox.assign(trial, config)
        return sizing.never_fitting(plan.waiting)
