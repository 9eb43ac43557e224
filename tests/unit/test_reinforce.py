"""The REINFORCE strategies: decision lists, the numpy controller's gradient, learning, asynchrony.

The contract suite (tests/contract) runs both strategies through determinism, replay, snapshots and
failures; this module checks what is specific to them.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Mapping
from typing import Any, ClassVar

import numpy as np
import pytest

from nasd.core.events import Genotype, SlotsOpen, TrialFailed, TrialSucceeded
from nasd.core.space import SPACES, CnnSpace, build_space, cnn_decisions
from nasd.core.space._base import SearchSpace
from nasd.core.space.decisions import Decision, check_decisions
from nasd.core.space.domains import Discrete, Domain
from nasd.core.strategy import build_strategy
from nasd.core.strategy._lstm import Adam, LstmController
from nasd.core.strategy.reinforce import PolicyGradientStrategy
from nasd.core.strategy.reinforce_factorized import FactorizedPolicy
from nasd.errors import ConfigError, InvalidGenotype
from tests.contract.toy_space import OPTIMUM, ToySpace, toy_score

HPARAMS_SPEC: dict[str, Any] = {
    "kind": "hparams",
    "params": {
        "optimizer": {"type": "categorical", "choices": ["sgd", "adam", True, 1.5]},
        "layers": {"type": "int", "low": 1, "high": 4},
        "batch": {"type": "int", "low": 8, "high": 1000},
        "dropout": {"type": "uniform", "low": 0.0, "high": 0.5},
        "lr": {"type": "loguniform", "low": 1e-5, "high": 1e-1},
        "momentum": {
            "type": "uniform",
            "low": 0.5,
            "high": 0.99,
            "condition": {"param": "optimizer", "in": ["sgd"]},
        },
    },
}
SPACE_SPECS: dict[str, dict[str, Any]] = {
    "cnn": {"kind": "cnn", "input_shape": [1, 40], "num_classes": 10, "max_layers": 6},
    "cnn-2d-no-skips": {
        "kind": "cnn",
        "input_shape": [3, 16, 16],
        "num_classes": 4,
        "min_layers": 2,
        "max_layers": 4,
        "skips": False,
    },
    "nb201": {"kind": "nb201"},
    "hparams": HPARAMS_SPEC,
    "unet": {"kind": "unet"},
}
SPACE_SPECS.update(
    {
        kind: {"kind": kind}
        for kind in SPACES
        if kind not in {s["kind"] for s in SPACE_SPECS.values()}
    }
)
"""Every registered kind is covered: one added later is tried with its defaults (give it a spec
above if it has required keys; test_every_registered_space_has_a_decision_list says so)."""
DISCRETE = {"cnn", "cnn-2d-no-skips", "nb201"}
"""Spaces whose genotypes are exactly described by their choices (no continuous bins)."""


def _spaces() -> dict[str, SearchSpace]:
    spaces = {name: build_space(spec) for name, spec in SPACE_SPECS.items()}
    spaces["toy"] = ToySpace()
    return spaces


def test_every_registered_space_has_a_decision_list() -> None:
    for name, spec in SPACE_SPECS.items():
        assert build_space(spec).decisions(), name


@pytest.mark.parametrize("name", sorted([*SPACE_SPECS, "toy"]))
def test_decisions_round_trip(name: str) -> None:
    space = _spaces()[name]
    decisions = space.decisions()
    check_decisions(decisions)
    rng = random.Random(4)
    for _ in range(200):
        choices = [rng.randrange(d.size) for d in decisions]
        genotype, used = space.from_decisions(choices)
        space.validate(genotype)
        assert len(used) == len(decisions)
        back = space.to_decisions(genotype)
        assert [b for b, u in zip(back, used, strict=True) if u] == [
            c for c, u in zip(choices, used, strict=True) if u
        ]
        assert space.from_decisions(back)[0] == genotype
        sampled = space.sample(rng)
        again = space.from_decisions(space.to_decisions(sampled))[0]
        space.validate(again)
        if name in DISCRETE or name == "toy":
            assert again == sampled


def test_cnn_decisions_follow_the_domains_and_mark_unused_layers() -> None:
    space = build_space(SPACE_SPECS["cnn"])
    assert isinstance(space, CnnSpace)
    decisions = space.decisions()
    assert [Discrete(d.size) for d in decisions] == space.domains()
    skips = [d for d in decisions if d.skip is not None]
    assert {d.skip for d in skips} == {(i, j) for i in range(6) for j in range(i - 1)}
    assert [d.anchor for d in decisions if d.anchor is not None] == list(range(6))
    genotype, used = space.from_decisions([1] + [0] * (len(decisions) - 1))
    assert len(genotype["layers"]) == 2
    assert used == [True] + [cnn_decisions.layer_of(d) < 2 for d in decisions[1:]]


def test_hparams_bins_and_conditions() -> None:
    space = build_space(HPARAMS_SPEC)
    sizes = {d.key: d.size for d in space.decisions()}
    assert sizes == {
        "optimizer": 4,
        "layers": 4,
        "batch": 8,
        "dropout": 8,
        "lr": 8,
        "momentum": 8,
    }
    keys = [d.key for d in space.decisions()]
    assert keys.index("momentum") > keys.index("optimizer")  # parents first
    choice = {"optimizer": 1, "layers": 3, "batch": 0, "dropout": 7, "lr": 0, "momentum": 5}
    genotype, used = space.from_decisions([choice[k] for k in keys])
    assert genotype["optimizer"] == "adam" and "momentum" not in genotype
    assert used == [k != "momentum" for k in keys]
    assert genotype["layers"] == 4
    assert genotype["dropout"] == pytest.approx(0.5 * 15 / 16)  # the last bin's centre
    assert genotype["lr"] == pytest.approx(1e-5 * 10 ** (4 / 16))  # log-space centre
    assert 8 <= genotype["batch"] < 8 + 993 / 8


def test_malformed_choices_are_refused() -> None:
    space = build_space({"kind": "nb201"})
    with pytest.raises(ValueError, match="expected 6 choices"):
        space.from_decisions([0] * 5)
    with pytest.raises(ValueError, match=r"ops\[2\]"):
        space.from_decisions([0, 0, 5, 0, 0, 0])
    with pytest.raises(InvalidGenotype):
        space.to_decisions({"ops": ["conv"] * 6})


def test_decision_lists_refuse_skips_before_their_anchors() -> None:
    with pytest.raises(ValueError, match="before the anchor of layer 1"):
        check_decisions([Decision("a", 3, anchor=0), Decision("s", 2, skip=(1, 0))])
    with pytest.raises(ValueError, match="size 2"):
        Decision("s", 3, skip=(1, 0))


# -- the numpy controllers ------------------------------------------------------------------------


def _numeric_gradient(f: Callable[[], float], theta: np.ndarray, eps: float = 1e-6) -> np.ndarray:
    grad = np.zeros_like(theta)
    for index in range(theta.size):
        saved = theta[index]
        theta[index] = saved + eps
        high = f()
        theta[index] = saved - eps
        low = f()
        theta[index] = saved
        grad[index] = (high - low) / (2 * eps)
    return grad


def test_lstm_gradient_matches_finite_differences() -> None:
    """Every weight of a small controller (skips, anchors, an unused layer, entropy bonus)."""
    space = build_space(
        {"kind": "cnn", "input_shape": [1, 8], "num_classes": 2, "max_layers": 4, "kernels": [1, 3]}
    )
    decisions = space.decisions()
    policy = LstmController(decisions, 3, np.random.default_rng(0))
    policy.theta[:] = np.random.default_rng(1).uniform(-1.0, 1.0, policy.theta.size)
    rng = random.Random(2)
    actions = policy.sample(rng.random)
    actions[0] = 2  # depth 3: the fourth layer's decisions are unused
    actions[next(k for k, d in enumerate(decisions) if d.skip == (2, 0))] = 1
    _genotype, used = space.from_decisions(actions)
    assert not all(used)
    analytic = np.zeros_like(policy.theta)
    policy.accumulate(actions, used, 0.7, 0.3, analytic)
    numeric = _numeric_gradient(lambda: policy.objective(actions, used, 0.7, 0.3), policy.theta)
    assert np.abs(analytic).max() > 1e-3
    np.testing.assert_allclose(analytic, numeric, rtol=1e-5, atol=1e-8)


def test_factorized_gradient_matches_finite_differences() -> None:
    decisions = [Decision("a", 3), Decision("b", 2), Decision("c", 4)]
    policy = FactorizedPolicy(decisions, np.random.default_rng(0))
    policy.theta[:] = np.random.default_rng(1).normal(size=policy.theta.size)
    actions, used = [2, 0, 1], [True, True, False]
    analytic = np.zeros_like(policy.theta)
    policy.accumulate(actions, used, -1.3, 0.2, analytic)
    numeric = _numeric_gradient(lambda: policy.objective(actions, used, -1.3, 0.2), policy.theta)
    assert np.all(analytic[5:] == 0.0)  # the unused decision gets no gradient
    np.testing.assert_allclose(analytic, numeric, rtol=1e-6, atol=1e-9)


def test_sampling_follows_the_policy() -> None:
    """With one logit far above the others, the controller picks it; uniform draws are used."""
    decisions = [Decision("a", 3), Decision("b", 2)]
    policy = FactorizedPolicy(decisions, np.random.default_rng(0))
    policy.theta[:] = [0.0, 20.0, 0.0, -20.0, 0.0]
    rng = random.Random(0)
    assert {tuple(policy.sample(rng.random)) for _ in range(50)} == {(1, 1)}


# -- learning --------------------------------------------------------------------------------------


def _run_synchronously(strategy: PolicyGradientStrategy, updates: int, batch: int) -> int | None:
    """Propose ``batch`` children, report them in order, repeat; the update count at which the
    toy optimum's probability first exceeds 0.9 (None if it never does)."""
    next_id = 0
    for _ in range(updates * strategy.batch // batch):
        candidates = strategy.react(SlotsOpen(tuple(range(next_id, next_id + batch))))
        next_id += batch
        for c in candidates:
            strategy.react(
                TrialSucceeded(c.trial_id, c.genotype, {"val_acc": toy_score(c.genotype)})
            )
        if math.exp(strategy.log_probability(OPTIMUM)) > 0.9:
            return strategy.updates
    return None


def test_reinforce_learns_the_toy_optimum() -> None:
    """Defaults (hidden 64, batch 8, lr 0.005): P(optimum) > 0.9 within 40 updates (320 children)
    for each of three seeds (it takes 22 to 25)."""
    for seed in range(3):
        strategy = build_strategy("reinforce", ToySpace(), seed, {})
        assert isinstance(strategy, PolicyGradientStrategy)
        assert math.exp(strategy.log_probability(OPTIMUM)) < 0.01  # near uniform: 1/256
        assert _run_synchronously(strategy, 40, 8) is not None, seed


def test_reinforce_factorized_learns_the_toy_optimum() -> None:
    """Defaults (NB201: lr 0.01, one update per child): P(optimum) > 0.9 within 2,000 updates
    for each of two seeds (it takes about 1,600)."""
    for seed in range(2):
        strategy = build_strategy("reinforce-factorized", ToySpace(), seed, {})
        assert isinstance(strategy, PolicyGradientStrategy)
        assert _run_synchronously(strategy, 2000, 8) is not None, seed


# -- asynchrony, failures, bookkeeping ------------------------------------------------------------


def _reference_updates(
    name: str, seed: int, rounds: int, batch: int, order: Callable[[list[int]], list[int]]
) -> np.ndarray:
    """Synchronous REINFORCE written out by hand on the strategy's own policy object: sample
    ``batch`` children with the seeded rng, fold their rewards into the EMA in ``order``, take the
    advantages, average the gradients, one Adam step; returns the final weights."""
    strategy = build_strategy(name, ToySpace(), seed, {"batch": batch})
    assert isinstance(strategy, PolicyGradientStrategy)
    policy, space = strategy.policy, strategy.space
    adam = Adam(policy.theta.size, strategy.lr)
    ema_sum = ema_weight = 0.0
    for _ in range(rounds):
        samples = [policy.sample(strategy.rng.random) for _ in range(batch)]
        grad = np.zeros_like(policy.theta)
        for index in order(list(range(batch))):
            actions = samples[index]
            reward = toy_score(space.from_decisions(actions)[0])
            ema_sum = 0.9 * ema_sum + (1 - 0.9) * reward
            ema_weight = 0.9 * ema_weight + (1 - 0.9)
            advantage = reward - ema_sum / ema_weight
            policy.accumulate(actions, [True] * len(actions), advantage / batch, 0.0, grad)
        adam.step(policy.theta, -grad)
    return policy.theta.copy()


@pytest.mark.parametrize("name", ["reinforce", "reinforce-factorized"])
@pytest.mark.parametrize("reverse", [False, True])
def test_asynchronous_update_equals_the_synchronous_one(name: str, reverse: bool) -> None:
    """Results in proposal order give the synchronous loop's weights; in reverse order, the
    gradient still pairs each reward with the actions recorded for that trial."""
    batch, rounds = 4, 5
    strategy = build_strategy(name, ToySpace(), 3, {"batch": batch})
    assert isinstance(strategy, PolicyGradientStrategy)
    next_id = 0
    for _ in range(rounds):
        candidates = list(strategy.react(SlotsOpen(tuple(range(next_id, next_id + batch)))))
        next_id += batch
        assert len(candidates) == batch
        for c in reversed(candidates) if reverse else candidates:
            strategy.react(
                TrialSucceeded(c.trial_id, c.genotype, {"val_acc": toy_score(c.genotype)})
            )
    assert strategy.updates == rounds
    order = (lambda ids: ids[::-1]) if reverse else (lambda ids: ids)
    expected = _reference_updates(name, 3, rounds, batch, order)
    np.testing.assert_array_equal(strategy.policy.theta, expected)


def test_failures_count_toward_the_batch_with_zero_advantage() -> None:
    strategy = build_strategy("reinforce", ToySpace(), 0, {"batch": 2})
    assert isinstance(strategy, PolicyGradientStrategy)
    a, b, c, d = strategy.react(SlotsOpen((0, 1, 2, 3)))
    before = strategy.policy.theta.copy()
    strategy.react(TrialFailed(a.trial_id, a.genotype, "boom"))
    assert strategy.baseline is None and strategy.updates == 0
    strategy.react(TrialFailed(b.trial_id, b.genotype, "boom"))
    assert strategy.updates == 1  # a batch of two failures: zero gradient, Adam still steps
    np.testing.assert_array_equal(strategy.policy.theta, before)
    strategy.react(TrialSucceeded(c.trial_id, c.genotype, {"val_acc": 0.25}))
    assert strategy.baseline == pytest.approx(0.25)
    strategy.react(TrialSucceeded(d.trial_id, d.genotype, {"loss": 1.0}))  # no val_acc: a failure
    assert strategy.baseline == pytest.approx(0.25) and strategy.updates == 2
    np.testing.assert_array_equal(strategy.policy.theta, before)  # c's advantage was 0 too
    e, f, g, h = strategy.react(SlotsOpen((4, 5, 6, 7)))
    for trial, value in ((e, 0.0), (f, 1.0)):
        strategy.react(TrialSucceeded(trial.trial_id, trial.genotype, {"val_acc": value}))
    moved = strategy.policy.theta.copy()
    assert not np.array_equal(moved, before) and strategy.updates == 3
    for trial in (g, h):  # a batch of failures: no step, even with Adam's momentum
        strategy.react(TrialFailed(trial.trial_id, trial.genotype, "boom"))
    assert strategy.updates == 4
    np.testing.assert_array_equal(strategy.policy.theta, moved)
    baseline = strategy.baseline
    strategy.react(TrialSucceeded(d.trial_id, d.genotype, {"val_acc": 1.0}))  # resolved: ignored
    assert strategy.baseline == baseline and strategy.updates == 4


def test_failure_reward_feeds_the_baseline() -> None:
    strategy = build_strategy("reinforce-factorized", ToySpace(), 0, {"failure_reward": 0.0})
    assert isinstance(strategy, PolicyGradientStrategy)
    a, b = strategy.react(SlotsOpen((0, 1)))
    strategy.react(TrialSucceeded(a.trial_id, a.genotype, {"val_acc": 1.0}))
    strategy.react(TrialFailed(b.trial_id, b.genotype, "boom"))
    assert strategy.baseline == pytest.approx((0.9 * 1.0 + 0.0) / (0.9 + 1.0))


@pytest.mark.parametrize("name", ["reinforce", "reinforce-factorized"])
def test_restored_strategy_continues_the_same_policy(name: str) -> None:
    original = build_strategy(name, build_space(SPACE_SPECS["cnn"]), 5, {"batch": 2})
    first = original.react(SlotsOpen((0, 1, 2)))
    for c in first[:2]:
        original.react(TrialSucceeded(c.trial_id, c.genotype, {"val_acc": 0.5 + c.trial_id / 10}))
    restored = build_strategy(name, build_space(SPACE_SPECS["cnn"]), 77, {"batch": 2})
    restored.load_state_dict(original.state_dict())
    event = TrialSucceeded(first[2].trial_id, first[2].genotype, {"val_acc": 0.9})
    for strategy in (original, restored):
        strategy.react(event)
    assert original.react(SlotsOpen((3, 4))) == restored.react(SlotsOpen((3, 4)))
    assert original.state_dict() == restored.state_dict()


class _NoDecisions(SearchSpace):
    """A space that never declared a decision list."""

    kind: ClassVar[str] = "bare"

    def spec(self) -> dict[str, Any]:
        return {"kind": self.kind}

    def sample(self, rng: random.Random) -> Genotype:
        return {}

    def mutate(self, genotype: Genotype, rng: random.Random) -> Genotype:
        return {}

    def validate(self, genotype: Any) -> None:
        return None

    def cost(self, genotype: Genotype) -> dict[str, float]:
        return {}

    def domains(self) -> list[Domain]:
        return []


@pytest.mark.parametrize("name", ["reinforce", "reinforce-factorized"])
def test_a_space_without_decisions_is_refused(name: str) -> None:
    with pytest.raises(ConfigError, match=f"{name} needs a space with a decision list.*'bare'"):
        build_strategy(name, _NoDecisions(), 0, {})


@pytest.mark.parametrize(
    ("name", "params", "message"),
    [
        ("reinforce", {"hidden": 0}, "hidden"),
        ("reinforce", {"batch": 0}, "batch"),
        ("reinforce-factorized", {"lr": -1.0}, "lr"),
        ("reinforce-factorized", {"baseline_decay": 1.0}, "baseline_decay"),
        ("reinforce-factorized", {"baseline_decay": 0}, "baseline_decay"),
        ("reinforce", {"entropy": float("nan")}, "entropy"),
        ("reinforce", {"failure_reward": "low"}, "failure_reward"),
    ],
)
def test_bad_parameters_are_config_errors(
    name: str, params: Mapping[str, Any], message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        build_strategy(name, ToySpace(), 0, params)
