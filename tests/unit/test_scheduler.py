"""The pure scheduling pieces: lease expiry (``LeaseClock``) and job-to-agent matching."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from nasd.core.scheduler import AgentCapacity, LeaseClock, spread_assignments

# -- LeaseClock -----------------------------------------------------------------------------------


def test_a_lease_expires_at_its_time_and_only_once() -> None:
    clock = LeaseClock()
    clock.start("j", 1, 10.0)
    assert "j" in clock and len(clock) == 1
    assert clock.expired(9.99) == []
    assert clock.expired(10.0) == [("j", 1)]
    assert clock.expired(100.0) == []
    assert "j" not in clock and len(clock) == 0


def test_renewal_moves_expiry_later_and_only_for_the_current_epoch() -> None:
    clock = LeaseClock()
    clock.start("j", 2, 10.0)
    assert clock.renew("j", 1, 50.0) is False  # an older epoch's heartbeat
    assert clock.renew("j", 2, 20.0) is True
    assert clock.renew("j", 2, 15.0) is True  # earlier than now: kept at 20
    assert clock.expired(19.0) == []
    assert clock.expired(20.0) == [("j", 2)]
    assert clock.renew("j", 2, 30.0) is False  # expired leases are gone


def test_a_new_epoch_replaces_the_old_timer_and_stop_forgets_it() -> None:
    clock = LeaseClock()
    clock.start("j", 1, 10.0)
    clock.start("j", 2, 30.0)
    assert clock.expired(20.0) == []  # epoch 1's timer is stale
    assert clock.expired(30.0) == [("j", 2)]
    clock.start("k", 1, 5.0)
    clock.stop("k")
    clock.stop("never-started")
    assert clock.expired(99.0) == []


def test_expired_leases_come_out_in_expiry_order() -> None:
    clock = LeaseClock()
    for job, at in (("c", 3.0), ("a", 1.0), ("b", 2.0)):
        clock.start(job, 1, at)
    assert clock.expired(5.0) == [("a", 1), ("b", 1), ("c", 1)]


def test_heartbeats_do_not_grow_the_timer_heap_and_expiry_stays_exact() -> None:
    clock = LeaseClock()
    clock.start("j", 1, 10.0)
    clock.start("k", 1, 500.0)
    for beat in range(200_000):
        assert clock.renew("j", 1, 10.0 + beat * 0.001)
        if beat % 50_000 == 0:
            assert clock.expired(beat * 0.001) == []  # ticks pop and re-push lazily
    last = 10.0 + 199_999 * 0.001
    assert clock.timer_entries <= 2  # one per lease, not one per heartbeat
    assert clock.expires_at("j") == last
    assert clock.expired(last - 1e-9) == []
    assert clock.expired(last) == [("j", 1)]
    assert clock.expired(499.0) == [] and clock.expired(500.0) == [("k", 1)]
    assert clock.timer_entries == 0 and len(clock) == 0


def test_a_renewed_lease_expires_in_order_among_others() -> None:
    clock = LeaseClock()
    clock.start("a", 1, 5.0)
    clock.start("b", 1, 6.0)
    clock.renew("a", 1, 8.0)
    clock.start("c", 1, 7.0)
    assert clock.expired(6.5) == [("b", 1)]
    assert clock.expired(100.0) == [("c", 1), ("a", 1)]


# -- spread_assignments ----------------------------------------------------------------------------


def test_jobs_spread_over_the_agents_with_most_free_credits_fastest_first() -> None:
    agents = [AgentCapacity("slow", 2, 1.0), AgentCapacity("fast", 2, 9.0)]
    plan = spread_assignments(["j0", "j1", "j2", "j3", "j4"], agents)
    assert plan == [("j0", "fast"), ("j1", "slow"), ("j2", "fast"), ("j3", "slow")]


def test_ties_in_credits_and_speed_go_by_name_and_full_agents_get_nothing() -> None:
    agents = [AgentCapacity("b", 1), AgentCapacity("a", 1), AgentCapacity("full", 0)]
    assert spread_assignments(["j0", "j1", "j2"], agents) == [("j0", "a"), ("j1", "b")]
    assert spread_assignments([], agents) == []
    assert spread_assignments(["j0"], []) == []


@given(
    st.lists(st.text("abcdefgh", min_size=1, max_size=3), unique=True, max_size=30),
    st.dictionaries(
        st.text("xyz", min_size=1, max_size=2),
        st.tuples(st.integers(0, 5), st.floats(0, 10)),
        max_size=5,
    ),
)
def test_no_agent_gets_more_than_its_credits_and_the_queue_order_is_kept(
    jobs: list[str], agents: dict[str, tuple[int, float]]
) -> None:
    capacities = [AgentCapacity(name, free, speed) for name, (free, speed) in agents.items()]
    plan = spread_assignments(jobs, capacities)
    total = sum(free for free, _ in agents.values())
    assert [job for job, _ in plan] == jobs[: min(len(jobs), total)]  # oldest first, no gaps
    for name, (free, _) in agents.items():
        assert sum(1 for _, agent in plan if agent == name) <= free


def test_jobs_go_only_to_agents_that_run_their_trainer_and_others_are_not_held_up() -> None:
    agents = [
        AgentCapacity("z", 2, 1.0, frozenset({"zero"})),
        AgentCapacity("m", 1, 9.0, frozenset({"mnist1d", "zero"})),
        AgentCapacity("any", 0, 9.0),
    ]
    trainer_of = {"j0": "nobody", "j1": "mnist1d", "j2": "mnist1d", "j3": "zero", "j4": "zero"}
    plan = spread_assignments(["j0", "j1", "j2", "j3", "j4"], agents, trainer_of)
    assert plan == [("j1", "m"), ("j3", "z"), ("j4", "z")]
    assert AgentCapacity("x", 1).runs("anything") and AgentCapacity("x", 1, 0, frozenset()).runs(
        None
    )
