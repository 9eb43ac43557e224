"""SHADHO's assignment (Kinnison et al., WACV 2018): models to compute classes, jobs to agents.

Three steps, each a pure function the engine calls:

1. :func:`assign_models` ranks the models by complexity and by priority (the sum of the two
   ranks; ties by complexity, then name) and the compute classes by speed, and gives the
   highest-ranked models the fastest classes: with ``K`` classes and ``M`` models, the ranked
   models cut the ranked classes into ``M`` contiguous blocks when ``K >= M`` (every model gets at
   least one class, two once ``K >= 2M``), and the ranked classes cut the models into ``K``
   blocks when ``K < M`` (each class serves a run of similarly ranked models). The engine
   recomputes it every few finished evaluations and whenever the set of classes changes.
2. :func:`share_credits` is SHADHO's per-class queue: each class's free slots are split among
   the models assigned to it, and a model is offered only its share minus the jobs it already
   has waiting, so no more work is handed out than there are free slots and strategies decide
   with fresh results. Slots of a class none of whose models can use them (their budgets are
   spent, or none runs there) go to the other models, so no agent idles while work exists.
3. :func:`plan_assignments` places pending jobs on agents: fastest agents first, each taking
   the largest (by FLOPs) fitting job of a model assigned to its class, so big children run on
   fast hardware; a job goes elsewhere only when the agent's class has none of its own. Hard
   limits: the agent runs the job's trainer, and the job's estimated memory fits the agent's
   free memory (minus what this plan already put there). A job that fits nowhere now waits;
   :func:`fits_anywhere` tells the engine whether it ever could.
4. :func:`keep_off_stragglers` drops a placement on a slow agent when the job would finish
   sooner by waiting for the fastest agent of its model's classes: a job's duration on an agent
   is estimated as its FLOPs over the agent's speed, times a scale calibrated on the jobs that
   finished so far. Without it a slow agent takes a big job at once and its model waits hours
   for that one result (``nasd bench scheduling`` measured 1.6x slower time-to-target).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from nasd.core.scheduler.assign import AgentCapacity


@dataclass(frozen=True, slots=True)
class ModelView:
    """What the assignment needs to know about one model (an experiment)."""

    name: str
    complexity: float
    priority: float | None = None


@dataclass(frozen=True, slots=True)
class JobDemand:
    """One pending job as the planner sees it; ``memory`` None means unknown (no limit)."""

    job_id: str
    model: str
    trainer: str | None = None
    memory: int | None = None
    flops: float = 0.0


@dataclass(frozen=True, slots=True)
class Plan:
    """``pairs``: ``(job_id, agent)`` to lease now; ``waiting``: jobs nothing free can take."""

    pairs: list[tuple[str, str]] = field(default_factory=list)
    waiting: list[str] = field(default_factory=list)


def rank_models(models: Sequence[ModelView]) -> list[ModelView]:
    """Models best first: by the sum of their complexity rank and priority rank (module).

    An unknown priority (fewer than two results) ranks as the highest: a model nobody has
    measured yet deserves a strong class until it has shown how it varies.
    """

    def by_priority(m: ModelView) -> float:
        return float("inf") if m.priority is None else m.priority

    def ranks(key: Callable[[ModelView], float]) -> dict[str, int]:
        # Competition ranking: equal values share the best rank, so neither list's ties are
        # broken by name before the two ranks are added.
        return {m.name: sum(1 for other in models if key(other) > key(m)) for m in models}

    rank_c = ranks(lambda m: m.complexity)
    rank_p = ranks(by_priority)
    return sorted(models, key=lambda m: (rank_c[m.name] + rank_p[m.name], -m.complexity, m.name))


def assign_models(
    models: Sequence[ModelView], class_speed: Mapping[str, float]
) -> dict[str, tuple[str, ...]]:
    """Each model's classes, fastest first (module docstring, step 1); no classes, no entries."""
    ranked = rank_models(models)
    classes = sorted(class_speed, key=lambda c: (-class_speed[c], c))
    m, k = len(ranked), len(classes)
    if not m or not k:
        return {}
    out: dict[str, tuple[str, ...]] = {}
    for i, model in enumerate(ranked):
        if k >= m:
            out[model.name] = tuple(classes[i * k // m : (i + 1) * k // m])
        else:
            out[model.name] = (classes[i * k // m],)
    return out


def share_credits(
    free_by_class: Mapping[str, int],
    model_classes: Mapping[str, Sequence[str]],
    wanting: Sequence[str],
    pending: Mapping[str, int],
) -> dict[str, int]:
    """How many new trials to ask each model in ``wanting`` (ranked order) for (step 2).

    ``free_by_class``: free slots per class among agents usable now; ``model_classes``: the
    assignment, already narrowed to classes whose agents run each model's trainer; ``pending``:
    jobs waiting per model (every model, wanting or not). The offers never add up to more than
    the free slots not already covered by waiting jobs. Returns only positive offers.
    """
    share = dict.fromkeys(wanting, 0)
    for name, free in free_by_class.items():
        takers = [m for m in wanting if name in model_classes.get(m, ())]
        for index, model in enumerate(takers):
            share[model] += free // len(takers) + (1 if index < free % len(takers) else 0)
    room = sum(max(0, f) for f in free_by_class.values()) - sum(pending.values())
    offers = {m: max(0, share[m] - pending.get(m, 0)) for m in wanting}
    for model in reversed(wanting):  # too much asked: the lowest-ranked models give way
        cut = min(offers[model], max(0, sum(offers.values()) - room))
        offers[model] -= cut
    spare = room - sum(offers.values())
    while spare > 0 and wanting:  # slots nobody assigned can use: round the models in rank order
        for model in wanting:
            if spare <= 0:
                break
            offers[model] += 1
            spare -= 1
    return {m: o for m, o in offers.items() if o > 0}


def fits_anywhere(memory: int | None, capacities: Sequence[int]) -> bool:
    """Whether a job needing ``memory`` bytes fits an agent of any of the given total sizes."""
    return memory is None or any(memory <= size for size in capacities)


def plan_assignments(
    jobs: Sequence[JobDemand],
    agents: Sequence[AgentCapacity],
    model_classes: Mapping[str, Sequence[str]] | None = None,
    class_memory: Mapping[str, int | None] | None = None,
) -> Plan:
    """Place ``jobs`` (queue order) on ``agents`` with free credits (module docstring, step 3).

    No agent is given more jobs than its free credits, nor more estimated memory than it has
    free. A job whose model has no class assignment may go to any class, and so may a job too
    big for every class its model was given (``class_memory``: the most memory an agent of each
    class has when idle, None for no limit): a child its model's cards cannot hold is any
    class's own work, rather than the leftovers of the class that can hold it.
    """
    classes_of: dict[str, Sequence[str]] = {}
    for demand in jobs:
        assigned = (model_classes or {}).get(demand.model, ())
        need = demand.memory
        if assigned and need is not None and class_memory is not None:
            room = [class_memory.get(c) for c in assigned]
            if not any(r is None or need <= r for r in room):
                assigned = ()
        classes_of[demand.job_id] = assigned
    by_speed = sorted((a for a in agents if a.free > 0), key=lambda a: (-a.speed, a.name))
    credits = {a.name: a.free for a in by_speed}
    memory = {a.name: a.free_memory for a in by_speed}
    order = {job.job_id: i for i, job in enumerate(jobs)}
    left = sorted(jobs, key=lambda j: (-j.flops, order[j.job_id]))
    pairs: list[tuple[str, str]] = []
    placed: set[str] = set()
    progress = True
    while progress and len(placed) < len(jobs):
        progress = False
        for agent in by_speed:
            if credits[agent.name] <= 0:
                continue
            job = _pick(agent, left, placed, classes_of, memory[agent.name])
            if job is None:
                continue
            pairs.append((job.job_id, agent.name))
            placed.add(job.job_id)
            credits[agent.name] -= 1
            if job.memory is not None and memory[agent.name] is not None:
                memory[agent.name] = (memory[agent.name] or 0) - job.memory
            progress = True
    waiting = [j.job_id for j in jobs if j.job_id not in placed]
    return Plan(pairs, waiting)


def _pick(
    agent: AgentCapacity,
    jobs: Sequence[JobDemand],
    placed: set[str],
    classes_of: Mapping[str, Sequence[str]],
    free_memory: int | None,
) -> JobDemand | None:
    """The largest job ``agent`` can take, its own class's first; ``classes_of`` is by job id."""
    fallback = None
    for job in jobs:
        if job.job_id in placed or not agent.runs(job.trainer):
            continue
        if job.memory is not None and free_memory is not None and job.memory > free_memory:
            continue
        assigned = classes_of.get(job.job_id)
        if not assigned or agent.klass in assigned:
            return job
        if fallback is None:
            fallback = job
    return fallback


STRAGGLER_SPEED_RATIO = 2.0
"""A job is held back only for an agent at least this many times faster: estimates are rough,
and agents of about the same speed should all work rather than wait for each other."""


@dataclass(frozen=True, slots=True)
class AgentTiming:
    """An agent that may take work, as :func:`keep_off_stragglers` sees it, busy or not.

    ``ends``: the estimated end times of the jobs it runs now (same clock as ``now``);
    ``memory``: the most a job may need on it (None: no limit); ``trainers``: what it runs
    (None: anything).
    """

    name: str
    klass: str
    speed: float
    slots: int
    ends: tuple[float, ...] = ()
    memory: int | None = None
    trainers: frozenset[str] | None = None

    def could_run(self, job: JobDemand) -> bool:
        """True if ``job`` may ever be placed here (trainer and memory)."""
        if (
            job.trainer is not None
            and self.trainers is not None
            and job.trainer not in self.trainers
        ):
            return False
        return job.memory is None or self.memory is None or job.memory <= self.memory


def keep_off_stragglers(
    pairs: Sequence[tuple[str, str]],
    jobs: Mapping[str, JobDemand],
    agents: Sequence[AgentTiming],
    model_classes: Mapping[str, Sequence[str]],
    now: float,
    seconds_per_unit: float = 1.0,
) -> list[tuple[str, str]]:
    """The placements of ``pairs`` worth starting now (module docstring, step 4).

    A job's estimated duration on an agent is ``seconds_per_unit * flops / speed``; a job with
    unknown FLOPs (0) or an agent of unknown speed is never held back, nor one waiting for an
    agent that could not run or hold it, nor one whose faster agent is less than
    :data:`STRAGGLER_SPEED_RATIO` times faster. The agent waited for is the fastest of the job's
    classes, or of any class when none of its own is faster than ``agent`` (a child too big for
    its model's cards waits for a card that holds it, not for a CPU). Placements are judged in
    order, each counting the ones kept before it as running.
    """
    by_name = {a.name: a for a in agents}
    planned: dict[str, list[float]] = {}
    kept = []
    for job_id, name in pairs:
        job, agent = jobs[job_id], by_name.get(name)
        if agent is not None and job.flops > 0 and agent.speed > 0:
            classes = model_classes.get(job.model) or tuple({a.klass for a in agents})
            able = [a for a in agents if a.speed > 0 and a.could_run(job)]
            best = max(
                (a for a in able if a.klass in classes),
                key=lambda a: (a.speed, a.name),
                default=agent,
            )
            if best.speed < STRAGGLER_SPEED_RATIO * agent.speed:  # its classes are no faster:
                best = max(able, key=lambda a: (a.speed, a.name), default=agent)  # any class
            if best.speed >= STRAGGLER_SPEED_RATIO * agent.speed:
                ends = [*best.ends, *planned.get(best.name, [])]
                free_at = now if len(ends) < best.slots else sorted(ends)[len(ends) - best.slots]
                here = seconds_per_unit * job.flops / agent.speed
                there = seconds_per_unit * job.flops / best.speed
                if now + here > max(now, free_at) + there:
                    continue
        if agent is not None and agent.speed > 0:
            planned.setdefault(name, []).append(now + seconds_per_unit * job.flops / agent.speed)
        kept.append((job_id, name))
    return kept
