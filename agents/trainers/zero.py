"""The zero-cost trainer: instant, deterministic metrics for throughput and scheduling benchmarks.

It measures how many evaluations per second the daemon, the broker and the agents sustain when
training costs nothing. ``val_acc`` is a stable function of the genotype alone (the SHA-256 of
its canonical JSON mapped to [0, 1)), so the same architecture always scores the same on any
machine and in any process, which lets benchmarks check that nothing was lost or double-counted.
It imports no torch.

Options: ``seconds`` (default 0): sleep this long first, checking ``should_stop`` while waiting,
to emulate a fixed training cost.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Mapping
from typing import Any

from agents.trainers._base import TrainContext, TrainingStopped, TrainRequest, TrainResult
from nasd.core.space._base import canonical_json

__all__ = ["score", "train"]

_SLEEP_SLICE = 0.05


def score(genotype: Mapping[str, Any]) -> float:
    """A number in [0, 1) that depends only on the genotype's canonical JSON."""
    digest = hashlib.sha256(canonical_json(genotype).encode("utf-8")).digest()
    return int.from_bytes(digest[:7], "big") / float(1 << 56)


def train(request: TrainRequest, context: TrainContext) -> TrainResult:
    """Return the genotype's deterministic score at once (after ``seconds``, if set)."""
    seconds = float(request.options.get("seconds", 0.0))
    started = time.perf_counter()
    deadline = time.monotonic() + max(0.0, seconds)
    while (left := deadline - time.monotonic()) > 0:
        if context.should_stop():
            raise TrainingStopped("stopped while waiting")
        time.sleep(min(_SLEEP_SLICE, left))
    val_acc = score(request.genotype)
    context.progress(1, 1, {"val_acc": val_acc})
    metrics = {
        "val_acc": val_acc,
        "test_acc": val_acc,
        "params": 0.0,
        "flops": 0.0,
        "epochs": 0.0,
        "train_seconds": time.perf_counter() - started,
    }
    return TrainResult(metrics=metrics)
