"""REINFORCE over independent logits per decision: the NAS-Bench-201 protocol's REINFORCE.

The policy is one vector of logits per decision of the space's decision list (for ``nb201``:
6 edges x 5 ops) and each action is drawn from its decision's softmax, independently of the
others (a skip decision is simply a decision of size 2). The loop is the one ``reinforce`` uses
(:class:`nasd.core.strategy.reinforce.PolicyGradientStrategy`: asynchronous, recorded actions,
exponential-moving-average baseline, failures tolerated, exact snapshots).

Defaults follow the authors' scripts (Dong & Yang, ICLR 2020; NATS-Bench ``reinforce.py``): logits
initialised to ``1e-3 * N(0, 1)``, Adam with ``lr`` 0.01, baseline momentum 0.9 folded in before
the advantage is taken, one update per finished child (``batch`` 1; raise it to average over
several children). Written in numpy for the reasons given in :mod:`nasd.core.strategy.reinforce`.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from typing import ClassVar

import numpy as np

from nasd.core.objective import Mode
from nasd.core.space._base import SearchSpace
from nasd.core.space.decisions import Decision
from nasd.core.strategy._lstm import Array, categorical, log_softmax, term, term_grad
from nasd.core.strategy.reinforce import PolicyGradientStrategy

INIT_STD = 1e-3
"""Initial logits ``1e-3 * N(0, 1)`` (the NB201 scripts): a uniform policy, symmetry broken."""


class FactorizedPolicy:
    """Independent softmax logits per decision, in one flat vector (``theta``)."""

    def __init__(self, decisions: Sequence[Decision], generator: np.random.Generator) -> None:
        self.decisions = list(decisions)
        self.offsets = [0]
        for decision in self.decisions:
            self.offsets.append(self.offsets[-1] + decision.size)
        self.theta: Array = INIT_STD * generator.standard_normal(self.offsets[-1])

    def _log_probs(self, k: int) -> Array:
        return log_softmax(self.theta[self.offsets[k] : self.offsets[k + 1]])

    def sample(self, uniform: Callable[[], float]) -> list[int]:
        """One action per decision, each drawn with one ``uniform()`` in [0, 1)."""
        return [
            categorical(np.exp(self._log_probs(k)), uniform()) for k in range(len(self.decisions))
        ]

    def objective(
        self, actions: Sequence[int], used: Sequence[bool], advantage: float, entropy: float
    ) -> float:
        """``advantage * sum log P(a_t) + entropy * sum H_t`` over the used decisions."""
        terms = (
            term(self._log_probs(k), action, advantage, entropy)
            for k, action in enumerate(actions)
            if used[k]
        )
        return sum(terms, 0.0)

    def accumulate(
        self,
        actions: Sequence[int],
        used: Sequence[bool],
        advantage: float,
        entropy: float,
        grad: Array,
    ) -> None:
        """Add the gradient of :meth:`objective` with respect to the logits into ``grad``."""
        for k, action in enumerate(actions):
            if not used[k]:
                continue
            dz = term_grad(self._log_probs(k), action, advantage, entropy)
            grad[self.offsets[k] : self.offsets[k + 1]] += dz

    def probabilities(self, k: int) -> Array:
        """The current softmax of decision ``k``."""
        return np.exp(self._log_probs(k))


class ReinforceFactorized(PolicyGradientStrategy):
    """REINFORCE over independent per-decision logits (see the module docstring)."""

    name: ClassVar[str] = "reinforce-factorized"

    def __init__(
        self,
        space: SearchSpace,
        rng: random.Random,
        *,
        batch: int = 1,
        lr: float = 0.01,
        baseline_decay: float = 0.9,
        failure_reward: float | None = None,
        entropy: float = 0.0,
        metric: str = "val_acc",
        mode: Mode = "max",
    ) -> None:
        super().__init__(
            space,
            rng,
            batch=batch,
            lr=lr,
            baseline_decay=baseline_decay,
            failure_reward=failure_reward,
            entropy=entropy,
            metric=metric,
            mode=mode,
        )

    def _make_policy(
        self, decisions: list[Decision], generator: np.random.Generator
    ) -> FactorizedPolicy:
        return FactorizedPolicy(decisions, generator)
