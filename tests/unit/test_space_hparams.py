"""The conditional hyperparameter space: sampling, mutation, validation and spec handling."""

from __future__ import annotations

import contextlib
import copy
import json
import math
import random
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nasd.core.space import HparamsSpace, build_space, canonical_json
from nasd.errors import ConfigError, InvalidGenotype

SPEC: dict[str, Any] = {
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
        "nesterov": {
            "type": "categorical",
            "choices": [True, False],
            "condition": {"param": "optimizer", "in": ["sgd"]},
        },
        "lookahead": {
            "type": "int",
            "low": 1,
            "high": 20,
            "condition": {"param": "nesterov", "in": [True]},
        },
        "layers": {"type": "int", "low": 1, "high": 4},
        "width": {"type": "categorical", "choices": [32, 64, 128]},
    },
}


def expected_active(genotype: dict[str, Any]) -> set[str]:
    active = {"optimizer", "lr", "layers", "width"}
    if genotype["optimizer"] == "sgd":
        active |= {"momentum", "nesterov"}
        if genotype["nesterov"] is True:
            active.add("lookahead")
    return active


@pytest.fixture
def space() -> HparamsSpace:
    built = build_space(SPEC)
    assert isinstance(built, HparamsSpace)
    return built


def test_samples_are_valid_hold_exactly_the_active_params_and_cover_both_branches(
    space: HparamsSpace,
) -> None:
    rng = random.Random(1)
    optimizers = set()
    for _ in range(300):
        genotype = space.sample(rng)
        space.validate(genotype)
        assert json.loads(canonical_json(genotype)) == genotype
        assert set(genotype) == expected_active(genotype)
        assert isinstance(genotype["layers"], int)
        assert isinstance(genotype["lr"], float)
        optimizers.add(genotype["optimizer"])
        if "lookahead" in genotype:
            assert 1 <= genotype["lookahead"] <= 20
    assert optimizers == {"sgd", "adam"}


def test_loguniform_is_uniform_in_log_space(space: HparamsSpace) -> None:
    rng = random.Random(2)
    values = [space.sample(rng)["lr"] for _ in range(2000)]
    assert all(1e-4 <= v <= 1.0 for v in values)
    below_geometric_midpoint = sum(v < 1e-2 for v in values) / len(values)
    assert 0.45 < below_geometric_midpoint < 0.55  # a linear uniform would give about 0.01


def test_mutate_returns_valid_different_genotypes_changing_one_param(space: HparamsSpace) -> None:
    rng = random.Random(3)
    genotype = space.sample(rng)
    for _ in range(400):
        before = copy.deepcopy(genotype)
        child = space.mutate(genotype, rng)
        assert genotype == before  # the input is untouched
        assert child != genotype
        space.validate(child)
        changed = [k for k in set(child) & set(genotype) if child[k] != genotype[k]]
        assert len(changed) == 1
        genotype = child


def test_mutation_repairs_conditionals() -> None:
    space = HparamsSpace(
        {
            "opt": {"type": "categorical", "choices": ["sgd", "adam"]},
            "momentum": {
                "type": "uniform",
                "low": 0.0,
                "high": 1.0,
                "condition": {"param": "opt", "in": ["sgd"]},
            },
        }
    )
    rng = random.Random(4)
    child = space.mutate({"opt": "adam"}, rng)
    assert child["opt"] == "sgd" and 0.0 <= child["momentum"] <= 1.0
    seen_adam = False
    for _ in range(50):
        grandchild = space.mutate(child, rng)
        if grandchild["opt"] == "adam":
            assert grandchild == {"opt": "adam"}
            seen_adam = True
    assert seen_adam


def test_numeric_mutations_stay_in_bounds_even_at_the_edges() -> None:
    space = HparamsSpace(
        {
            "n": {"type": "int", "low": 0, "high": 3},
            "x": {"type": "uniform", "low": -1.0, "high": 1.0},
            "y": {"type": "loguniform", "low": 0.001, "high": 0.1},
        }
    )
    rng = random.Random(5)
    genotype: dict[str, Any] = {"n": 0, "x": 1.0, "y": 0.001}
    for _ in range(300):
        child = space.mutate(genotype, rng)
        space.validate(child)
        assert child != genotype
        genotype = child


def test_a_space_with_one_member_mutates_to_an_equal_copy() -> None:
    space = HparamsSpace({"n": {"type": "int", "low": 2, "high": 2}})
    genotype = {"n": 2}
    child = space.mutate(genotype, random.Random(0))
    assert child == genotype and child is not genotype


def test_same_seed_same_sequence(space: HparamsSpace) -> None:
    def run(seed: int) -> list[dict[str, Any]]:
        rng = random.Random(seed)
        genotype = space.sample(rng)
        trail = [genotype]
        for _ in range(30):
            genotype = space.mutate(genotype, rng)
            trail.append(genotype)
        return trail

    assert run(7) == run(7)
    assert run(7) != run(8)


VALID: dict[str, Any] = {"optimizer": "adam", "lr": 0.01, "layers": 2, "width": 64}


@pytest.mark.parametrize(
    "genotype",
    [
        None,
        [],
        "adam",
        {},
        {**VALID, "extra": 1},
        {k: v for k, v in VALID.items() if k != "lr"},
        {**VALID, "optimizer": "rmsprop"},
        {**VALID, "width": 64.0},
        {**VALID, "width": "64"},
        {**VALID, "layers": 5},
        {**VALID, "layers": 2.0},
        {**VALID, "layers": True},
        {**VALID, "lr": 2.0},
        {**VALID, "lr": float("nan")},
        {**VALID, "lr": "0.01"},
        {**VALID, "momentum": 0.5},  # inactive: optimizer is adam
        {**VALID, "optimizer": "sgd"},  # momentum and nesterov missing
        {**VALID, "optimizer": "sgd", "momentum": 0.5, "nesterov": 1},
        {**VALID, "optimizer": "sgd", "momentum": 0.5, "nesterov": True},  # lookahead missing
        {**VALID, "optimizer": "sgd", "momentum": 0.5, "nesterov": False, "lookahead": 3},
    ],
)
def test_validate_rejects_bad_genotypes(space: HparamsSpace, genotype: Any) -> None:
    with pytest.raises(InvalidGenotype):
        space.validate(genotype)


def test_validate_accepts_a_hand_written_genotype(space: HparamsSpace) -> None:
    space.validate(VALID)
    space.validate({**VALID, "optimizer": "sgd", "momentum": 0.5, "nesterov": True, "lookahead": 3})


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=5),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=10,
)
NEAR_VALID = st.fixed_dictionaries(
    {"optimizer": st.sampled_from(["sgd", "adam", 1, None])},
    optional={"lr": JSON, "layers": JSON, "width": JSON, "momentum": JSON, "nesterov": JSON},
)


@settings(max_examples=60, deadline=None)
@given(JSON | NEAR_VALID)
def test_validate_raises_only_invalid_genotype_on_garbage(genotype: Any) -> None:
    space = build_space(SPEC)
    with contextlib.suppress(InvalidGenotype):
        space.validate(genotype)


def test_spec_round_trips_including_model_keys() -> None:
    spec = {**SPEC, "input_shape": [1, 40], "num_classes": 10}
    space = build_space(spec)
    assert space.spec() == spec
    assert build_space(space.spec()).spec() == space.spec()
    assert set(space.cost(space.sample(random.Random(0)))) == {"activations"}


def test_describe_lists_param_values(space: HparamsSpace) -> None:
    assert space.describe(VALID) == "optimizer=adam lr=0.01 layers=2 width=64"


def params(**defs: Any) -> dict[str, Any]:
    return {"kind": "hparams", "params": defs}


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"kind": "hparams"}, "space.params"),
        (params(), "space.params"),
        ({**params(a={"type": "int", "low": 0, "high": 1}), "seed": 3}, "space.seed"),
        (params(a={"type": "normal"}), "space.params.a.type"),
        (params(a={"type": "int", "low": 0, "high": 1, "step": 2}), "'step'"),
        (params(a={"type": "int", "low": 3, "high": 1}), "space.params.a"),
        (params(a={"type": "int", "low": 0.5, "high": 1}), "space.params.a"),
        (params(a={"type": "uniform", "low": 1.0, "high": 1.0}), "low < high"),
        (params(a={"type": "loguniform", "low": 0.0, "high": 1.0}), "0 < low"),
        (params(a={"type": "uniform", "low": 0, "high": math.inf}), "finite"),
        (params(a={"type": "categorical", "choices": []}), "space.params.a.choices"),
        (params(a={"type": "categorical", "choices": [1, 1]}), "twice"),
        (params(a={"type": "categorical", "choices": [[1]]}), "space.params.a.choices"),
        (
            params(a={"type": "categorical", "choices": ["x"], "condition": {"param": "b"}}),
            "condition",
        ),
        (
            params(
                a={
                    "type": "categorical",
                    "choices": ["x"],
                    "condition": {"param": "b", "in": ["x"]},
                }
            ),
            "unknown param 'b'",
        ),
        (
            params(
                a={"type": "uniform", "low": 0, "high": 1},
                b={"type": "int", "low": 0, "high": 1, "condition": {"param": "a", "in": [0.5]}},
            ),
            "only categorical or int",
        ),
        (
            params(
                a={"type": "categorical", "choices": ["x", "y"]},
                b={"type": "int", "low": 0, "high": 1, "condition": {"param": "a", "in": ["z"]}},
            ),
            "space.params.b.condition.in",
        ),
        (
            params(
                a={"type": "categorical", "choices": ["x"], "condition": {"param": "b", "in": [0]}},
                b={"type": "int", "low": 0, "high": 1, "condition": {"param": "a", "in": ["x"]}},
            ),
            "cycle",
        ),
        (
            params(a={"type": "int", "low": 0, "high": 1, "condition": {"param": "a", "in": [0]}}),
            "cycle",
        ),
        ({**params(a={"type": "int", "low": 0, "high": 1}), "input_shape": [0, 4]}, "input_shape"),
        ({**params(a={"type": "int", "low": 0, "high": 1}), "num_classes": "10"}, "num_classes"),
    ],
)
def test_bad_specs_raise_config_error_naming_the_key(spec: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace(".", r"\.").replace("(", r"\(")):
        build_space(spec)


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        (None, "expected a table"),
        ({}, "space.kind: required"),
        (
            {"kind": "transformer"},
            "unknown kind 'transformer'; one of "
            "\\['cnn', 'hparams', 'nb201', 'rnn-cell', 'unet'\\]",
        ),
    ],
)
def test_build_space_rejects_bad_kinds(spec: Any, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        build_space(spec)
