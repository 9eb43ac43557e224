"""Tournament selection without aging: the seed's basic evolution, made asynchronous.

The population holds at most ``population`` (P) successful trials. Until it holds P members, every
offered id gets a random architecture; after that, each id gets a child:

1. draw ``sample`` (S) members at random (with replacement by default, see ``replace``);
2. sort the draw by score, best first (ties keep the order they were drawn in);
3. pick position ``i`` with probability ``p * (1 - p) ** i``; the last position gets the remainder,
   ``(1 - p) ** (S - 1)``, so the probabilities add up to one (:func:`rank_probabilities`);
4. mutate the picked member.

Every successful trial joins the population and, while it holds more than P members, the *worst*
one is removed (the oldest of the worst on ties) — fitness, not age, decides who goes. That is the
only difference from :mod:`nasd.core.strategy.aging_evolution` at the defaults (``p = 1``,
``replace = true``): the best of the sample is always the parent and the sample is drawn exactly as
aging evolution draws it. Real et al. (AAAI 2019, "does aging matter?") ran this non-aging
variant against aging evolution and found that aging helped; running both strategies with the
same ``population`` and ``sample`` repeats that comparison. Without aging a lucky early score stays
in the population for ever and keeps being chosen, which is what aging's regularisation prevents.

``replace = false`` draws S *distinct* members (Goldberg's classic tournament), so the rank rule
speaks of S different individuals; with replacement a member drawn twice holds two positions.

Asynchrony, initialisation and failures follow aging evolution: children are proposed from the
population as it is when capacity appears, and results join in arrival order. While
``len(population) + outstanding initial proposals < P`` another random architecture is proposed;
at P the strategy returns fewer candidates than offered (a barrier) until the outstanding initial
trials resolve. A failed initial trial frees its place, so a replacement is proposed at the next
offer and the barrier cannot deadlock, whether trials fail one by one or all at once because their
agents vanished. Evolution starts once P members are in; the population never shrinks below P
afterwards. A failed child never joins; results for ids this strategy did not propose, or already
resolved, are ignored.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import ClassVar

from nasd.core.objective import Mode
from nasd.core.space._base import SearchSpace
from nasd.core.strategy._population import Member, PopulationStrategy
from nasd.core.values import is_number


def rank_probabilities(size: int, p: float) -> list[float]:
    """The chance of picking each position of a best-first sample of ``size``: ``p (1-p)^i``.

    The last position gets what is left, so the list always sums to one (up to rounding): with
    ``size = 3`` and ``p = 0.5`` it is ``[0.5, 0.25, 0.25]``; with ``p = 1`` only the best counts.
    """
    if size < 1:
        raise ValueError(f"size must be >= 1, got {size}")
    head = [p * (1.0 - p) ** rank for rank in range(size - 1)]
    return [*head, 1.0 - sum(head)]


def pick_rank(probabilities: Sequence[float], u: float) -> int:
    """The position whose cumulative-probability interval holds ``u`` (a draw from [0, 1)).

    Position ``i`` is picked for ``u`` in ``[sum(probabilities[:i]), sum(probabilities[:i+1]))``;
    the last position also takes any ``u`` that rounding leaves past the final bound.
    """
    cumulative = 0.0
    for rank, probability in enumerate(probabilities[:-1]):
        cumulative += probability
        if u < cumulative:
            return rank
    return len(probabilities) - 1


class Tournament(PopulationStrategy):
    """Rank-probability tournament of size ``sample``; the worst of ``population`` is removed."""

    name: ClassVar[str] = "tournament"

    def __init__(
        self,
        space: SearchSpace,
        rng: random.Random,
        *,
        population: int = 10,
        sample: int = 3,
        p: float = 1.0,
        replace: bool = True,
        metric: str = "val_acc",
        mode: Mode = "max",
    ) -> None:
        super().__init__(space, rng, population=population, sample=sample, metric=metric, mode=mode)
        if not is_number(p) or not 0.0 < p <= 1.0:
            raise ValueError(f"p must be a number in (0, 1], got {p!r}")
        if not isinstance(replace, bool):
            raise ValueError(f"replace must be true or false, got {replace!r}")
        self.p = float(p)
        self.replace = replace
        self.probabilities = rank_probabilities(self.sample_size, self.p)

    def select_parent(self) -> Member:
        """Draw S members, rank them best first and pick one by :func:`rank_probabilities`."""
        members = self._population
        if self.replace:
            drawn = [members[self.rng.randrange(len(members))] for _ in range(self.sample_size)]
        else:
            drawn = self.rng.sample(members, self.sample_size)
        ranked = sorted(drawn, key=lambda member: member.score, reverse=True)  # stable on ties
        if self.probabilities[0] >= 1.0:
            # p = 1 or S = 1: the best always wins, so draw nothing more; at the defaults the RNG
            # stream then matches aging evolution's and only the removal rule tells them apart.
            return ranked[0]
        return ranked[pick_rank(self.probabilities, self.rng.random())]

    def victim(self) -> int:
        """The worst member (the oldest of the worst on ties): fitness decides who goes."""
        return min(range(len(self._population)), key=lambda i: self._population[i].score)
