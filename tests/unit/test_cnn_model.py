"""The PyTorch builders: the CNN matches its space's cost model exactly; the MLP and dispatch."""

from __future__ import annotations

import random
from typing import Any

import pytest
import torch

from agents.models import build_cnn, build_model
from nasd.core.space import CnnSpace, build_space
from nasd.errors import ConfigError, InvalidGenotype

SPECS: list[dict[str, Any]] = [
    {"kind": "cnn", "input_shape": [2, 12], "num_classes": 3, "filters": [2, 4, 8]},
    {"kind": "cnn", "input_shape": [1, 7], "num_classes": 4, "filters": [3, 5], "head": "gap"},
    {
        "kind": "cnn",
        "input_shape": [3, 6, 5],
        "num_classes": 2,
        "filters": [2, 4],
        "kernels": [1, 3],
    },
    {"kind": "cnn", "input_shape": [1, 8, 8], "num_classes": 5, "filters": [4], "head": "gap"},
]


def n_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("spec", SPECS, ids=["1d-flatten", "1d-gap", "2d-flatten", "2d-gap"])
def test_parameter_count_and_output_shape_match_the_space(spec: dict[str, Any]) -> None:
    torch.manual_seed(0)
    space = build_space(spec)
    assert isinstance(space, CnnSpace)
    rng = random.Random(len(spec["input_shape"]) * 100 + spec["num_classes"])
    batch = torch.randn(2, *spec["input_shape"])
    pooled_skips = 0  # skips whose source must be adaptively pooled to a smaller size
    for _ in range(8):
        genotype = space.sample(rng)
        plan = space.plan(genotype)
        pooled_skips += sum(
            plan.layers[j].out_size != layer.in_size for layer in plan.layers for j in layer.skips
        )
        model = build_model(spec, genotype)
        assert n_params(model) == space.cost(genotype)["params"], space.describe(genotype)
        model.eval()
        with torch.no_grad():
            logits = model(batch)
        assert logits.shape == (2, spec["num_classes"])
        assert torch.isfinite(logits).all()
    assert pooled_skips > 0


def test_a_cnn_trains_through_its_skip_connections() -> None:
    torch.manual_seed(0)
    spec = SPECS[2]
    genotype = {
        "layers": [
            {"kernel": 3, "filters": 2, "stride": 1, "pool": "max", "skips": []},
            {"kernel": 1, "filters": 4, "stride": 2, "pool": "none", "skips": []},
            {"kernel": 3, "filters": 2, "stride": 1, "pool": "avg", "skips": [0]},
        ]
    }
    model = build_cnn(spec, genotype)
    logits = model(torch.randn(4, 3, 6, 5))
    logits.sum().backward()
    first_conv = next(model.parameters())
    assert first_conv.grad is not None and first_conv.grad.abs().sum() > 0
    assert n_params(model) == build_space(spec).cost(genotype)["params"]


def test_build_cnn_rejects_genotypes_and_specs_outside_the_space() -> None:
    with pytest.raises(InvalidGenotype):
        build_cnn(SPECS[0], {"layers": [{"kernel": 4}]})
    with pytest.raises(ConfigError):
        build_cnn({"kind": "cnn", "num_classes": 3}, {"layers": []})


HPARAMS: dict[str, Any] = {
    "kind": "hparams",
    "input_shape": [1, 40],
    "num_classes": 10,
    "params": {
        "layers": {"type": "int", "low": 0, "high": 3},
        "width": {"type": "int", "low": 8, "high": 64},
        "activation": {"type": "categorical", "choices": ["relu", "tanh", "gelu", "elu"]},
        "dropout": {"type": "uniform", "low": 0.0, "high": 0.5},
        "lr": {"type": "loguniform", "low": 1e-4, "high": 1e-1},
    },
}


def test_hparams_genotypes_build_mlps_of_the_right_size() -> None:
    rng = random.Random(0)
    space = build_space(HPARAMS)
    for _ in range(10):
        genotype = space.sample(rng)
        model = build_model(HPARAMS, genotype)
        layers, width = genotype["layers"], genotype["width"]
        if layers == 0:
            expected = 40 * 10 + 10
        else:
            expected = (40 + 1) * width + (layers - 1) * (width + 1) * width + (width + 1) * 10
        assert n_params(model) == expected
        assert model(torch.randn(3, 1, 40)).shape == (3, 10)


def test_mlp_defaults_apply_to_missing_keys() -> None:
    spec = {**HPARAMS, "params": {"lr": {"type": "uniform", "low": 0.1, "high": 0.2}}}
    model = build_model(spec, {"lr": 0.15})
    assert n_params(model) == 41 * 128 + 129 * 128 + 129 * 10
    assert isinstance(list(model.children())[2], torch.nn.ReLU)


def test_mlp_needs_input_shape_and_num_classes_and_valid_values() -> None:
    bare = {k: v for k, v in HPARAMS.items() if k not in ("input_shape", "num_classes")}
    genotype = {"layers": 1, "width": 8, "activation": "relu", "dropout": 0.0, "lr": 0.01}
    with pytest.raises(ValueError, match="input_shape"):
        build_model(bare, genotype)
    with pytest.raises(InvalidGenotype):
        build_model(HPARAMS, {**genotype, "activation": "swish"})
    loose = {**HPARAMS, "params": {"dropout": {"type": "uniform", "low": 0.0, "high": 2.0}}}
    with pytest.raises(InvalidGenotype, match="dropout"):
        build_model(loose, {"dropout": 1.5})


def test_unknown_kinds_have_no_builder() -> None:
    with pytest.raises(ValueError, match="no model builder for space kind 'nb201'"):
        build_model({"kind": "nb201"}, {"ops": ["none"] * 6})
