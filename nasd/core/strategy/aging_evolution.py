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
from typing import ClassVar

from nasd.core.objective import Mode
from nasd.core.space._base import SearchSpace
from nasd.core.strategy._population import Member, PopulationStrategy

__all__ = ["AgingEvolution", "Member"]


class AgingEvolution(PopulationStrategy):
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
        super().__init__(space, rng, population=population, sample=sample, metric=metric, mode=mode)

    def select_parent(self) -> Member:
        """The best of S members drawn uniformly with replacement (the first one on ties)."""
        members = self._population
        drawn = [members[self.rng.randrange(len(members))] for _ in range(self.sample_size)]
        return max(drawn, key=lambda member: member.score)  # max keeps the first maximum

    def victim(self) -> int:
        """The oldest member: age, not fitness, decides who dies."""
        return 0
