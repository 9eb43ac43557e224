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


QUARANTINE_AFTER_STRIKES = 2
"""Leases in a row that expire on an agent before it is quarantined."""

QUARANTINE_BASE_S = 60.0
"""The first quarantine's length; each further one (without a success between) doubles it."""

QUARANTINE_MAX_S = 3600.0
"""The longest quarantine."""


def quarantine_length(quarantines: int) -> float:
    """Seconds of the ``quarantines``-th quarantine in a row (1 -> 60 s, 2 -> 120 s, ... 1 h)."""
    return min(QUARANTINE_MAX_S, QUARANTINE_BASE_S * 2.0 ** min(max(0, quarantines - 1), 32))


@dataclass(slots=True)
class AgentRecord:
    """What the daemon knows about one agent, including how far it is trusted with work.

    Trust (defect 3 of issue 6: an agent that takes work and never answers): every lease that
    *expires* on the agent is a strike (not a release, a failure or the agent going offline,
    which are honest ends). After :data:`QUARANTINE_AFTER_STRIKES` strikes in a row it gets no
    work for :func:`quarantine_length` (doubling per quarantine in a row); a successful result
    clears the counters and lifts the quarantine. Strikes while already quarantined (the other
    leases it held when the first expired) do not lengthen the quarantine.
    """

    name: str
    slots: int = 1
    online: bool = False
    throughput: float = 0.0
    profile: dict[str, Any] = field(default_factory=dict)
    leases: set[str] = field(default_factory=set)
    draining: bool = False
    trainers: frozenset[str] = frozenset()  # what its birth profile offers (none before it)
    memory_idle: int | None = None  # device memory free with no job of ours (None: unknown)
    last_seen: float = 0.0
    strikes: int = 0
    quarantines: int = 0
    quarantined_until: float = 0.0

    def quarantined(self, now: float) -> bool:
        """True while the agent is kept from new work for letting leases expire."""
        return now < self.quarantined_until

    def free_at(self, now: float) -> int:
        """Credits left at ``now``: slots not covered by active leases.

        None while offline, draining or quarantined. An agent that hands a job back is draining
        (shutting down, or refusing work) until it announces itself ready again; otherwise the
        job would bounce straight back to it.
        """
        if not self.online or self.draining or self.quarantined(now):
            return 0
        return max(0, self.slots - len(self.leases))

    def strike(self, now: float) -> bool:
        """Count a lease that expired; True if this strike starts a quarantine."""
        self.strikes += 1
        if self.strikes < QUARANTINE_AFTER_STRIKES or self.quarantined(now):
            return False
        self.quarantines += 1
        self.quarantined_until = now + quarantine_length(self.quarantines)
        return True

    def trusted_again(self) -> bool:
        """A successful result: clear strikes, back-off and quarantine; True if any was set.

        The agent has shown it trains and answers (a slow agent's late result lifts the
        quarantine its expired leases caused).
        """
        changed = bool(self.strikes or self.quarantines or self.quarantined_until)
        self.strikes = 0
        self.quarantines = 0
        self.quarantined_until = 0.0
        return changed


@dataclass(frozen=True, slots=True)
class Outbound:
    """A message to publish after the transaction that produced it has committed."""

    topic: str
    type: str
    body: dict[str, Any]
    qos: int = 1
    retain: bool = False
