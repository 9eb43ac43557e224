"""The built-in trainers, their data sets and the trainer registry."""

from __future__ import annotations

import importlib
import math
import random
import threading
from dataclasses import dataclass, field
from importlib.metadata import EntryPoint
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

import agents.trainers as trainers
from agents.trainers import (
    TrainingStopped,
    TrainRequest,
    UnknownTrainer,
    datasets,
    digits,
    load_trainer,
    mnist1d,
    nb201,
    zero,
)
from agents.trainers.common import Hyper, resolve_hyper
from nasd.errors import ConfigError, InvalidGenotype

NB201_DATA = Path(__file__).resolve().parents[3] / "shared" / "data" / "nb201.csv.gz"
DIGITS_SPACE: dict[str, Any] = {
    "kind": "cnn",
    "input_shape": [1, 8, 8],
    "num_classes": 10,
    "max_layers": 3,
    "filters": [8, 16, 32],
}
DIGITS_GENOTYPE: dict[str, Any] = {
    "layers": [
        {"kernel": 3, "filters": 16, "stride": 1, "pool": "max", "skips": []},
        {"kernel": 3, "filters": 16, "stride": 1, "pool": "none", "skips": []},
    ]
}


@dataclass
class FakeContext:
    """Records progress; asks to stop once ``stop_after`` progress reports have been made."""

    stop_after: int | None = None
    reports: list[tuple[int, int | None, dict[str, float]]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def progress(self, step: int, total: int | None, metrics: Any) -> None:
        with self.lock:
            self.reports.append((step, total, dict(metrics)))

    def should_stop(self) -> bool:
        return self.stop_after is not None and len(self.reports) >= self.stop_after


def request(
    genotype: Any,
    space: Any,
    *,
    options: dict[str, Any] | None = None,
    epochs: int | None = None,
    seed: int = 0,
    checkpoint_dir: Path | None = None,
) -> TrainRequest:
    return TrainRequest(
        job_id="job-1",
        experiment="exp/one",
        trial_id=7,
        genotype=genotype,
        space=space,
        options=options or {},
        epochs=epochs,
        seed=seed,
        checkpoint_dir=checkpoint_dir,
    )


# --- registry ---------------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(trainers.BUILTIN_TRAINERS))
def test_builtin_names_resolve_to_their_modules_train(name: str) -> None:
    module = importlib.import_module(trainers.BUILTIN_TRAINERS[name].split(":")[0])
    assert load_trainer(name) is module.train


def test_import_path_and_entry_point(monkeypatch: pytest.MonkeyPatch) -> None:
    assert load_trainer("agents.trainers.zero:train") is zero.train
    fake = EntryPoint(name="custom", value="agents.trainers.zero:score", group="nasd.trainers")

    def fake_entry_points(*, group: str, name: str) -> list[EntryPoint]:
        return [fake] if (group, name) == ("nasd.trainers", "custom") else []

    monkeypatch.setattr(trainers, "entry_points", fake_entry_points)
    assert load_trainer("custom") is zero.score


@pytest.mark.parametrize(
    ("name", "fragment"),
    [
        ("nope", "['digits', 'mnist1d', 'mnist1d-seq', 'nb201', 'unet_em', 'zero']"),
        ("agents.trainers.zero:missing", "no callable 'missing'"),
        ("agents.trainers.zero:__all__", "found list"),
        ("no_such_module_for_nasd:train", "cannot import"),
        (":train", "package.module:function"),
    ],
)
def test_unknown_trainers_are_refused_clearly(name: str, fragment: str) -> None:
    with pytest.raises(UnknownTrainer, match=None) as caught:
        load_trainer(name)
    assert fragment in str(caught.value)
    assert isinstance(caught.value, ValueError) and isinstance(caught.value, ConfigError)


# --- hyperparameters --------------------------------------------------------------------------


def test_hyperparameters_resolve_epochs_over_genotype_over_options_over_defaults() -> None:
    defaults = Hyper(epochs=3, lr=0.1, batch_size=32)
    options = {"epochs": 5, "lr": 0.2, "batch_size": 16, "optimizer": "sgd"}
    hyper = resolve_hyper(
        request({"lr": 0.3, "epochs": 6}, {}, options=options, epochs=4), defaults
    )
    assert (hyper.epochs, hyper.lr, hyper.batch_size, hyper.optimizer) == (4, 0.3, 16, "sgd")
    assert resolve_hyper(request({"epochs": 6}, {}, options=options), defaults).epochs == 6
    assert resolve_hyper(request({}, {}), defaults) == defaults
    for bad in ({"lr": "fast"}, {"epochs": 0}, {"optimizer": "lbfgs"}, {"batch_size": True}):
        with pytest.raises(ValueError):
            resolve_hyper(request({}, {}, options=bad), defaults)


# --- data sets --------------------------------------------------------------------------------


def test_digits_split_is_stratified_disjoint_scaled_and_cached() -> None:
    split = datasets.load_digits(0)
    sizes = (len(split.y_train), len(split.y_val), len(split.y_test))
    assert sum(sizes) == 1797 and abs(sizes[0] / 1797 - 0.6) < 0.01
    assert split.x_train.shape[1:] == (1, 8, 8) == split.input_shape
    assert split.x_train.dtype == torch.float32 and split.y_train.dtype == torch.int64
    assert float(split.x_train.min()) >= 0.0 and float(split.x_train.max()) <= 1.0
    assert set(split.y_val.tolist()) == set(range(10))
    assert datasets.load_digits(0) is split
    assert not torch.equal(datasets.load_digits(1).y_train, split.y_train)


def test_stratified_split_partitions_every_index() -> None:
    labels = np.repeat(np.arange(4), 25)
    parts = datasets.stratified_split(labels, (0.2, 0.2), seed=3)
    assert sorted(np.concatenate(parts).tolist()) == list(range(100))
    assert [len(p) for p in parts] == [20, 20, 60]
    assert np.bincount(labels[parts[0]]).tolist() == [5] * 4
    with pytest.raises(ValueError):
        datasets.stratified_split(labels, (0.6, 0.5), seed=0)


@pytest.fixture(scope="module")
def mnist1d_split() -> datasets.Split:
    """MNIST-1D generated in this test (cache cleared), checking global RNG state is untouched."""
    datasets._generate_mnist1d.cache_clear()
    datasets.load_mnist1d.cache_clear()
    random.seed(5)
    np.random.seed(5)
    split = datasets.load_mnist1d(0)
    draws = (random.random(), float(np.random.random()))
    random.seed(5)
    np.random.seed(5)
    assert draws == (random.random(), float(np.random.random()))
    return split


def test_mnist1d_uses_the_official_split_standardised(mnist1d_split: datasets.Split) -> None:
    split = mnist1d_split
    assert len(split.y_train) + len(split.y_val) == 4000 and len(split.y_test) == 1000
    assert abs(len(split.y_val) - 400) <= 5  # 10 % of each class, rounded per class
    assert split.input_shape == (1, 40) and split.num_classes == 10
    assert abs(float(split.x_train.mean())) < 1e-3
    assert abs(float(split.x_train.std()) - 1.0) < 1e-2
    per_class = torch.bincount(torch.cat([split.y_train, split.y_val]))
    assert (torch.bincount(split.y_val) - per_class * 0.1).abs().max() <= 0.5


# --- training ---------------------------------------------------------------------------------


def test_digits_trains_reports_progress_and_writes_a_loadable_checkpoint(tmp_path: Path) -> None:
    from safetensors import safe_open
    from safetensors.torch import load_file

    from agents.models import build_model

    context = FakeContext()
    result = digits.train(
        request(DIGITS_GENOTYPE, DIGITS_SPACE, epochs=2, checkpoint_dir=tmp_path / "ckpt"),
        context,
    )
    metrics = result.metrics
    assert set(metrics) >= {"val_acc", "test_acc", "params", "flops", "train_seconds", "epochs"}
    assert all(isinstance(v, float) and math.isfinite(v) for v in metrics.values())
    assert metrics["val_acc"] > 0.5 and metrics["test_acc"] > 0.5 and metrics["epochs"] == 2
    assert metrics["flops"] > 0 and metrics["train_seconds"] > 0
    assert [(step, total) for step, total, _ in context.reports] == [(1, 2), (2, 2)]
    assert context.reports[-1][2]["val_acc"] == metrics["val_acc"]

    assert result.checkpoint == str(tmp_path / "ckpt" / "exp_one-7.safetensors")
    model = build_model(DIGITS_SPACE, DIGITS_GENOTYPE)
    model.load_state_dict(load_file(result.checkpoint))
    assert metrics["params"] == sum(p.numel() for p in model.parameters())
    with safe_open(result.checkpoint, "pt") as handle:
        assert '"filters":16' in handle.metadata()["genotype"]


def test_same_seed_same_metrics_different_seed_different_weights() -> None:
    def run(seed: int) -> dict[str, float]:
        return digits.train(
            request(DIGITS_GENOTYPE, DIGITS_SPACE, epochs=1, seed=seed), FakeContext()
        ).metrics

    first, again, other = run(3), run(3), run(4)
    drop = lambda m: {k: v for k, v in m.items() if k != "train_seconds"}  # noqa: E731
    assert drop(first) == drop(again)
    assert first["train_loss"] != other["train_loss"]


def test_should_stop_raises_training_stopped() -> None:
    context = FakeContext(stop_after=1)
    with pytest.raises(TrainingStopped):
        digits.train(request(DIGITS_GENOTYPE, DIGITS_SPACE, epochs=5), context)
    assert len(context.reports) == 1


def test_divergence_fails_the_attempt_clearly() -> None:
    options = {"optimizer": "sgd", "lr": 1e30, "momentum": 0.0}
    with pytest.raises(RuntimeError, match="diverged"):
        digits.train(
            request(DIGITS_GENOTYPE, DIGITS_SPACE, options=options, epochs=2), FakeContext()
        )


def test_space_input_shape_is_filled_in_or_checked() -> None:
    space = {k: v for k, v in DIGITS_SPACE.items() if k not in ("input_shape", "num_classes")}
    result = digits.train(request(DIGITS_GENOTYPE, space, epochs=1), FakeContext())
    assert result.metrics["val_acc"] > 0
    with pytest.raises(ValueError, match="input_shape"):
        digits.train(
            request(DIGITS_GENOTYPE, {**DIGITS_SPACE, "input_shape": [1, 40]}), FakeContext()
        )
    with pytest.raises(InvalidGenotype):
        digits.train(request({"layers": []}, DIGITS_SPACE, epochs=1), FakeContext())


def test_hparams_space_trains_an_mlp_with_the_genotypes_hyperparameters() -> None:
    space = {
        "kind": "hparams",
        "params": {
            "optimizer": {"type": "categorical", "choices": ["sgd", "adam"]},
            "lr": {"type": "loguniform", "low": 1e-3, "high": 1e-1},
            "width": {"type": "int", "low": 16, "high": 64},
        },
    }
    genotype = {"optimizer": "adam", "lr": 0.01, "width": 32}
    metrics = digits.train(request(genotype, space, epochs=3), FakeContext()).metrics
    assert metrics["val_acc"] > 0.6 and metrics["flops"] == 0.0
    assert metrics["params"] == (64 * 32 + 32) + (32 * 32 + 32) + (32 * 10 + 10)


def test_mnist1d_one_quick_epoch(mnist1d_split: datasets.Split) -> None:
    space = {"kind": "cnn", "input_shape": [1, 40], "num_classes": 10, "filters": [8]}
    genotype = {"layers": [{"kernel": 5, "filters": 8, "stride": 2, "pool": "max", "skips": []}]}
    context = FakeContext()
    metrics = mnist1d.train(
        request(genotype, space, options={"epochs": 1, "batch_size": 128}), context
    ).metrics
    assert metrics["epochs"] == 1 and 0.1 < metrics["val_acc"] <= 1.0
    assert all(math.isfinite(v) for v in metrics.values())
    assert len(context.reports) == 1


# --- nb201 ------------------------------------------------------------------------------------

needs_nb201 = pytest.mark.skipif(
    not NB201_DATA.is_file(), reason=f"NB201 table not found at {NB201_DATA} (shared data absent)"
)
RESNET = {"ops": ["nor_conv_3x3", "none", "nor_conv_3x3", "skip_connect", "none", "skip_connect"]}


@needs_nb201
@pytest.mark.parametrize(
    ("dataset", "test_acc"), [("c10", 0.9086), ("c100", 0.7050), ("in16", 0.4410)]
)
def test_nb201_looks_up_the_resnet_cell(dataset: str, test_acc: float) -> None:
    context = FakeContext()
    options = {"data": str(NB201_DATA), "dataset": dataset, "latency_device": "pixel3"}
    metrics = nb201.train(request(RESNET, {"kind": "nb201"}, options=options), context).metrics
    row = nb201.load_table(NB201_DATA).rows["303101"]
    assert metrics["test_acc"] == pytest.approx(test_acc) == metrics["val200"]
    assert metrics["val_acc"] == pytest.approx(row[f"{dataset}_val12"] / 100)
    assert metrics["train_seconds"] == pytest.approx(row[f"{dataset}_train_time200_s"] * 12 / 200)
    assert metrics["sim_train_seconds"] == metrics["train_seconds"]
    assert metrics["params"] == pytest.approx(row[f"{dataset}_params_MB"] * 1e6)
    assert metrics["latency_ms"] == row["lat_pixel3"]
    assert (metrics["flops"] > 0) == (dataset != "in16")
    assert len(context.reports) == 1


@needs_nb201
def test_nb201_refuses_bad_options_and_genotypes(tmp_path: Path) -> None:
    data = {"data": str(NB201_DATA)}
    cases: list[tuple[dict[str, Any], Any, type[Exception], str]] = [
        ({}, RESNET, ValueError, "'data'"),
        ({"data": str(tmp_path / "absent.csv.gz")}, RESNET, ValueError, "not a file"),
        ({**data, "dataset": "mnist"}, RESNET, ValueError, "dataset"),
        ({**data, "latency_device": "abacus"}, RESNET, ValueError, "pixel3"),
        (data, {"ops": ["conv"] * 6}, InvalidGenotype, "ops"),
    ]
    for options, genotype, error, fragment in cases:
        with pytest.raises(error, match=fragment):
            nb201.train(request(genotype, {"kind": "nb201"}, options=options), FakeContext())
    broken = tmp_path / "broken.csv.gz"
    broken.write_bytes(b"not gzip")
    with pytest.raises(ValueError, match="cannot read"):
        nb201.train(request(RESNET, {}, options={"data": str(broken)}), FakeContext())


@needs_nb201
def test_nb201_sleep_honours_should_stop() -> None:
    options = {"data": str(NB201_DATA), "sleep": 60.0}
    with pytest.raises(TrainingStopped):
        nb201.train(request(RESNET, {}, options=options), FakeContext(stop_after=0))


# --- zero -------------------------------------------------------------------------------------


def test_zero_is_deterministic_per_genotype() -> None:
    first = zero.train(request({"a": 1, "b": [2]}, {}), FakeContext()).metrics
    same = zero.train(request({"b": [2], "a": 1}, {}, seed=9), FakeContext()).metrics
    other = zero.train(request({"a": 2, "b": [2]}, {}), FakeContext()).metrics
    assert 0.0 <= first["val_acc"] < 1.0
    assert first["val_acc"] == same["val_acc"] != other["val_acc"]
    with pytest.raises(TrainingStopped):
        zero.train(request({}, {}, options={"seconds": 30}), FakeContext(stop_after=0))
