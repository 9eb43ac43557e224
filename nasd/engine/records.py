"""In-memory records the engine keeps beside the database, and the messages it emits."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from nasd.core.events import Genotype


class TrialStatus(StrEnum):
    """Lifecycle of a trial: pending -> running -> succeeded | failed (running may go back).

    ``cancelled``: its experiment was cancelled before it finished (not a failure: the strategy
    is not told, and it does not count against the trial's attempts).
    """

    PENDING = "pending"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"


class LeaseStatus(StrEnum):
    """How a lease ended (``active`` while it runs)."""

    ACTIVE = "active"
    DONE = "done"
    EXPIRED = "expired"
    FAILED = "failed"
    RELEASED = "released"
    SUPERSEDED = "superseded"


class ExperimentStatus(StrEnum):
    """Lifecycle of an experiment."""

    RUNNING = "running"
    PAUSED = "paused"
    DONE = "done"
    CANCELLED = "cancelled"


class EventKind(StrEnum):
    """What an ``experiment.event`` reports (``schemas/v1/experiment.event.json``)."""

    PROPOSED = "proposed"
    FINISHED = "finished"
    FAILED = "failed"
    BEST = "best"
    DONE = "done"


def job_id_of(experiment: str, trial_id: int) -> str:
    """The idempotency key of a trial: unique across the whole database."""
    return f"{experiment}:{trial_id}"


@dataclass(slots=True)
class LiveTrial:
    """A trial that is not finished yet (pending or running)."""

    job_id: str
    experiment: str
    trial_id: int
    genotype: Genotype
    parent_id: int | None
    morphisms: list[dict[str, Any]]
    epochs: int | None
    status: TrialStatus
    attempts: int = 0
    epoch: int = 0
    agent: str | None = None
    assignments: dict[int, str] = field(default_factory=dict)


@dataclass(slots=True)
class AgentRecord:
    """What the daemon knows about one agent."""

    name: str
    slots: int = 1
    online: bool = False
    throughput: float = 0.0
    profile: dict[str, Any] = field(default_factory=dict)
    leases: set[str] = field(default_factory=set)
    draining: bool = False

    @property
    def free(self) -> int:
        """Credits left: slots not covered by active leases (none while draining or offline).

        An agent that hands a job back is draining (shutting down, or refusing work) until it
        announces itself ready again; otherwise the job would bounce straight back to it.
        """
        if not self.online or self.draining:
            return 0
        return max(0, self.slots - len(self.leases))


@dataclass(frozen=True, slots=True)
class Outbound:
    """A message to publish after the transaction that produced it has committed."""

    topic: str
    type: str
    body: dict[str, Any]
    qos: int = 1
    retain: bool = False
