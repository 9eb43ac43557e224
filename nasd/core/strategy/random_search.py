"""Random search: every offered trial id gets an independent uniform sample of the space.

The baseline every other strategy must beat (Li & Talwalkar, 2019). It never waits, so it fills
every offered id, and it learns nothing from results; it only remembers the best trial seen so far
so that callers can ask for it.
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

from nasd.core.events import TrialFailed, TrialSucceeded
from nasd.core.objective import Best, BestSoFar, Mode
from nasd.core.space._base import SearchSpace
from nasd.core.strategy._base import Candidate, Strategy


class RandomSearch(Strategy):
    """Propose ``space.sample(rng)`` for each offered id; track the best successful trial."""

    name: ClassVar[str] = "random"

    def __init__(
        self,
        space: SearchSpace,
        rng: random.Random,
        *,
        metric: str = "val_acc",
        mode: Mode = "max",
    ) -> None:
        super().__init__(space, rng, metric=metric, mode=mode)
        self._best = BestSoFar(self.objective)

    @property
    def best_trial_id(self) -> int | None:
        """The id of the successful trial with the highest score so far (the first on ties)."""
        return None if self._best.best is None else self._best.best.trial_id

    def propose(self, trial_ids: Sequence[int]) -> Sequence[Candidate]:
        """One independent uniform sample per offered id, in order."""
        return [Candidate(trial_id, self.space.sample(self.rng)) for trial_id in trial_ids]

    def observe(self, event: TrialSucceeded | TrialFailed) -> None:
        """Remember the best successful trial; failures change nothing."""
        if isinstance(event, TrialSucceeded):
            self._best.offer(event.trial_id, event.metrics)

    def _state(self) -> dict[str, Any]:
        best = self._best.best
        if best is None:
            return {"best_trial_id": None, "best_score": float("-inf")}
        return {"best_trial_id": best.trial_id, "best_score": best.score}

    def _load_state(self, state: Mapping[str, Any]) -> None:
        trial_id = state["best_trial_id"]
        self._best.best = (
            None if trial_id is None else Best(int(trial_id), float(state["best_score"]))
        )
