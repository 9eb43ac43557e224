"""The contract every registered strategy must meet, run unchanged against each entry of STRATEGIES.

:func:`simulate` plays the daemon: it offers slots with fresh consecutive ids up to a capacity
(ids the strategy leaves unused are offered again), resolves proposed trials in an order drawn from
a seeded RNG, fails some of them, and records every event with the strategy's response. The tests
then check determinism, replay equivalence (live == replayed from the log == restored from a
msgpack-round-tripped snapshot), the protocol, failure tolerance and reaching the toy optimum.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from typing import Any

import msgpack
import pytest

from nasd.core.events import Genotype, SlotsOpen, StrategyEvent, TrialFailed, TrialSucceeded
from nasd.core.space import build_space
from nasd.core.space._base import SearchSpace, canonical_json
from nasd.core.strategy import STRATEGIES, Candidate, Strategy, build_strategy

from .toy_space import OPTIMUM, ToySpace, toy_score

MAX_IDLE_OFFERS = 20
"""Empty answers in a row, with nothing outstanding, after which a strategy counts as deadlocked."""

ScoreFn = Callable[[Genotype], float]


@dataclass
class Simulation:
    """What a simulated run recorded: each event, the strategy's answer, and snapshots."""

    events: list[StrategyEvent] = field(default_factory=list)
    responses: list[tuple[Candidate, ...]] = field(default_factory=list)
    snapshots: dict[int, dict[str, Any]] = field(default_factory=dict)
    """Event index -> state_dict taken just before that event, after a msgpack round trip."""
    proposed: int = 0

    def candidates(self) -> list[Candidate]:
        """Every candidate proposed, in order."""
        return [c for response in self.responses for c in response]


def msgpack_round_trip(state: Mapping[str, Any]) -> dict[str, Any]:
    """What a snapshot looks like after the store wrote and read it back."""
    restored: dict[str, Any] = msgpack.unpackb(msgpack.packb(state), strict_map_key=True)
    return restored


def hash_score(genotype: Genotype) -> float:
    """A deterministic pseudo-random score in [0, 1] for any space's genotype."""
    digest = hashlib.sha256(canonical_json(genotype).encode()).digest()
    return int.from_bytes(digest[:4], "big") / 0xFFFFFFFF


def simulate(
    strategy: Strategy,
    space: SearchSpace,
    *,
    seed: int,
    budget: int,
    capacity: int = 4,
    fail_rate: float = 0.0,
    fail_first: int = 0,
    score: ScoreFn = hash_score,
    snapshot_at: Collection[int] = (),
) -> Simulation:
    """Drive ``strategy`` like the daemon would until ``budget`` trials were proposed and resolved.

    The first ``fail_first`` resolved trials fail, then each fails with probability ``fail_rate``.
    Raises AssertionError on a protocol violation or a deadlock (see :data:`MAX_IDLE_OFFERS`).
    """
    rng = random.Random(seed)
    sim = Simulation()
    outstanding: dict[int, Genotype] = {}
    next_id = resolved = idle_offers = 0

    def feed(event: StrategyEvent) -> tuple[Candidate, ...]:
        if len(sim.events) in snapshot_at:
            sim.snapshots[len(sim.events)] = msgpack_round_trip(strategy.state_dict())
        response = tuple(strategy.react(event))
        sim.events.append(event)
        sim.responses.append(response)
        return response

    for _ in range(50 * budget + 1000):
        if sim.proposed >= budget and not outstanding:
            return sim
        can_offer = sim.proposed < budget and len(outstanding) < capacity
        if can_offer and (not outstanding or rng.random() < 0.5):
            count = min(capacity - len(outstanding), budget - sim.proposed)
            offered = tuple(range(next_id, next_id + count))
            response = feed(SlotsOpen(offered))
            used = [c.trial_id for c in response]
            assert used == list(offered[: len(used)]), f"{used} is not a prefix of {offered}"
            outstanding.update((c.trial_id, c.genotype) for c in response)
            next_id += len(response)
            sim.proposed += len(response)
            idle_offers = idle_offers + 1 if not response and not outstanding else 0
            assert idle_offers < MAX_IDLE_OFFERS, "deadlock: nothing outstanding, nothing proposed"
        else:
            trial_id = rng.choice(sorted(outstanding))
            genotype = outstanding.pop(trial_id)
            resolved += 1
            if resolved <= fail_first or rng.random() < fail_rate:
                feed(TrialFailed(trial_id, genotype, "simulated failure"))
            else:
                metrics = {"val_acc": score(genotype), **space.cost(genotype)}
                feed(TrialSucceeded(trial_id, genotype, metrics))
    raise AssertionError(f"run did not finish: {sim.proposed} of {budget} proposed")


def replay(strategy: Strategy, events: list[StrategyEvent]) -> list[tuple[Candidate, ...]]:
    """Feed ``events`` to ``strategy``; its responses."""
    return [tuple(strategy.react(event)) for event in events]


def _nb201() -> SearchSpace:
    return build_space({"kind": "nb201"})


SPACES: dict[str, tuple[Callable[[], SearchSpace], ScoreFn]] = {
    "toy": (ToySpace, toy_score),
    "nb201": (_nb201, hash_score),
}


@pytest.fixture(params=sorted(STRATEGIES))
def strategy_name(request: pytest.FixtureRequest) -> str:
    """Each registered strategy in turn."""
    name: str = request.param
    return name


@pytest.fixture(params=sorted(SPACES))
def space_case(request: pytest.FixtureRequest) -> tuple[SearchSpace, ScoreFn]:
    """Each test space with the score function its simulated trials report."""
    factory, score = SPACES[request.param]
    return factory(), score


def test_same_seed_same_events_same_candidates(
    strategy_name: str, space_case: tuple[SearchSpace, ScoreFn]
) -> None:
    space, score = space_case
    runs = [
        simulate(
            build_strategy(strategy_name, space, 7, {}),
            space,
            seed=3,
            budget=80,
            fail_rate=0.1,
            score=score,
        )
        for _ in range(2)
    ]
    assert runs[0].events == runs[1].events
    assert runs[0].responses == runs[1].responses
    assert runs[0].proposed == 80


def test_the_seed_is_used(strategy_name: str, space_case: tuple[SearchSpace, ScoreFn]) -> None:
    space, score = space_case
    genotypes = [
        [c.genotype for c in simulate(s, space, seed=3, budget=40, score=score).candidates()]
        for s in (build_strategy(strategy_name, space, seed, {}) for seed in (1, 2))
    ]
    assert genotypes[0] != genotypes[1]


def test_live_replayed_and_restored_agree(
    strategy_name: str, space_case: tuple[SearchSpace, ScoreFn]
) -> None:
    space, score = space_case
    snapshot_at = {0, 1, 5, 17, 60, 150, 301}
    live = build_strategy(strategy_name, space, 11, {})
    sim = simulate(
        live, space, seed=5, budget=200, fail_rate=0.2, score=score, snapshot_at=snapshot_at
    )
    assert sim.snapshots.keys() == snapshot_at

    assert replay(build_strategy(strategy_name, space, 11, {}), sim.events) == sim.responses

    for index, snapshot in sorted(sim.snapshots.items()):
        # A different seed: the snapshot alone must carry all randomness forward.
        restored = build_strategy(strategy_name, space, 999, {})
        restored.load_state_dict(snapshot)
        window = slice(index, index + 50)
        assert replay(restored, sim.events[window]) == sim.responses[window], f"event {index}"
        assert msgpack_round_trip(restored.state_dict()) == msgpack_round_trip(
            _state_after(strategy_name, space, sim.events[: window.stop])
        )


def _state_after(name: str, space: SearchSpace, events: list[StrategyEvent]) -> dict[str, Any]:
    strategy = build_strategy(name, space, 11, {})
    replay(strategy, events)
    return strategy.state_dict()


def test_protocol(strategy_name: str, space_case: tuple[SearchSpace, ScoreFn]) -> None:
    space, score = space_case
    sim = simulate(
        build_strategy(strategy_name, space, 2, {}),
        space,
        seed=9,
        budget=150,
        capacity=6,
        fail_rate=0.2,
        score=score,
    )
    succeeded: set[int] = set()
    proposed: set[int] = set()
    for event, response in zip(sim.events, sim.responses, strict=True):
        if isinstance(event, SlotsOpen):
            assert [c.trial_id for c in response] == list(event.trial_ids[: len(response)])
            for candidate in response:
                space.validate(candidate.genotype)
                assert candidate.parent_id is None or candidate.parent_id in succeeded
                assert candidate.budget is None or candidate.budget >= 1
                proposed.add(candidate.trial_id)
        else:
            assert response == ()
            assert event.trial_id in proposed
            if isinstance(event, TrialSucceeded):
                succeeded.add(event.trial_id)
    assert sim.proposed == 150 == len(proposed)


@pytest.mark.parametrize(("fail_rate", "fail_first"), [(0.3, 0), (0.3, 25), (0.9, 0)])
def test_failures_never_deadlock(
    strategy_name: str, space_case: tuple[SearchSpace, ScoreFn], fail_rate: float, fail_first: int
) -> None:
    space, score = space_case
    for seed in range(3):
        strategy = build_strategy(strategy_name, space, seed, {})
        sim = simulate(
            strategy,
            space,
            seed=seed,
            budget=200,
            fail_rate=fail_rate,
            fail_first=fail_first,
            score=score,
        )
        assert sim.proposed == 200
        assert sum(isinstance(e, TrialFailed) for e in sim.events) >= fail_first


TOY_BUDGET = 1000
"""Enough for random search, the weakest strategy: it misses the one optimum among 256 genotypes
in 1000 independent draws with probability (255/256)**1000 ~ 2 %, so 4 of 5 seeds is near certain.
(At 300 draws it would miss with probability 31 % per seed.)"""


def test_reaches_the_toy_optimum(strategy_name: str) -> None:
    space = ToySpace()
    found = 0
    for seed in range(5):
        strategy = build_strategy(strategy_name, space, seed, {})
        sim = simulate(strategy, space, seed=seed, budget=TOY_BUDGET, score=toy_score)
        found += any(c.genotype == OPTIMUM for c in sim.candidates())
    assert found >= 4
