"""The strategy protocol: a reactive, pure, deterministic search policy.

The daemon calls :meth:`Strategy.react` with each :data:`nasd.core.events.StrategyEvent`, in the
order the events were persisted, from a single task. A strategy does no I/O, reads no clock and uses
only the seeded ``random.Random`` it was given, so the same seed and the same events always give the
same
candidates — which is what lets the daemon rebuild it from the event log after a crash.
"""

from __future__ import annotations

import random
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

from nasd.core.events import Genotype, SlotsOpen, StrategyEvent, TrialFailed, TrialSucceeded
from nasd.core.objective import Mode, Objective
from nasd.core.space._base import SearchSpace


@dataclass(frozen=True, slots=True)
class Candidate:
    """An architecture to evaluate, filed under one of the trial ids the daemon offered.

    ``parent_id`` and ``morphisms`` describe how to derive the child from its parent's trained
    weights (Lamarckian inheritance); ``budget`` overrides the task's epochs for this trial.
    """

    trial_id: int
    genotype: Genotype
    parent_id: int | None = None
    morphisms: tuple[Mapping[str, Any], ...] = field(default=())
    budget: int | None = None


class Strategy(ABC):
    """Base class: splits :meth:`react` into :meth:`propose` and :meth:`observe`.

    Subclasses declare their tunable parameters as keyword arguments of ``__init__`` after
    ``space`` and ``rng``; the registry rejects unknown ones with a clear error.
    ``metric`` names the metric to maximise (``mode="max"``) or minimise (``mode="min"``).
    """

    name: ClassVar[str]

    def __init__(
        self,
        space: SearchSpace,
        rng: random.Random,
        *,
        metric: str = "val_acc",
        mode: Mode = "max",
    ) -> None:
        self.space = space
        self.rng = rng
        self.objective = Objective(metric, mode)  # refuses a mode but max/min (from configs)

    def react(self, event: StrategyEvent) -> Sequence[Candidate]:
        """Consume one event; return candidates (for ``SlotsOpen``: a prefix of its ids)."""
        if isinstance(event, SlotsOpen):
            return self.propose(event.trial_ids)
        self.observe(event)
        return ()

    @abstractmethod
    def propose(self, trial_ids: Sequence[int]) -> Sequence[Candidate]:
        """Fill a prefix of ``trial_ids`` with candidates; fewer than offered means "waiting"."""

    @abstractmethod
    def observe(self, event: TrialSucceeded | TrialFailed) -> None:
        """Take a finished or permanently failed trial into account."""

    @property
    def metric(self) -> str:
        """The metric this strategy optimises."""
        return self.objective.metric

    @property
    def mode(self) -> Mode:
        """``max`` or ``min``: which way the metric is better."""
        return self.objective.mode

    def score(self, metrics: Mapping[str, float]) -> float:
        """The value to maximise (see :meth:`nasd.core.objective.Objective.score`)."""
        return self.objective.score(metrics)

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to continue from here, msgpack-able (RNG state included)."""
        version, internal, gauss = self.rng.getstate()
        return {"rng": [version, list(internal), gauss], **self._state()}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned."""
        version, internal, gauss = state["rng"]
        self.rng.setstate((version, tuple(internal), gauss))
        self._load_state(state)

    @abstractmethod
    def _state(self) -> dict[str, Any]:
        """The subclass's own msgpack-able state (without the RNG)."""

    @abstractmethod
    def _load_state(self, state: Mapping[str, Any]) -> None:
        """Restore the subclass's own state from :meth:`_state`'s output."""
