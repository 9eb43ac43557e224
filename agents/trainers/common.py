"""The one supervised training loop the built-in classification trainers share.

:func:`fit` builds the genotype's network with :func:`agents.models.build_model`, keeps the model
and the whole data set resident on ``request.device``, and trains with mini-batches under a cosine
learning-rate schedule. After every epoch it measures validation accuracy, reports progress, and
honours ``context.should_stop()`` (also checked every few batches so a stop is prompt).

Hyperparameters resolve in this order, first present wins: ``request.epochs`` (the strategy's
per-trial budget; epochs only), the genotype (an ``hparams`` space searches them), the task's
``options``, the trainer's :class:`Hyper` defaults.

Reproducibility without global state: weights are initialised under ``torch.random.fork_rng``
seeded with ``request.seed`` (behind a lock, since trials may run in concurrent threads), and
shuffling and augmentation draw from a private ``torch.Generator``. The reported ``val_acc`` is the
*final* epoch's accuracy, not the best epoch's: picking the best epoch would select on the
validation set twice and overstate it.
"""

from __future__ import annotations

import math
import os
import re
import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn import functional

from agents.trainers._base import TrainContext, TrainingStopped, TrainRequest, TrainResult
from agents.trainers.datasets import Split
from nasd.core.values import is_int, is_number

__all__ = ["Hyper", "accuracy", "fit", "resolve_hyper", "save_checkpoint"]

_INIT_LOCK = threading.Lock()
_STOP_CHECK_EVERY = 16  # batches between should_stop() checks inside an epoch
_EVAL_BATCH = 1024


@dataclass(frozen=True, slots=True)
class Hyper:
    """Training hyperparameters; ``shift`` is the largest random circular shift (augmentation)."""

    epochs: int = 10
    lr: float = 0.01
    weight_decay: float = 5e-4
    batch_size: int = 64
    optimizer: str = "adamw"  # "adamw", "adam" (L2 weight decay) or "sgd" (Nesterov momentum)
    momentum: float = 0.9
    shift: int = 0
    label_smoothing: float = 0.0
    amp: str = "auto"  # CUDA only: "auto" (bf16 when supported, else fp16), "bf16", "fp16", "off"


_INT_FIELDS = ("epochs", "batch_size", "shift")
_FLOAT_FIELDS = ("lr", "weight_decay", "momentum", "label_smoothing")
_STR_FIELDS = {"optimizer": ("adamw", "adam", "sgd"), "amp": ("auto", "bf16", "fp16", "off")}


def resolve_hyper(request: TrainRequest, defaults: Hyper) -> Hyper:
    """``defaults`` overridden by options, then genotype keys, then ``request.epochs``."""
    values: dict[str, Any] = {}
    for source in (request.options, request.genotype, {"epochs": request.epochs}):
        for name in (*_INT_FIELDS, *_FLOAT_FIELDS, *_STR_FIELDS):
            if source.get(name) is not None:
                values[name] = source[name]
    for name in _INT_FIELDS:
        if name in values:
            value = values[name]
            if not is_int(value) or value < 0:
                raise ValueError(f"{name}: expected an int >= 0, got {value!r}")
    for name in _FLOAT_FIELDS:
        if name in values:
            value = values[name]
            if not is_number(value) or value < 0:
                raise ValueError(f"{name}: expected a number >= 0, got {value!r}")
            values[name] = float(value)
    for name, allowed in _STR_FIELDS.items():
        if name in values and values[name] not in allowed:
            raise ValueError(f"{name}: expected one of {list(allowed)}, got {values[name]!r}")
    hyper = replace(defaults, **values)
    if hyper.epochs < 1 or hyper.batch_size < 1:
        raise ValueError(f"epochs and batch_size must be >= 1, got {hyper}")
    return hyper


def _space_for(request: TrainRequest, data: Split) -> dict[str, Any]:
    """The space spec with the data set's input shape and class count filled in (or checked)."""
    space = dict(request.space)
    for key, actual in (("input_shape", list(data.input_shape)), ("num_classes", data.num_classes)):
        given = space.setdefault(key, actual)
        if (list(given) if isinstance(given, list | tuple) else given) != actual:
            raise ValueError(f"space.{key} is {given!r} but the data set has {actual!r}")
    return space


def _flops(space: Mapping[str, Any], genotype: Mapping[str, Any]) -> float:
    """FLOPs from the space's cost model, or 0.0 when the space does not define them."""
    from nasd.core.space import build_space

    flops = build_space(space).cost(dict(genotype)).get("flops", 0.0)
    return float(flops) if math.isfinite(flops) else 0.0


def _build(space: Mapping[str, Any], request: TrainRequest) -> nn.Module:
    """The genotype's network, its initial weights a pure function of ``request.seed``."""
    from agents.models import build_model

    with _INIT_LOCK, torch.random.fork_rng(devices=[]):
        torch.manual_seed(request.seed)
        return build_model(space, request.genotype)


def _autocast(device: torch.device, hyper: Hyper) -> tuple[torch.dtype | None, bool]:
    """The autocast dtype on CUDA (None: full precision) and whether a GradScaler is needed."""
    if device.type != "cuda" or hyper.amp == "off":
        return None, False
    if hyper.amp == "fp16" or (hyper.amp == "auto" and not torch.cuda.is_bf16_supported()):
        return torch.float16, True
    return torch.bfloat16, False


def _precision(device: torch.device, dtype: torch.dtype | None) -> AbstractContextManager[Any]:
    return nullcontext() if dtype is None else torch.autocast(device.type, dtype=dtype)


def _shifted(x: torch.Tensor, max_shift: int, generator: torch.Generator) -> torch.Tensor:
    """Each example circularly shifted along its last axis by its own offset in [-s, s]."""
    length = x.shape[-1]
    offsets = torch.randint(-max_shift, max_shift + 1, (x.shape[0],), generator=generator)
    index = (torch.arange(length) - offsets[:, None]) % length
    index = index.to(x.device).view(x.shape[0], *([1] * (x.dim() - 2)), length).expand_as(x)
    return torch.gather(x, -1, index)


def _batches(
    n: int, size: int, generator: torch.Generator, device: torch.device
) -> Iterator[torch.Tensor]:
    """Shuffled index batches on ``device``; the last partial batch is dropped (BatchNorm needs
    at least two examples, and every example still gets its turn in a later epoch's shuffle)."""
    order = torch.randperm(n, generator=generator).to(device)
    for start in range(0, n - size + 1, size):
        yield order[start : start + size]


def accuracy(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, dtype: torch.dtype | None
) -> float:
    """Top-1 accuracy of ``model`` (in eval mode) on ``(x, y)``, in evaluation batches."""
    model.eval()
    correct = torch.zeros((), dtype=torch.int64, device=x.device)
    with torch.no_grad(), _precision(x.device, dtype):
        for start in range(0, len(y), _EVAL_BATCH):
            logits = model(x[start : start + _EVAL_BATCH])
            correct += (logits.argmax(dim=1) == y[start : start + _EVAL_BATCH]).sum()
    return float(correct.item()) / max(1, len(y))


def _optimizer(model: nn.Module, hyper: Hyper) -> torch.optim.Optimizer:
    if hyper.optimizer == "sgd":
        return torch.optim.SGD(
            model.parameters(),
            lr=hyper.lr,
            momentum=hyper.momentum,
            weight_decay=hyper.weight_decay,
            nesterov=hyper.momentum > 0,
        )
    if hyper.optimizer == "adam":
        return torch.optim.Adam(model.parameters(), lr=hyper.lr, weight_decay=hyper.weight_decay)
    return torch.optim.AdamW(model.parameters(), lr=hyper.lr, weight_decay=hyper.weight_decay)


def save_checkpoint(
    model: nn.Module, directory: Path, request: TrainRequest, space: Mapping[str, Any]
) -> Path:
    """Write the model's final weights as safetensors to ``<directory>/<experiment>-<trial>``.

    The genotype and space travel in the file's metadata so the weights are self-describing. The
    file appears atomically (written aside, then renamed), so a reader never sees half of it.
    """
    from safetensors.torch import save_file

    from nasd.core.space import canonical_json

    directory.mkdir(parents=True, exist_ok=True)
    stem = re.sub(r"[^A-Za-z0-9_.-]", "_", f"{request.experiment}-{request.trial_id}")
    path = directory / f"{stem}.safetensors"
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
    metadata = {
        "job_id": request.job_id,
        "genotype": canonical_json(request.genotype),
        "space": canonical_json(space),
    }
    partial = path.with_name(path.name + ".partial")
    save_file(tensors, str(partial), metadata=metadata)
    os.replace(partial, path)
    return path


def fit(request: TrainRequest, context: TrainContext, data: Split, defaults: Hyper) -> TrainResult:
    """Train ``request.genotype`` on ``data`` and return its metrics (see the module docstring).

    Raises :class:`TrainingStopped` when the agent asks to stop and RuntimeError when the loss
    stops being finite (the attempt then counts as failed).
    """
    started = time.perf_counter()
    hyper = resolve_hyper(request, defaults)
    device = torch.device(request.device)
    space = _space_for(request, data)
    model = _build(space, request).to(device)
    data = data.to(device)
    dtype, use_scaler = _autocast(device, hyper)
    scaler = torch.amp.GradScaler(device.type) if use_scaler else None
    optimizer = _optimizer(model, hyper)
    batch_size = min(hyper.batch_size, len(data.y_train))
    steps = hyper.epochs * max(1, len(data.y_train) // batch_size)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=steps)
    generator = torch.Generator().manual_seed(request.seed)
    val_acc, train_loss = 0.0, math.nan
    for epoch in range(1, hyper.epochs + 1):
        model.train()
        loss_sum = torch.zeros((), device=device)
        count = 0
        batches = _batches(len(data.y_train), batch_size, generator, device)
        for count, index in enumerate(batches, 1):
            if count % _STOP_CHECK_EVERY == 0 and context.should_stop():
                raise TrainingStopped(f"stopped during epoch {epoch}")
            x, y = data.x_train[index], data.y_train[index]
            if hyper.shift > 0:
                x = _shifted(x, hyper.shift, generator)
            with _precision(device, dtype):
                loss = functional.cross_entropy(model(x), y, label_smoothing=hyper.label_smoothing)
            optimizer.zero_grad(set_to_none=True)
            if scaler is not None:
                scaler.scale(loss).backward()
                scaler.step(optimizer)
                scaler.update()
            else:
                loss.backward()
                optimizer.step()
            schedule.step()
            loss_sum += loss.detach().float()
        train_loss = float(loss_sum.item()) / max(1, count)
        if not math.isfinite(train_loss):
            raise RuntimeError(
                f"training diverged: loss is {train_loss} in epoch {epoch} "
                f"(lr={hyper.lr}, optimizer={hyper.optimizer})"
            )
        val_acc = accuracy(model, data.x_val, data.y_val, dtype)
        context.progress(epoch, hyper.epochs, {"val_acc": val_acc, "train_loss": train_loss})
        if context.should_stop():
            raise TrainingStopped(f"stopped after epoch {epoch}")
    test_acc = accuracy(model, data.x_test, data.y_test, dtype)
    metrics = {
        "val_acc": val_acc,
        "test_acc": test_acc,
        "train_loss": train_loss,
        "params": float(sum(p.numel() for p in model.parameters())),
        "flops": _flops(space, request.genotype),
        "epochs": float(hyper.epochs),
        "train_seconds": time.perf_counter() - started,
    }
    checkpoint = None
    if request.checkpoint_dir is not None:
        checkpoint = str(save_checkpoint(model, Path(request.checkpoint_dir), request, space))
    return TrainResult(metrics=metrics, checkpoint=checkpoint)
