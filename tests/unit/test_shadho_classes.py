"""Compute classes: ``[daemon.classes]`` rules, grouping agents, and each class's speed."""

from __future__ import annotations

import math
from typing import Any

import pytest

from nasd.core.scheduler.classes import (
    SPEED_GAP,
    ClassRule,
    agent_speed,
    class_speeds,
    group_agents,
    parse_class_rules,
)
from nasd.core.scheduler.reference import reference_flops_per_sample, training_flops_per_s
from nasd.errors import ConfigError

GIB = 2**30

H200: dict[str, Any] = {
    "device": "cuda:0",
    "device_name": "NVIDIA H200",
    "compute_capability": "9.0",
    "memory_bytes": 141 * GIB,
    "samples_per_s": 40_000.0,
    "throughput": 600_000.0,
}
V100: dict[str, Any] = {
    "device": "cuda:0",
    "device_name": "Tesla V100-SXM2-16GB",
    "compute_capability": "7.0",
    "memory_bytes": 16 * GIB,
    "samples_per_s": 9_000.0,
    "throughput": 100_000.0,
}
CPU: dict[str, Any] = {
    "device": "cpu",
    "device_name": "Intel(R) Xeon(R) Gold 6226",
    "memory_bytes": 128 * GIB,
    "samples_per_s": 300.0,
    "throughput": 900.0,
}


def by_throughput(gflops: float, name: str = "dev") -> dict[str, Any]:
    """A profile rated only by its matmul benchmark (no reference timing)."""
    return {"device": "cuda:0", "device_name": name, "throughput": gflops}


# -- parse_class_rules -----------------------------------------------------------------------------


def test_rules_are_parsed_in_file_order_with_every_condition() -> None:
    rules = parse_class_rules(
        {
            "big": {
                "device_name": "H100|H200",
                "device": "cuda",
                "compute_capability": "9.0",
                "min_memory_gb": 80,
                "min_samples_per_s": 1000.5,
            },
            "cpu": {"device": "cpu"},
        }
    )
    assert rules == (
        ClassRule("big", "H100|H200", "cuda", (9, 0), 80.0, 1000.5),
        ClassRule("cpu", None, "cpu"),
    )
    assert isinstance(rules[0].min_memory_gb, float)
    assert parse_class_rules({}) == ()


@pytest.mark.parametrize(
    ("table", "names"),
    [
        ({"fast": {"device_nam": "H200"}}, ["daemon.classes.fast", "device_nam"]),
        ({"fast": {"device_name": "H200("}}, ["daemon.classes.fast.device_name"]),
        ({"fast": {"device_name": 7}}, ["daemon.classes.fast.device_name"]),
        ({"fast": {"device": "gpu"}}, ["daemon.classes.fast.device", "gpu"]),
        ({"fast": {"device": "cuda:0"}}, ["daemon.classes.fast.device"]),
        ({"fast": {"compute_capability": "nine"}}, ["daemon.classes.fast.compute_capability"]),
        ({"fast": {"compute_capability": 8.0}}, ["daemon.classes.fast.compute_capability"]),
        ({"fast": {"min_memory_gb": -1}}, ["daemon.classes.fast.min_memory_gb"]),
        ({"fast": {"min_samples_per_s": -0.5}}, ["daemon.classes.fast.min_samples_per_s"]),
        ({"fast": {"min_memory_gb": "80"}}, ["daemon.classes.fast.min_memory_gb"]),
        ({"fast": {"min_memory_gb": True}}, ["daemon.classes.fast.min_memory_gb"]),
        ({"fast": {}}, ["daemon.classes.fast"]),
        ({"fast": "H200"}, ["daemon.classes.fast"]),
        ({"no spaces": {"device": "cpu"}}, ["daemon.classes.no spaces"]),
        ({"-dash": {"device": "cpu"}}, ["daemon.classes.-dash"]),
    ],
)
def test_a_bad_rule_is_a_config_error_naming_its_key(
    table: dict[str, Any], names: list[str]
) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_class_rules(table)
    for name in names:
        assert name in str(caught.value)


def test_not_a_table_and_too_many_classes_are_config_errors() -> None:
    with pytest.raises(ConfigError, match=r"daemon\.classes"):
        parse_class_rules(["fast"])
    with pytest.raises(ConfigError, match=r"x\.classes"):
        parse_class_rules("fast", where="x.classes")
    with pytest.raises(ConfigError, match="at most"):
        parse_class_rules({f"c{i}": {"device": "cpu"} for i in range(65)})
    assert len(parse_class_rules({f"c{i}": {"device": "cpu"} for i in range(64)})) == 64


@pytest.mark.parametrize("bound", ["min_memory_gb", "min_samples_per_s"])
def test_a_nan_bound_is_a_config_error(bound: str) -> None:
    """TOML has ``nan``; a NaN bound compares false with everything, so it would silently
    match every agent instead of stating a limit."""
    with pytest.raises(ConfigError, match=bound):
        parse_class_rules({"fast": {bound: math.nan}})


# -- ClassRule.matches -----------------------------------------------------------------------------


def test_a_device_name_rule_is_a_case_insensitive_search() -> None:
    assert ClassRule("h", device_name="h200").matches(H200)
    assert ClassRule("h", device_name="^NVIDIA").matches(H200)
    assert not ClassRule("h", device_name="^H200").matches(H200)  # searched, anchors respected
    assert not ClassRule("h", device_name="A100").matches(H200)
    assert not ClassRule("h", device_name="H200").matches({})


def test_a_device_rule_matches_the_prefix_of_the_device() -> None:
    assert ClassRule("g", device="cuda").matches(H200)  # "cuda:0"
    assert not ClassRule("g", device="cuda").matches(CPU)
    assert ClassRule("c", device="cpu").matches(CPU)
    assert not ClassRule("c", device="cpu").matches({})


def test_a_capability_rule_compares_versions_numerically() -> None:
    rule = ClassRule("modern", compute_capability=(8, 0))
    assert rule.matches(H200)  # 9.0
    assert rule.matches({"compute_capability": "8.6"})
    assert rule.matches({"compute_capability": "10.0"})  # not a string comparison
    assert not rule.matches(V100)  # 7.0
    assert not rule.matches(CPU)  # none reported
    assert not rule.matches({"compute_capability": "eight"})
    assert not rule.matches({"compute_capability": 9.0})


def test_memory_and_speed_bounds_are_lower_bounds() -> None:
    assert ClassRule("m", min_memory_gb=141).matches(H200)
    assert not ClassRule("m", min_memory_gb=141.5).matches(H200)
    assert not ClassRule("m", min_memory_gb=1).matches({})
    assert not ClassRule("m", min_memory_gb=1).matches({"memory_bytes": "lots"})
    assert ClassRule("s", min_samples_per_s=9000).matches(V100)
    assert not ClassRule("s", min_samples_per_s=9000.1).matches(V100)
    assert not ClassRule("s", min_samples_per_s=1).matches({"samples_per_s": True})


def test_every_condition_of_a_rule_must_hold() -> None:
    rule = ClassRule("big-cuda", device="cuda", min_memory_gb=32)
    assert rule.matches(H200)
    assert not rule.matches(V100)  # cuda, but 16 GB
    assert not rule.matches(CPU)  # 128 GB, but a CPU
    assert ClassRule("anything").matches({})  # no condition: everyone


# -- agent_speed -----------------------------------------------------------------------------------


def test_an_agent_s_speed_comes_from_its_reference_timing() -> None:
    expected = 40_000.0 * 3.0 * reference_flops_per_sample()
    assert agent_speed(H200) == pytest.approx(expected)
    assert agent_speed(H200) == pytest.approx(training_flops_per_s(40_000.0))
    assert agent_speed(H200) > agent_speed(V100) > agent_speed(CPU) > 0


def test_without_a_reference_timing_the_matmul_benchmark_rates_the_agent() -> None:
    assert agent_speed({"throughput": 2.0}) == pytest.approx(1e9)  # GFLOP/s -> MAC/s
    for bad in (0, -1.0, True, "fast", math.nan, None):
        assert agent_speed({"samples_per_s": bad, "throughput": 2.0}) == pytest.approx(1e9)


def test_an_agent_that_measured_nothing_has_speed_zero() -> None:
    assert agent_speed({}) == 0.0
    assert agent_speed({"device_name": "mystery"}) == 0.0
    assert agent_speed({"samples_per_s": 0, "throughput": -5}) == 0.0
    assert agent_speed({"throughput": "fast"}) == 0.0


# -- group_agents ----------------------------------------------------------------------------------


def test_model_mode_groups_identical_devices_into_one_class() -> None:
    profiles = {"a": H200, "b": V100, "c": dict(H200), "d": CPU}
    assert group_agents(profiles) == {
        "a": "NVIDIA H200",
        "b": "Tesla V100-SXM2-16GB",
        "c": "NVIDIA H200",
        "d": "Intel(R) Xeon(R) Gold 6226",
    }


def test_model_mode_falls_back_to_the_device_then_unknown_and_caps_the_name() -> None:
    profiles = {
        "dev": {"device": "cpu"},
        "none": {},
        "empty": {"device_name": ""},
        "long": {"device_name": "X" * 200},
    }
    classes = group_agents(profiles, mode="model")
    assert classes["dev"] == "cpu"
    assert classes["none"] == "unknown" and classes["empty"] == "unknown"
    assert classes["long"] == "X" * 64


def test_speed_mode_splits_where_the_next_agent_is_much_slower() -> None:
    gflops = {"a": 100.0, "b": 90.0, "c": 61.0, "d": 50.0, "e": 45.0, "f": 10.0, "g": 0.0}
    profiles = {name: by_throughput(g) for name, g in gflops.items()}
    classes = group_agents(profiles, mode="speed")
    # 90 -> 61 is within the gap (x1.48), 61 -> 50 too; 45 -> 10 is not; nothing -> its own class
    assert classes == {
        "a": "speed-1",
        "b": "speed-1",
        "c": "speed-1",
        "d": "speed-1",
        "e": "speed-1",
        "f": "speed-2",
        "g": "speed-3",
    }


def test_speed_mode_splits_at_exactly_more_than_the_gap() -> None:
    at_gap = {"a": by_throughput(SPEED_GAP * 10), "b": by_throughput(10.0)}
    assert group_agents(at_gap, mode="speed") == {"a": "speed-1", "b": "speed-1"}
    past_gap = {"a": by_throughput(SPEED_GAP * 10 * 1.01), "b": by_throughput(10.0)}
    assert group_agents(past_gap, mode="speed") == {"a": "speed-1", "b": "speed-2"}


def test_speed_mode_uses_the_reference_timing_and_numbers_fastest_first() -> None:
    profiles = {"cpu": CPU, "old": V100, "new": H200, "new2": dict(H200, samples_per_s=39_000.0)}
    assert group_agents(profiles, mode="speed") == {
        "new": "speed-1",
        "new2": "speed-1",
        "old": "speed-2",
        "cpu": "speed-3",
    }


def test_rules_come_first_and_the_rest_fall_back_to_the_mode() -> None:
    rules = parse_class_rules(
        {"big": {"device": "cuda", "min_memory_gb": 32}, "gpu": {"device": "cuda"}}
    )
    profiles = {"h": H200, "v": V100, "c": CPU, "c2": dict(CPU, samples_per_s=10.0)}
    assert group_agents(profiles, rules) == {
        "h": "big",  # the first matching rule wins, though "gpu" matches too
        "v": "gpu",
        "c": "Intel(R) Xeon(R) Gold 6226",
        "c2": "Intel(R) Xeon(R) Gold 6226",
    }
    by_speed = group_agents(profiles, rules, mode="speed")
    assert by_speed["h"] == "big" and by_speed["v"] == "gpu"
    # only the unmatched agents are clustered: 300 -> 10 samples/s is a gap
    assert by_speed["c"] == "speed-1" and by_speed["c2"] == "speed-2"


def test_an_unknown_mode_is_refused_and_no_agents_give_no_classes() -> None:
    with pytest.raises(ValueError, match="mode"):
        group_agents({"a": H200}, mode="cluster")
    assert group_agents({}) == {}
    assert group_agents({}, mode="speed") == {}


# -- class_speeds ----------------------------------------------------------------------------------


def test_a_class_s_speed_is_its_agents_median() -> None:
    profiles = {
        "a": by_throughput(2.0),
        "b": by_throughput(4.0),
        "c": by_throughput(200.0),
        "d": by_throughput(6.0),
        "e": by_throughput(8.0),
    }
    classes = {"a": "x", "b": "x", "c": "x", "d": "y", "e": "y"}
    speeds = class_speeds(classes, profiles)
    assert speeds == {"x": pytest.approx(2e9), "y": pytest.approx(3.5e9)}  # 4 and mean(6, 8)


def test_a_class_member_without_a_profile_counts_as_speed_zero() -> None:
    speeds = class_speeds({"a": "x", "ghost": "x"}, {"a": by_throughput(2.0)})
    assert speeds == {"x": pytest.approx(0.5e9)}
    assert class_speeds({}, {}) == {}


def test_grouping_then_measuring_ranks_the_classes_by_hardware() -> None:
    profiles = {"h1": H200, "h2": H200, "v": V100, "c": CPU}
    speeds = class_speeds(group_agents(profiles), profiles)
    order = sorted(speeds, key=lambda name: -speeds[name])
    assert order == ["NVIDIA H200", "Tesla V100-SXM2-16GB", "Intel(R) Xeon(R) Gold 6226"]
