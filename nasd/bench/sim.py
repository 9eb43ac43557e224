"""A discrete-event simulation of nasd's scheduling on a heterogeneous pool (virtual clock).

One run = one policy, one seed, both models of :mod:`nasd.bench.workload` searched at once with
the real strategies (:func:`nasd.core.strategy.build_strategy`, driven through ``react`` with the
events of :mod:`nasd.core.events`, as :mod:`nasd.engine.work` drives them). Time only moves from
one job completion to the next; after each batch of completions the policy proposes and places,
as the daemon does after a batch of results.

Policies (proposal + placement):

* ``shadho``: what the daemon runs (:mod:`nasd.engine.work` and :mod:`nasd.engine.placement`):
  compute classes by device model, :func:`assign_models` at start and every
  :data:`ASSIGN_EVERY` finished evaluations, :func:`share_credits` for proposals,
  :func:`plan_assignments` (memory-checked) for placement, then :func:`keep_off_stragglers`
  (a job is not started on an agent where it would finish later than by waiting for the
  fastest agent of its model's classes).
* ``spread``: nasd's first policy: free credits not covered by pending jobs are offered to the
  models in rotation, :func:`spread_assignments` places them (no memory check).
* ``first-free``: the same proposals as ``spread``; each freed slot takes the oldest pending job,
  no memory check.
* experimental (``--experimental``), ablations and variants of ``shadho``:
  ``shadho-eager`` leaves out :func:`keep_off_stragglers` (every free slot takes work);
  ``shadho-mem`` (:meth:`Simulation._plan_memory_bound_first`) also places jobs too big for the
  smallest card first, wherever they fit.

A job placed where its true memory does not fit fails with out-of-memory after
:data:`~nasd.bench.workload.OOM_FRACTION` of its duration (an OOM placement) and, as in nasd
(``max_attempts``, default 3), returns to the queue in its place until its third failed attempt,
when it fails for good: its strategy gets ``TrialFailed`` and the evaluation is spent.
"""

from __future__ import annotations

import heapq
import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field

from nasd.bench.workload import OOM_FRACTION, Agent, Arch, Model, Workload
from nasd.config import DEFAULT_MAX_ATTEMPTS
from nasd.core.events import Genotype, SlotsOpen, TrialFailed, TrialSucceeded
from nasd.core.scheduler import (
    AgentCapacity,
    AgentTiming,
    JobDemand,
    ModelView,
    assign_models,
    keep_off_stragglers,
    plan_assignments,
    rank_models,
    share_credits,
    spread_assignments,
)
from nasd.core.scheduler.classes import agent_speed, class_speeds, group_agents
from nasd.core.scheduler.heuristics import as_loss, complexity, priority
from nasd.core.strategy import Strategy, build_strategy

POLICIES = ("shadho", "spread", "first-free")
EXPERIMENTAL_POLICIES = ("shadho-eager", "shadho-mem")
STRATEGY = "aging-evolution"
STRATEGY_PARAMS = {"population": 10, "sample": 3}
ASSIGN_EVERY = 10
"""Finished evaluations between two recomputations of the model-to-class assignment."""


class SimulationError(RuntimeError):
    """An invariant of the simulation broke (a job finished twice, an agent over its slots)."""


@dataclass(slots=True)
class Job:
    """One trial of one model, pending or running."""

    job_id: str
    model: str
    trial_id: int
    genotype: Genotype
    arch: Arch
    true_memory: int
    order: int
    started_at: float = 0.0
    attempts: int = 0


@dataclass(slots=True)
class ModelState:
    """A model's strategy and the counters the engine keeps for an experiment."""

    model: Model
    strategy: Strategy
    budget: int
    complexity: float
    next_trial_id: int = 0
    finished: int = 0
    failed: int = 0
    waiting: bool = False
    loss_low: float = math.inf
    loss_high: float = -math.inf
    reached_at: float | None = None

    @property
    def remaining(self) -> int:
        return max(0, self.budget - self.next_trial_id)

    @property
    def complete(self) -> bool:
        return self.finished + self.failed >= self.budget

    def view(self) -> ModelView:
        """What SHADHO's ranking sees (priority as :class:`ExperimentRuntime` computes it)."""
        known = self.finished >= 2 and self.loss_low <= self.loss_high
        level = priority([self.loss_low, self.loss_high]) if known else None
        return ModelView(self.model.name, self.complexity, level)


@dataclass(slots=True)
class AgentState:
    """One agent: its class, its running jobs and how long its slots were busy."""

    agent: Agent
    klass: str
    speed: float
    running: dict[str, Job] = field(default_factory=dict)
    busy_s: float = 0.0
    peak: int = 0

    @property
    def free(self) -> int:
        return self.agent.device.slots - len(self.running)


@dataclass(frozen=True, slots=True)
class RunResult:
    """The figures of one run; ``finished`` and ``failed`` list job ids in the order they
    succeeded or failed for good (every evaluation is in exactly one of them)."""

    policy: str
    seed: int
    time_to_target: float
    reached: bool
    reached_at: dict[str, float | None]
    makespan: float
    utilisation: dict[str, float]
    oom_placements: int
    placements: dict[str, dict[str, int]]
    finished: tuple[str, ...]
    failed: tuple[str, ...]
    peak_running: dict[str, int]


class Simulation:
    """One run (module docstring); :meth:`run` returns its :class:`RunResult`."""

    def __init__(self, workload: Workload, policy: str, seed: int, budget: int) -> None:
        if policy not in POLICIES + EXPERIMENTAL_POLICIES:
            raise ValueError(f"unknown policy {policy!r}")
        self.policy, self.seed, self.now = policy, seed, 0.0
        shares = [budget // len(workload.models)] * len(workload.models)
        shares[0] += budget - sum(shares)
        self.models = {
            m.name: ModelState(
                m,
                build_strategy(STRATEGY, m.space, seed * 100 + i, STRATEGY_PARAMS),
                shares[i],
                complexity(m.space.domains()),
            )
            for i, m in enumerate(workload.models)
        }
        profiles = {a.name: a.profile() for a in workload.agents}
        classes = group_agents(profiles)
        self.speeds = class_speeds(classes, profiles)
        self.agents = {
            a.name: AgentState(a, classes[a.name], agent_speed(profiles[a.name]))
            for a in workload.agents
        }
        self.pending: list[Job] = []
        self.free_order = [name for name in self.agents for _ in range(self.agents[name].free)]
        self.events: list[tuple[float, int, str, str, bool]] = []
        self.sequence = 0
        self.assignment: dict[str, tuple[str, ...]] = {}
        self.finished_since = ASSIGN_EVERY
        self.rotation = 0
        self.oom = 0
        self.finished: list[str] = []
        self.failed: list[str] = []
        self.resolved: set[str] = set()
        self.scale_samples: list[float] = []
        self.placements: dict[str, dict[str, int]] = {}

    # -- the loop ---------------------------------------------------------------------------------

    def run(self) -> RunResult:
        """Simulate until every evaluation of every model has finished."""
        self._schedule()
        while self.events:
            self.now = self.events[0][0]
            while self.events and self.events[0][0] == self.now:
                _, _, job_id, agent, ok = heapq.heappop(self.events)
                self._complete(job_id, agent, ok)
            self._schedule()
        if not all(m.complete for m in self.models.values()) or self.pending:
            raise SimulationError(f"{self.policy} seed {self.seed}: stalled with work left")
        return self._result()

    def _schedule(self) -> None:
        if self.policy.startswith("shadho"):
            self._propose_shadho()
            self._place_shadho()
        else:
            self._propose_spread()
            if self.policy == "spread":
                self._place_spread()
            else:
                self._place_first_free()

    def _complete(self, job_id: str, name: str, ok: bool) -> None:
        agent = self.agents[name]
        job = agent.running.pop(job_id, None)
        if job is None:
            raise SimulationError(f"{job_id} finished on {name}, which does not run it")
        agent.busy_s += self.now - job.started_at
        self.free_order.append(name)
        state = self.models[job.model]
        if job_id in self.resolved:
            raise SimulationError(f"{job_id} resolved twice")
        if not ok:
            job.attempts += 1
            if job.attempts < DEFAULT_MAX_ATTEMPTS:  # back to the queue in its place
                self.pending.append(job)
                self.pending.sort(key=lambda j: j.order)
                return
            self.resolved.add(job_id)
            self.failed.append(job_id)
            state.failed += 1
            state.waiting = False
            state.strategy.react(TrialFailed(job.trial_id, job.genotype, "out of memory"))
            return
        self.resolved.add(job_id)
        self.finished.append(job_id)
        self.scale_samples.append((self.now - job.started_at) * agent.speed / job.arch.flops)
        state.finished += 1
        state.waiting = False
        value = job.arch.accuracy / 100.0
        loss = as_loss(value, maximise=True)
        state.loss_low, state.loss_high = min(state.loss_low, loss), max(state.loss_high, loss)
        state.strategy.react(TrialSucceeded(job.trial_id, job.genotype, {"val_acc": value}))
        if state.reached_at is None and job.arch.accuracy >= state.model.threshold:
            state.reached_at = self.now
        self.finished_since += 1

    def _start(self, job: Job, name: str) -> None:
        agent = self.agents[name]
        if agent.free <= 0:
            raise SimulationError(f"{name} given {job.job_id} with no free slot")
        self.pending.remove(job)
        self.free_order.remove(name)
        used = sum(j.true_memory for j in agent.running.values())
        fits = used + job.true_memory <= agent.agent.device.memory
        duration = job.arch.durations[agent.agent.device.name]
        self.oom += not fits
        job.started_at = self.now
        agent.running[job.job_id] = job
        agent.peak = max(agent.peak, len(agent.running))
        counts = self.placements.setdefault(agent.klass, {})
        counts[job.model] = counts.get(job.model, 0) + 1
        end = self.now + (duration if fits else OOM_FRACTION * duration)
        self.sequence += 1
        heapq.heappush(self.events, (end, self.sequence, job.job_id, name, fits))

    def _admit(self, state: ModelState, offer: int) -> None:
        ids = tuple(range(state.next_trial_id, state.next_trial_id + offer))
        candidates = state.strategy.react(SlotsOpen(ids))
        for index, cand in enumerate(candidates):
            if cand.trial_id != ids[index]:
                raise SimulationError(f"{state.model.name}: candidate {cand.trial_id} not offered")
            state.model.space.validate(cand.genotype)
            self.sequence += 1
            self.pending.append(
                Job(
                    f"{state.model.name}:{cand.trial_id}",
                    state.model.name,
                    cand.trial_id,
                    dict(cand.genotype),
                    state.model.arch(cand.genotype),
                    state.model.true_memory(cand.genotype, self.seed),
                    self.sequence,
                )
            )
            state.next_trial_id += 1
        state.waiting = len(candidates) < offer

    # -- shadho (mirrors nasd.engine.work.Planner and nasd.engine.placement.Placement) ------------

    def _active(self) -> list[ModelState]:
        return [m for m in self.models.values() if not m.complete]

    def _capacities(self) -> list[AgentCapacity]:
        out = []
        for agent in self.agents.values():
            if agent.free <= 0:
                continue
            held = sum(j.arch.memory for j in agent.running.values())
            out.append(
                AgentCapacity(
                    agent.agent.name,
                    agent.free,
                    agent.speed,
                    None,
                    agent.klass,
                    agent.speed,
                    agent.agent.device.memory - held,
                )
            )
        return out

    def _model_classes(self, models: Sequence[ModelState]) -> dict[str, tuple[str, ...]]:
        """Each model's assigned classes, as :meth:`nasd.engine.work.Planner._model_classes`
        (every agent runs both models' trainer here, busy ones included)."""
        able = {a.klass for a in self.agents.values()}
        out = {}
        for state in models:
            name = state.model.name
            assigned = tuple(c for c in self.assignment.get(name, ()) if c in able)
            out[name] = assigned or tuple(sorted(able))
        return out

    def _propose_shadho(self) -> None:
        if self.finished_since >= ASSIGN_EVERY:
            self.assignment = assign_models([m.view() for m in self._active()], self.speeds)
            self.finished_since = 0
        capacities = self._capacities()
        runnable = [m for m in self.models.values() if m.remaining > 0 and not m.waiting]
        if not runnable or not capacities:
            return
        free_by_class: dict[str, int] = {}
        for cap in capacities:
            free_by_class[cap.klass] = free_by_class.get(cap.klass, 0) + cap.free
        pending: dict[str, int] = {}
        for job in self.pending:
            pending[job.model] = pending.get(job.model, 0) + 1
        ranked = rank_models([m.view() for m in runnable])
        offers = share_credits(
            free_by_class,
            self._model_classes(runnable),
            [m.name for m in ranked],
            pending,
        )
        for view in ranked:
            state = self.models[view.name]
            offer = min(offers.get(view.name, 0), state.remaining)
            if offer > 0:
                self._admit(state, offer)

    def _place_shadho(self) -> None:
        if not self.pending:
            return
        capacities = self._capacities()
        jobs = [
            JobDemand(j.job_id, j.model, None, j.arch.memory, j.arch.flops) for j in self.pending
        ]
        classes = self._model_classes(self._active())
        if "mem" in self.policy:
            pairs = self._plan_memory_bound_first(jobs, capacities, classes)
        else:
            pairs = plan_assignments(jobs, capacities, classes, self._class_memory()).pairs
        if self.policy != "shadho-eager":
            pairs = keep_off_stragglers(
                pairs,
                {j.job_id: j for j in jobs},
                self._timings(),
                classes,
                self.now,
                self._scale(),
            )
        by_id = {j.job_id: j for j in self.pending}
        for job_id, name in pairs:
            self._start(by_id[job_id], name)

    def _plan_memory_bound_first(
        self,
        jobs: list[JobDemand],
        capacities: list[AgentCapacity],
        classes: dict[str, tuple[str, ...]],
    ) -> list[tuple[str, str]]:
        """Experimental (``shadho-mem``): jobs too big for some class are placed first, on any
        class that can hold them, then the rest by :func:`plan_assignments` as usual. Without it
        a model assigned to small cards waits for its big children while the big card serves
        its own models' small ones."""
        smallest = min(a.agent.device.memory for a in self.agents.values())
        bound = [j for j in jobs if j.memory is not None and j.memory > smallest]
        first = plan_assignments(bound, capacities, {}).pairs
        taken: dict[str, int] = {}
        for _, name in first:
            taken[name] = taken.get(name, 0) + 1
        placed = {job_id for job_id, _ in first}
        held = {j.job_id: j.memory or 0 for j in bound}
        rest = [
            AgentCapacity(
                c.name,
                c.free - taken.get(c.name, 0),
                c.throughput,
                c.trainers,
                c.klass,
                c.speed,
                None
                if c.free_memory is None
                else c.free_memory - sum(held[j] for j, name in first if name == c.name),
            )
            for c in capacities
        ]
        others = [j for j in jobs if j.job_id not in placed]
        return first + plan_assignments(others, rest, classes).pairs

    def _class_memory(self) -> dict[str, int | None]:
        """The most memory an agent of each class has (what the engine reads off profiles)."""
        out: dict[str, int | None] = {}
        for a in self.agents.values():
            out[a.klass] = max(out.get(a.klass) or 0, a.agent.device.memory)
        return out

    def _scale(self) -> float:
        """Seconds per unit of FLOPs over speed: the median of the jobs finished so far (1 before
        any: then every term of a comparison is an estimate and the scale cancels)."""
        return statistics.median(self.scale_samples) if self.scale_samples else 1.0

    def _timings(self) -> list[AgentTiming]:
        """Every agent with the estimated end times of its running jobs, as nasd can know them."""
        scale = self._scale()
        return [
            AgentTiming(
                a.agent.name,
                a.klass,
                a.speed,
                a.agent.device.slots,
                tuple(j.started_at + scale * j.arch.flops / a.speed for j in a.running.values()),
                a.agent.device.memory,
            )
            for a in self.agents.values()
        ]

    # -- spread and first-free (nasd's first policy) -----------------------------------------------

    def _propose_spread(self) -> None:
        runnable = [m for m in self.models.values() if m.remaining > 0 and not m.waiting]
        if not runnable:
            return
        spare = sum(a.free for a in self.agents.values()) - len(self.pending)
        if spare <= 0:
            return
        self.rotation = (self.rotation + 1) % len(runnable)
        ordered = runnable[self.rotation :] + runnable[: self.rotation]
        share = max(1, spare // len(ordered))
        for state in ordered:
            offer = min(share, spare, state.remaining)
            if offer <= 0:
                continue
            before = state.next_trial_id
            self._admit(state, offer)
            spare -= state.next_trial_id - before

    def _place_spread(self) -> None:
        capacities = [
            AgentCapacity(a.agent.name, a.free, a.speed) for a in self.agents.values() if a.free
        ]
        by_id = {j.job_id: j for j in self.pending}
        for job_id, name in spread_assignments([j.job_id for j in self.pending], capacities):
            self._start(by_id[job_id], name)

    def _place_first_free(self) -> None:
        while self.pending and self.free_order:
            self._start(self.pending[0], self.free_order[0])

    # -- figures ----------------------------------------------------------------------------------

    def _result(self) -> RunResult:
        makespan = self.now
        reached_at = {name: m.reached_at for name, m in self.models.items()}
        reached = all(t is not None for t in reached_at.values())
        target = max(t for t in reached_at.values() if t is not None) if reached else makespan
        busy: dict[str, float] = {}
        slots: dict[str, int] = {}
        for agent in self.agents.values():
            busy[agent.klass] = busy.get(agent.klass, 0.0) + agent.busy_s
            slots[agent.klass] = slots.get(agent.klass, 0) + agent.agent.device.slots
        return RunResult(
            self.policy,
            self.seed,
            target,
            reached,
            reached_at,
            makespan,
            {k: busy[k] / (slots[k] * makespan) if makespan else 0.0 for k in busy},
            self.oom,
            self.placements,
            tuple(self.finished),
            tuple(self.failed),
            {name: a.peak for name, a in self.agents.items()},
        )


def simulate(workload: Workload, policy: str, seed: int, budget: int) -> RunResult:
    """One run of ``policy`` with ``seed`` and ``budget`` evaluations split between the models."""
    return Simulation(workload, policy, seed, budget).run()
