"""REINFORCE with an autoregressive LSTM controller (Zoph & Le, ICLR 2017), made asynchronous.

This module holds the policy-gradient loop both REINFORCE strategies share
(:class:`PolicyGradientStrategy`) and the ``reinforce`` strategy, whose policy is the LSTM
controller of :mod:`nasd.core.strategy._lstm`: per decision of the space's decision list
(:mod:`nasd.core.space.decisions`) a softmax whose sampled action is embedded and fed to the next
step, skip connections by anchor-point attention.

The loop. Every offered trial id gets a sample of the *current* policy at once (no barrier); the
actions are recorded under the trial id. When the trial finishes, its reward ``R`` (the objective's
score; for a failure, or a success without a finite score, ``failure_reward``) is folded into the
baseline ``b``, an exponential moving average with bias correction (``b`` = weighted mean of the
rewards so far, weights ``baseline_decay**age``), and the advantage ``R - b`` is computed with the
baseline that includes ``R``: the NAS-Bench-201 scripts' order. A failure without a
``failure_reward`` gets advantage 0 and leaves the baseline alone. After ``batch`` (m) finished
children, Adam takes one step along ``1/m sum_k sum_t grad log P(a_t | a_<t) (R_k - b_k)``
(the seed's rule), plus ``entropy`` times the gradient of the policy's entropy (off by default;
a batch whose gradient is zero, all failures, skips the step so momentum alone moves nothing),
the log-probabilities taken under the weights of the moment of the update and only over the
decisions the genotype uses. Results may arrive in any order; the gradient always uses the
actions recorded for that trial, so with results in proposal order the strategy equals a
synchronous REINFORCE loop. Weights, Adam's moments, the baseline, the recorded actions and the
unfinished batch are the snapshot (floats as exact bytes), so a restart continues the same policy.

Unused decisions (a layer beyond the chosen depth, an inactive conditional hyperparameter) still
feed the LSTM; their own terms are left out of the gradient. That is exact when they come after
every used decision (the ``cnn`` space's deeper layers); otherwise (conditional hyperparameters)
it trades a small bias for less variance.

Why numpy and not torch: :mod:`nasd.core` must stay free of torch (the daemon runs without it and
``tests/unit/test_imports.py`` enforces it), and a float64 numpy controller with a hand-written
backward pass is deterministic and snapshots exactly as bytes, so replay and restore agree. Its
numpy generator is drawn from the strategy's ``random.Random`` once, to initialise the weights;
sampling then uses that ``random.Random`` itself, whose state every snapshot already carries.

Defaults: ``hidden`` 64 (the embedding has the same width), ``lr`` 0.005, ``batch`` 8. Zoph & Le
used 6e-4 with 100 controller replicas feeding the parameter servers; nasd has one controller and
searches of hundreds of trials, where 6e-4 barely moves the policy. On the 8-bit toy space 0.005
puts the optimum's probability above 0.9 within 40 updates (22 to 25 for the seeds tried; see
``tests/unit/test_reinforce.py``). 0.01 halves that on the toy space; the default stays the
more conservative of the two until a benchmark on a real space says otherwise.
"""

from __future__ import annotations

import math
import random
from abc import abstractmethod
from collections.abc import Callable, Mapping, Sequence
from typing import Any, ClassVar, Protocol

import numpy as np

from nasd.core.events import TrialFailed, TrialSucceeded
from nasd.core.objective import Mode
from nasd.core.space._base import SearchSpace
from nasd.core.space.decisions import Decision
from nasd.core.strategy._base import Candidate, Strategy
from nasd.core.strategy._lstm import Adam, Array, LstmController, from_bytes, to_bytes
from nasd.core.values import is_int, is_number


class Policy(Protocol):
    """What the loop needs of a policy: weights, sampling and the gradient of its objective."""

    theta: Array

    def sample(self, uniform: Callable[[], float]) -> list[int]:
        """One action per decision, each drawn with one ``uniform()`` in [0, 1)."""

    def objective(
        self, actions: Sequence[int], used: Sequence[bool], advantage: float, entropy: float
    ) -> float:
        """``advantage * sum log P(a_t | a_<t) + entropy * sum H_t`` over the used decisions."""

    def accumulate(
        self,
        actions: Sequence[int],
        used: Sequence[bool],
        advantage: float,
        entropy: float,
        grad: Array,
    ) -> None:
        """Add the gradient of :meth:`objective` with respect to ``theta`` into ``grad``."""


def space_decisions(space: SearchSpace, strategy: str) -> list[Decision]:
    """The space's decision list; ValueError naming the strategy when it has none."""
    try:
        decisions = space.decisions()
    except NotImplementedError:
        decisions = []
    if not decisions:
        raise ValueError(
            f"{strategy} needs a space with a decision list; space kind {space.kind!r} has none"
        )
    return decisions


def _check_number(name: str, value: object, low: float, high: float) -> float:
    if not is_number(value) or not math.isfinite(value) or not low <= value <= high:
        raise ValueError(f"{name} must be a number in [{low}, {high}], got {value!r}")
    return float(value)


class PolicyGradientStrategy(Strategy):
    """The asynchronous REINFORCE loop over a :class:`Policy` (see the module docstring)."""

    def __init__(
        self,
        space: SearchSpace,
        rng: random.Random,
        *,
        batch: int,
        lr: float,
        baseline_decay: float,
        failure_reward: float | None,
        entropy: float,
        metric: str = "val_acc",
        mode: Mode = "max",
    ) -> None:
        super().__init__(space, rng, metric=metric, mode=mode)
        if not is_int(batch) or batch < 1:
            raise ValueError(f"batch must be an int >= 1, got {batch!r}")
        self.batch = batch
        self.lr = _check_number("lr", lr, 1e-12, 10.0)
        self.baseline_decay = _check_number("baseline_decay", baseline_decay, 0.0, 1.0)
        if not 0.0 < self.baseline_decay < 1.0:  # 0 would make every advantage 0 (folded first)
            raise ValueError(f"baseline_decay must be in (0, 1), got {baseline_decay!r}")
        self.failure_reward = (
            None
            if failure_reward is None
            else _check_number("failure_reward", failure_reward, -math.inf, math.inf)
        )
        self.entropy = _check_number("entropy", entropy, 0.0, 1e6)
        self.decisions = space_decisions(space, self.name)
        generator = np.random.default_rng(rng.getrandbits(64))
        self.policy: Policy = self._make_policy(self.decisions, generator)
        self.optimizer = Adam(self.policy.theta.size, self.lr)
        self._baseline_sum = 0.0  # the EMA's numerator and normaliser (bias correction)
        self._baseline_weight = 0.0
        self._outstanding: dict[int, list[int]] = {}  # trial id -> recorded actions
        self._pending: list[tuple[list[int], float]] = []  # finished, not yet in an update
        self.updates = 0

    @abstractmethod
    def _make_policy(self, decisions: list[Decision], generator: np.random.Generator) -> Policy:
        """The policy over ``decisions``, its weights initialised from ``generator``."""

    @property
    def baseline(self) -> float | None:
        """The moving average of the rewards so far; None before the first reward."""
        if self._baseline_weight == 0.0:
            return None
        return self._baseline_sum / self._baseline_weight

    def propose(self, trial_ids: Sequence[int]) -> Sequence[Candidate]:
        """A sample of the current policy for every offered id; the actions are recorded."""
        candidates = []
        for trial_id in trial_ids:
            actions = self.policy.sample(self.rng.random)
            genotype, _used = self.space.from_decisions(actions)
            self._outstanding[trial_id] = actions
            candidates.append(Candidate(trial_id, genotype))
        return candidates

    def observe(self, event: TrialSucceeded | TrialFailed) -> None:
        """Record the trial's advantage; update the policy once ``batch`` trials finished."""
        actions = self._outstanding.pop(event.trial_id, None)
        if actions is None:
            return  # never proposed here, or already resolved
        reward = self.score(event.metrics) if isinstance(event, TrialSucceeded) else None
        if reward is None or not math.isfinite(reward):
            reward = self.failure_reward
        advantage = 0.0
        if reward is not None:
            decay = self.baseline_decay
            self._baseline_sum = decay * self._baseline_sum + (1.0 - decay) * reward
            self._baseline_weight = decay * self._baseline_weight + (1.0 - decay)
            advantage = reward - self._baseline_sum / self._baseline_weight
        self._pending.append((actions, advantage))
        if len(self._pending) >= self.batch:
            self._update()

    def _update(self) -> None:
        """One Adam step on the pending trials' mean gradient, then forget them."""
        grad = np.zeros_like(self.policy.theta)
        scale = 1.0 / len(self._pending)
        for actions, advantage in self._pending:
            if advantage == 0.0 and self.entropy == 0.0:
                continue  # contributes nothing
            _genotype, used = self.space.from_decisions(actions)
            self.policy.accumulate(actions, used, advantage * scale, self.entropy * scale, grad)
        if np.any(grad):  # a batch without information (all failures) leaves Adam alone
            self.optimizer.step(self.policy.theta, -grad)  # Adam minimises: ascend the objective
        self._pending = []
        self.updates += 1

    def log_probability(self, genotype: Mapping[str, Any]) -> float:
        """log P(genotype's choices) under the current policy, over the decisions it uses."""
        actions = self.space.to_decisions(dict(genotype))
        _genotype, used = self.space.from_decisions(actions)
        return self.policy.objective(actions, used, 1.0, 0.0)

    def _state(self) -> dict[str, Any]:
        return {
            "theta": to_bytes(self.policy.theta),
            "adam": self.optimizer.state(),
            "baseline": [self._baseline_sum, self._baseline_weight],
            "outstanding": [[i, a] for i, a in sorted(self._outstanding.items())],
            "pending": [[actions, advantage] for actions, advantage in self._pending],
            "updates": self.updates,
        }

    def _load_state(self, state: Mapping[str, Any]) -> None:
        self.policy.theta[:] = from_bytes(state["theta"], self.policy.theta.size, "theta")
        self.optimizer.load_state(dict(state["adam"]))
        self._baseline_sum, self._baseline_weight = (float(v) for v in state["baseline"])
        self._outstanding = {
            int(i): [int(a) for a in actions] for i, actions in state["outstanding"]
        }
        self._pending = [
            ([int(a) for a in actions], float(advantage)) for actions, advantage in state["pending"]
        ]
        self.updates = int(state["updates"])


class Reinforce(PolicyGradientStrategy):
    """REINFORCE over an autoregressive LSTM controller (see the module docstring)."""

    name: ClassVar[str] = "reinforce"

    def __init__(
        self,
        space: SearchSpace,
        rng: random.Random,
        *,
        hidden: int = 64,
        batch: int = 8,
        lr: float = 0.005,
        baseline_decay: float = 0.9,
        failure_reward: float | None = None,
        entropy: float = 0.0,
        metric: str = "val_acc",
        mode: Mode = "max",
    ) -> None:
        self.hidden = _check_hidden(hidden)
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
    ) -> LstmController:
        return LstmController(decisions, self.hidden, generator)


def _check_hidden(hidden: object) -> int:
    if isinstance(hidden, bool) or not isinstance(hidden, int) or not 1 <= hidden <= 1024:
        raise ValueError(f"hidden must be an int in [1, 1024], got {hidden!r}")
    return hidden
