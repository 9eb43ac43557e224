"""The MNIST-1D trainer: CNNs on the 40-sample signals of Greydanus's MNIST-1D (10 classes).

MNIST-1D is a deliberately small benchmark on which architecture matters: a linear model reaches
about 32 % test accuracy, an MLP about 70 %, the published 3-layer CNN about 94 %. One evaluation
of a typical CNN takes 5-25 s on one CPU thread with the defaults below, so a whole search fits in
minutes on a laptop.

Options (the experiment's ``[task]`` table): ``epochs``, ``lr``, ``weight_decay``, ``batch_size``,
``optimizer`` (``adamw``/``sgd``), ``shift`` (random circular shift augmentation, samples),
``label_smoothing``, ``amp``; ``val_fraction`` (default 0.1) and ``split_seed`` (default 0) choose
the validation part of the official 4,000 training signals; the official 1,000 are the test set.
"""

from __future__ import annotations

from agents.trainers._base import TrainContext, TrainRequest, TrainResult
from agents.trainers.common import Hyper, fit
from agents.trainers.datasets import Split, load_mnist1d

DEFAULTS = Hyper(epochs=15, lr=0.01, weight_decay=5e-4, batch_size=64, optimizer="adamw", shift=2)
"""Measured on one CPU thread: the published CNN reaches ~96 % test in ~3 s, 4-layer CNNs ~98 %.
A random circular shift of up to 2 samples gained 0.5-2 points on most architectures tried."""


def load_data(request: TrainRequest) -> Split:
    """The split the task options ask for (``split_seed``, ``val_fraction``) on its device."""
    return load_mnist1d(
        int(request.options.get("split_seed", 0)),
        float(request.options.get("val_fraction", 0.1)),
        request.device,
    )


def train(request: TrainRequest, context: TrainContext) -> TrainResult:
    """Train the genotype's network on MNIST-1D; metrics as :func:`agents.trainers.common.fit`."""
    return fit(request, context, load_data(request), DEFAULTS)
