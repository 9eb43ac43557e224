"""A tiny search space with a known optimum, for strategy tests.

Genotypes are ``{"bits": [b0, ..., b7]}`` with each bit 0 or 1 (256 members). The score is the
fraction of ones, so the optimum is all ones and a single bit flip always changes the score by 1/8:
a landscape where evolution has an easy gradient and random search still has a fair chance.
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

from nasd.core.events import Genotype
from nasd.core.space._base import SearchSpace
from nasd.core.space.decisions import Decision, check_choices
from nasd.core.space.domains import Discrete, Domain
from nasd.errors import InvalidGenotype

TOY_BITS = 8
OPTIMUM: Genotype = {"bits": [1] * TOY_BITS}


def toy_score(genotype: Mapping[str, Any]) -> float:
    """Fraction of ones in ``genotype["bits"]``: 1.0 exactly at the optimum."""
    bits = genotype["bits"]
    return sum(bits) / len(bits)


class ToySpace(SearchSpace):
    """Bit strings of length ``bits``; mutation flips exactly one uniformly chosen bit."""

    kind: ClassVar[str] = "toy"

    def __init__(self, bits: int = TOY_BITS) -> None:
        self.bits = bits

    def spec(self) -> dict[str, Any]:
        """The spec that rebuilds this space."""
        return {"kind": self.kind, "bits": self.bits}

    def domains(self) -> list[Domain]:
        """One ``Discrete(2)`` per bit."""
        return [Discrete(2) for _ in range(self.bits)]

    def decisions(self) -> list[Decision]:
        """One binary decision per bit."""
        return [Decision(f"bits[{i}]", 2) for i in range(self.bits)]

    def from_decisions(self, choices: Sequence[int]) -> tuple[Genotype, list[bool]]:
        """The bits are the choices; every decision is used."""
        return {"bits": check_choices(self.decisions(), choices)}, [True] * self.bits

    def to_decisions(self, genotype: Genotype) -> list[int]:
        """The bits."""
        self.validate(genotype)
        return list(genotype["bits"])

    def sample(self, rng: random.Random) -> Genotype:
        """Each bit drawn independently and uniformly."""
        return {"bits": [rng.randrange(2) for _ in range(self.bits)]}

    def mutate(self, genotype: Genotype, rng: random.Random) -> Genotype:
        """A copy of ``genotype`` with one uniformly chosen bit flipped."""
        self.validate(genotype)
        bits = list(genotype["bits"])
        index = rng.randrange(self.bits)
        bits[index] = 1 - bits[index]
        return {"bits": bits}

    def validate(self, genotype: Any) -> None:
        """Exactly the key ``bits``: a list of ``self.bits`` ints, each 0 or 1."""
        if not isinstance(genotype, Mapping) or set(genotype) != {"bits"}:
            raise InvalidGenotype(f'expected {{"bits": [...]}}, got {genotype!r}')
        bits = genotype["bits"]
        if not isinstance(bits, list) or len(bits) != self.bits:
            raise InvalidGenotype(f"bits: expected a list of {self.bits} ints, got {bits!r}")
        for i, bit in enumerate(bits):
            if type(bit) is not int or bit not in (0, 1):
                raise InvalidGenotype(f"bits[{i}]: expected 0 or 1, got {bit!r}")

    def cost(self, genotype: Genotype) -> dict[str, float]:
        """``params`` = number of ones (a stand-in for a cheap objective)."""
        self.validate(genotype)
        return {"params": float(sum(genotype["bits"]))}
