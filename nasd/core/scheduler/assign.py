"""Matching pending jobs to agents with free credits.

Credit-based flow: an agent announces ``slots``; it never holds more active leases than that.
This first policy spreads work over agents with the most free credits, faster agents first
(``throughput`` from the agent's micro-benchmark). SHADHO's compute classes replace it later
behind the same signature.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class AgentCapacity:
    """What the scheduler needs to know about one online agent."""

    name: str
    free: int
    throughput: float = 0.0


def plan_assignments(jobs: Sequence[str], agents: Sequence[AgentCapacity]) -> list[tuple[str, str]]:
    """Pair jobs (in queue order) with agents; returns ``(job_id, agent)`` pairs.

    Each job goes to the agent with the most free credits left (ties: higher throughput, then
    name), so load spreads evenly and no agent is handed more than its free credits.
    """
    free = {a.name: a.free for a in agents if a.free > 0}
    speed = {a.name: a.throughput for a in agents}
    plan: list[tuple[str, str]] = []
    for job in jobs:
        if not free:
            break
        agent = min(free, key=lambda n: (-free[n], -speed[n], n))
        plan.append((job, agent))
        free[agent] -= 1
        if free[agent] == 0:
            del free[agent]
    return plan
