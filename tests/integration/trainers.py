"""Trainers used by the integration tests, loaded by agents through ``module:function`` paths.

``sleepy`` is deterministic and cheap: it takes a fixed time (so that faults can be injected while
jobs are running) and scores an NB201 genotype by its number of 3x3 convolutions.
"""

from __future__ import annotations

import time

from agents.trainers._base import TrainContext, TrainingStopped, TrainRequest, TrainResult


def sleepy(request: TrainRequest, context: TrainContext) -> TrainResult:
    """Sleep ``options.seconds`` in ``options.steps`` steps with heartbeats; score the cell."""
    seconds = float(request.options.get("seconds", 0.3))
    steps = int(request.options.get("steps", 3))
    for step in range(1, steps + 1):
        time.sleep(seconds / steps)
        if context.should_stop():
            raise TrainingStopped()
        context.progress(step, steps, {})
    ops = list(request.genotype["ops"])
    return TrainResult({"val_acc": ops.count("nor_conv_3x3") / 6, "test_acc": 0.0})
