"""The asynchronous population loop that aging evolution and tournament selection share.

Both keep up to ``population`` (P) successful trials. Until P are in, every offered id gets a
random architecture; while ``len(population) + outstanding initial proposals`` is P the strategy
returns fewer candidates than offered (a barrier) until those initial trials resolve. A failed
initial trial frees its place, so the barrier cannot deadlock. After that, every offered id gets a
mutated child of :meth:`PopulationStrategy.select_parent`. A success joins the population in
arrival order; while it holds more than P, :meth:`PopulationStrategy.victim` says who is removed:
the oldest (aging) or the worst (no aging) — the one difference Real et al. measured. Results for
ids this strategy did not propose, or already resolved, are ignored.
"""

from __future__ import annotations

import random
from abc import abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from nasd.core.events import Genotype, TrialFailed, TrialSucceeded
from nasd.core.objective import Mode
from nasd.core.space._base import SearchSpace
from nasd.core.strategy._base import Candidate, Strategy
from nasd.core.values import is_int


@dataclass(frozen=True, slots=True)
class Member:
    """One living member of the population: a successful trial and its score (higher is better)."""

    trial_id: int
    genotype: Genotype
    score: float


def check_int(name: str, value: object, low: int) -> int:
    """``value`` if it is an int (not a bool) >= ``low``; ValueError with a clear message if not."""
    if not is_int(value) or value < low:
        raise ValueError(f"{name} must be an int >= {low}, got {value!r}")
    return value


class PopulationStrategy(Strategy):
    """Population, initial barrier, children and state (module docstring); subclasses choose
    the parent (:meth:`select_parent`) and who dies (:meth:`victim`)."""

    def __init__(
        self,
        space: SearchSpace,
        rng: random.Random,
        *,
        population: int,
        sample: int,
        metric: str = "val_acc",
        mode: Mode = "max",
    ) -> None:
        super().__init__(space, rng, metric=metric, mode=mode)
        self.population_size = check_int("population", population, 2)
        self.sample_size = check_int("sample", sample, 1)
        if self.sample_size > self.population_size:
            raise ValueError(
                f"sample must be <= population ({self.population_size}), got {self.sample_size}"
            )
        self._population: list[Member] = []  # living members, oldest first
        # Proposed trials whose result has not arrived yet; an id leaves its set on its first
        # result, so duplicates and ids this strategy never proposed are recognised and ignored.
        self._initial_outstanding: set[int] = set()
        self._child_outstanding: set[int] = set()

    @property
    def population(self) -> tuple[Member, ...]:
        """The living members, in the order they joined (oldest first)."""
        return tuple(self._population)

    @property
    def evolving(self) -> bool:
        """True once the population holds P members: every further id gets a mutated child."""
        return len(self._population) >= self.population_size

    @abstractmethod
    def select_parent(self) -> Member:
        """The member the next child is mutated from (the population holds P members)."""

    @abstractmethod
    def victim(self) -> int:
        """The index in :attr:`population` of the member to remove (it holds more than P)."""

    def propose(self, trial_ids: Sequence[int]) -> Sequence[Candidate]:
        """Random architectures until P are in flight or done, then children; see the module doc."""
        candidates: list[Candidate] = []
        for trial_id in trial_ids:
            if self.evolving:
                parent = self.select_parent()
                child = self.space.mutate(parent.genotype, self.rng)
                self._child_outstanding.add(trial_id)
                candidates.append(Candidate(trial_id, child, parent_id=parent.trial_id))
            elif len(self._population) + len(self._initial_outstanding) < self.population_size:
                candidates.append(Candidate(trial_id, self.space.sample(self.rng)))
                self._initial_outstanding.add(trial_id)
            else:
                break  # barrier: wait for the outstanding initial trials
        return candidates

    def observe(self, event: TrialSucceeded | TrialFailed) -> None:
        """A success joins and :meth:`victim` members go beyond P; a failure just frees its id."""
        trial_id = event.trial_id
        if trial_id in self._initial_outstanding:
            self._initial_outstanding.discard(trial_id)
        elif trial_id in self._child_outstanding:
            self._child_outstanding.discard(trial_id)
        else:
            return  # never proposed here, or already resolved: ignore
        if isinstance(event, TrialSucceeded):
            self._population.append(Member(trial_id, event.genotype, self.score(event.metrics)))
            while len(self._population) > self.population_size:
                del self._population[self.victim()]

    def _state(self) -> dict[str, Any]:
        return {
            "population": [[m.trial_id, m.genotype, m.score] for m in self._population],
            "initial_outstanding": sorted(self._initial_outstanding),
            "child_outstanding": sorted(self._child_outstanding),
        }

    def _load_state(self, state: Mapping[str, Any]) -> None:
        self._population = [
            Member(int(trial_id), dict(genotype), float(score))
            for trial_id, genotype, score in state["population"]
        ]
        self._initial_outstanding = {int(i) for i in state["initial_outstanding"]}
        self._child_outstanding = {int(i) for i in state["child_outstanding"]}
