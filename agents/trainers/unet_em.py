"""The U-Net EM trainer: membrane segmentation of the ISBI-2012 slices (the seed's U-Net example).

The genotype (a ``unet`` space, :mod:`nasd.core.space.unet`) chooses the network, its
initialiser, weight penalty, dropout and Adam learning rate. Slices are shrunk by ``scale``;
each epoch trains on ``crops_per_slice`` random ``input_size`` crops of every training slice
(slices 0-19), in shuffled mini-batches. After the last epoch the network segments the whole
shrunk validation slices (20-24: ``val_*``, the selection signal) and held-out slices (25-29:
``test_*``, reported only), padded by reflection so ``2**depth`` divides their side.

Loss: binary cross-entropy on the membrane logit (membrane = label 0 = the positive class) plus
the genotype's penalty on every convolution weight (``l1``: ``1e-5 * sum |w|``, ``l2``:
``1e-4 * sum w**2``, ``l1_l2``: both). A learning rate near 1 diverges for some genotypes; that
is for the search to find out: a non-finite loss ends training at once, the network then counts
as predicting cell interior everywhere (the majority class) and ``diverged`` is 1.

Options (the experiment's ``[task.options]``): ``data`` (the folder of ``image/`` and ``label/``,
required), ``scale`` (default 4: 512x512 slices become 128x128), ``crops_per_slice`` (default
8), ``batch_size`` (default 16). Epochs come from ``request.epochs`` (default 5).

Metrics: ``val_acc``, ``val_iou``, ``val_rand_error``, ``test_acc``, ``test_iou``,
``test_rand_error`` (see :mod:`agents.trainers.segmentation`), ``train_loss`` (the last epoch's
mean, when finite), ``diverged``, ``epochs``, ``params``, ``flops`` (multiply-accumulates per
crop, from the space's cost model) and ``train_seconds``.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from numpy.typing import NDArray
from torch.nn import functional

from agents.models.unet import UNet, build_unet, conv_weights
from agents.trainers._base import TrainContext, TrainingStopped, TrainRequest, TrainResult
from agents.trainers.common import save_checkpoint
from agents.trainers.segmentation import TEST, TRAIN, VALIDATION, Slices, load_slices, scores
from nasd.core.space.unet import UNetSpace
from nasd.core.values import is_int

DEFAULT_EPOCHS = 5
PENALTIES = {"l1": (1e-5, 0.0), "l2": (0.0, 1e-4), "l1_l2": (1e-5, 1e-4)}
"""Regulariser name -> (L1 factor, L2 factor) on the convolution weights."""
RUNNER_OPTIONS = ("figure",)
"""Options the trainer accepts and leaves alone: ``figure`` is for ``nasd run`` (the PNG path)."""
_STOP_CHECK_EVERY = 4  # batches between should_stop() checks inside an epoch
_INIT_LOCK = threading.Lock()


@dataclass(frozen=True, slots=True)
class Options:
    """The trainer's task options, checked (see the module docstring)."""

    data: Path
    scale: int = 4
    crops_per_slice: int = 8
    batch_size: int = 16


def parse_options(options: Mapping[str, Any]) -> Options:
    """Check ``[task.options]``; ValueError naming the option when one is missing or wrong."""
    allowed = set(Options.__dataclass_fields__) | set(RUNNER_OPTIONS)
    unknown = sorted(set(options) - allowed)
    if unknown:
        raise ValueError(f"task.options.{unknown[0]}: unknown option; allowed: {sorted(allowed)}")
    data = options.get("data")
    if not isinstance(data, str) or not data:
        raise ValueError(
            "task.options.data: required, the folder holding the ISBI-2012 slices "
            "(image/0.png .. image/29.png and label/0.png .. label/29.png)"
        )
    if not Path(data).is_dir():
        raise ValueError(f"task.options.data: no folder {data!r} (from {Path.cwd()})")
    values: dict[str, int] = {}
    for name in ("scale", "crops_per_slice", "batch_size"):
        value = options.get(name, Options.__dataclass_fields__[name].default)
        if not is_int(value) or value < 1:
            raise ValueError(f"task.options.{name}: expected an int >= 1, got {value!r}")
        values[name] = value
    return Options(Path(data), **values)


@dataclass(frozen=True, slots=True)
class TrainedUNet:
    """A trained network, the data it saw and its metrics (what the figure needs)."""

    model: UNet
    space: UNetSpace
    slices: Slices
    diverged: bool
    metrics: dict[str, float]


def _penalty(model: UNet, regularizer: str) -> torch.Tensor:
    l1, l2 = PENALTIES[regularizer]
    total = torch.zeros((), device=next(model.parameters()).device)
    for weight in conv_weights(model):
        if l1:
            total = total + l1 * weight.abs().sum()
        if l2:
            total = total + l2 * weight.pow(2).sum()
    return total


def _crops(
    images: torch.Tensor,
    targets: torch.Tensor,
    index: torch.Tensor,
    size: int,
    gen: torch.Generator,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One random ``size`` square from each slice in ``index`` (same window for image and mask)."""
    height, width = images.shape[-2:]
    rows = torch.randint(0, height - size + 1, (len(index),), generator=gen).tolist()
    cols = torch.randint(0, width - size + 1, (len(index),), generator=gen).tolist()
    picks = list(zip(index.tolist(), rows, cols, strict=True))
    x = torch.stack([images[i, :, r : r + size, c : c + size] for i, r, c in picks])
    y = torch.stack([targets[i, :, r : r + size, c : c + size] for i, r, c in picks])
    return x, y


def predict(model: UNet, images: NDArray[np.float32], device: torch.device) -> NDArray[np.bool_]:
    """Membrane masks for whole ``(N, H, W)`` images; a non-finite logit counts as interior."""
    multiple = 2**model.depth
    height, width = images.shape[-2:]
    pad_h, pad_w = -height % multiple, -width % multiple
    model.eval()
    masks = []
    with torch.no_grad():
        for image in images:
            x = torch.from_numpy(np.array(image, dtype=np.float32))[None, None].to(device)
            if pad_h or pad_w:
                x = functional.pad(x, (0, pad_w, 0, pad_h), mode="reflect")
            logits = model(x)[0, 0, :height, :width]
            masks.append((logits > 0).cpu().numpy())  # NaN > 0 is False: interior
    return np.stack(masks).astype(np.bool_)


def _evaluate(
    trained: UNet, diverged: bool, slices: Slices, device: torch.device
) -> dict[str, float]:
    metrics: dict[str, float] = {}
    for prefix, part in (("val", VALIDATION), ("test", TEST)):
        truth = slices.membrane[part.start : part.stop]
        if diverged:
            predicted = np.zeros_like(truth)
        else:
            predicted = predict(trained, slices.images[part.start : part.stop], device)
        metrics.update({f"{prefix}_{k}": v for k, v in scores(predicted, truth).items()})
    return metrics


def _build(space: UNetSpace, genotype: Mapping[str, Any], seed: int) -> UNet:
    """The genotype's network, its initial weights a pure function of ``seed``."""
    with _INIT_LOCK, torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return build_unet(space.spec(), genotype)


def fit_unet(request: TrainRequest, context: TrainContext) -> TrainedUNet:
    """Train and score ``request.genotype`` (module docstring); the trained network too.

    Raises :class:`TrainingStopped` when the agent asks to stop, ValueError for bad options or
    a crop larger than the shrunk slices, and the space's errors for a bad spec or genotype.
    """
    started = time.perf_counter()
    options = parse_options(request.options)
    space = UNetSpace.from_spec(request.space)
    genotype = dict(request.genotype)
    space.validate(genotype)
    epochs = DEFAULT_EPOCHS if request.epochs is None else request.epochs
    if not is_int(epochs) or epochs < 1:
        raise ValueError(f"epochs: expected an int >= 1, got {epochs!r}")
    slices = load_slices(options.data, options.scale)
    side = min(slices.images.shape[-2:])
    if space.input_size > side:
        raise ValueError(
            f"space.input_size {space.input_size} is larger than the {side}-pixel slices at "
            f"scale {options.scale}: lower the scale or the input size"
        )
    device = torch.device(request.device)
    model = _build(space, genotype, request.seed).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=float(genotype["lr"]))
    images = torch.from_numpy(np.array(slices.images[TRAIN.start : TRAIN.stop]))[:, None]
    targets = torch.from_numpy(np.array(slices.membrane[TRAIN.start : TRAIN.stop]))[:, None]
    images, targets = images.to(device), targets.float().to(device)
    gen = torch.Generator().manual_seed(request.seed)
    diverged, train_loss, done = False, math.nan, 0
    for epoch in range(1, epochs + 1):
        model.train()
        order = torch.arange(len(TRAIN)).repeat(options.crops_per_slice)
        order = order[torch.randperm(len(order), generator=gen)]
        losses = []
        for count, start in enumerate(range(0, len(order), options.batch_size), 1):
            if count % _STOP_CHECK_EVERY == 0 and context.should_stop():
                raise TrainingStopped(f"stopped during epoch {epoch}")
            index = order[start : start + options.batch_size]
            x, y = _crops(images, targets, index, space.input_size, gen)
            loss = functional.binary_cross_entropy_with_logits(model(x), y)
            loss = loss + _penalty(model, str(genotype["regularizer"]))
            if not torch.isfinite(loss):
                diverged = True
                break
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            losses.append(float(loss.detach()))
        if diverged:
            break
        done, train_loss = epoch, float(np.mean(losses))
        context.progress(epoch, epochs, {"train_loss": train_loss})
        if context.should_stop():
            raise TrainingStopped(f"stopped after epoch {epoch}")
    metrics = _evaluate(model, diverged, slices, device)
    if math.isfinite(train_loss):
        metrics["train_loss"] = train_loss
    metrics.update(
        {
            "diverged": float(diverged),
            "epochs": float(done),
            "params": float(sum(p.numel() for p in model.parameters())),
            "flops": space.cost(genotype)["flops"],
            "train_seconds": time.perf_counter() - started,
        }
    )
    return TrainedUNet(model, space, slices, diverged, metrics)


def train(request: TrainRequest, context: TrainContext) -> TrainResult:
    """Train the genotype's U-Net on the EM slices; metrics as in the module docstring."""
    trained = fit_unet(request, context)
    checkpoint = None
    if request.checkpoint_dir is not None:
        path = save_checkpoint(
            trained.model, Path(request.checkpoint_dir), request, trained.space.spec()
        )
        checkpoint = str(path)
    return TrainResult(metrics=trained.metrics, checkpoint=checkpoint)
