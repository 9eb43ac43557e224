"""The fault suite's trainer: a deterministic metric after a random, stoppable wait.

Agents run it by path, ``tests.faults.trainer:train``. The metric is
``agents.trainers.zero.score(genotype)``, a pure function of the genotype, so the checker
(:mod:`tests.faults.checker`) can prove that every stored ``val_acc`` belongs to its trial's
architecture. The wait (default 0.05-1.0 s, options ``min_s`` and ``max_s``) keeps jobs in flight
long enough for faults to land mid-job; it is drawn from a generator seeded by the job id, the
trial's seed and the lease epoch (when the request carries one), so a scenario's timings repeat
from run to run. While waiting the trainer checks ``context.should_stop()`` and raises
:class:`TrainingStopped` as soon as it turns true (a cancel, or the agent shutting down).
"""

from __future__ import annotations

import hashlib
import random
import time

from agents.trainers._base import TrainContext, TrainingStopped, TrainRequest, TrainResult
from agents.trainers.zero import score

__all__ = ["DEFAULT_MAX_S", "DEFAULT_MIN_S", "PATH", "duration", "train"]

PATH = "tests.faults.trainer:train"
"""The ``module:function`` name experiments and agents use for this trainer."""

DEFAULT_MIN_S = 0.05
DEFAULT_MAX_S = 1.0
_SLICE_S = 0.02
"""How often the wait looks at ``should_stop`` (a cancel is obeyed within this)."""


def duration(request: TrainRequest) -> float:
    """Seconds this attempt waits: uniform in [min_s, max_s], the same for the same request.

    ``TrainRequest`` has no lease epoch today; if a later version adds one it joins the seed.
    """
    low = float(request.options.get("min_s", DEFAULT_MIN_S))
    high = float(request.options.get("max_s", DEFAULT_MAX_S))
    low, high = max(0.0, min(low, high)), max(0.0, high)
    epoch = getattr(request, "epoch", 0)
    key = f"{request.job_id}|{request.seed}|{epoch}".encode()
    rng = random.Random(int.from_bytes(hashlib.sha256(key).digest()[:8], "big"))
    return rng.uniform(low, high)


def train(request: TrainRequest, context: TrainContext) -> TrainResult:
    """Wait :func:`duration` seconds (stoppable), then report ``val_acc = score(genotype)``."""
    started = time.perf_counter()
    deadline = time.monotonic() + duration(request)
    while (left := deadline - time.monotonic()) > 0:
        if context.should_stop():
            raise TrainingStopped("stopped while waiting")
        time.sleep(min(_SLICE_S, left))
    if context.should_stop():
        raise TrainingStopped("stopped at the end of the wait")
    val_acc = score(request.genotype)
    context.progress(1, 1, {"val_acc": val_acc})
    return TrainResult(
        metrics={
            "val_acc": val_acc,
            "test_acc": val_acc,
            "params": 0.0,
            "flops": 0.0,
            "train_seconds": time.perf_counter() - started,
        }
    )
