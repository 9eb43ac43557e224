"""The domains a search space is made of, as SHADHO's complexity heuristic sees them.

A space describes itself (:meth:`nasd.core.space.SearchSpace.domains`) as a flat list of domains,
one per independent choice a genotype makes: a layer's kernel size is one :class:`Discrete`
domain, a learning rate one :class:`LogUniform`. The scheduler
(:mod:`nasd.core.scheduler.heuristics`) turns the list into the model's complexity; the space
itself never needs it. Pure data: no behaviour here.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Discrete:
    """A choice among ``size`` values (``size >= 1``)."""

    size: int


@dataclass(frozen=True, slots=True)
class Uniform:
    """A real value drawn uniformly from ``[low, high]``."""

    low: float
    high: float


@dataclass(frozen=True, slots=True)
class LogUniform:
    """A positive real value whose logarithm is uniform over ``[log low, log high]``."""

    low: float
    high: float


@dataclass(frozen=True, slots=True)
class Normal:
    """A real value drawn from a normal distribution."""

    mean: float
    std: float


Domain = Discrete | Uniform | LogUniform | Normal
"""Any one domain."""
