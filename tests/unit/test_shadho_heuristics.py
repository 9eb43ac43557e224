"""SHADHO's model heuristics: complexity of a search space, priority of a model, memory bound.

The numbers checked here are the seed's formulas (issue 7): ``C(s) = 2 + |b - a|`` over the
central 99 % interval of a continuous domain, ``C(s) = 2 - 1/n`` for a discrete one, the product
over domains; ``P(L) = 1/min(L) - 1/max(L)`` with the edge cases SHADHO's own code crashed on.
"""

from __future__ import annotations

import math
import statistics

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nasd.core.scheduler.heuristics import (
    ACTIVATION_COPIES,
    BYTES_PER_VALUE,
    CENTRAL_MASS,
    LOSS_FLOOR,
    NORMAL_Z,
    PARAM_COPIES,
    RUNTIME_ALLOWANCE_BYTES,
    as_loss,
    complexity,
    domain_complexity,
    memory_estimate,
    priority,
)
from nasd.core.space.domains import Discrete, Domain, LogUniform, Normal, Uniform

# -- complexity: continuous domains ----------------------------------------------------------------


def test_normal_z_is_the_quantile_of_a_central_99_percent_interval() -> None:
    standard = statistics.NormalDist()
    assert pytest.approx(standard.inv_cdf(0.995), rel=1e-12) == NORMAL_Z
    assert standard.cdf(NORMAL_Z) - standard.cdf(-NORMAL_Z) == pytest.approx(CENTRAL_MASS)


def test_a_uniform_domain_counts_99_percent_of_its_width() -> None:
    assert domain_complexity(Uniform(0.0, 1.0)) == pytest.approx(2.0 + 0.99)
    assert domain_complexity(Uniform(1e-4, 1.0)) == pytest.approx(2.0 + 0.99 * (1.0 - 1e-4))
    assert domain_complexity(Uniform(-5.0, 5.0)) == pytest.approx(2.0 + 9.9)
    # reversed bounds are the same interval; a point is a fixed value (width 0)
    assert domain_complexity(Uniform(5.0, -5.0)) == pytest.approx(2.0 + 9.9)
    assert domain_complexity(Uniform(3.0, 3.0)) == 2.0


def test_a_log_uniform_domain_is_measured_in_natural_log_space() -> None:
    assert domain_complexity(LogUniform(1e-4, 1.0)) == pytest.approx(
        2.0 + 0.99 * math.log(1e4), rel=1e-12
    )
    assert domain_complexity(LogUniform(1.0, math.e)) == pytest.approx(2.0 + 0.99)
    # scale-free: the same ratio anywhere gives the same complexity
    assert domain_complexity(LogUniform(10.0, 1000.0)) == pytest.approx(
        domain_complexity(LogUniform(1e-5, 1e-3))
    )
    assert domain_complexity(LogUniform(1000.0, 10.0)) == pytest.approx(
        domain_complexity(LogUniform(10.0, 1000.0))
    )


@pytest.mark.parametrize(
    "domain", [LogUniform(0.0, 1.0), LogUniform(-1.0, 1.0), LogUniform(1.0, 0.0)]
)
def test_a_log_uniform_domain_with_a_non_positive_bound_is_refused(domain: LogUniform) -> None:
    with pytest.raises(ValueError, match="positive"):
        domain_complexity(domain)
    with pytest.raises(ValueError, match="positive"):
        complexity([Discrete(3), domain])


def test_a_normal_domain_counts_its_central_99_percent_interval() -> None:
    assert domain_complexity(Normal(0.0, 1.0)) == pytest.approx(2.0 + 2 * 2.5758, abs=1e-4)
    assert domain_complexity(Normal(100.0, 0.5)) == pytest.approx(2.0 + 2.5758, abs=1e-4)
    assert domain_complexity(Normal(-3.0, 2.0)) == pytest.approx(2.0 + 4 * NORMAL_Z)
    assert domain_complexity(Normal(0.0, 0.0)) == 2.0  # degenerate: a fixed value


def test_something_that_is_not_a_domain_is_a_type_error() -> None:
    with pytest.raises(TypeError):
        domain_complexity("uniform")  # type: ignore[arg-type]


# -- complexity: discrete domains and products -----------------------------------------------------


@pytest.mark.parametrize(
    ("size", "expected"), [(1, 1.0), (2, 1.5), (4, 1.75), (5, 1.8), (7, 2 - 1 / 7), (1000, 1.999)]
)
def test_a_discrete_domain_with_n_values_is_two_minus_one_over_n(
    size: int, expected: float
) -> None:
    assert domain_complexity(Discrete(size)) == pytest.approx(expected)


def test_a_fixed_choice_adds_nothing_and_an_empty_space_is_one() -> None:
    assert complexity([]) == 1.0
    assert complexity([Discrete(1), Discrete(1)]) == 1.0
    assert complexity([Discrete(4), Discrete(1)]) == pytest.approx(1.75)


def test_a_model_s_complexity_is_the_product_over_its_domains() -> None:
    domains: list[Domain] = [
        Discrete(4),
        Uniform(0.0, 1.0),
        LogUniform(1e-4, 1.0),
        Normal(0.0, 1.0),
    ]
    expected = 1.75 * 2.99 * (2 + 0.99 * math.log(1e4)) * (2 + 2 * NORMAL_Z)
    assert complexity(domains) == pytest.approx(expected, rel=1e-12)
    assert complexity(iter(domains)) == pytest.approx(expected, rel=1e-12)  # any iterable


def test_the_seed_s_unet_space_has_the_complexity_of_its_seven_choices() -> None:
    """Kernels {16,32,64,128}, kernel size {1,3,5,7,9}, 7 activations, 4 initializers,
    3 regularizers, dropout uniform [0, 1], learning rate uniform [1e-4, 1]."""
    unet: list[Domain] = [
        Discrete(4),
        Discrete(5),
        Discrete(7),
        Discrete(4),
        Discrete(3),
        Uniform(0.0, 1.0),
        Uniform(1e-4, 1.0),
    ]
    expected = 1.75 * 1.8 * (2 - 1 / 7) * 1.75 * (2 - 1 / 3) * 2.99 * (2 + 0.99 * 0.9999)
    assert complexity(unet) == pytest.approx(expected, rel=1e-12)


domains_strategy = st.one_of(
    st.builds(Discrete, st.integers(1, 50)),
    st.builds(Uniform, st.floats(-1e3, 1e3), st.floats(-1e3, 1e3)),
    st.builds(LogUniform, st.floats(1e-8, 1e3), st.floats(1e-8, 1e3)),
    st.builds(Normal, st.floats(-1e3, 1e3), st.floats(0, 1e3)),
)


@settings(max_examples=200, deadline=None)
@given(st.lists(domains_strategy, max_size=8), domains_strategy)
def test_adding_a_domain_never_lowers_complexity_unless_it_is_a_fixed_choice(
    domains: list[Domain],
    extra: Domain,
) -> None:
    """Every domain's C(s) is at least 1 (discrete, 1 only for one value) or 2 (continuous)."""
    single = domain_complexity(extra)
    assert single >= 1.0
    if not isinstance(extra, Discrete):
        assert single >= 2.0
    base = complexity(domains)
    assert complexity([*domains, extra]) == pytest.approx(base * single, rel=1e-9)
    assert complexity([*domains, extra]) >= base


# -- priority --------------------------------------------------------------------------------------


def test_priority_is_one_over_min_minus_one_over_max() -> None:
    assert priority([0.5, 0.25]) == pytest.approx(1 / 0.25 - 1 / 0.5)
    assert priority([0.1, 0.2, 0.4, 0.8]) == pytest.approx(10.0 - 1.25)
    assert priority([0.9, 0.3, 0.6]) == pytest.approx(1 / 0.3 - 1 / 0.9)
    # the order of the results does not matter
    assert priority([0.8, 0.4, 0.2, 0.1]) == priority([0.1, 0.2, 0.4, 0.8])


def test_a_model_whose_loss_still_varies_more_has_the_higher_priority() -> None:
    steady = priority([0.30, 0.31, 0.32])
    varying = priority([0.05, 0.30, 0.60])
    assert steady is not None and varying is not None
    assert varying > steady > 0


def test_priority_needs_two_results() -> None:
    assert priority([]) is None
    assert priority([0.3]) is None


def test_equal_losses_give_zero_priority() -> None:
    assert priority([0.4, 0.4]) == 0.0
    assert priority([0.4] * 20) == 0.0


def test_a_zero_loss_gives_a_large_finite_priority() -> None:
    value = priority([0.0, 0.5])
    assert value is not None and math.isfinite(value)
    assert value == pytest.approx(1 / LOSS_FLOOR - 2.0)
    assert value > 1e5
    assert priority([0.0, 0.0]) == 0.0  # two perfect scores: nothing varies
    assert priority([-0.1, 0.5]) == pytest.approx(1 / LOSS_FLOOR - 2.0)  # floored too


def test_non_finite_losses_are_ignored() -> None:
    nan, inf = math.nan, math.inf
    assert priority([nan, inf, -inf]) is None
    assert priority([0.5, nan]) is None  # one finite result
    assert priority([0.5, inf, 0.25, nan, -inf]) == pytest.approx(2.0)


def test_more_than_ten_results_do_not_crash() -> None:
    """SHADHO's priority computation crashed past 10 trials."""
    losses = [0.1 + 0.01 * i for i in range(500)]
    assert priority(losses) == pytest.approx(1 / 0.1 - 1 / (0.1 + 0.01 * 499))


@settings(max_examples=200, deadline=None)
@given(st.lists(st.floats(allow_nan=True, allow_infinity=True), max_size=30))
def test_priority_is_none_or_finite_and_non_negative(losses: list[float]) -> None:
    value = priority(losses)
    finite = [x for x in losses if math.isfinite(x)]
    if len(finite) < 2:
        assert value is None
    else:
        assert value is not None and math.isfinite(value) and value >= 0.0


# -- as_loss ---------------------------------------------------------------------------------------


def test_a_maximised_metric_becomes_one_minus_it_and_a_minimised_one_stays() -> None:
    assert as_loss(0.9, maximise=True) == pytest.approx(0.1)
    assert as_loss(1.0, maximise=True) == 0.0
    assert as_loss(0.0, maximise=True) == 1.0
    assert as_loss(0.37, maximise=False) == 0.37
    assert as_loss(12.5, maximise=False) == 12.5


def test_a_loss_is_never_negative() -> None:
    assert as_loss(1.2, maximise=True) == 0.0  # an accuracy over 1 (a metric out of range)
    assert as_loss(-3.0, maximise=False) == 0.0


def test_better_metrics_give_lower_losses() -> None:
    assert as_loss(0.95, maximise=True) < as_loss(0.80, maximise=True)
    assert as_loss(0.05, maximise=False) < as_loss(0.20, maximise=False)


# -- memory_estimate -------------------------------------------------------------------------------


def test_no_params_and_no_activations_means_unknown_memory() -> None:
    assert memory_estimate({}, 64) is None
    assert memory_estimate({"flops": 1e9}, 64) is None


def test_memory_counts_parameter_copies_activations_per_sample_and_an_allowance() -> None:
    params, activations, batch = 1_000_000.0, 250_000.0, 32
    expected = (
        int((PARAM_COPIES * params + ACTIVATION_COPIES * activations * batch) * BYTES_PER_VALUE)
        + RUNTIME_ALLOWANCE_BYTES
    )
    assert memory_estimate({"params": params, "activations": activations}, batch) == expected
    # weights, gradients and two Adam moments in float32
    assert memory_estimate({"params": 1000.0}, 1) == 16_000 + RUNTIME_ALLOWANCE_BYTES
    assert memory_estimate({"activations": 1000.0}, 1) == 8_000 + RUNTIME_ALLOWANCE_BYTES


def test_memory_grows_with_batch_size_and_parameters() -> None:
    cost = {"params": 1e6, "activations": 1e5}
    by_batch = [memory_estimate(cost, b) or 0 for b in (1, 8, 64, 512)]
    assert all(isinstance(m, int) for m in by_batch)
    assert 0 < by_batch[0] < by_batch[1] < by_batch[2] < by_batch[3]
    by_params = [memory_estimate({"params": p, "activations": 1e5}, 16) or 0 for p in (1e3, 1e8)]
    assert 0 < by_params[0] < by_params[1]


def test_a_batch_size_below_one_counts_as_one() -> None:
    cost = {"params": 10.0, "activations": 100.0}
    assert memory_estimate(cost, 0) == memory_estimate(cost, 1)
    assert memory_estimate(cost, -5) == memory_estimate(cost, 1)


def test_a_parameter_free_child_still_needs_the_allowance() -> None:
    assert memory_estimate({"params": 0.0, "activations": 0.0}, 64) == RUNTIME_ALLOWANCE_BYTES
