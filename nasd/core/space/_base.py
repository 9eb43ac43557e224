"""The search-space protocol.

A search space is a pure object built from a JSON-able ``spec`` (the ``[space]`` table of an
experiment config). It samples, mutates and validates *genotypes* — JSON-compatible dicts — and
computes cheap objectives (parameters, FLOPs) without training. Randomness always comes from a
``random.Random`` passed in, never from global state, so strategies stay deterministic.
"""

from __future__ import annotations

import json
import random
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

from nasd.core.events import Genotype
from nasd.core.space.decisions import Decision
from nasd.core.space.domains import Domain


def canonical_json(genotype: Mapping[str, Any]) -> str:
    """The canonical text of a genotype: sorted keys, no spaces. Equal genotypes, equal text."""
    return json.dumps(genotype, sort_keys=True, separators=(",", ":"), allow_nan=False)


class SearchSpace(ABC):
    """Base class of every search space; subclasses register under a unique ``kind``."""

    kind: ClassVar[str]

    @abstractmethod
    def spec(self) -> dict[str, Any]:
        """The JSON-able spec (including ``"kind"``) that rebuilds an equal space."""

    @abstractmethod
    def sample(self, rng: random.Random) -> Genotype:
        """A uniformly random valid genotype (uniform over the space's choices)."""

    @abstractmethod
    def mutate(self, genotype: Genotype, rng: random.Random) -> Genotype:
        """A valid genotype that differs from ``genotype`` by one of the space's mutation operators.

        Never returns a genotype equal to the input (unless the space has a single member).
        Never modifies its argument.
        """

    @abstractmethod
    def validate(self, genotype: Any) -> None:
        """Raise :class:`nasd.errors.InvalidGenotype` with a clear message unless valid."""

    @abstractmethod
    def cost(self, genotype: Genotype) -> dict[str, float]:
        """Cheap objectives computed without training: ``params`` and ``flops`` where defined."""

    @abstractmethod
    def domains(self) -> list[Domain]:
        """One domain per independent choice a genotype makes (SHADHO's complexity input).

        A choice that exists only in some genotypes (the fifth layer's kernel when the depth is
        a choice too) is listed as if always made: complexity measures the whole space.
        """

    def decisions(self) -> list[Decision]:
        """The fixed sequence of categorical decisions a policy-gradient controller makes.

        See :mod:`nasd.core.space.decisions`. Spaces without one cannot be searched by the
        REINFORCE strategies, which refuse them with a clear error.
        """
        raise NotImplementedError(f"space kind {self.kind!r} has no decision list")

    def from_decisions(self, choices: Sequence[int]) -> tuple[Genotype, list[bool]]:
        """The valid genotype ``choices`` (one per decision) describe, and per decision whether
        the genotype used it (unused choices get no gradient). ValueError on malformed choices."""
        raise NotImplementedError(f"space kind {self.kind!r} has no decision list")

    def to_decisions(self, genotype: Genotype) -> list[int]:
        """Choices that describe ``genotype`` (the inverse of :meth:`from_decisions`; unused
        decisions get 0, continuous values their bin)."""
        raise NotImplementedError(f"space kind {self.kind!r} has no decision list")

    def describe(self, genotype: Genotype) -> str:
        """A short human-readable form for logs and the CLI (default: canonical JSON)."""
        return canonical_json(genotype)
