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
rather than waiting for ever.

Trainers: an agent is only sent jobs whose experiment's trainer its birth profile offers, and an
experiment is only offered credits of agents that run its trainer; pending trials nobody free can
run do not count against the credits either, so one experiment waiting for its trainer never
starves another.
"""

from __future__ import annotations

import sqlite3
import statistics
from collections import deque
from collections.abc import Sequence

from nasd.core.events import SlotsOpen
from nasd.core.scheduler import (
    AgentCapacity,
    AgentTiming,
    JobDemand,
    ModelView,
    fits_anywhere,
    keep_off_stragglers,
    plan_assignments,
    rank_models,
    share_credits,
)
from nasd.core.scheduler.classes import agent_speed
from nasd.core.scheduler.heuristics import memory_estimate
from nasd.core.strategy import Candidate
from nasd.engine.experiment import ExperimentRuntime
from nasd.engine.ledger import Ledger
from nasd.engine.lifecycle import Experiments
from nasd.engine.outbox import Outbox
from nasd.engine.placement import Placement
from nasd.engine.records import AgentRecord, ExperimentStatus, LiveTrial, TrialStatus, job_id_of
from nasd.store import repo

DEFAULT_BATCH_SIZE = 64
"""Batch size assumed for a job's memory estimate when its task options do not set one."""

SCALE_SAMPLES = 101
"""Finished jobs whose seconds per unit of FLOPs over speed calibrate duration estimates."""


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
        self._demands: dict[str, JobDemand] = {}
        self._started: dict[str, float] = {}  # job id -> when its current lease began (this run)
        self._scales: deque[float] = deque(maxlen=SCALE_SAMPLES)

    # -- what the heuristics see ------------------------------------------------------------------

    def demand(self, trial: LiveTrial) -> JobDemand:
        """The job's model, trainer, estimated memory and FLOPs (cached while it lives)."""
        known = self._demands.get(trial.job_id)
        if known is None:
            exp = self._experiments[trial.experiment]
            cost = exp.space.cost(trial.genotype)
            batch = exp.config.task.get("options", {}).get("batch_size", DEFAULT_BATCH_SIZE)
            known = JobDemand(
                trial.job_id,
                exp.name,
                exp.config.trainer,
                memory_estimate(cost, int(batch) if isinstance(batch, int) else DEFAULT_BATCH_SIZE),
                float(cost.get("flops", 0.0)),
            )
            self._demands[trial.job_id] = known
        return known

    def _held_memory(self, record: AgentRecord) -> int:
        """Estimated bytes of the jobs ``record`` holds now."""
        total = 0
        for job_id in record.leases:
            trial = self._ledger.get(job_id)
            memory = None if trial is None else self.demand(trial).memory
            total += memory or 0
        return total

    def note_free_memory(self, name: str, free: int | None, running: list[str]) -> None:
        """An agent reported ``free`` bytes while running ``running``: its memory when idle."""
        record = self._ledger.find_agent(name)
        if record is None or free is None:
            return
        held = 0
        for job_id in running:
            trial = self._ledger.get(job_id)
            if trial is not None and trial.agent == name:
                held += self.demand(trial).memory or 0
        record.memory_idle = free + held

    def capacities(self, now: float) -> list[AgentCapacity]:
        """Every agent with a free credit at ``now``, with its class, speed and free memory."""
        out = []
        for record in self._ledger.agents():
            free = record.free_at(now)
            if not free:
                continue
            memory = None
            if record.memory_idle is not None:
                memory = record.memory_idle - self._held_memory(record)
            out.append(
                AgentCapacity(
                    record.name,
                    free,
                    record.throughput,
                    record.trainers,
                    self.placement.klass(record.name),
                    agent_speed(record.profile),
                    memory,
                )
            )
        return out

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
        capacities = self.capacities(now)
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
            if offer <= 0:
                continue
            ids = tuple(range(exp.next_trial_id, exp.next_trial_id + offer))
            candidates = exp.feed(conn, SlotsOpen(ids), now)
            self._admit(conn, exp, ids, candidates, now)
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

    def assign(self, conn: sqlite3.Connection, now: float) -> list[LiveTrial]:
        """Lease pending trials to agents by :func:`plan_assignments`; queue the assignments.

        Returns the pending trials no agent known to run their trainer could ever hold (their
        estimated memory exceeds every such agent's): the engine fails them.
        """
        live = set(self._ledger.pending_ids()) | {t.job_id for t in self._ledger.running()}
        for job_id in [j for j in self._demands if j not in live]:
            del self._demands[job_id]
        for job_id in [j for j in self._started if j not in live]:
            del self._started[job_id]
        if not self._ledger.pending_count:
            return []
        capacities = self.capacities(now)
        queue = [self._ledger.get(job_id) for job_id in self._ledger.pending_ids()]
        trials = [t for t in queue if t is not None]
        jobs = [self.demand(t) for t in trials]
        classes = self._model_classes(self._active_models())
        plan = plan_assignments(jobs, capacities, classes, self._class_memory())
        pairs = keep_off_stragglers(
            plan.pairs, {j.job_id: j for j in jobs}, self._timings(now), classes, now, self._scale()
        )
        for job_id, name in pairs:
            trial = self._ledger.get(job_id)
            assert trial is not None  # pending ids are live trials (ledger invariant)
            config = self._experiments[trial.experiment].config
            epoch = self._ledger.lease(trial, name, now + config.lease_ttl_s)
            self._started[job_id] = now
            repo.assign_trial(conn, job_id, epoch, name, now)
            self._outbox.assign(trial, config)
        return self._never_fitting(plan.waiting)

    def _never_fitting(self, waiting: list[str]) -> list[LiveTrial]:
        """Waiting trials too big for every agent known to run their trainer (one online)."""
        out = []
        for job_id in waiting:
            trial = self._ledger.get(job_id)
            if trial is None:
                continue
            job = self.demand(trial)
            if job.memory is None:
                continue
            able = [a for a in self._ledger.agents() if job.trainer in a.trainers]
            sizes = [a.memory_idle for a in able if a.memory_idle is not None]
            if sizes and any(a.online for a in able) and not fits_anywhere(job.memory, sizes):
                out.append(trial)
        return out

    def note_duration(
        self, trial: LiveTrial, agent: str, reported: float | None, now: float
    ) -> None:
        """A job finished on ``agent``: calibrate the scale of duration estimates (seconds per
        unit of FLOPs over speed) with the training time the agent ``reported`` or, without
        one, the time since its lease began here."""
        started = self._started.get(trial.job_id)
        seconds = reported if reported is not None else None if started is None else now - started
        record = self._ledger.find_agent(agent)
        flops = self.demand(trial).flops
        speed = agent_speed(record.profile) if record is not None else 0.0
        if seconds is not None and seconds > 0 and flops > 0 and speed > 0:
            self._scales.append(seconds * speed / flops)

    def _class_memory(self) -> dict[str, int | None]:
        """The most memory an online agent of each class has when idle (None: one is unknown)."""
        out: dict[str, int | None] = {}
        for record in self._ledger.agents():
            if not record.online:
                continue
            klass = self.placement.klass(record.name)
            known, seen = record.memory_idle, out.get(klass, 0)
            out[klass] = None if known is None or seen is None else max(seen, known)
        return out

    def _scale(self) -> float:
        """The median calibration sample (1 before any: every term of a comparison is then an
        estimate on the same scale, so the scale cancels)."""
        return statistics.median(self._scales) if self._scales else 1.0

    def _timings(self, now: float) -> list[AgentTiming]:
        """Every online agent with the estimated end times of the jobs it runs."""
        scale = self._scale()
        out = []
        for record in self._ledger.agents():
            if not record.online or record.draining or record.quarantined(now):
                continue  # it takes no work: nothing should wait for it
            speed = agent_speed(record.profile)
            ends = []
            for job_id in record.leases:
                trial = self._ledger.get(job_id)
                if trial is None or speed <= 0:
                    continue
                started = self._started.setdefault(job_id, now)  # after a restart: from now
                ends.append(started + scale * self.demand(trial).flops / speed)
            klass = self.placement.klass(record.name)
            out.append(
                AgentTiming(
                    record.name,
                    klass,
                    speed,
                    record.slots,
                    tuple(ends),
                    record.memory_idle,
                    record.trainers,
                )
            )
        return out

    def largest_agent_memory(self, trainer: str) -> int:
        """The most memory any known agent running ``trainer`` has when idle (for messages)."""
        return max(
            (a.memory_idle or 0 for a in self._ledger.agents() if trainer in a.trainers),
            default=0,
        )
