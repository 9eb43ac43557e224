"""Aging evolution specifics: initialisation and barrier, aging, tournament selection, config."""

from __future__ import annotations

import random
import re
from collections import Counter
from collections.abc import Sequence

import pytest

from nasd.core.events import SlotsOpen, TrialFailed, TrialSucceeded
from nasd.core.strategy import STRATEGIES, AgingEvolution, Candidate, build_strategy
from nasd.errors import ConfigError
from tests.contract.test_strategy_contract import msgpack_round_trip, simulate
from tests.contract.toy_space import OPTIMUM, ToySpace, toy_score


def make(population: int = 4, sample: int = 2, seed: int = 0, **params: str) -> AgingEvolution:
    strategy = build_strategy(
        "aging-evolution", ToySpace(), seed, {"population": population, "sample": sample, **params}
    )
    assert isinstance(strategy, AgingEvolution)
    return strategy


def offer(strategy: AgingEvolution, first: int, count: int) -> Sequence[Candidate]:
    return strategy.react(SlotsOpen(tuple(range(first, first + count))))


def succeed(
    strategy: AgingEvolution, candidate: Candidate, value: float, metric: str = "val_acc"
) -> None:
    strategy.react(TrialSucceeded(candidate.trial_id, candidate.genotype, {metric: value}))


def fail(strategy: AgingEvolution, candidate: Candidate) -> None:
    strategy.react(TrialFailed(candidate.trial_id, candidate.genotype, "boom"))


def ids(strategy: AgingEvolution) -> list[int]:
    return [member.trial_id for member in strategy.population]


def test_exactly_population_random_proposals_before_any_mutation() -> None:
    strategy = make(population=10, sample=3)
    sim = simulate(strategy, ToySpace(), seed=1, budget=60, capacity=4, score=toy_score)
    parents = [c.parent_id for c in sorted(sim.candidates(), key=lambda c: c.trial_id)]
    assert parents[:10] == [None] * 10
    assert None not in parents[10:]


def test_barrier_until_the_initial_results_arrive() -> None:
    strategy = make(population=4)
    initial = offer(strategy, 0, 8)
    assert [c.trial_id for c in initial] == [0, 1, 2, 3]
    assert all(c.parent_id is None for c in initial)
    for candidate in initial[:3]:
        assert offer(strategy, 4, 8) == []
        succeed(strategy, candidate, 0.5)
    assert offer(strategy, 4, 8) == []
    succeed(strategy, initial[3], 0.5)
    children = offer(strategy, 4, 8)
    assert [c.trial_id for c in children] == list(range(4, 12))
    assert all(c.parent_id in {0, 1, 2, 3} for c in children)


def test_a_failed_initial_trial_frees_its_place() -> None:
    strategy = make(population=4)
    initial = list(offer(strategy, 0, 8))
    fail(strategy, initial[2])
    replacement = offer(strategy, 4, 8)
    assert [(c.trial_id, c.parent_id) for c in replacement] == [(4, None)]
    for candidate in [*initial[:2], initial[3]]:
        succeed(strategy, candidate, 0.5)
    assert offer(strategy, 5, 8) == []
    succeed(strategy, replacement[0], 0.5)
    assert strategy.evolving
    assert len(offer(strategy, 5, 8)) == 8


def test_the_oldest_dies_by_arrival_order() -> None:
    strategy = make(population=3)
    initial = offer(strategy, 0, 3)
    for candidate in initial:
        succeed(strategy, candidate, 0.1)
    children = list(offer(strategy, 3, 7))
    random.Random(4).shuffle(children)
    arrivals: list[int] = [0, 1, 2]
    for i, child in enumerate(children):
        if i % 3 == 2:
            fail(strategy, child)
        else:
            succeed(strategy, child, 0.2)
            arrivals.append(child.trial_id)
        assert ids(strategy) == arrivals[-3:]


def test_a_failed_child_never_joins() -> None:
    strategy = make(population=2, sample=1)
    for candidate in offer(strategy, 0, 2):
        succeed(strategy, candidate, 0.3)
    before = strategy.population
    (child,) = offer(strategy, 2, 1)
    fail(strategy, child)
    assert strategy.population == before
    succeed(strategy, child, 0.9)  # a late success after the failure is ignored too
    assert strategy.population == before


def test_unknown_and_duplicate_results_are_ignored() -> None:
    strategy, twin = make(seed=3), make(seed=3)
    for s in (strategy, twin):
        for candidate in offer(s, 0, 4):
            succeed(s, candidate, candidate.trial_id / 10)
    strategy.react(TrialSucceeded(3, {"bits": [1] * 8}, {"val_acc": 0.9}))
    strategy.react(TrialSucceeded(77, {"bits": [1] * 8}, {"val_acc": 1.0}))
    strategy.react(TrialFailed(78, {"bits": [1] * 8}, "never proposed"))
    assert ids(strategy) == [0, 1, 2, 3]
    assert msgpack_round_trip(strategy.state_dict()) == msgpack_round_trip(twin.state_dict())
    assert offer(strategy, 4, 5) == offer(twin, 4, 5)


def _parent_ranks(strategy: AgingEvolution, draws: int) -> Counter[int]:
    """How often each population member (by rank, 0 = best) was chosen as parent."""
    ranked = sorted(strategy.population, key=lambda m: m.score, reverse=True)
    rank = {member.trial_id: r for r, member in enumerate(ranked)}
    counts: Counter[int] = Counter()
    for child in offer(strategy, 100, draws):
        assert child.parent_id is not None
        counts[rank[child.parent_id]] += 1
        parent = next(m for m in ranked if m.trial_id == child.parent_id)
        pairs = zip(child.genotype["bits"], parent.genotype["bits"], strict=True)
        assert sum(a != b for a, b in pairs) == 1
    return counts


@pytest.mark.parametrize("sample", [1, 2, 4])
def test_tournament_picks_the_best_of_a_sample_drawn_with_replacement(sample: int) -> None:
    population, draws = 4, 4000
    strategy = make(population=population, sample=sample, seed=sample)
    for candidate, value in zip(offer(strategy, 0, 4), [0.2, 0.9, 0.4, 0.7], strict=True):
        succeed(strategy, candidate, value)
    counts = _parent_ranks(strategy, draws)

    def all_draws_at_least(rank: int) -> float:
        return ((population - rank) / population) ** sample

    for rank in range(population):
        # The parent has rank r iff all S draws have rank >= r but not all have rank >= r + 1.
        expected = all_draws_at_least(rank) - all_draws_at_least(rank + 1)
        assert abs(counts[rank] / draws - expected) < 0.03, (rank, counts)


def test_mode_min_prefers_the_lowest_metric() -> None:
    strategy = make(population=4, sample=4, metric="loss", mode="min")
    for candidate, loss in zip(offer(strategy, 0, 4), [0.2, 0.9, 0.4, 0.7], strict=True):
        succeed(strategy, candidate, loss, metric="loss")
    counts = _parent_ranks(strategy, 2000)
    assert [m.score for m in strategy.population] == [-0.2, -0.9, -0.4, -0.7]
    assert counts[0] / 2000 == pytest.approx(1 - 0.75**4, abs=0.04)


def test_mode_min_reaches_the_cheapest_genotype() -> None:
    # The toy space's cost is the number of ones, so minimising "params" leads to all zeros.
    strategy = make(population=10, sample=3, metric="params", mode="min")
    sim = simulate(strategy, ToySpace(), seed=0, budget=300, score=toy_score)
    assert {"bits": [0] * 8} in [c.genotype for c in sim.candidates()]


def test_reaches_the_toy_optimum_within_300_trials() -> None:
    space = ToySpace()
    found = 0
    for seed in range(5):
        strategy = make(population=10, sample=3, seed=seed)
        sim = simulate(strategy, space, seed=seed, budget=300, capacity=4, score=toy_score)
        found += OPTIMUM in [c.genotype for c in sim.candidates()]
    assert found >= 4


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"popsize": 5}, "unknown parameter 'popsize' (known: population, sample, metric, mode)"),
        ({"population": 0}, "population must be an int >= 2, got 0"),
        ({"population": 1}, "population must be an int >= 2, got 1"),
        ({"population": "10"}, "population must be an int >= 2, got '10'"),
        ({"population": 10.0}, "population must be an int >= 2, got 10.0"),
        ({"population": True}, "population must be an int >= 2, got True"),
        ({"sample": 0}, "sample must be an int >= 1, got 0"),
        ({"population": 5, "sample": 6}, "sample must be <= population (5), got 6"),
        ({"mode": "avg"}, "mode must be 'max' or 'min'"),
        ({"metric": 3}, "metric must be a non-empty string, got 3"),
    ],
)
def test_bad_parameters_are_config_errors(params: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError) as error:
        build_strategy("aging-evolution", ToySpace(), 0, params)
    assert str(error.value).startswith("strategy 'aging-evolution': ")
    assert message in str(error.value)


def test_unknown_strategy_lists_the_known_ones() -> None:
    known = re.escape(", ".join(sorted(STRATEGIES)))
    with pytest.raises(ConfigError, match=rf"'evolution' \(known: {known}\)"):
        build_strategy("evolution", ToySpace(), 0, {})
