"""The contract every registered strategy must meet, run unchanged against each entry of STRATEGIES.

:func:`simulate` plays the daemon: it offers slots with fresh consecutive ids up to a capacity
(ids the strategy leaves unused are offered again), resolves proposed trials in an order drawn from
a seeded RNG, fails some of them, and records every event with the strategy's response. With
``outage_rate`` it also plays agents that vanish: every trial in flight fails at once (their leases
ran out and their attempts are used up), capacity drops and comes back one agent at a time, and
offers shrink below the free capacity. The tests then check determinism, replay equivalence (live ==
replayed from the log == restored from a msgpack-round-tripped snapshot, across outages too), the
protocol, failure tolerance (failed trials, failed would-be parents, vanished agents: no barrier may
deadlock) and reaching the toy optimum, with and without failures.

Every registered strategy runs with its defaults, plus the parameter sets in :data:`VARIANTS`, over
every space in :data:`SPACES`; a strategy registered later joins automatically.
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

VANISHED = "agent vanished"
"""The failure reason of trials lost in a simulated outage."""

ScoreFn = Callable[[Genotype], float]


@dataclass
class Simulation:
    """What a simulated run recorded: each event, the strategy's answer, and snapshots."""

    events: list[StrategyEvent] = field(default_factory=list)
    responses: list[tuple[Candidate, ...]] = field(default_factory=list)
    snapshots: dict[int, dict[str, Any]] = field(default_factory=dict)
    """Event index -> state_dict taken just before that event, after a msgpack round trip."""
    proposed: int = 0
    outages: int = 0

    def candidates(self) -> list[Candidate]:
        """Every candidate proposed, in order."""
        return [c for response in self.responses for c in response]

    def failures(self, reason: str | None = None) -> int:
        """How many trials failed (only those failed with ``reason`` when given)."""
        return sum(
            isinstance(e, TrialFailed) and (reason is None or e.reason == reason)
            for e in self.events
        )


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
    outage_rate: float = 0.0,
    score: ScoreFn = hash_score,
    snapshot_at: Collection[int] = (),
) -> Simulation:
    """Drive ``strategy`` like the daemon would until ``budget`` trials were proposed and resolved.

    The first ``fail_first`` resolved trials fail, then each fails with probability ``fail_rate``.
    Before each step, with probability ``outage_rate`` (when trials are in flight) the agents
    vanish: all outstanding trials fail at once in a random order with reason :data:`VANISHED`, and
    the capacity drops to a random 1..``capacity``; it then grows back by one with probability 1/4
    at each offer, and each offer covers a random 1..free ids. Without outages the RNG stream is
    exactly what it was before outages existed, so seeded runs elsewhere keep their meaning.
    Raises AssertionError on a protocol violation or a deadlock (see :data:`MAX_IDLE_OFFERS`).
    """
    rng = random.Random(seed)
    sim = Simulation()
    outstanding: dict[int, Genotype] = {}
    next_id = resolved = idle_offers = 0
    live_capacity = capacity

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
        if outage_rate and outstanding and rng.random() < outage_rate:
            lost = sorted(outstanding)
            rng.shuffle(lost)
            for trial_id in lost:
                feed(TrialFailed(trial_id, outstanding.pop(trial_id), VANISHED))
            resolved += len(lost)
            live_capacity = rng.randint(1, capacity)
            sim.outages += 1
            continue
        can_offer = sim.proposed < budget and len(outstanding) < live_capacity
        if can_offer and (not outstanding or rng.random() < 0.5):
            count = min(live_capacity - len(outstanding), budget - sim.proposed)
            if outage_rate:
                count = rng.randint(1, count)
                if live_capacity < capacity and rng.random() < 0.25:
                    live_capacity += 1
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


def _cnn() -> SearchSpace:
    return build_space(
        {
            "kind": "cnn",
            "input_shape": [1, 40],
            "num_classes": 10,
            "min_layers": 1,
            "max_layers": 4,
            "kernels": [3, 5],
            "filters": [16, 32],
            "strides": [1, 2],
            "pools": ["none", "max"],
            "skips": True,
        }
    )


def _hparams() -> SearchSpace:
    return build_space(
        {
            "kind": "hparams",
            "params": {
                "optimizer": {"type": "categorical", "choices": ["sgd", "adam"]},
                "lr": {"type": "loguniform", "low": 1e-4, "high": 1.0},
                "momentum": {
                    "type": "uniform",
                    "low": 0.0,
                    "high": 0.99,
                    "condition": {"param": "optimizer", "in": ["sgd"]},
                },
                "layers": {"type": "int", "low": 1, "high": 4},
            },
        }
    )


SPACES: dict[str, tuple[Callable[[], SearchSpace], ScoreFn]] = {
    "toy": (ToySpace, toy_score),
    "nb201": (_nb201, hash_score),
    "cnn": (_cnn, hash_score),
    "hparams": (_hparams, hash_score),
}
"""The spaces every strategy runs over: the toy one, and one of each kind the strategies serve."""


@dataclass(frozen=True)
class StrategyCase:
    """A registered strategy with one set of parameters."""

    name: str
    params: Mapping[str, Any] = field(default_factory=dict)

    def build(self, space: SearchSpace, seed: int) -> Strategy:
        """The strategy over ``space`` with ``random.Random(seed)``, built as the daemon does."""
        return build_strategy(self.name, space, seed, dict(self.params))

    @property
    def id(self) -> str:
        """The pytest id: the name, then the non-default parameters."""
        return "-".join([self.name, *(f"{k}={v}" for k, v in sorted(self.params.items()))])


VARIANTS: dict[str, list[dict[str, Any]]] = {
    "aging-evolution": [{"population": 3, "sample": 3}],
    "tournament": [{"p": 0.5, "replace": False}, {"population": 3, "sample": 2, "p": 0.7}],
}
"""Non-default parameters worth a contract run of their own (small populations stress barriers)."""

CASES = [StrategyCase(name) for name in sorted(STRATEGIES)] + [
    StrategyCase(name, params)
    for name, variants in sorted(VARIANTS.items())
    if name in STRATEGIES
    for params in variants
]


@pytest.fixture(params=CASES, ids=[case.id for case in CASES])
def case(request: pytest.FixtureRequest) -> StrategyCase:
    """Each registered strategy in turn, with its defaults and then each of its variants."""
    chosen: StrategyCase = request.param
    return chosen


@pytest.fixture(params=sorted(SPACES))
def space_case(request: pytest.FixtureRequest) -> tuple[SearchSpace, ScoreFn]:
    """Each test space with the score function its simulated trials report."""
    factory, score = SPACES[request.param]
    return factory(), score


def test_every_registered_strategy_is_a_case() -> None:
    assert {c.name for c in CASES} == set(STRATEGIES)
    assert set(VARIANTS) <= set(STRATEGIES), "a variant names a strategy that is not registered"


def test_same_seed_same_events_same_candidates(
    case: StrategyCase, space_case: tuple[SearchSpace, ScoreFn]
) -> None:
    space, score = space_case
    runs = [
        simulate(case.build(space, 7), space, seed=3, budget=80, fail_rate=0.1, score=score)
        for _ in range(2)
    ]
    assert runs[0].events == runs[1].events
    assert runs[0].responses == runs[1].responses
    assert runs[0].proposed == 80


def test_the_seed_is_used(case: StrategyCase, space_case: tuple[SearchSpace, ScoreFn]) -> None:
    space, score = space_case
    genotypes = [
        [c.genotype for c in simulate(s, space, seed=3, budget=40, score=score).candidates()]
        for s in (case.build(space, seed) for seed in (1, 2))
    ]
    assert genotypes[0] != genotypes[1]


@pytest.mark.parametrize(
    ("fail_rate", "outage_rate"), [(0.2, 0.0), (0.1, 0.08)], ids=["failures", "outages"]
)
def test_live_replayed_and_restored_agree(
    case: StrategyCase,
    space_case: tuple[SearchSpace, ScoreFn],
    fail_rate: float,
    outage_rate: float,
) -> None:
    space, score = space_case
    snapshot_at = {0, 1, 5, 17, 60, 150, 301}
    sim = simulate(
        case.build(space, 11),
        space,
        seed=5,
        budget=200,
        fail_rate=fail_rate,
        outage_rate=outage_rate,
        score=score,
        snapshot_at=snapshot_at,
    )
    assert sim.snapshots.keys() == snapshot_at
    assert (sim.outages > 0) == (outage_rate > 0)

    assert replay(case.build(space, 11), sim.events) == sim.responses

    for index, snapshot in sorted(sim.snapshots.items()):
        # A different seed: the snapshot alone must carry all randomness forward.
        restored = case.build(space, 999)
        restored.load_state_dict(snapshot)
        window = slice(index, index + 50)
        assert replay(restored, sim.events[window]) == sim.responses[window], f"event {index}"
        assert msgpack_round_trip(restored.state_dict()) == msgpack_round_trip(
            _state_after(case, space, sim.events[: window.stop])
        )


def _state_after(case: StrategyCase, space: SearchSpace, events: list[StrategyEvent]) -> Any:
    strategy = case.build(space, 11)
    replay(strategy, events)
    return strategy.state_dict()


def check_protocol(sim: Simulation, space: SearchSpace) -> None:
    """Offered ids only (a prefix), valid genotypes, parents that succeeded, no other answers."""
    succeeded: set[int] = set()
    proposed: set[int] = set()
    for event, response in zip(sim.events, sim.responses, strict=True):
        if isinstance(event, SlotsOpen):
            assert [c.trial_id for c in response] == list(event.trial_ids[: len(response)])
            for candidate in response:
                space.validate(candidate.genotype)
                assert candidate.parent_id is None or candidate.parent_id in succeeded
                assert candidate.budget is None or candidate.budget >= 1
                assert candidate.trial_id not in proposed
                proposed.add(candidate.trial_id)
        else:
            assert response == ()
            assert event.trial_id in proposed
            if isinstance(event, TrialSucceeded):
                succeeded.add(event.trial_id)
    assert sim.proposed == len(proposed)


def test_protocol(case: StrategyCase, space_case: tuple[SearchSpace, ScoreFn]) -> None:
    space, score = space_case
    sim = simulate(
        case.build(space, 2), space, seed=9, budget=150, capacity=6, fail_rate=0.2, score=score
    )
    check_protocol(sim, space)
    assert sim.proposed == 150


@pytest.mark.parametrize(
    ("fail_rate", "fail_first", "capacity"),
    [(0.3, 0, 4), (0.3, 25, 4), (0.9, 0, 4), (0.0, 60, 16), (0.5, 0, 1)],
)
def test_failures_never_deadlock(
    case: StrategyCase,
    space_case: tuple[SearchSpace, ScoreFn],
    fail_rate: float,
    fail_first: int,
    capacity: int,
) -> None:
    # fail_first=60 at capacity 16: every would-be parent of the first generations fails.
    space, score = space_case
    for seed in range(3):
        sim = simulate(
            case.build(space, seed),
            space,
            seed=seed,
            budget=200,
            capacity=capacity,
            fail_rate=fail_rate,
            fail_first=fail_first,
            score=score,
        )
        assert sim.proposed == 200
        assert sim.failures() >= fail_first


@pytest.mark.parametrize(("outage_rate", "capacity"), [(0.05, 4), (0.2, 8), (0.3, 16)])
def test_vanishing_agents_never_deadlock(
    case: StrategyCase, space_case: tuple[SearchSpace, ScoreFn], outage_rate: float, capacity: int
) -> None:
    space, score = space_case
    for seed in range(3):
        sim = simulate(
            case.build(space, seed),
            space,
            seed=seed,
            budget=200,
            capacity=capacity,
            fail_rate=0.1,
            outage_rate=outage_rate,
            score=score,
        )
        check_protocol(sim, space)
        assert sim.proposed == 200
        assert sim.outages >= 3
        assert sim.failures(VANISHED) >= sim.outages


TOY_BUDGET = 1000
"""Enough for random search, the weakest strategy: it misses the one optimum among 256 genotypes
in 1000 independent draws with probability (255/256)**1000 ~ 2 %, so 4 of 5 seeds is near certain.
(At 300 draws it would miss with probability 31 % per seed.)"""

TOY_BUDGETS: dict[str, int] = {
    "random": TOY_BUDGET,
    "aging-evolution": 300,
    "tournament": 300,
    "reinforce": TOY_BUDGET,
    "reinforce-factorized": TOY_BUDGET,
}
"""Trials each strategy gets to propose the toy optimum; a strategy not listed gets TOY_BUDGET.

Evolution climbs the toy's one-bit-flip gradient, so 300 trials are plenty (P=10, S=3: a few dozen
improving mutations). A learned policy gets random search's budget: before it has learned anything
it samples about as random search does, and learning moves probability towards more ones, so it
can only do better; a stricter learning test lives with the strategy's own unit tests."""


@pytest.mark.parametrize(("fail_rate", "outage_rate"), [(0.0, 0.0), (0.2, 0.03)])
def test_reaches_the_toy_optimum(case: StrategyCase, fail_rate: float, outage_rate: float) -> None:
    space = ToySpace()
    budget = TOY_BUDGETS.get(case.name, TOY_BUDGET)
    found = 0
    for seed in range(5):
        sim = simulate(
            case.build(space, seed),
            space,
            seed=seed,
            budget=budget,
            fail_rate=fail_rate,
            outage_rate=outage_rate,
            score=toy_score,
        )
        found += any(c.genotype == OPTIMUM for c in sim.candidates())
    assert found >= 4, f"{case.id}: optimum proposed in {found} of 5 runs of {budget} trials"
