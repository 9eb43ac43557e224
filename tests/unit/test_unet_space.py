"""The seed's U-Net space: spec, sampling, mutation, validation, domains and the cost model."""

from __future__ import annotations

import random
from typing import Any

import pytest

from nasd.core.space.domains import Discrete, Uniform
from nasd.core.space.unet import (
    ACTIVATIONS,
    INITIALIZERS,
    KERNEL_SIZES,
    MIN_KERNELS,
    REGULARIZERS,
    UNetSpace,
)
from nasd.errors import ConfigError, InvalidGenotype

KEYS = {"min_kernels", "kernel_size", "activation", "initializer", "regularizer", "dropout", "lr"}


def tiny(**changes: Any) -> dict[str, Any]:
    """A small valid genotype with some keys changed."""
    genotype: dict[str, Any] = {
        "min_kernels": 16,
        "kernel_size": 1,
        "activation": "relu",
        "initializer": "he_normal",
        "regularizer": "l2",
        "dropout": 0.0,
        "lr": 0.01,
    }
    return {**genotype, **changes}


def test_the_spec_has_defaults_and_rebuilds_an_equal_space() -> None:
    space = UNetSpace.from_spec({"kind": "unet"})
    assert space.spec() == {"kind": "unet", "depth": 2, "input_size": 32, "channels": 1}
    other = UNetSpace.from_spec({"kind": "unet", "depth": 3, "input_size": 48, "channels": 3})
    assert UNetSpace.from_spec(other.spec()).spec() == other.spec()


@pytest.mark.parametrize(
    ("spec", "key"),
    [
        ({"depth": 0}, "space.depth"),
        ({"depth": 5}, "space.depth"),
        ({"depth": True}, "space.depth"),
        ({"depth": 2, "input_size": 30}, "space.input_size"),
        ({"input_size": 0}, "space.input_size"),
        ({"channels": 0}, "space.channels"),
        ({"kernels": [3]}, "space.kernels"),
    ],
)
def test_a_bad_spec_is_refused_naming_the_key(spec: dict[str, Any], key: str) -> None:
    with pytest.raises(ConfigError, match=key):
        UNetSpace.from_spec({"kind": "unet", **spec})


def test_the_default_genotype_is_the_seeds_default_unet() -> None:
    space = UNetSpace()
    default = dict(UNetSpace.DEFAULT_GENOTYPE)
    space.validate(default)
    assert default == {
        "min_kernels": 64,
        "kernel_size": 3,
        "activation": "relu",
        "initializer": "he_normal",
        "regularizer": "l2",
        "dropout": 0.0,
        "lr": 1e-3,
    }
    with pytest.raises(TypeError):
        UNetSpace.DEFAULT_GENOTYPE["lr"] = 1.0  # type: ignore[index]


def test_samples_are_valid_and_cover_every_choice() -> None:
    space = UNetSpace()
    rng = random.Random(7)
    samples = [space.sample(rng) for _ in range(400)]
    for genotype in samples:
        space.validate(genotype)
        assert set(genotype) == KEYS
    for key, choices in (
        ("min_kernels", MIN_KERNELS),
        ("kernel_size", KERNEL_SIZES),
        ("activation", ACTIVATIONS),
        ("initializer", INITIALIZERS),
        ("regularizer", REGULARIZERS),
    ):
        assert {g[key] for g in samples} == set(choices), key
    dropouts = [g["dropout"] for g in samples]
    rates = [g["lr"] for g in samples]
    assert 0 <= min(dropouts) < 0.1 and 0.9 < max(dropouts) <= 1
    assert 1e-4 <= min(rates) < 0.1 and 0.9 < max(rates) <= 1


def test_sampling_is_a_function_of_the_rng() -> None:
    space = UNetSpace()
    assert space.sample(random.Random(3)) == space.sample(random.Random(3))


def test_a_mutation_changes_exactly_one_key_and_leaves_its_argument_alone() -> None:
    space = UNetSpace()
    rng = random.Random(11)
    changed: set[str] = set()
    for _ in range(200):
        parent = space.sample(rng)
        before = dict(parent)
        child = space.mutate(parent, rng)
        assert parent == before
        space.validate(child)
        diff = [k for k in KEYS if child[k] != parent[k]]
        assert len(diff) == 1
        changed.update(diff)
    assert changed == KEYS


@pytest.mark.parametrize(
    ("genotype", "message"),
    [
        ({k: v for k, v in tiny().items() if k != "lr"}, "lr: missing"),
        (tiny(activation="gelu"), "activation"),
        (tiny(activation="ReLU"), "activation"),
        (tiny(min_kernels=8), "min_kernels"),
        (tiny(kernel_size=2), "kernel_size"),
        (tiny(initializer="glorot_uniform"), "initializer"),
        (tiny(regularizer="l3"), "regularizer"),
        (tiny(dropout=1.5), "dropout"),
        (tiny(lr=0.0), "lr"),
        (tiny(lr=float("nan")), "lr"),
        ({**tiny(), "depth": 2}, "unknown param"),
        ([1, 2], "expected a table"),
    ],
)
def test_validate_names_what_is_wrong(genotype: Any, message: str) -> None:
    with pytest.raises(InvalidGenotype, match=message):
        UNetSpace().validate(genotype)


def test_domains_are_the_seeds_seven() -> None:
    assert UNetSpace(depth=3).domains() == [
        Discrete(4),
        Discrete(5),
        Discrete(7),
        Discrete(4),
        Discrete(3),
        Uniform(0.0, 1.0),
        Uniform(1e-4, 1.0),
    ]


def test_cost_of_a_tiny_unet_counted_by_hand() -> None:
    # depth 1, 4x4 input, 16 filters at level 0, 32 at the bottleneck, 1x1 kernels.
    space = UNetSpace(depth=1, input_size=4)
    # enc0: 1->16 (16+16), 16->16 (256+16); bottleneck: 16->32 (512+32), 32->32 (1024+32);
    # up0: 32->16 2x2 (2048+16); dec0: 32->16 (512+16), 16->16 (256+16); head: 16->1 (16+1).
    params = 32 + 272 + 544 + 1056 + 2064 + 528 + 272 + 17
    # MACs: enc0 (16+256)*16 px; bottleneck (512+1024)*4 px; up 2048*4 input px;
    # dec0 (512+256)*16 px; head 16*16 px.
    flops = 272 * 16 + 1536 * 4 + 2048 * 4 + 768 * 16 + 16 * 16
    # input 16; activated convs (enc0, bottleneck, dec0) twice their output (conv, activation);
    # up and head once; pool 16*4; concat 32*16.
    activations = 16 + 2 * 2 * 256 + 2 * 2 * 128 + 2 * 2 * 256 + 256 + 16 + 64 + 512
    assert space.cost(tiny()) == {
        "params": float(params),
        "flops": float(flops),
        "activations": float(activations),
    }
    prelu = space.cost(tiny(activation="prelu"))
    assert prelu["params"] == params + 16 + 16 + 32 + 32 + 16 + 16  # one slope per channel
    assert space.cost(tiny(dropout=0.5))["activations"] == activations + 2 * 32 * 4


def test_cost_grows_with_kernels_kernel_size_depth_and_input() -> None:
    small = UNetSpace().cost(tiny())
    for bigger in (UNetSpace().cost(tiny(min_kernels=32)), UNetSpace(depth=3).cost(tiny())):
        assert all(bigger[k] > small[k] for k in ("params", "flops", "activations"))
    larger_kernel = UNetSpace().cost(tiny(kernel_size=3))
    assert larger_kernel["params"] > small["params"] and larger_kernel["flops"] > small["flops"]
    assert larger_kernel["activations"] == small["activations"]
    wider = UNetSpace(input_size=64).cost(tiny())
    assert wider["params"] == small["params"]
    assert wider["flops"] == 4 * small["flops"]
    assert wider["activations"] == 4 * small["activations"]


def test_the_plan_doubles_filters_and_halves_sizes_per_level() -> None:
    plan = UNetSpace(depth=3, input_size=64, channels=2).plan(tiny(min_kernels=32, kernel_size=5))
    assert plan.filters == (32, 64, 128, 256)
    assert plan.sizes == (64, 32, 16, 8)
    stages = [c.stage for c in plan.convs]
    assert stages[:2] == ["enc0", "enc0"] and stages[-1] == "head"
    assert plan.convs[0].in_channels == 2
    ups = [c for c in plan.convs if c.transposed]
    assert [(c.in_channels, c.out_channels, c.kernel) for c in ups] == [
        (256, 128, 2),
        (128, 64, 2),
        (64, 32, 2),
    ]
    assert {c.kernel for c in plan.convs if not c.transposed and c.stage != "head"} == {5}


def test_describe_shows_every_choice() -> None:
    text = UNetSpace().describe(dict(UNetSpace.DEFAULT_GENOTYPE))
    assert text == "m64 k3 relu he_normal l2 drop=0 lr=0.001"
