"""The fault trainer: f(genotype) metrics, seeded durations in range, and it obeys a stop."""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

import pytest

from agents.trainers._base import TrainingStopped, TrainRequest
from agents.trainers.zero import score
from tests.faults.trainer import duration, train

GENOTYPE = {"ops": ["none", "skip_connect", "nor_conv_1x1", "nor_conv_3x3", "avg_pool_3x3", "none"]}


def request(job_id: str = "faults:1", **options: Any) -> TrainRequest:
    return TrainRequest(
        job_id=job_id,
        experiment="faults",
        trial_id=1,
        genotype=GENOTYPE,
        space={"kind": "nb201"},
        options=options,
        epochs=None,
        seed=7,
    )


class Context:
    """A TrainContext whose stop switch turns on after ``stop_after`` calls to should_stop."""

    def __init__(self, stop_after: int | None = None) -> None:
        self.stop_after = stop_after
        self.asked = 0
        self.reports: list[Mapping[str, float]] = []

    def progress(self, step: int, total: int | None, metrics: Mapping[str, float]) -> None:
        self.reports.append(metrics)

    def should_stop(self) -> bool:
        self.asked += 1
        return self.stop_after is not None and self.asked > self.stop_after


def test_durations_are_seeded_by_the_job_and_stay_in_range() -> None:
    waits = [duration(request(f"faults:{i}")) for i in range(200)]
    assert all(0.05 <= w <= 1.0 for w in waits)
    assert len(set(waits)) == 200  # spread, not constant
    assert waits == [duration(request(f"faults:{i}")) for i in range(200)]  # repeatable
    assert 0.2 <= duration(request(min_s=0.2, max_s=0.3)) <= 0.3


def test_the_metric_is_the_genotype_score() -> None:
    context = Context()
    started = time.monotonic()
    result = train(request(min_s=0.01, max_s=0.02), context)
    assert time.monotonic() - started >= 0.01
    assert result.metrics["val_acc"] == score(GENOTYPE)
    assert context.reports == [{"val_acc": score(GENOTYPE)}]


def test_a_stop_request_ends_the_wait() -> None:
    started = time.monotonic()
    with pytest.raises(TrainingStopped):
        train(request(min_s=5, max_s=5), Context(stop_after=2))
    assert time.monotonic() - started < 1.0
