"""What a search optimises, and the one rule for "best so far".

Strategies, the engine's live counters and the read side (``nasd best``, ``nasd status``) all
rank trials through :class:`Objective` and :class:`BestSoFar`, so they can never disagree about
which trial is best. Pure: no I/O.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, cast

Mode = Literal["max", "min"]

DEFAULT_METRIC = "val_acc"
DEFAULT_MODE: Mode = "max"


@dataclass(frozen=True, slots=True)
class Objective:
    """The metric to optimise and whether higher (``max``) or lower (``min``) is better."""

    metric: str = DEFAULT_METRIC
    mode: Mode = DEFAULT_MODE

    def __post_init__(self) -> None:
        if self.mode not in ("max", "min"):
            raise ValueError(f"mode must be 'max' or 'min', not {self.mode!r}")

    @classmethod
    def of_strategy(cls, strategy: Mapping[str, Any]) -> Objective:
        """The objective an experiment config's ``[strategy]`` table names (defaults if unset)."""
        mode = str(strategy.get("mode", DEFAULT_MODE))
        if mode not in ("max", "min"):
            raise ValueError(f"mode must be 'max' or 'min', not {mode!r}")
        return cls(str(strategy.get("metric", DEFAULT_METRIC)), cast(Mode, mode))

    def score(self, metrics: Mapping[str, float]) -> float:
        """The value to maximise: the metric, negated for ``min``; -inf when it is missing."""
        value = metrics.get(self.metric)
        if value is None:
            return float("-inf")
        return float(value) if self.mode == "max" else -float(value)


@dataclass(slots=True)
class Best:
    """The best successful trial so far: its id, score (see :meth:`Objective.score`) and metrics."""

    trial_id: int
    score: float
    metrics: dict[str, float] = field(default_factory=dict)


@dataclass(slots=True)
class BestSoFar:
    """Tracks the best of a stream of successful trials.

    A trial without the objective's metric is never best; on a tie the earlier trial stays best.
    """

    objective: Objective
    best: Best | None = None

    def offer(self, trial_id: int, metrics: Mapping[str, float]) -> bool:
        """Take one successful trial into account; True if it is the new best."""
        if self.objective.metric not in metrics:
            return False
        score = self.objective.score(metrics)
        if self.best is not None and score <= self.best.score:
            return False
        self.best = Best(trial_id, score, {str(k): float(v) for k, v in metrics.items()})
        return True
