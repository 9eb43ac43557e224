"""The U-Net model, the segmentation scores, the EM trainer and the figure, on the real slices.

The trainer and figure tests need the ISBI-2012 slices at ``../shared/data/isbi2012_membrane``
relative to the repository root, and skip with a message when they are absent. They train at a
tiny budget (scale 8, 32-pixel crops, one epoch) to stay within seconds.
"""

from __future__ import annotations

import itertools
import json
import math
import random
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

from agents.models.unet import ThresholdedReLU, build_unet, conv_weights
from agents.trainers._base import TrainingStopped, TrainRequest
from agents.trainers.segmentation import TEST, load_slices, rand_error, scores, segments
from agents.trainers.unet_em import fit_unet, parse_options, train
from agents.unet_figure import figure_size, main, read_experiment, write_figure
from nasd.core.space.unet import ACTIVATIONS, INITIALIZERS, UNetSpace
from nasd.errors import InvalidGenotype

ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT.parent / "shared" / "data" / "isbi2012_membrane"
needs_data = pytest.mark.skipif(
    not (DATA / "image" / "29.png").is_file(),
    reason=f"the ISBI-2012 EM slices are not at {DATA}",
)
SPACE = {"kind": "unet", "depth": 1, "input_size": 32}
OPTIONS = {"data": str(DATA), "scale": 8, "crops_per_slice": 1, "batch_size": 10}


def genotype(**changes: Any) -> dict[str, Any]:
    """A small valid genotype that trains in a second."""
    base: dict[str, Any] = {
        "min_kernels": 16,
        "kernel_size": 3,
        "activation": "relu",
        "initializer": "he_normal",
        "regularizer": "l2",
        "dropout": 0.1,
        "lr": 0.01,
    }
    return {**base, **changes}


def n_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


class Recorder:
    """A training context that records progress and stops when told to."""

    def __init__(self, stop_after: int | None = None) -> None:
        self.steps: list[tuple[int, int | None, dict[str, float]]] = []
        self.stop_after = stop_after

    def progress(self, step: int, total: int | None, metrics: Any) -> None:
        self.steps.append((step, total, dict(metrics)))

    def should_stop(self) -> bool:
        return self.stop_after is not None and len(self.steps) >= self.stop_after


def request(**changes: Any) -> TrainRequest:
    fields: dict[str, Any] = {
        "job_id": "job",
        "experiment": "unet-test",
        "trial_id": 1,
        "genotype": genotype(),
        "space": SPACE,
        "options": OPTIONS,
        "epochs": 1,
        "seed": 0,
    }
    return TrainRequest(**{**fields, **changes})


# -- the model ---------------------------------------------------------------------------------


@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_every_activation_builds_runs_and_matches_the_cost_model(activation: str) -> None:
    rng = random.Random(activation)
    for depth, size in ((1, 8), (2, 16)):
        space = UNetSpace(depth=depth, input_size=size, channels=2)
        g = {**space.sample(rng), "activation": activation, "initializer": "he_normal"}
        g["min_kernels"], g["dropout"] = rng.choice([16, 32]), 0.5
        torch.manual_seed(0)
        model = build_unet(space.spec(), g)
        assert n_params(model) == space.cost(g)["params"], space.describe(g)
        model.eval()
        with torch.no_grad():  # the crop size, and a larger whole-slice size
            for side in (size, 2 * size):
                logits = model(torch.rand(3, 2, side, side))
                assert logits.shape == (3, 1, side, side)
                assert torch.isfinite(logits).all()


@pytest.mark.parametrize("initializer", INITIALIZERS)
def test_every_initializer_sets_conv_weights_and_zero_biases(initializer: str) -> None:
    torch.manual_seed(0)
    model = build_unet(SPACE, genotype(initializer=initializer, min_kernels=32))
    weights = conv_weights(model)
    assert len(weights) == 8  # 2 enc + 2 bottleneck + up + 2 dec + head
    for module in model.modules():
        if isinstance(module, torch.nn.Conv2d | torch.nn.ConvTranspose2d):
            assert module.bias is not None and not module.bias.any()
    if initializer in ("zeros", "ones"):
        assert all(bool((w == float(initializer == "ones")).all()) for w in weights)
        return
    decoder = model.stages["dec0"]
    assert isinstance(decoder, torch.nn.Sequential)
    conv = decoder[2]  # Conv2d(32 -> 32, 3x3): fan_in = fan_out = 288
    assert isinstance(conv, torch.nn.Conv2d)
    variance = 2 / 288 if initializer == "he_normal" else 2 / (288 + 288)
    std = float(conv.weight.detach().std())
    assert std == pytest.approx(math.sqrt(variance), rel=0.1)
    bound = 2 * math.sqrt(variance) / 0.87962566103423978
    assert float(conv.weight.detach().abs().max()) <= bound  # truncated at two deviations


def test_thresholded_relu_passes_only_values_above_one() -> None:
    x = torch.tensor([-2.0, 0.5, 1.0, 1.5, 3.0])
    assert ThresholdedReLU()(x).tolist() == [0.0, 0.0, 0.0, 1.5, 3.0]


def test_prelu_learns_one_slope_per_channel() -> None:
    model = build_unet(SPACE, genotype(activation="prelu"))
    slopes = [m for m in model.modules() if isinstance(m, torch.nn.PReLU)]
    assert [m.num_parameters for m in slopes] == [16, 16, 32, 32, 16, 16]


def test_an_invalid_genotype_is_refused_before_building() -> None:
    with pytest.raises(InvalidGenotype, match="activation"):
        build_unet(SPACE, genotype(activation="gelu"))


# -- the scores --------------------------------------------------------------------------------


def brute_force_rand_error(a: np.ndarray, b: np.ndarray) -> float:
    sa, sb = segments(a).ravel(), segments(b).ravel()
    pairs = list(itertools.combinations(range(sa.size), 2))
    disagree = sum((sa[i] == sa[j]) != (sb[i] == sb[j]) for i, j in pairs)
    return disagree / len(pairs)


def test_rand_error_is_zero_for_identical_segmentations_and_matches_pair_counting() -> None:
    rng = np.random.default_rng(0)
    for _ in range(5):
        a = rng.random((7, 6)) < 0.35
        b = rng.random((7, 6)) < 0.35
        assert rand_error(a, a) == 0.0
        assert rand_error(a, b) == pytest.approx(brute_force_rand_error(a, b))
        assert rand_error(a, b) == pytest.approx(rand_error(b, a))


def test_rand_error_sees_a_missing_membrane_that_pixel_accuracy_hardly_sees() -> None:
    truth = np.zeros((9, 9), dtype=bool)
    truth[:, 4] = True  # a membrane splits two cells
    merged = truth.copy()
    merged[4, 4] = False  # one pixel gap: the cells merge
    assert scores(merged[None], truth[None])["acc"] > 0.98
    assert rand_error(merged, truth) > 0.4


def test_scores_count_membrane_as_the_foreground() -> None:
    truth = np.array([[[True, True, False, False]]])
    predicted = np.array([[[True, False, True, False]]])
    assert scores(predicted, truth)["acc"] == 0.5
    assert scores(predicted, truth)["iou"] == pytest.approx(1 / 3)
    empty = np.zeros_like(truth)
    assert scores(empty, empty) == {"acc": 1.0, "iou": 1.0, "rand_error": 0.0}


# -- the trainer -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({}, "task.options.data: required"),
        ({"data": "/nonexistent/slices"}, "no folder"),
        ({"data": ".", "scale": 0}, "task.options.scale"),
        ({"data": ".", "batch_size": 2.5}, "task.options.batch_size"),
        ({"data": ".", "crops": 3}, "task.options.crops: unknown option"),
    ],
)
def test_bad_options_are_refused_naming_the_option(options: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_options(options)


def test_a_folder_without_slices_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="image/ and label/"):
        train(request(options={**OPTIONS, "data": str(tmp_path)}), Recorder())


@needs_data
def test_the_slices_load_shrunk_with_membrane_about_a_quarter() -> None:
    slices = load_slices(DATA, 8)
    assert slices.images.shape == slices.membrane.shape == (30, 64, 64)
    assert 0 <= slices.images.min() < slices.images.max() <= 1
    assert 0.15 < slices.membrane.mean() < 0.45


@needs_data
def test_the_trainer_reports_finite_scores_in_range() -> None:
    torch.set_num_threads(1)
    context = Recorder()
    result = train(request(epochs=2), context)
    metrics = result.metrics
    assert [step[:2] for step in context.steps] == [(1, 2), (2, 2)]
    assert all(math.isfinite(v) for v in metrics.values())
    for key in ("acc", "iou", "rand_error"):
        assert 0 <= metrics[f"val_{key}"] <= 1 and 0 <= metrics[f"test_{key}"] <= 1
    space = UNetSpace.from_spec(SPACE)
    assert metrics["params"] == space.cost(genotype())["params"]
    assert metrics["flops"] == space.cost(genotype())["flops"]
    assert metrics["diverged"] == 0.0 and metrics["epochs"] == 2.0
    assert metrics["val_acc"] > 0.5 and metrics["train_seconds"] > 0
    assert train(request(epochs=2), Recorder()).metrics["val_acc"] == metrics["val_acc"]


@needs_data
def test_the_trainer_stops_when_asked() -> None:
    with pytest.raises(TrainingStopped):
        train(request(epochs=3), Recorder(stop_after=1))


@needs_data
def test_a_crop_larger_than_the_shrunk_slices_is_refused() -> None:
    with pytest.raises(ValueError, match="larger than the 32-pixel slices"):
        train(
            request(options={**OPTIONS, "scale": 16}, space={**SPACE, "input_size": 64}), Recorder()
        )


@needs_data
def test_a_diverged_network_scores_as_all_cell_interior() -> None:
    # All-ones weights through four levels: the logits overflow to inf and the loss is NaN.
    g = genotype(initializer="ones", min_kernels=16, kernel_size=5, lr=1.0)
    context = Recorder()
    trained = fit_unet(request(genotype=g, epochs=2, space={**SPACE, "depth": 4}), context)
    assert trained.diverged, trained.metrics
    assert context.steps == []  # the first batch diverged: no epoch was completed
    truth = trained.slices.membrane[TEST.start : TEST.stop]
    assert trained.metrics["test_acc"] == pytest.approx(float((~truth).mean()))
    assert trained.metrics["test_iou"] == 0.0
    assert trained.metrics["diverged"] == 1.0 and trained.metrics["epochs"] == 0.0
    assert "train_loss" not in trained.metrics
    assert all(math.isfinite(v) for v in trained.metrics.values())


# -- the figure --------------------------------------------------------------------------------


def _database(path: Path, results: list[tuple[dict[str, Any], float]]) -> None:
    from nasd.store.connection import open_writer
    from nasd.store.repo import insert_experiment, insert_result, insert_trials, trial_row

    config = {
        "experiment": {"name": "unet-em", "budget": 4, "seed": 0},
        "space": SPACE,
        "strategy": {"name": "random"},
        "task": {"trainer": "unet_em", "epochs": 1, "options": OPTIONS},
    }
    conn = open_writer(path)
    insert_experiment(conn, "unet-em", json.dumps(config), "running", 0.0)
    for trial_id, (g, val_acc) in enumerate(results, 1):
        job = f"unet-em-{trial_id}"
        insert_trials(conn, [trial_row(job, "unet-em", trial_id, g, None, [], 1, "queued", 0.0)])
        insert_result(conn, job, "unet-em", trial_id, "a", 1, {"val_acc": val_acc}, None, 0, 1, 1)
    conn.close()


def test_read_experiment_picks_the_best_trial_read_only(tmp_path: Path) -> None:
    db = tmp_path / "nasd.db"
    best = genotype(kernel_size=5)
    _database(db, [(genotype(), 0.7), (best, 0.9), (genotype(kernel_size=1), 0.8)])
    config, found = read_experiment(db, "unet-em")
    assert found == best and config["space"] == SPACE
    with pytest.raises(ValueError, match="no experiment 'other'"):
        read_experiment(db, "other")
    assert main(["--db", str(tmp_path / "missing.db"), "--experiment", "x", "--out", "x.png"]) == 2


@needs_data
def test_the_figure_has_four_titled_panels_of_the_expected_size(tmp_path: Path) -> None:
    torch.set_num_threads(1)
    out = write_figure(
        DATA, SPACE, genotype(), tmp_path / "figure.png", options=OPTIONS, epochs=1, panel_size=96
    )
    with Image.open(out) as image:
        assert image.format == "PNG" and image.size == figure_size(96)
        pixels = np.asarray(image.convert("L"))
    width = 96
    # The ground-truth and prediction panels are black-and-white masks with some membrane.
    top = figure_size(width)[1] - 8 - width
    for column in (1, 2, 3):
        left = 8 + column * (width + 8)
        panel = pixels[top : top + width, left : left + width]
        assert set(np.unique(panel)) <= {0, 255}
    truth = pixels[top : top + width, 8 + width + 8 : 8 + 2 * width + 8]
    assert 0.1 < float((truth == 0).mean()) < 0.6


@needs_data
def test_the_cli_draws_the_best_trial_of_a_stored_experiment(tmp_path: Path) -> None:
    torch.set_num_threads(1)
    db = tmp_path / "nasd.db"
    _database(db, [(genotype(), 0.7), (genotype(min_kernels=32), 0.9)])
    out = tmp_path / "cli.png"
    assert main(["--db", str(db), "--experiment", "unet-em", "--out", str(out)]) == 0
    with Image.open(out) as image:
        assert image.size == figure_size(256)
