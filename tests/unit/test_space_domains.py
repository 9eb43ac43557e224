"""Each space's domains (SHADHO's complexity input) and its activation estimate in ``cost``."""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import Any

import pytest

from nasd.core.space import build_space
from nasd.core.space.cnn import CnnSpace
from nasd.core.space.domains import Discrete, LogUniform, Uniform
from nasd.core.space.hparams import HparamsSpace
from nasd.core.space.nb201 import OPS, NB201Space, from_op_code
from tests.contract.toy_space import ToySpace

D = Discrete


def cnn(**overrides: Any) -> CnnSpace:
    spec = {"kind": "cnn", "input_shape": [1, 8], "num_classes": 2, **overrides}
    space = build_space(spec)
    assert isinstance(space, CnnSpace)
    return space


def layer(
    kernel: int = 3,
    filters: int = 4,
    stride: int = 1,
    pool: str = "none",
    skips: Sequence[int] = (),
) -> dict[str, Any]:
    return {"kernel": kernel, "filters": filters, "stride": stride, "pool": pool, "skips": [*skips]}


# -- domains ---------------------------------------------------------------------------------


def test_cnn_domains_list_depth_then_every_layer_and_skip_source() -> None:
    space = cnn(
        min_layers=2,
        max_layers=4,
        kernels=[3, 5],
        filters=[4, 8, 16],
        strides=[1],
        pools=["none", "max"],
    )
    per_layer = [D(2), D(3), D(1), D(2)]
    assert space.domains() == [
        D(3),
        *per_layer,
        *per_layer,
        *per_layer, D(2),  # layer 2 may skip from layer 0
        *per_layer, D(2), D(2),  # layer 3 from layers 0 and 1
    ]  # fmt: skip


def test_cnn_domains_without_skips_have_only_layer_choices() -> None:
    space = cnn(min_layers=3, max_layers=3, kernels=[3], filters=[4, 8], skips=False)
    assert space.domains() == [D(1), *([D(1), D(2), D(2), D(3)] * 3)]


def test_cnn_skip_domains_match_the_skips_a_deepest_genotype_may_use() -> None:
    space = cnn(max_layers=7, filters=[4], strides=[1])
    # the deepest genotype with every skip validate allows: one on/off domain per skip
    every_skip = {"layers": [layer(skips=range(i - 1)) for i in range(7)]}
    space.validate(every_skip)
    sources = sum(len(lay["skips"]) for lay in every_skip["layers"])
    assert sources == 15
    assert len(space.domains()) == 1 + 4 * 7 + sources
    assert space.domains().count(D(2)) == sources


def test_nb201_domains_are_six_five_way_edges() -> None:
    assert NB201Space().domains() == [D(len(OPS))] * 6 == [D(5)] * 6


def test_hparams_domains_follow_spec_order_and_include_conditional_params() -> None:
    space = HparamsSpace(
        {
            "optimizer": {"type": "categorical", "choices": ["sgd", "adam", "rmsprop"]},
            "lr": {"type": "loguniform", "low": 1e-4, "high": 0.1},
            "momentum": {
                "type": "uniform",
                "low": 0.0,
                "high": 0.99,
                "condition": {"param": "optimizer", "in": ["sgd"]},
            },
            "layers": {"type": "int", "low": 1, "high": 4},
            "fixed": {"type": "int", "low": 3, "high": 3},
        }
    )
    assert space.domains() == [D(3), LogUniform(1e-4, 0.1), Uniform(0.0, 0.99), D(4), D(1)]


def test_toy_space_domains_are_one_bit_each() -> None:
    assert ToySpace(bits=3).domains() == [D(2), D(2), D(2)]


# -- activations -----------------------------------------------------------------------------


def test_cnn_activations_by_hand() -> None:
    genotype = {"layers": [layer(3, 4, 1, "max")]}
    # input 64; conv, BN, ReLU 3 * 4 * 64; max pool 4 * 16; logits 10 (either head)
    expected = 64 + 3 * 4 * 64 + 4 * 16 + 10
    for head in ("flatten", "gap"):
        space = cnn(input_shape=[1, 8, 8], filters=[4], num_classes=10, head=head)
        assert space.cost(genotype)["activations"] == expected


def test_cnn_activations_count_the_concatenated_skip_input() -> None:
    space = cnn(input_shape=[2, 9], num_classes=10)
    genotype = {"layers": [layer(3, 16, 2), layer(3, 32, 1, "max"), layer(5, 64, 1, "none", [0])]}
    # sizes (see test_space_cnn): conv 5, 5, 2; layer 1 pools to 2; layer 2 reads 48 x 2
    expected = 2 * 9 + 3 * 16 * 5 + (3 * 32 * 5 + 32 * 2) + (48 * 2 + 3 * 64 * 2) + 10
    assert space.cost(genotype)["activations"] == expected


def test_cnn_cost_keeps_params_and_flops_next_to_activations() -> None:
    space = cnn(input_shape=[1, 8, 8], filters=[4], num_classes=10)
    cost = space.cost({"layers": [layer(3, 4, 1, "max")]})
    assert cost == {"params": 36 + 8 + 640 + 10, "flops": 36 * 64 + 640, "activations": 906}


def test_cnn_activations_grow_with_filters_and_layers() -> None:
    space = cnn(input_shape=[3, 16, 16], filters=[8, 16, 32, 64], max_layers=5, head="gap")
    rng = random.Random(7)
    for _ in range(200):
        genotype = space.sample(rng)
        base = space.cost(genotype)["activations"]
        assert base > 0
        layers = genotype["layers"]
        i = rng.randrange(len(layers))
        if layers[i]["filters"] < 64:
            wider = [dict(lay) for lay in layers]
            wider[i]["filters"] = space.filters[space.filters.index(layers[i]["filters"]) + 1]
            assert space.cost({"layers": wider})["activations"] > base
        if len(layers) < space.max_layers:
            deeper = [*layers, layer(3, 8, 2, "max", [len(layers) - 2] if len(layers) > 1 else [])]
            assert space.cost({"layers": deeper})["activations"] > base


def test_nb201_cost_has_params_flops_and_activations() -> None:
    cost = NB201Space().cost(from_op_code("000000"))
    assert set(cost) == {"params", "flops", "activations"}
    stem = 3 * 32 * 32 + 2 * 16 * 32 * 32  # input, conv and BN outputs
    nodes = 5 * 3 * (16 * 32 * 32 + 32 * 16 * 16 + 64 * 8 * 8)  # three node sums per cell
    reductions = sum(
        c_in * s * s + 2 * c_out * (s // 2) ** 2  # ReLU(input), conv, BN
        + 3 * c_out * (s // 2) ** 2  # ReLU, conv, BN
        + c_in * (s // 2) ** 2 + c_out * (s // 2) ** 2  # shortcut pool, conv
        + c_out * (s // 2) ** 2  # residual sum
        for c_in, c_out, s in ((16, 32, 32), (32, 64, 16))
    )  # fmt: skip
    head = 2 * 64 * 8 * 8 + 64 + 10
    assert cost["activations"] == stem + nodes + reductions + head


def test_nb201_activations_grow_with_conv_and_pool_edges() -> None:
    space = NB201Space()
    planes = 16 * 32 * 32 + 32 * 16 * 16 + 64 * 8 * 8  # one C x H x W per stage
    base = space.cost(from_op_code("000000"))["activations"]
    assert space.cost(from_op_code("100000"))["activations"] == base  # skip: no new tensor
    assert space.cost(from_op_code("400000"))["activations"] == base + 5 * planes
    for conv in ("200000", "300000"):
        assert space.cost(from_op_code(conv))["activations"] == base + 5 * 3 * planes
    assert space.cost(from_op_code("333333"))["activations"] == base + 6 * 5 * 3 * planes


def test_nb201_activations_do_not_depend_on_classes_beyond_the_logits() -> None:
    genotype = from_op_code("303101")
    ten = NB201Space().cost(genotype)["activations"]
    assert NB201Space(num_classes=100).cost(genotype)["activations"] == ten + 90


MLP_PARAMS: dict[str, Any] = {
    "lr": {"type": "loguniform", "low": 1e-4, "high": 1.0},
    "layers": {"type": "int", "low": 0, "high": 4},
    "width": {"type": "categorical", "choices": [32, 64, 128]},
    "dropout": {"type": "uniform", "low": 0.0, "high": 0.5},
}


def test_hparams_activations_for_an_mlp_genotype() -> None:
    space = HparamsSpace(MLP_PARAMS, input_shape=[1, 40], num_classes=10)
    genotype = {"lr": 0.01, "layers": 2, "width": 64, "dropout": 0.0}
    assert space.cost(genotype) == {"activations": 40 + 2 * 2 * 64 + 10}
    assert space.cost({**genotype, "dropout": 0.25}) == {"activations": 40 + 3 * 2 * 64 + 10}
    bare = HparamsSpace(MLP_PARAMS)  # no input_shape, no num_classes: hidden layers only
    assert bare.cost(genotype) == {"activations": 2 * 2 * 64}


@pytest.mark.parametrize(
    ("smaller", "larger"),
    [
        ({"layers": 1, "width": 64}, {"layers": 3, "width": 64}),
        ({"layers": 2, "width": 32}, {"layers": 2, "width": 128}),
    ],
)
def test_hparams_activations_grow_with_layers_and_width(
    smaller: dict[str, int], larger: dict[str, int]
) -> None:
    space = HparamsSpace(MLP_PARAMS, input_shape=[3, 8, 8], num_classes=10)
    base = {"lr": 0.01, "dropout": 0.1}
    low = space.cost({**base, **smaller})["activations"]
    assert 0 < low < space.cost({**base, **larger})["activations"]


def test_hparams_without_mlp_keys_have_no_cost() -> None:
    space = HparamsSpace({"lr": {"type": "loguniform", "low": 1e-4, "high": 1.0}})
    assert space.cost({"lr": 0.01}) == {}
