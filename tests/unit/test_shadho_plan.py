"""SHADHO's assignment: models to compute classes, credits per class, jobs to agents.

Covers the three pure steps of :mod:`nasd.core.scheduler.shadho` with hand-made cases (classes
appearing and disappearing, memory fit, big jobs on fast agents) and Hypothesis properties: no
agent is ever over its credits or free memory, and every job that fits some agent is placed
within a bounded number of plan-and-finish rounds.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nasd.core.scheduler import (
    AgentCapacity,
    AgentTiming,
    JobDemand,
    ModelView,
    Plan,
    assign_models,
    fits_anywhere,
    keep_off_stragglers,
    plan_assignments,
    rank_models,
    share_credits,
)

GIB = 2**30


def agent(
    name: str,
    free: int = 1,
    *,
    klass: str = "",
    speed: float = 1.0,
    memory: int | None = None,
    trainers: frozenset[str] | None = None,
) -> AgentCapacity:
    """An online agent with ``free`` credits (keyword arguments for readability)."""
    return AgentCapacity(
        name, free, trainers=trainers, klass=klass, speed=speed, free_memory=memory
    )


def job(
    job_id: str,
    model: str = "m",
    *,
    flops: float = 0.0,
    memory: int | None = None,
    trainer: str | None = None,
) -> JobDemand:
    """A pending job of ``model``."""
    return JobDemand(job_id, model, trainer, memory, flops)


def placed_on(plan: Plan) -> dict[str, str]:
    """The plan as job -> agent."""
    return dict(plan.pairs)


# -- rank_models -----------------------------------------------------------------------------------


def test_models_rank_by_the_sum_of_complexity_and_priority_ranks() -> None:
    models = [
        ModelView("complex-steady", 40.0, 1.0),
        ModelView("varied", 30.0, 50.0),
        ModelView("middle", 20.0, 10.0),
        ModelView("simple-steady", 1.0, 0.5),
    ]
    # complexity ranks 0, 1, 2, 3; priority ranks 2, 0, 1, 3: sums 2, 1, 3, 6
    ranked = [m.name for m in rank_models(models)]
    assert ranked == ["varied", "complex-steady", "middle", "simple-steady"]


def test_an_unmeasured_model_ranks_as_the_highest_priority() -> None:
    models = [ModelView("a", 9.0, 1.0), ModelView("new", 5.0, None), ModelView("b", 1.0, 100.0)]
    # complexity ranks a 0, new 1, b 2; priority ranks new 0, b 1, a 2
    assert [m.name for m in rank_models(models)] == ["new", "a", "b"]


def test_with_equal_complexity_the_higher_priority_ranks_first() -> None:
    """Equal complexities must share a rank: the name must not stand in for complexity."""
    unmeasured = [ModelView("measured", 5.0, 1e6), ModelView("new", 5.0, None)]
    assert [m.name for m in rank_models(unmeasured)] == ["new", "measured"]
    rival = [ModelView("steady", 5.0, 0.01), ModelView("varied", 5.0, 3.0)]
    assert [m.name for m in rank_models(rival)] == ["varied", "steady"]
    assert assign_models(rival, {"fast": 2.0, "slow": 1.0}) == {
        "varied": ("fast",),
        "steady": ("slow",),
    }
    # and equal priorities likewise: the more complex model first
    same_priority = [ModelView("a-simple", 2.0, 1.0), ModelView("z-complex", 8.0, 1.0)]
    assert [m.name for m in rank_models(same_priority)] == ["z-complex", "a-simple"]


def test_rank_ties_go_by_complexity_then_name() -> None:
    # a: ranks (0 complexity, 1 priority); b: ranks (1, 0): a tie broken by complexity
    models = [ModelView("b", 1.0, 2.0), ModelView("a", 3.0, 1.0)]
    assert [m.name for m in rank_models(models)] == ["a", "b"]
    same = [ModelView("y", 1.0, 1.0), ModelView("x", 1.0, 1.0)]
    assert [m.name for m in rank_models(same)] == ["x", "y"]
    assert rank_models([]) == []


# -- assign_models ---------------------------------------------------------------------------------

SPEEDS = {"h200": 100.0, "a100": 60.0, "v100": 20.0, "cpu": 1.0}


def test_one_model_gets_every_class_fastest_first() -> None:
    three = {"cpu": 1.0, "h200": 100.0, "v100": 20.0}
    assert assign_models([ModelView("only", 3.0)], three) == {"only": ("h200", "v100", "cpu")}


def test_three_models_share_one_class() -> None:
    models = [ModelView(n, c) for n, c in (("a", 1.0), ("b", 9.0), ("c", 4.0))]
    assert assign_models(models, {"gpu": 5.0}) == {"a": ("gpu",), "b": ("gpu",), "c": ("gpu",)}


def test_two_models_and_four_classes_get_two_each_the_strongest_to_the_fastest() -> None:
    models = [ModelView("small", 1.5, 0.5), ModelView("big", 30.0, 5.0)]
    assert assign_models(models, SPEEDS) == {
        "big": ("h200", "a100"),
        "small": ("v100", "cpu"),
    }


def test_the_most_complex_model_goes_to_the_fastest_class() -> None:
    models = [ModelView(f"m{c}", float(c), 1.0) for c in (1, 5, 3)]
    plan = assign_models(models, SPEEDS)
    assert plan["m5"][0] == "h200"
    assert "cpu" in plan["m1"]  # the simplest gets the slowest


def test_more_models_than_classes_cut_the_models_into_runs_per_class() -> None:
    models = [ModelView(f"m{i}", float(10 - i), None) for i in range(5)]  # m0 strongest
    plan = assign_models(models, {"fast": 3.0, "slow": 1.0})
    assert plan == {
        "m0": ("fast",),
        "m1": ("fast",),
        "m2": ("fast",),
        "m3": ("slow",),
        "m4": ("slow",),
    }


def test_no_models_or_no_classes_give_no_assignment() -> None:
    assert assign_models([], SPEEDS) == {}
    assert assign_models([ModelView("a", 1.0)], {}) == {}


def test_assignment_follows_classes_appearing_and_disappearing() -> None:
    models = [ModelView("unet", 20.0, 2.0), ModelView("cnn", 3.0, 1.0)]
    before = assign_models(models, {"v100": 20.0, "cpu": 1.0})
    assert before == {"unet": ("v100",), "cnn": ("cpu",)}
    # a faster class appears: the stronger model gets it
    grown = assign_models(models, {"v100": 20.0, "cpu": 1.0, "h200": 100.0})
    assert grown["unet"][0] == "h200"
    assert set(grown["unet"]) | set(grown["cnn"]) == {"h200", "v100", "cpu"}
    # the fast classes disappear: both models still get a class, only ones that exist
    shrunk = assign_models(models, {"cpu": 1.0})
    assert shrunk == {"unet": ("cpu",), "cnn": ("cpu",)}
    # and come back: the same assignment as before
    assert assign_models(models, {"v100": 20.0, "cpu": 1.0}) == before


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.tuples(st.floats(1.0, 100.0), st.one_of(st.none(), st.floats(0.0, 100.0))),
        min_size=1,
        max_size=8,
    ),
    st.dictionaries(st.text("abcdef", min_size=1, max_size=3), st.floats(0.0, 1e12), max_size=8),
)
def test_every_model_gets_a_class_and_every_class_a_model(
    specs: list[tuple[float, float | None]], speeds: dict[str, float]
) -> None:
    models = [ModelView(f"m{i}", c, p) for i, (c, p) in enumerate(specs)]
    plan = assign_models(models, speeds)
    if not speeds:
        assert plan == {}
        return
    assert set(plan) == {m.name for m in models}
    assert all(len(classes) >= 1 for classes in plan.values())
    assert {c for classes in plan.values() for c in classes} == set(speeds)
    for classes in plan.values():
        assert set(classes) <= set(speeds)
        assert [speeds[c] for c in classes] == sorted((speeds[c] for c in classes), reverse=True)
    if len(speeds) >= 2 * len(models):
        assert all(len(classes) >= 2 for classes in plan.values())
    if len(speeds) >= len(models):  # classes are not shared then
        counts = Counter(c for classes in plan.values() for c in classes)
        assert set(counts.values()) == {1}
    best = rank_models(models)[0].name
    assert min(speeds, key=lambda c: (-speeds[c], c)) in plan[best]  # the fastest class


# -- share_credits ---------------------------------------------------------------------------------


def test_free_slots_of_a_class_are_split_among_its_models_in_rank_order() -> None:
    classes = {"a": ("gpu",), "b": ("gpu",), "c": ("cpu",)}
    offers = share_credits({"gpu": 5, "cpu": 2}, classes, ["a", "b", "c"], {})
    assert offers == {"a": 3, "b": 2, "c": 2}


def test_waiting_jobs_reduce_a_model_s_offer() -> None:
    classes = {"a": ("gpu",), "b": ("gpu",)}
    assert share_credits({"gpu": 4}, classes, ["a", "b"], {"a": 1}) == {"a": 1, "b": 2}
    # pending over the share: nothing for that model, and the total stays within the room
    assert share_credits({"gpu": 4}, classes, ["a", "b"], {"a": 3}) == {"b": 1}
    assert share_credits({"gpu": 2}, classes, ["a", "b"], {"a": 3}) == {}


def test_a_class_without_wanting_models_gives_its_slots_to_the_others() -> None:
    classes = {"a": ("fast",), "done": ("slow",)}
    # "done" has spent its budget: the slow class's 3 slots go to "a" too
    assert share_credits({"fast": 2, "slow": 3}, classes, ["a"], {}) == {"a": 5}
    # a class nobody is assigned to (it just appeared) is not left idle either
    assert share_credits({"new": 2}, {"a": ("old",), "b": ("old",)}, ["a", "b"], {}) == {
        "a": 1,
        "b": 1,
    }


def test_nothing_free_or_nobody_wanting_gives_no_offers() -> None:
    assert share_credits({}, {"a": ("gpu",)}, ["a"], {}) == {}
    assert share_credits({"gpu": 0}, {"a": ("gpu",)}, ["a"], {}) == {}
    assert share_credits({"gpu": 3}, {"a": ("gpu",)}, [], {}) == {}


def test_jobs_waiting_for_a_model_that_is_not_asking_still_count_against_the_room() -> None:
    classes = {"a": ("gpu",), "b": ("gpu",)}
    assert share_credits({"gpu": 4}, classes, ["a"], {"b": 3}) == {"a": 1}


@settings(max_examples=200, deadline=None)
@given(
    st.dictionaries(st.sampled_from("wxyz"), st.integers(-2, 12), max_size=4),
    st.dictionaries(
        st.sampled_from(["m0", "m1", "m2", "m3", "m4"]),
        st.lists(st.sampled_from("wxyzq"), max_size=4, unique=True),
        max_size=5,
    ),
    st.lists(st.sampled_from(["m0", "m1", "m2", "m3", "m4"]), unique=True, max_size=5),
    st.dictionaries(st.sampled_from(["m0", "m1", "m2", "m3", "m4"]), st.integers(0, 8)),
)
def test_offers_never_exceed_free_slots_minus_waiting_jobs(
    free: dict[str, int],
    classes: dict[str, list[str]],
    wanting: list[str],
    pending: dict[str, int],
) -> None:
    offers = share_credits(free, classes, wanting, pending)
    room = sum(max(0, f) for f in free.values()) - sum(pending.values())
    assert sum(offers.values()) <= max(0, room)
    assert set(offers) <= set(wanting)
    assert all(o > 0 for o in offers.values())
    if wanting:  # no free slot idles while some model asks for work
        assert sum(offers.values()) == max(0, room)


# -- plan_assignments: classes and speed -----------------------------------------------------------


def test_big_jobs_go_to_fast_agents() -> None:
    agents = [agent("slow", speed=1.0), agent("fast", speed=10.0), agent("mid", speed=5.0)]
    jobs = [job("small", flops=1e6), job("huge", flops=1e12), job("medium", flops=1e9)]
    plan = plan_assignments(jobs, agents)
    assert placed_on(plan) == {"huge": "fast", "medium": "mid", "small": "slow"}
    assert plan.waiting == []


def test_equal_jobs_keep_the_queue_order() -> None:
    plan = plan_assignments([job("j2"), job("j0"), job("j1")], [agent("a", 2, speed=2.0)])
    assert plan.pairs == [("j2", "a"), ("j0", "a")]
    assert plan.waiting == ["j1"]


def test_an_agent_takes_its_own_class_s_models_first() -> None:
    agents = [agent("h", klass="fast", speed=10.0), agent("c", klass="slow", speed=1.0)]
    classes = {"unet": ("fast",), "cnn": ("slow",)}
    # the cnn job is bigger, but belongs to the slow class
    jobs = [job("cnn-1", "cnn", flops=1e12), job("unet-1", "unet", flops=1e9)]
    plan = plan_assignments(jobs, agents, classes)
    assert placed_on(plan) == {"unet-1": "h", "cnn-1": "c"}


def test_an_agent_whose_class_has_no_work_helps_another_class() -> None:
    agents = [agent("h", 2, klass="fast", speed=10.0), agent("c", klass="slow", speed=1.0)]
    classes = {"unet": ("fast",), "cnn": ("slow",)}
    jobs = [job("cnn-1", "cnn"), job("cnn-2", "cnn"), job("cnn-3", "cnn")]
    plan = plan_assignments(jobs, agents, classes)
    assert sorted(a for _, a in plan.pairs) == ["c", "h", "h"]
    assert plan.waiting == []


def test_a_model_without_an_assignment_may_run_anywhere() -> None:
    agents = [agent("h", klass="fast", speed=10.0)]
    plan = plan_assignments([job("j", "unassigned")], agents, {"other": ("slow",)})
    assert plan.pairs == [("j", "h")]


def test_credits_bound_the_plan_and_full_agents_get_nothing() -> None:
    agents = [agent("a", 2, speed=3.0), agent("b", 0, speed=9.0), agent("c", -1, speed=9.0)]
    jobs = [job(f"j{i}") for i in range(5)]
    plan = plan_assignments(jobs, agents)
    assert Counter(a for _, a in plan.pairs) == {"a": 2}
    assert plan.waiting == ["j2", "j3", "j4"]
    assert plan_assignments([], agents) == Plan([], [])
    assert plan_assignments(jobs, []).waiting == [j.job_id for j in jobs]


def test_jobs_go_only_to_agents_that_run_their_trainer() -> None:
    agents = [
        agent("gpu", 2, speed=9.0, trainers=frozenset({"unet"})),
        agent("cpu", 2, speed=1.0, trainers=frozenset({"mnist1d", "unet"})),
        agent("any", 0, speed=99.0),
    ]
    jobs = [
        job("m1", trainer="mnist1d", flops=9.0),
        job("u1", trainer="unet", flops=1.0),
        job("x1", trainer="nobody"),
        job("m2", trainer="mnist1d", flops=8.0),
    ]
    plan = plan_assignments(jobs, agents)
    assert placed_on(plan) == {"m1": "cpu", "m2": "cpu", "u1": "gpu"}
    assert plan.waiting == ["x1"]


# -- plan_assignments: memory fit ------------------------------------------------------------------


def test_a_large_job_goes_to_the_agent_that_can_hold_it() -> None:
    agents = [
        agent("fast-small", speed=10.0, memory=8 * GIB),
        agent("slow-big", speed=1.0, memory=80 * GIB),
    ]
    plan = plan_assignments([job("large", memory=40 * GIB, flops=1e12)], agents)
    assert plan.pairs == [("large", "slow-big")]


def test_a_large_job_waits_for_the_agent_that_can_hold_it() -> None:
    small = agent("small", speed=10.0, memory=8 * GIB)
    big_busy = agent("big", 0, speed=1.0, memory=80 * GIB)
    plan = plan_assignments([job("large", memory=40 * GIB)], [small, big_busy])
    assert plan == Plan([], ["large"])  # never on the agent that cannot hold it
    freed = agent("big", 1, speed=1.0, memory=80 * GIB)
    assert plan_assignments([job("large", memory=40 * GIB)], [small, freed]).pairs == [
        ("large", "big")
    ]


def test_a_large_job_does_not_block_the_small_ones_behind_it() -> None:
    agents = [agent("small", 2, speed=10.0, memory=8 * GIB)]
    jobs = [job("large", memory=40 * GIB, flops=1e12), job("s1", memory=GIB), job("s2")]
    plan = plan_assignments(jobs, agents)
    assert placed_on(plan) == {"s1": "small", "s2": "small"}
    assert plan.waiting == ["large"]


def test_two_jobs_that_fit_only_one_at_a_time_go_to_different_agents_or_wait() -> None:
    jobs = [job("j0", memory=6 * GIB), job("j1", memory=6 * GIB)]
    alone = [agent("a", 4, speed=5.0, memory=10 * GIB)]
    plan = plan_assignments(jobs, alone)
    assert len(plan.pairs) == 1 and len(plan.waiting) == 1
    pair = [*alone, agent("b", 4, speed=1.0, memory=10 * GIB)]
    assert sorted(a for _, a in plan_assignments(jobs, pair).pairs) == ["a", "b"]


def test_memory_already_in_use_is_not_counted_as_free() -> None:
    agents = [agent("a", 3, speed=5.0, memory=10 * GIB)]
    jobs = [job("j0", memory=4 * GIB), job("j1", memory=4 * GIB), job("j2", memory=4 * GIB)]
    plan = plan_assignments(jobs, agents)
    assert [j for j, _ in plan.pairs] == ["j0", "j1"]
    assert plan.waiting == ["j2"]


def test_unknown_memory_on_either_side_sets_no_limit() -> None:
    unknown_agent = [agent("a", 2, memory=None)]
    plan = plan_assignments([job("j0", memory=10**15), job("j1", memory=10**15)], unknown_agent)
    assert len(plan.pairs) == 2
    tiny_agent = [agent("a", 2, memory=1)]
    assert len(plan_assignments([job("j0"), job("j1")], tiny_agent).pairs) == 2


def test_memory_fit_beats_class_preference() -> None:
    agents = [
        agent("h", klass="fast", speed=10.0, memory=4 * GIB),
        agent("c", klass="slow", speed=1.0, memory=64 * GIB),
    ]
    classes = {"unet": ("fast",)}
    plan = plan_assignments([job("u", "unet", memory=16 * GIB)], agents, classes)
    assert plan.pairs == [("u", "c")]


def test_fits_anywhere_compares_with_each_agent_s_total_memory() -> None:
    assert fits_anywhere(None, [])
    assert fits_anywhere(None, [1])
    assert fits_anywhere(8 * GIB, [4 * GIB, 8 * GIB])
    assert not fits_anywhere(8 * GIB + 1, [4 * GIB, 8 * GIB])
    assert not fits_anywhere(1, [])


# -- Hypothesis properties -------------------------------------------------------------------------

CLASSES = ("c0", "c1", "c2")
TRAINERS = ("t0", "t1", "t2")
MODELS = ("m0", "m1", "m2")

agents_strategy = st.lists(
    st.builds(
        AgentCapacity,
        name=st.just(""),  # replaced by a unique name below
        free=st.integers(-1, 4),
        trainers=st.one_of(st.none(), st.frozensets(st.sampled_from(TRAINERS), max_size=3)),
        klass=st.sampled_from(CLASSES),
        speed=st.floats(0.0, 1e12),
        free_memory=st.one_of(st.none(), st.integers(0, 64)),
    ),
    max_size=6,
)
jobs_strategy = st.lists(
    st.builds(
        JobDemand,
        job_id=st.just(""),  # replaced by a unique id below
        model=st.sampled_from(MODELS),
        trainer=st.one_of(st.none(), st.sampled_from(TRAINERS)),
        memory=st.one_of(st.none(), st.integers(0, 80)),
        flops=st.floats(0.0, 1e15),
    ),
    max_size=25,
)
model_classes_strategy = st.dictionaries(
    st.sampled_from(MODELS), st.lists(st.sampled_from(CLASSES), unique=True, max_size=3)
)


def named(
    agents: Sequence[AgentCapacity], jobs: Sequence[JobDemand]
) -> tuple[list[AgentCapacity], list[JobDemand]]:
    """Give the drawn agents and jobs unique names."""
    return (
        [
            AgentCapacity(f"a{i}", a.free, 0.0, a.trainers, a.klass, a.speed, a.free_memory)
            for i, a in enumerate(agents)
        ],
        [JobDemand(f"j{i}", j.model, j.trainer, j.memory, j.flops) for i, j in enumerate(jobs)],
    )


def fits(j: JobDemand, a: AgentCapacity, memory_left: int | None) -> bool:
    """Whether ``j`` may run on ``a`` with ``memory_left`` bytes free there."""
    memory_ok = j.memory is None or memory_left is None or j.memory <= memory_left
    return a.runs(j.trainer) and memory_ok


def check_plan(
    plan: Plan,
    jobs: Sequence[JobDemand],
    agents: Sequence[AgentCapacity],
) -> None:
    """The hard limits of a plan (see the properties below)."""
    by_job = {j.job_id: j for j in jobs}
    by_agent = {a.name: a for a in agents}
    placed = [j for j, _ in plan.pairs]
    assert len(placed) == len(set(placed)), "a job placed twice"
    assert sorted(placed + plan.waiting) == sorted(by_job), "jobs lost or invented"
    assert plan.waiting == [j.job_id for j in jobs if j.job_id in set(plan.waiting)]
    credits_used = Counter(a for _, a in plan.pairs)
    memory_used: Counter[str] = Counter()
    for job_id, name in plan.pairs:
        a, j = by_agent[name], by_job[job_id]
        assert a.runs(j.trainer), f"{job_id} sent to {name} that lacks trainer {j.trainer}"
        memory_used[name] += j.memory or 0
    for name, used in credits_used.items():
        a = by_agent[name]
        assert used <= a.free, f"{name} over its credits"
        if a.free_memory is not None:
            assert memory_used[name] <= a.free_memory, f"{name} over its free memory"
    # maximal: no waiting job fits what any agent has left
    for job_id in plan.waiting:
        for a in agents:
            left = None if a.free_memory is None else a.free_memory - memory_used[a.name]
            if a.free - credits_used[a.name] > 0:
                assert not fits(by_job[job_id], a, left), f"{job_id} waits though {a.name} fits"


@settings(max_examples=200, deadline=None)
@given(agents_strategy, jobs_strategy, model_classes_strategy)
def test_no_agent_is_ever_over_its_credits_or_memory_and_every_placed_job_fits(
    agents: list[AgentCapacity],
    jobs: list[JobDemand],
    model_classes: dict[str, list[str]],
) -> None:
    agents, jobs = named(agents, jobs)
    check_plan(plan_assignments(jobs, agents, model_classes), jobs, agents)


@settings(max_examples=200, deadline=None)
@given(agents_strategy, jobs_strategy, model_classes_strategy)
def test_every_pending_job_that_fits_some_agent_is_eventually_assigned(
    agents: list[AgentCapacity],
    jobs: list[JobDemand],
    model_classes: dict[str, list[str]],
) -> None:
    """Plan, let the placed jobs finish (their credits and memory come back), plan again: every
    job that fits an agent with credits is placed within ``len(jobs)`` rounds, and no other."""
    agents, jobs = named(agents, jobs)
    usable = [a for a in agents if a.free > 0]
    fitting = {j.job_id for j in jobs if any(fits(j, a, a.free_memory) for a in usable)}
    left = list(jobs)
    assigned: dict[str, str] = {}
    for _ in range(len(jobs) + 1):
        plan = plan_assignments(left, agents, model_classes)
        check_plan(plan, left, agents)
        if not plan.pairs:
            break
        assigned.update(plan.pairs)
        left = [j for j in left if j.job_id not in assigned]
    assert set(assigned) == fitting
    assert {j.job_id for j in left} == {j.job_id for j in jobs} - fitting
    for j in left:  # what never ran needs a trainer or more memory than any usable agent has
        runners = [a for a in usable if a.runs(j.trainer)]
        known = [a.free_memory for a in runners if a.free_memory is not None]
        assert not runners or (len(known) == len(runners) and not fits_anywhere(j.memory, known))


def check_model_classes_respected(
    plan: Plan,
    jobs: Sequence[JobDemand],
    agents: Sequence[AgentCapacity],
    model_classes: Mapping[str, Sequence[str]],
) -> None:
    """An agent given a job outside its class had no job of its own class it could take."""
    by_job = {j.job_id: j for j in jobs}
    by_agent = {a.name: a for a in agents}
    for job_id in plan.waiting:
        j = by_job[job_id]
        for a in agents:
            own = a.klass in model_classes.get(j.model, ())
            if own and a.free > 0 and fits(j, a, a.free_memory):
                # it fit this agent when empty: the agent must have been given work
                assert any(name == a.name for _, name in plan.pairs)
    for job_id, name in plan.pairs:
        assert by_agent[name].free > 0 and job_id in by_job


@settings(max_examples=200, deadline=None)
@given(agents_strategy, jobs_strategy, model_classes_strategy)
def test_an_agent_never_idles_while_a_job_of_its_class_fits_it(
    agents: list[AgentCapacity],
    jobs: list[JobDemand],
    model_classes: dict[str, list[str]],
) -> None:
    agents, jobs = named(agents, jobs)
    plan = plan_assignments(jobs, agents, model_classes)
    check_model_classes_respected(plan, jobs, agents, model_classes)


@pytest.mark.parametrize("rounds", [1, 3])
def test_a_small_pool_drains_a_queue_larger_than_its_credits(rounds: int) -> None:
    agents = [
        agent("h", 2, klass="fast", speed=10.0, memory=80 * GIB),
        agent("c", 1, klass="slow", speed=1.0, memory=8 * GIB),
    ]
    classes = {"unet": ("fast",), "cnn": ("slow",)}
    jobs = [job(f"u{i}", "unet", memory=20 * GIB, flops=1e10) for i in range(3 * rounds)]
    jobs += [job(f"c{i}", "cnn", memory=GIB, flops=1e8) for i in range(3 * rounds)]
    where: dict[str, str] = {}
    left = jobs
    while left:
        plan = plan_assignments(left, agents, classes)
        assert plan.pairs, "a round placed nothing"
        where.update(plan.pairs)
        left = [j for j in left if j.job_id not in where]
    assert all(where[f"u{i}"] == "h" for i in range(3 * rounds))  # never on the 8 GB agent


# -- keep_off_stragglers ----------------------------------------------------------------------


def _timed(
    name: str,
    klass: str,
    speed: float,
    *,
    ends: tuple[float, ...] = (),
    memory: int | None = None,
    trainers: frozenset[str] | None = None,
) -> AgentTiming:
    return AgentTiming(name, klass, speed, 1, ends, memory, trainers)


def test_a_big_job_waits_for_a_fast_agent_that_frees_soon() -> None:
    job = JobDemand("j", "m", flops=1000.0)
    agents = [_timed("gpu", "g", 100.0, ends=(5.0,)), _timed("cpu", "c", 1.0)]
    # on the CPU: 1000 s; waiting 5 s for the GPU, then 10 s there
    assert keep_off_stragglers([("j", "cpu")], {"j": job}, agents, {"m": ("g", "c")}, 0.0) == []


def test_a_job_starts_on_the_slow_agent_when_waiting_would_take_longer() -> None:
    job = JobDemand("j", "m", flops=100.0)
    agents = [_timed("gpu", "g", 100.0, ends=(500.0,)), _timed("cpu", "c", 1.0)]
    pairs = [("j", "cpu")]
    assert keep_off_stragglers(pairs, {"j": job}, agents, {"m": ("g", "c")}, 0.0) == pairs


def test_nothing_waits_for_an_agent_that_cannot_hold_or_run_the_job() -> None:
    big = JobDemand("big", "m", trainer="t", memory=10, flops=1000.0)
    tiny_gpu = _timed("gpu", "g", 100.0, memory=5)
    foreign = _timed("gpu2", "g", 100.0, trainers=frozenset({"other"}))
    cpu = _timed("cpu", "c", 1.0)
    pairs = [("big", "cpu")]
    kept = keep_off_stragglers(pairs, {"big": big}, [tiny_gpu, foreign, cpu], {"m": ("g",)}, 0.0)
    assert kept == pairs


def test_a_job_too_big_for_its_classes_waits_for_any_class_that_holds_it() -> None:
    big = JobDemand("big", "m", memory=10, flops=1000.0)
    agents = [
        _timed("small", "s", 50.0, memory=5),
        _timed("large", "l", 100.0, memory=20, ends=(1.0,)),
        _timed("cpu", "c", 1.0, memory=100),
    ]
    kept = keep_off_stragglers([("big", "cpu")], {"big": big}, agents, {"m": ("s", "c")}, 0.0)
    assert kept == []


def test_jobs_without_flops_and_fast_placements_are_never_held() -> None:
    unknown = JobDemand("u", "m", flops=0.0)
    quick = JobDemand("q", "m", flops=10.0)
    agents = [_timed("gpu", "g", 100.0, ends=(1.0,)), _timed("cpu", "c", 1.0)]
    pairs = [("u", "cpu"), ("q", "gpu")]
    jobs = {"u": unknown, "q": quick}
    assert keep_off_stragglers(pairs, jobs, agents, {"m": ("g", "c")}, 0.0) == pairs


def test_jobs_kept_earlier_in_the_pass_count_against_the_fast_agent() -> None:
    # Two GPU slots' worth of work: the second job would wait behind the first on the GPU.
    jobs = {"a": JobDemand("a", "m", flops=100.0), "b": JobDemand("b", "m", flops=100.0)}
    gpu = AgentTiming("gpu", "g", 10.0, 1)
    cpu = AgentTiming("cpu", "c", 8.0, 1)
    pairs = [("a", "gpu"), ("b", "cpu")]
    # b on the CPU: 12.5 s; behind a on the GPU: 10 + 10 s, so it starts on the CPU now
    assert keep_off_stragglers(pairs, jobs, [gpu, cpu], {"m": ("g", "c")}, 0.0) == pairs


def test_a_job_too_big_for_its_models_classes_is_any_class_own_work() -> None:
    big_child = JobDemand("big", "small-cards-model", memory=20 * GIB, flops=5.0)
    own = JobDemand("own", "big-card-model", memory=1 * GIB, flops=9.0)
    agents = [AgentCapacity("titan", 1, speed=2.0, klass="big", free_memory=24 * GIB)]
    classes = {"small-cards-model": ("small",), "big-card-model": ("big",)}
    assert plan_assignments([big_child, own], agents, classes).pairs == [("own", "titan")]
    # Without class memory the big card serves its own model first even when the child is the
    # larger job; knowing no class of the child's model can hold it, it is the big card's own
    # work too, and the largest own job goes first.
    bigger_child = JobDemand("big", "small-cards-model", memory=20 * GIB, flops=50.0)
    memory = {"small": 11 * GIB, "big": 24 * GIB}
    assert plan_assignments([bigger_child, own], agents, classes).pairs == [("own", "titan")]
    pairs = plan_assignments([bigger_child, own], agents, classes, memory).pairs
    assert pairs == [("big", "titan")]
    # a child its own classes can hold stays their work
    fitting = JobDemand("big", "small-cards-model", memory=8 * GIB, flops=50.0)
    assert plan_assignments([fitting, own], agents, classes, memory).pairs == [("own", "titan")]
