"""A search space as a fixed sequence of categorical decisions, for policy-gradient controllers.

The REINFORCE controllers (:mod:`nasd.core.strategy.reinforce`) do not sample genotypes directly:
they emit one integer per :class:`Decision` of :meth:`nasd.core.space.SearchSpace.decisions`, and
the space turns the integers into a genotype (:meth:`~nasd.core.space.SearchSpace.from_decisions`).
The list has the same length for every genotype, so a choice that exists only in some genotypes
(the fifth layer's kernel when the depth is a choice too) is always decided and reported *unused*
when the genotype does not need it; a controller gives unused decisions no gradient.

Skip connections (Zoph & Le, ICLR 2017, section 3.3) are binary decisions that name two layers:
``skip=(i, j)`` asks "does layer ``i`` read layer ``j``". The LSTM controller answers them with
anchor-point attention over the hidden states of the two layers' *anchors*; a decision with
``anchor=L`` is the last one that describes layer ``L``, and the controller runs layer ``L``'s
anchor step right after it. Every skip decision must come after the anchors of both its layers.
Pure data: no behaviour beyond checking its own fields.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Decision:
    """One categorical choice among ``size`` options (``0 .. size - 1``).

    ``key`` names the genotype entry it decides (for logs and tests). ``skip=(i, j)`` marks a
    binary "does layer ``i`` read layer ``j``" decision (``size`` must be 2; 1 means yes).
    ``anchor=L`` marks the decision that completes layer ``L`` (see the module docstring).
    """

    key: str
    size: int
    skip: tuple[int, int] | None = None
    anchor: int | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.size, int) or isinstance(self.size, bool) or self.size < 1:
            raise ValueError(f"decision {self.key!r}: size must be an int >= 1, got {self.size!r}")
        if self.skip is not None:
            if self.size != 2:
                raise ValueError(f"decision {self.key!r}: a skip decision has size 2")
            if self.anchor is not None:
                raise ValueError(f"decision {self.key!r}: a skip decision cannot be an anchor")


def check_decisions(decisions: Sequence[Decision]) -> None:
    """Raise ValueError unless every skip decision follows the anchors of both of its layers.

    Also refuses a layer anchored twice, so a controller can index anchors by layer.
    """
    anchored: set[int] = set()
    for decision in decisions:
        if decision.anchor is not None:
            if decision.anchor in anchored:
                raise ValueError(
                    f"decision {decision.key!r}: layer {decision.anchor} anchored twice"
                )
            anchored.add(decision.anchor)
        if decision.skip is not None:
            missing = [layer for layer in decision.skip if layer not in anchored]
            if missing:
                raise ValueError(
                    f"decision {decision.key!r}: skip {decision.skip} comes before the anchor "
                    f"of layer {missing[0]}"
                )


def check_choices(decisions: Sequence[Decision], choices: Sequence[int]) -> list[int]:
    """``choices`` as a list of ints, one in range per decision; ValueError with the key if not."""
    if len(choices) != len(decisions):
        raise ValueError(f"expected {len(decisions)} choices, got {len(choices)}")
    checked = []
    for decision, choice in zip(decisions, choices, strict=True):
        if (
            isinstance(choice, bool)
            or not isinstance(choice, int)
            or not 0 <= choice < decision.size
        ):
            raise ValueError(
                f"{decision.key}: choice {choice!r} is not an int in [0, {decision.size})"
            )
        checked.append(int(choice))
    return checked
