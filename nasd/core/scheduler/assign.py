"""What the scheduler knows of an agent, and the first, class-blind placement policy.

Credit-based flow: an agent announces ``slots``; it never holds more active leases than that.
:func:`spread_assignments` was nasd's first policy: spread work over the agents with the most free
credits, faster agents first. The daemon now places work with SHADHO's compute classes
(:mod:`nasd.core.scheduler.shadho`); this policy stays as the baseline ``nasd bench scheduling``
measures against. Either way an agent only gets jobs whose trainer it offers (its birth profile
lists them): an agent asked to run a trainer it does not have would fail every job it is sent.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class AgentCapacity:
    """What the scheduler needs to know about one online agent.

    ``trainers``: the trainer names it runs; ``None`` means any (tests and callers that do not
    match trainers). ``klass``: its compute class; ``speed``: its effective training speed
    (MAC/s, see :mod:`nasd.core.scheduler.classes`); ``free_memory``: bytes free on its device
    (None: unknown, no limit).
    """

    name: str
    free: int
    throughput: float = 0.0
    trainers: frozenset[str] | None = None
    klass: str = ""
    speed: float = 0.0
    free_memory: int | None = None

    def runs(self, trainer: str | None) -> bool:
        """True if this agent may be given a job that needs ``trainer`` (None: no need)."""
        return trainer is None or self.trainers is None or trainer in self.trainers


def spread_assignments(
    jobs: Sequence[str],
    agents: Sequence[AgentCapacity],
    trainer_of: Mapping[str, str] | None = None,
) -> list[tuple[str, str]]:
    """Pair jobs (in queue order) with agents; returns ``(job_id, agent)`` pairs.

    Each job goes to the agent with the most free credits left (ties: higher throughput, then
    name) among those that run its trainer (``trainer_of[job]``; a job missing from it needs
    none), so load spreads evenly and no agent is handed more than its free credits. A job no
    agent with credit left can run stays in the queue and does not block the jobs behind it.
    """
    free = {a.name: a.free for a in agents if a.free > 0}
    by_name = {a.name: a for a in agents}
    needs = trainer_of or {}
    plan: list[tuple[str, str]] = []
    for job in jobs:
        if not free:
            break
        trainer = needs.get(job)
        able = [n for n in free if by_name[n].runs(trainer)]
        if not able:
            continue
        agent = min(able, key=lambda n: (-free[n], -by_name[n].throughput, n))
        plan.append((job, agent))
        free[agent] -= 1
        if free[agent] == 0:
            del free[agent]
    return plan
