"""Random search: every offered trial id gets an independent uniform sample of the space.

The baseline every other strategy must beat (Li & Talwalkar, 2019). It never waits, so it fills
every offered id, and it learns nothing from results; it only remembers the best trial seen so far
so that callers can ask for it.
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

from nasd.events import TrialFailed, TrialSucceeded
from nasd.space._base import SearchSpace
from nasd.strategy._base import Candidate, Strategy


class RandomSearch(Strategy):
    """Propose ``space.sample(rng)`` for each offered id; track the best successful trial."""

    name: ClassVar[str] = "random"

    def __init__(
        self,
        space: SearchSpace,
        rng: random.Random,
        *,
        metric: str = "val_acc",
        mode: str = "max",
    ) -> None:
        super().__init__(space, rng, metric=metric, mode=mode)
        self._best_trial_id: int | None = None
        self._best_score = float("-inf")

    @property
    def best_trial_id(self) -> int | None:
        """The id of the successful trial with the highest score so far (the first on ties)."""
        return self._best_trial_id

    def propose(self, trial_ids: Sequence[int]) -> Sequence[Candidate]:
        """One independent uniform sample per offered id, in order."""
        return [Candidate(trial_id, self.space.sample(self.rng)) for trial_id in trial_ids]

    def observe(self, event: TrialSucceeded | TrialFailed) -> None:
        """Remember the best successful trial; failures change nothing."""
        if not isinstance(event, TrialSucceeded):
            return
        score = self.score(event.metrics)
        if self._best_trial_id is None or score > self._best_score:
            self._best_trial_id = event.trial_id
            self._best_score = score

    def _state(self) -> dict[str, Any]:
        return {"best_trial_id": self._best_trial_id, "best_score": self._best_score}

    def _load_state(self, state: Mapping[str, Any]) -> None:
        best = state["best_trial_id"]
        self._best_trial_id = None if best is None else int(best)
        self._best_score = float(state["best_score"])
