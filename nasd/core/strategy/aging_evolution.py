"""Aging evolution (regularized evolution): Real et al., AAAI 2019, Algorithm 1, made asynchronous.

The population is a queue of the ``population`` (P) most recently *finished* trials. Until it holds
P members, every offered id gets a random architecture; after that, each id gets a child: draw
``sample`` (S) members uniformly *with replacement* (the element stays in the population), take the
best of them as parent, and mutate it. Every successful trial joins at the right of the queue and,
while the queue is longer than P, the oldest member dies at the left — age, not fitness, decides
who is removed, which is what regularises the search.

Asynchrony: children are proposed whenever the daemon has capacity, from the population as it is at
that moment, and they join it in the order their results arrive (not the order they were proposed).

Initialisation and failures: while ``len(population) + outstanding initial proposals < P`` another
random architecture is proposed. When that sum reaches P the strategy returns fewer candidates than
offered (a barrier) until the outstanding initial trials resolve. A failed initial trial frees its
place, so a replacement is proposed at the next offer: the barrier cannot deadlock. Evolution starts
once the population first holds P members; it never shrinks below P afterwards, because members die
only while the queue is longer than P. A failed child never joins.
"""

from __future__ import annotations

import random
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

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


def _check_int(name: str, value: object, low: int) -> int:
    """``value`` if it is an int (not a bool) >= ``low``; ValueError with a clear message if not."""
    if not is_int(value) or value < low:
        raise ValueError(f"{name} must be an int >= {low}, got {value!r}")
    return value


class AgingEvolution(Strategy):
    """Tournament selection of size ``sample`` over a FIFO population of size ``population``."""

    name: ClassVar[str] = "aging-evolution"

    def __init__(
        self,
        space: SearchSpace,
        rng: random.Random,
        *,
        population: int = 10,
        sample: int = 3,
        metric: str = "val_acc",
        mode: Mode = "max",
    ) -> None:
        super().__init__(space, rng, metric=metric, mode=mode)
        self.population_size = _check_int("population", population, 2)
        self.sample_size = _check_int("sample", sample, 1)
        if self.sample_size > self.population_size:
            raise ValueError(
                f"sample must be <= population ({self.population_size}), got {self.sample_size}"
            )
        self._population: deque[Member] = deque()
        # Proposed trials whose result has not arrived yet; an id leaves its set on its first
        # result, so duplicates and ids this strategy never proposed are recognised and ignored.
        self._initial_outstanding: set[int] = set()
        self._child_outstanding: set[int] = set()

    @property
    def population(self) -> tuple[Member, ...]:
        """The living members, oldest first."""
        return tuple(self._population)

    @property
    def evolving(self) -> bool:
        """True once the population holds P members: every further id gets a mutated child."""
        return len(self._population) >= self.population_size

    def propose(self, trial_ids: Sequence[int]) -> Sequence[Candidate]:
        """Random architectures until P are in flight or done, then children; see the module doc."""
        candidates: list[Candidate] = []
        for trial_id in trial_ids:
            if self.evolving:
                candidates.append(self._child(trial_id))
            elif len(self._population) + len(self._initial_outstanding) < self.population_size:
                candidates.append(Candidate(trial_id, self.space.sample(self.rng)))
                self._initial_outstanding.add(trial_id)
            else:
                break  # barrier: wait for the outstanding initial trials
        return candidates

    def _child(self, trial_id: int) -> Candidate:
        """Mutate the best of S members drawn uniformly with replacement (first one on ties)."""
        members = self._population
        drawn = [members[self.rng.randrange(len(members))] for _ in range(self.sample_size)]
        parent = max(drawn, key=lambda member: member.score)  # max keeps the first maximum
        child = self.space.mutate(parent.genotype, self.rng)
        self._child_outstanding.add(trial_id)
        return Candidate(trial_id, child, parent_id=parent.trial_id)

    def observe(self, event: TrialSucceeded | TrialFailed) -> None:
        """A success joins at the right and the oldest die beyond P; a failure just frees its id."""
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
                self._population.popleft()

    def _state(self) -> dict[str, Any]:
        return {
            "population": [[m.trial_id, m.genotype, m.score] for m in self._population],
            "initial_outstanding": sorted(self._initial_outstanding),
            "child_outstanding": sorted(self._child_outstanding),
        }

    def _load_state(self, state: Mapping[str, Any]) -> None:
        self._population = deque(
            Member(int(trial_id), dict(genotype), float(score))
            for trial_id, genotype, score in state["population"]
        )
        self._initial_outstanding = {int(i) for i in state["initial_outstanding"]}
        self._child_outstanding = {int(i) for i in state["child_outstanding"]}
