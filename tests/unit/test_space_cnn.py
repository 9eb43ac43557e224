"""The CNN space: spec handling, sampling, every mutation operator, validation and cost."""

from __future__ import annotations

import contextlib
import copy
import json
import random
import subprocess
import sys
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nasd.core.space import CnnSpace, build_space, canonical_json
from nasd.errors import ConfigError, InvalidGenotype

SPEC_1D: dict[str, Any] = {"kind": "cnn", "input_shape": [1, 40], "num_classes": 10}
SPEC_2D: dict[str, Any] = {
    "kind": "cnn",
    "input_shape": [3, 16, 16],
    "num_classes": 5,
    "head": "gap",
}


def layer(
    kernel: int = 3, filters: int = 16, stride: int = 1, pool: str = "none", skips: Any = ()
) -> dict[str, Any]:
    return {
        "kernel": kernel,
        "filters": filters,
        "stride": stride,
        "pool": pool,
        "skips": list(skips),
    }


def cnn(**spec: Any) -> CnnSpace:
    space = build_space({**SPEC_1D, **spec})
    assert isinstance(space, CnnSpace)
    return space


def test_spec_fills_defaults_and_round_trips() -> None:
    space = build_space(SPEC_1D)
    assert space.spec() == {
        **SPEC_1D,
        "min_layers": 1,
        "max_layers": 6,
        "kernels": [3, 5, 7],
        "filters": [16, 32, 64, 128],
        "strides": [1, 2],
        "pools": ["none", "max", "avg"],
        "skips": True,
        "head": "flatten",
    }
    assert build_space(space.spec()).spec() == space.spec()
    custom = build_space({**SPEC_2D, "kernels": [1, 3], "pools": ["max"], "skips": False})
    assert build_space(custom.spec()).spec() == custom.spec()


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"kernels": [4]}, r"space\.kernels: expected a non-empty list of odd ints, got \[4\]"),
        ({"kernels": []}, r"space\.kernels"),
        ({"kernels": [3, 3]}, r"space\.kernels: values must not repeat"),
        ({"filters": [0]}, r"space\.filters"),
        ({"filters": "16"}, r"space\.filters"),
        ({"strides": [1.0]}, r"space\.strides"),
        ({"pools": ["sum"]}, r"space\.pools: .*\['none', 'max', 'avg'\]"),
        ({"skips": "yes"}, r"space\.skips"),
        ({"head": "attention"}, r"space\.head: expected one of \['flatten', 'gap'\]"),
        ({"input_shape": [40]}, r"space\.input_shape"),
        ({"input_shape": [1, 2, 3, 4]}, r"space\.input_shape"),
        ({"input_shape": [1, 0]}, r"space\.input_shape"),
        ({"num_classes": 0}, r"space\.num_classes"),
        ({"min_layers": 0}, r"space\.min_layers"),
        ({"min_layers": 4, "max_layers": 3}, r"space\.max_layers"),
        ({"max_layers": 1000}, r"space\.max_layers"),
        ({"depth": 3}, r"space\.depth: unknown key for kind 'cnn'; allowed: \['filters'"),
    ],
)
def test_bad_specs_raise_config_error_naming_the_key(change: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        build_space({**SPEC_1D, **change})


def test_input_shape_and_num_classes_are_required() -> None:
    with pytest.raises(ConfigError, match=r"space\.input_shape: required"):
        build_space({"kind": "cnn", "num_classes": 10})
    with pytest.raises(ConfigError, match=r"space\.num_classes: required"):
        build_space({"kind": "cnn", "input_shape": [1, 8]})


@pytest.mark.parametrize("spec", [SPEC_1D, SPEC_2D])
def test_samples_are_valid_and_cover_the_choices(spec: dict[str, Any]) -> None:
    space = build_space(spec)
    rng = random.Random(1)
    depths: set[int] = set()
    kernels: set[int] = set()
    skip_count = 0
    for _ in range(300):
        genotype = space.sample(rng)
        space.validate(genotype)
        assert json.loads(canonical_json(genotype)) == genotype
        depths.add(len(genotype["layers"]))
        kernels.update(layer["kernel"] for layer in genotype["layers"])
        skip_count += sum(len(layer["skips"]) for layer in genotype["layers"])
    assert depths == set(range(1, 7))
    assert kernels == {3, 5, 7}
    assert skip_count > 0


def test_without_skips_nothing_ever_has_a_skip() -> None:
    space = cnn(skips=False)
    rng = random.Random(2)
    genotype = space.sample(rng)
    for _ in range(300):
        assert all(layer["skips"] == [] for layer in genotype["layers"])
        genotype = space.mutate(genotype, rng)


def classify(parent: dict[str, Any], child: dict[str, Any]) -> str:
    """Which operator turned ``parent`` into ``child`` (checking that only one thing changed)."""
    a, b = parent["layers"], child["layers"]
    if len(b) == len(a) + 1:
        return "insert"
    if len(b) == len(a) - 1:
        return "remove"
    assert len(a) == len(b)
    diffs = [(i, k) for i in range(len(a)) for k in a[i] if a[i][k] != b[i][k]]
    assert len(diffs) == 1
    i, key = diffs[0]
    if key == "skips":
        assert abs(len(a[i]["skips"]) - len(b[i]["skips"])) == 1
        return "add_skip" if len(b[i]["skips"]) > len(a[i]["skips"]) else "remove_skip"
    return key


@pytest.mark.parametrize("spec", [SPEC_1D, SPEC_2D])
def test_mutation_is_valid_different_pure_and_uses_every_operator(spec: dict[str, Any]) -> None:
    space = build_space(spec)
    rng = random.Random(3)
    genotype = space.sample(rng)
    used = set()
    for _ in range(600):
        before = copy.deepcopy(genotype)
        child = space.mutate(genotype, rng)
        assert genotype == before
        assert child != genotype
        space.validate(child)
        used.add(classify(genotype, child))
        genotype = child
    expected = {
        "kernel",
        "filters",
        "stride",
        "pool",
        "insert",
        "remove",
        "add_skip",
        "remove_skip",
    }
    assert used == expected


def test_mutation_respects_the_depth_bounds() -> None:
    space = cnn(min_layers=2, max_layers=3)
    rng = random.Random(4)
    genotype = space.sample(rng)
    for _ in range(200):
        genotype = space.mutate(genotype, rng)
        assert 2 <= len(genotype["layers"]) <= 3


def test_a_space_with_one_member_mutates_to_an_equal_copy() -> None:
    space = cnn(max_layers=1, kernels=[3], filters=[8], strides=[1], pools=["none"])
    genotype = {"layers": [layer(filters=8)]}
    child = space.mutate(genotype, random.Random(0))
    assert child == genotype and child is not genotype


def test_removing_a_layer_reindexes_skips() -> None:
    filters = [16, 32, 64, 128, 256]
    space = cnn(kernels=[3], filters=filters, strides=[1], pools=["none"], min_layers=3)
    skips: list[list[int]] = [[], [], [], [0], [0, 1, 2]]
    genotype = {"layers": [layer(filters=f, skips=s) for f, s in zip(filters, skips, strict=True)]}
    rng = random.Random(0)
    seen = set()
    for _ in range(300):
        child = space.mutate(genotype, rng)
        if len(child["layers"]) == 4:
            seen.add(tuple((item["filters"], tuple(item["skips"])) for item in child["layers"]))
    # A skip to the removed layer vanishes, later indices shift down, and a skip that now names
    # the direct predecessor is dropped (e.g. removing layer 3 turns [0, 1, 2] into [0, 1]).
    assert seen == {
        ((32, ()), (64, ()), (128, ()), (256, (0, 1))),
        ((16, ()), (64, ()), (128, (0,)), (256, (0, 1))),
        ((16, ()), (32, ()), (128, (0,)), (256, (0, 1))),
        ((16, ()), (32, ()), (64, ()), (256, (0, 1))),
        ((16, ()), (32, ()), (64, ()), (128, (0,))),
    }


def test_inserting_a_layer_shifts_later_skips() -> None:
    space = cnn(kernels=[3], filters=[16], strides=[1], pools=["none"], max_layers=6)
    genotype = {"layers": [layer(), layer(), layer(), layer(skips=[0, 1])]}
    rng = random.Random(0)
    positions = set()
    for _ in range(200):
        child = space.mutate(genotype, rng)
        if len(child["layers"]) != 5:
            continue
        # Taking the new layer out again and shifting skips back must give the parent.
        for at in range(5):
            rest = [item for i, item in enumerate(child["layers"]) if i != at]
            unshifted = [
                {**item, "skips": [j - 1 if j > at else j for j in item["skips"]]} for item in rest
            ]
            if {"layers": unshifted} == genotype and all(
                at not in item["skips"] for item in child["layers"][at + 1 :]
            ):
                positions.add(at)
                break
        else:
            pytest.fail(f"no inserted layer explains {child}")
    assert positions == set(range(5))


GOOD_LAYERS = [layer(), layer(5, 32, 2, "max"), layer(7, 64, 1, "avg", [0])]


@pytest.mark.parametrize(
    "genotype",
    [
        None,
        [],
        {},
        {"layers": "x"},
        {"layers": []},
        {"layers": [layer()] * 7},
        {"layers": GOOD_LAYERS, "extra": 1},
        {"layers": [None]},
        {"layers": [{**layer(), "dilation": 2}]},
        {"layers": [{k: v for k, v in layer().items() if k != "pool"}]},
        {"layers": [layer(kernel=4)]},
        {"layers": [{**layer(), "kernel": True}]},
        {"layers": [{**layer(), "kernel": 3.0}]},
        {"layers": [{**layer(), "filters": "16"}]},
        {"layers": [layer(stride=3)]},
        {"layers": [layer(pool="sum")]},
        {"layers": [layer(pool=None)]},  # type: ignore[arg-type]
        {"layers": [layer(), layer(skips=[0])]},  # 0 is already the direct input of layer 1
        {"layers": [*GOOD_LAYERS[:2], layer(skips=[2])]},
        {"layers": [*GOOD_LAYERS[:2], layer(skips=[-1])]},
        {"layers": [*GOOD_LAYERS, layer(skips=[1, 0])]},
        {"layers": [*GOOD_LAYERS, layer(skips=[0, 0])]},
        {"layers": [*GOOD_LAYERS[:2], {**layer(), "skips": "0"}]},
        {"layers": [*GOOD_LAYERS[:2], {**layer(), "skips": [True]}]},
    ],
)
def test_validate_rejects_bad_genotypes(genotype: Any) -> None:
    with pytest.raises(InvalidGenotype):
        cnn().validate(genotype)


def test_validate_rejects_skips_when_the_space_has_none() -> None:
    cnn().validate({"layers": GOOD_LAYERS})
    with pytest.raises(InvalidGenotype, match=r"layers\[2\]\.skips"):
        cnn(skips=False).validate({"layers": GOOD_LAYERS})


JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-2, 130) | st.floats() | st.sampled_from(["max", "x"]),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=5)
    ),
    max_leaves=12,
)
LAYERISH = st.fixed_dictionaries(
    {
        "kernel": st.sampled_from([3, 4, True, None]),
        "filters": st.sampled_from([16, 17, "16"]),
        "stride": st.sampled_from([1, 2, 0]),
        "pool": st.sampled_from(["none", "max", 1]),
        "skips": st.lists(st.integers(-1, 5), max_size=3) | JSON,
    }
)


@settings(max_examples=80, deadline=None)
@given(JSON | st.fixed_dictionaries({"layers": st.lists(LAYERISH | JSON, max_size=7)}))
def test_validate_raises_only_invalid_genotype_on_garbage(genotype: Any) -> None:
    space = cnn()
    with contextlib.suppress(InvalidGenotype):
        space.validate(genotype)
        space.cost(genotype)  # anything valid also has a cost


def test_cost_counts_params_and_macs_by_hand() -> None:
    space = cnn(input_shape=[1, 8, 8], filters=[4])
    genotype = {"layers": [layer(3, 4, 1, "max")]}
    # conv 1*4*9 weights + BN 2*4; pool halves 8x8 to 4x4; flatten 4*16 = 64 -> Linear(64, 10)
    assert space.cost(genotype) == {
        "params": 36 + 8 + 640 + 10,
        "flops": 36 * 64 + 640,
        "activations": 906,
    }
    gap = cnn(input_shape=[1, 8, 8], filters=[4], head="gap")
    assert gap.cost(genotype) == {
        "params": 36 + 8 + 40 + 10,
        "flops": 36 * 64 + 40,
        "activations": 906,
    }


def test_skip_inputs_widen_the_next_conv() -> None:
    space = cnn(input_shape=[2, 9])
    genotype = {"layers": [layer(3, 16, 2), layer(3, 32, 1, "max"), layer(5, 64, 1, "none", [0])]}
    plan = space.plan(genotype)
    assert [lp.in_channels for lp in plan.layers] == [2, 16, 32 + 16]
    assert [lp.conv_size for lp in plan.layers] == [(5,), (5,), (2,)]
    assert [lp.out_size for lp in plan.layers] == [(5,), (2,), (2,)]
    weights = 2 * 16 * 3 + 16 * 32 * 3 + 48 * 64 * 5
    assert space.cost(genotype)["params"] == weights + 2 * (16 + 32 + 64) + 64 * 2 * 10 + 10
    assert (
        space.cost(genotype)["flops"] == 2 * 16 * 3 * 5 + 16 * 32 * 3 * 5 + 48 * 64 * 5 * 2 + 1280
    )


def test_pools_are_left_out_once_the_input_is_too_small() -> None:
    space = cnn(input_shape=[1, 4, 1], strides=[1, 2])
    plan = space.plan({"layers": [layer(pool="max"), layer(stride=2, pool="avg")]})
    assert [lp.pool for lp in plan.layers] == ["none", "none"]
    assert plan.layers[-1].out_size == (2, 1)
    deep = cnn(input_shape=[1, 3], max_layers=6)
    plan = deep.plan({"layers": [layer(pool="max")] * 4})
    assert [lp.out_size for lp in plan.layers] == [(1,), (1,), (1,), (1,)]
    assert [lp.pool for lp in plan.layers] == ["max", "none", "none", "none"]


def test_same_seed_same_sequence() -> None:
    space = build_space(SPEC_2D)

    def run(seed: int) -> list[str]:
        rng = random.Random(seed)
        genotype = space.sample(rng)
        trail = [space.describe(genotype)]
        for _ in range(30):
            genotype = space.mutate(genotype, rng)
            trail.append(space.describe(genotype))
        return trail

    assert run(9) == run(9)
    assert run(9) != run(10)


def test_describe_is_compact() -> None:
    assert cnn().describe({"layers": GOOD_LAYERS}) == (
        "k3 f16 s1 none | k5 f32 s2 max | k7 f64 s1 avg +0"
    )


def test_the_space_package_imports_no_torch_asyncio_or_sqlite() -> None:
    code = (
        "import sys, nasd.core.space; "
        "bad = {'torch', 'asyncio', 'sqlite3'} & set(sys.modules); "
        "assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
