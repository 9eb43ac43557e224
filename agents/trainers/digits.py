"""The digits trainer: scikit-learn's 1,797 handwritten 8x8 digits, a seconds-fast smoke task.

Small enough that one evaluation of a small CNN takes a second or two on one CPU thread, so a
30-trial search finishes in about a minute: the task for first tries, demos and tests. Inputs are
``(N, 1, 8, 8)`` in [0, 1], split 60 / 20 / 20 (train / val / test), stratified by class.

Options: the training hyperparameters of :class:`agents.trainers.common.Hyper` (``epochs``,
``lr``, ``weight_decay``, ``batch_size``, ``optimizer``, ...), ``split_seed`` (default 0),
``val_fraction`` and ``test_fraction`` (default 0.2 each).
"""

from __future__ import annotations

from agents.trainers._base import TrainContext, TrainRequest, TrainResult
from agents.trainers.common import Hyper, fit
from agents.trainers.datasets import load_digits

DEFAULTS = Hyper(epochs=20, lr=0.01, weight_decay=5e-4, batch_size=64, optimizer="adamw")
"""Measured on one CPU thread: 1-5 s per small CNN, most reaching >= 0.95 val accuracy."""


def train(request: TrainRequest, context: TrainContext) -> TrainResult:
    """Train the genotype's network on the 8x8 digits; metrics as :func:`common.fit`."""
    data = load_digits(
        int(request.options.get("split_seed", 0)),
        float(request.options.get("val_fraction", 0.2)),
        float(request.options.get("test_fraction", 0.2)),
        request.device,
    )
    return fit(request, context, data, DEFAULTS)
