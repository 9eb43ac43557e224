"""Tournament selection specifics: the rank rule, worst removal, the barrier and configuration."""

from __future__ import annotations

import itertools
import random
from collections import Counter
from collections.abc import Sequence

import pytest

from nasd.core.events import SlotsOpen, TrialFailed, TrialSucceeded
from nasd.core.strategy import AgingEvolution, Candidate, Strategy, Tournament, build_strategy
from nasd.core.strategy.tournament import pick_rank, rank_probabilities
from nasd.errors import ConfigError
from tests.contract.test_strategy_contract import simulate
from tests.contract.toy_space import ToySpace, toy_score

SCORES = [0.2, 0.9, 0.4, 0.7]
"""Scores of the four initial members (trial ids 0..3); by rank: 1, 3, 2, 0."""


class FixedDraw(random.Random):
    """A Random whose ``random()`` returns ``u``; integer draws (sampling, mutation) stay random."""

    def __init__(self, seed: int, u: float) -> None:
        super().__init__(seed)
        self.u = u

    def random(self) -> float:
        return self.u

    def getrandbits(self, k: int) -> int:
        # Overriding random() alone would make randrange() use it too; keep integers real.
        return super().getrandbits(k)


def make(population: int = 4, sample: int = 2, seed: int = 0, **params: object) -> Tournament:
    strategy = build_strategy(
        "tournament", ToySpace(), seed, {"population": population, "sample": sample, **params}
    )
    assert isinstance(strategy, Tournament)
    return strategy


def offer(strategy: Strategy, first: int, count: int) -> Sequence[Candidate]:
    return strategy.react(SlotsOpen(tuple(range(first, first + count))))


def succeed(
    strategy: Strategy, candidate: Candidate, value: float, metric: str = "val_acc"
) -> None:
    strategy.react(TrialSucceeded(candidate.trial_id, candidate.genotype, {metric: value}))


def fail(strategy: Strategy, candidate: Candidate) -> None:
    strategy.react(TrialFailed(candidate.trial_id, candidate.genotype, "boom"))


def ids(strategy: Tournament) -> list[int]:
    return [member.trial_id for member in strategy.population]


def fill(strategy: Strategy, scores: Sequence[float], metric: str = "val_acc") -> None:
    """Propose and succeed the initial population with ``scores`` (trial ids from 0)."""
    initial = offer(strategy, 0, len(scores))
    assert [c.parent_id for c in initial] == [None] * len(scores)
    for candidate, value in zip(initial, scores, strict=True):
        succeed(strategy, candidate, value, metric)


@pytest.mark.parametrize(
    ("size", "p", "expected"),
    [
        (3, 1.0, [1.0, 0.0, 0.0]),
        (3, 0.5, [0.5, 0.25, 0.25]),
        (4, 0.5, [0.5, 0.25, 0.125, 0.125]),
        (4, 0.6, [0.6, 0.24, 0.096, 0.064]),
        (2, 0.1, [0.1, 0.9]),
        (1, 0.3, [1.0]),
    ],
)
def test_rank_probabilities_follow_the_seed_rule(
    size: int, p: float, expected: list[float]
) -> None:
    probabilities = rank_probabilities(size, p)
    assert probabilities == pytest.approx(expected, abs=1e-12)
    assert sum(probabilities) == pytest.approx(1.0, abs=1e-12)


@pytest.mark.parametrize(
    ("u", "rank"),
    [(0.0, 0), (0.4999, 0), (0.5, 1), (0.7499, 1), (0.75, 2), (0.8749, 2), (0.875, 3), (0.9999, 3)],
)
def test_pick_rank_maps_a_uniform_draw_to_its_interval(u: float, rank: int) -> None:
    assert pick_rank([0.5, 0.25, 0.125, 0.125], u) == rank


@pytest.mark.parametrize(("u", "parent"), [(0.3, 1), (0.6, 3), (0.8, 2), (0.9, 0)])
def test_selection_is_exact_for_a_fixed_sample(u: float, parent: int) -> None:
    # S = P without replacement: the sample is the whole population, so only u decides.
    # p = 0.5: best with 0.5, second 0.25, third 0.125, the last (worst) the remaining 0.125.
    strategy = Tournament(ToySpace(), FixedDraw(1, u), population=4, sample=4, p=0.5, replace=False)
    fill(strategy, SCORES)
    children = offer(strategy, 4, 20)
    assert [c.parent_id for c in children] == [parent] * 20


def _expected_parent_shares(sample: int, p: float, replace: bool) -> dict[int, float]:
    """Each member's exact chance to be the parent, by enumerating every possible draw."""
    members = range(len(SCORES))
    draws = (
        list(itertools.product(members, repeat=sample))
        if replace
        else list(itertools.permutations(members, sample))
    )
    probabilities = rank_probabilities(sample, p)
    shares = dict.fromkeys(members, 0.0)
    for draw in draws:
        ranked = sorted(draw, key=lambda i: SCORES[i], reverse=True)
        for position, member in enumerate(ranked):
            shares[member] += probabilities[position] / len(draws)
    return shares


@pytest.mark.parametrize(
    ("sample", "p", "replace"),
    [(3, 0.5, True), (3, 0.5, False), (2, 0.8, True), (4, 1.0, True), (3, 0.3, False)],
)
def test_parent_frequencies_match_the_exact_distribution(
    sample: int, p: float, replace: bool
) -> None:
    draws = 4000
    strategy = make(population=4, sample=sample, seed=sample, p=p, replace=replace)
    fill(strategy, SCORES)
    counts = Counter(c.parent_id for c in offer(strategy, 4, draws))
    expected = _expected_parent_shares(sample, p, replace)
    for member, share in expected.items():
        assert abs(counts[member] / draws - share) < 0.03, (member, counts, expected)


def test_children_are_one_mutation_from_their_parent() -> None:
    strategy = make(population=4, sample=3, p=0.5)
    fill(strategy, SCORES)
    genotypes = {m.trial_id: m.genotype for m in strategy.population}
    for child in offer(strategy, 4, 50):
        assert child.parent_id is not None
        parent_bits = genotypes[child.parent_id]["bits"]
        assert sum(a != b for a, b in zip(child.genotype["bits"], parent_bits, strict=True)) == 1


def test_the_worst_is_removed_not_the_oldest() -> None:
    strategy = make(population=3, sample=1)
    fill(strategy, [0.5, 0.1, 0.9])
    children = list(offer(strategy, 3, 3))
    succeed(strategy, children[0], 0.7)  # the worst (id 1, 0.1) goes; the oldest (id 0) stays
    assert ids(strategy) == [0, 2, 3]
    succeed(strategy, children[1], 0.05)  # worse than everyone: it leaves at once
    assert ids(strategy) == [0, 2, 3]
    succeed(strategy, children[2], 0.5)  # a tie for worst (ids 0 and 5): the older one goes
    assert ids(strategy) == [2, 3, 5]
    assert [m.score for m in strategy.population] == [0.9, 0.7, 0.5]


def test_mode_min_removes_the_highest_loss() -> None:
    strategy = make(population=3, sample=1, metric="loss", mode="min")
    fill(strategy, [0.5, 0.1, 0.9], metric="loss")
    (child,) = offer(strategy, 3, 1)
    succeed(strategy, child, 0.3, metric="loss")
    assert ids(strategy) == [0, 1, 3]


def test_defaults_select_as_aging_evolution_and_differ_only_in_removal() -> None:
    tournament = build_strategy("tournament", ToySpace(), 5, {"population": 4})
    aging = build_strategy("aging-evolution", ToySpace(), 5, {"population": 4})
    assert isinstance(tournament, Tournament) and isinstance(aging, AgingEvolution)
    assert (tournament.sample_size, tournament.p, tournament.replace) == (3, 1.0, True)
    for strategy in (tournament, aging):
        fill(strategy, [0.5, 0.1, 0.9, 0.3])
    children = offer(tournament, 4, 6)
    assert children == offer(aging, 4, 6)
    for strategy in (tournament, aging):
        succeed(strategy, children[0], 0.8)
    assert ids(tournament) == [0, 2, 3, 4]
    assert [m.trial_id for m in aging.population] == [1, 2, 3, 4]


def test_barrier_until_the_initial_results_arrive_and_failures_free_places() -> None:
    strategy = make(population=4)
    initial = list(offer(strategy, 0, 8))
    assert [(c.trial_id, c.parent_id) for c in initial] == [(i, None) for i in range(4)]
    assert offer(strategy, 4, 8) == []
    fail(strategy, initial[1])
    replacement = offer(strategy, 4, 8)
    assert [(c.trial_id, c.parent_id) for c in replacement] == [(4, None)]
    for candidate in [initial[0], initial[2], initial[3]]:
        succeed(strategy, candidate, 0.5)
    assert offer(strategy, 5, 8) == []
    assert not strategy.evolving
    succeed(strategy, replacement[0], 0.5)
    assert strategy.evolving
    children = offer(strategy, 5, 8)
    assert len(children) == 8
    assert {c.parent_id for c in children} <= {0, 2, 3, 4}


def test_failed_late_and_unknown_results_never_join() -> None:
    strategy = make(population=2, sample=1)
    fill(strategy, [0.3, 0.4])
    before = strategy.population
    (child,) = offer(strategy, 2, 1)
    fail(strategy, child)
    succeed(strategy, child, 0.9)  # a late success after the failure
    strategy.react(TrialSucceeded(77, {"bits": [1] * 8}, {"val_acc": 1.0}))  # never proposed
    assert strategy.population == before


def test_exactly_population_random_proposals_before_any_mutation() -> None:
    strategy = make(population=10, sample=3, p=0.5)
    sim = simulate(strategy, ToySpace(), seed=1, budget=60, capacity=4, score=toy_score)
    parents = [c.parent_id for c in sorted(sim.candidates(), key=lambda c: c.trial_id)]
    assert parents[:10] == [None] * 10
    assert None not in parents[10:]


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"p": 0}, "p must be a number in (0, 1], got 0"),
        ({"p": 1.5}, "p must be a number in (0, 1], got 1.5"),
        ({"p": -0.2}, "p must be a number in (0, 1], got -0.2"),
        ({"p": "0.5"}, "p must be a number in (0, 1], got '0.5'"),
        ({"p": True}, "p must be a number in (0, 1], got True"),
        ({"replace": "yes"}, "replace must be true or false, got 'yes'"),
        ({"replace": 1}, "replace must be true or false, got 1"),
        ({"population": 1}, "population must be an int >= 2, got 1"),
        ({"sample": 0}, "sample must be an int >= 1, got 0"),
        ({"population": 5, "sample": 6}, "sample must be <= population (5), got 6"),
        ({"size": 3}, "unknown parameter 'size' (known: population, sample, p, replace, metric,"),
    ],
)
def test_bad_parameters_are_config_errors(params: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError) as error:
        build_strategy("tournament", ToySpace(), 0, params)
    assert str(error.value).startswith("strategy 'tournament': ")
    assert message in str(error.value)


def test_an_integer_p_is_accepted() -> None:
    assert make(p=1).p == 1.0
