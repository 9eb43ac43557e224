"""What SHADHO's heuristics see of live work: each job's size and each agent's room and time.

The planner (:mod:`nasd.engine.work`) decides; this module measures, from the ledger and the
experiments: a job's :class:`~nasd.core.scheduler.JobDemand` (its estimated memory at the task's
batch size and its FLOPs, cached while the job lives), every agent's free credits, class, speed
and free memory (:meth:`Sizing.capacities`), the estimated end times of the jobs it runs
(:meth:`Sizing.timings`), and the scale that turns FLOPs over speed into seconds, calibrated on
the jobs that finished. An agent's memory is kept as its *idle* memory: what it reported free
plus our estimate of the jobs it was running, so a ``ready`` sent mid-job is not counted twice.

Start times are this daemon's clock and are not stored: after a restart a running job counts as
started at the first pass that sees it, which only delays estimates, never placement rules.
"""

from __future__ import annotations

import statistics
from collections import deque

from nasd.core.scheduler import AgentCapacity, AgentTiming, JobDemand, fits_anywhere
from nasd.core.scheduler.classes import agent_speed
from nasd.core.scheduler.heuristics import memory_estimate
from nasd.engine.ledger import Ledger
from nasd.engine.lifecycle import Experiments
from nasd.engine.placement import Placement
from nasd.engine.records import AgentRecord, LiveTrial

DEFAULT_BATCH_SIZE = 64
"""Batch size assumed for a job's memory estimate when its task options do not set one."""

SCALE_SAMPLES = 101
"""Finished jobs whose seconds per unit of FLOPs over speed calibrate duration estimates."""


class Sizing:
    """Job demands, agent capacities and timings, and the duration scale (module docstring)."""

    def __init__(self, experiments: Experiments, ledger: Ledger, placement: Placement) -> None:
        self._experiments = experiments
        self._ledger = ledger
        self._placement = placement
        self._demands: dict[str, JobDemand] = {}
        self._started: dict[str, float] = {}  # job id -> when its current lease began (this run)
        self._scales: deque[float] = deque(maxlen=SCALE_SAMPLES)

    def forget_finished(self) -> None:
        """Drop what is cached of jobs that are no longer live."""
        live = set(self._ledger.pending_ids()) | {t.job_id for t in self._ledger.running()}
        for cache in (self._demands, self._started):
            for job_id in [j for j in cache if j not in live]:
                del cache[job_id]

    def note_lease(self, job_id: str, now: float) -> None:
        """``job_id`` was leased at ``now`` (the start its duration estimate counts from)."""
        self._started[job_id] = now

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

    def held_memory(self, record: AgentRecord) -> int:
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
                memory = record.memory_idle - self.held_memory(record)
            out.append(
                AgentCapacity(
                    record.name,
                    free,
                    record.throughput,
                    record.trainers,
                    self._placement.klass(record.name),
                    agent_speed(record.profile),
                    memory,
                )
            )
        return out

    def never_fitting(self, waiting: list[str]) -> list[LiveTrial]:
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
        seconds = reported
        if seconds is None and trial.job_id in self._started:
            seconds = now - self._started[trial.job_id]
        flops = self.demand(trial).flops
        speed = self._speed(agent)
        if seconds is not None and seconds > 0 and flops > 0 and speed > 0:
            self._scales.append(seconds * speed / flops)

    def class_memory(self) -> dict[str, int | None]:
        """The most memory an online agent of each class has when idle (None: one is unknown)."""
        out: dict[str, int | None] = {}
        for record in self._ledger.agents():
            if not record.online:
                continue
            klass = self._placement.klass(record.name)
            known, seen = record.memory_idle, out.get(klass, 0)
            out[klass] = None if known is None or seen is None else max(seen, known)
        return out

    def scale(self) -> float:
        """The median calibration sample (1 before any: every term of a comparison is then an
        estimate on the same scale, so the scale cancels)."""
        return statistics.median(self._scales) if self._scales else 1.0

    def timings(self, now: float) -> list[AgentTiming]:
        """Every online agent with the estimated end times of the jobs it runs."""
        scale = self.scale()
        out = []
        for record in self._ledger.agents():
            if not record.online or record.draining or record.quarantined(now):
                continue  # it takes no work: nothing should wait for it
            # The class's speed, not the agent's own timing: agents of one device model must
            # never hold work back for each other because one measured faster under load.
            klass = self._placement.klass(record.name)
            speed = self._speed(record.name)
            ends = []
            for job_id in record.leases:
                trial = self._ledger.get(job_id)
                if trial is None or speed <= 0:
                    continue
                started = self._started.setdefault(job_id, now)  # after a restart: from now
                ends.append(started + scale * self.demand(trial).flops / speed)
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

    def _speed(self, name: str) -> float:
        """The speed estimates use for agent ``name``: its class's (median), else its own."""
        speed = self._placement.class_speed(self._placement.klass(name))
        record = self._ledger.find_agent(name)
        return speed or (agent_speed(record.profile) if record is not None else 0.0)

    def largest_agent_memory(self, trainer: str) -> int:
        """The most memory any known agent running ``trainer`` has when idle (for messages)."""
        return max(
            (a.memory_idle or 0 for a in self._ledger.agents() if trainer in a.trainers),
            default=0,
        )
