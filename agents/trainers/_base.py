"""The trainer plug-in interface.

A trainer is a plain function ``train(request, context) -> TrainResult``. It builds the network the
genotype describes, trains it for ``request.epochs`` (or its task default), calls
``context.progress`` after each epoch (the agent turns that into heartbeats), stops early when
``context.should_stop()`` by raising :class:`TrainingStopped`, and returns finite metrics: at least
``val_acc`` (the selection signal, from a validation split carved from the training data),
``test_acc`` (held-out test data, reported but never used for selection), ``params``, ``flops`` and
``train_seconds``. Any other exception marks the attempt as failed.

Trainers run in a worker thread, off the agent's event loop. They are found by name through
:func:`agents.trainers.load_trainer`: a built-in name, an entry point in the ``nasd.trainers``
group, or a ``module:function`` import path; an agent runs a path only if its own configuration
lists it (``nasd-agent --trainer``, ``$NASD_AGENT_TRAINERS``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol


class TrainingStopped(Exception):
    """Raised by a trainer when ``context.should_stop()`` turned true: the job is handed back."""


@dataclass(frozen=True, slots=True)
class TrainRequest:
    """Everything a trainer needs to evaluate one architecture."""

    job_id: str
    experiment: str
    trial_id: int
    genotype: Mapping[str, Any]
    space: Mapping[str, Any]
    options: Mapping[str, Any]
    epochs: int | None
    seed: int
    device: str = "cpu"
    checkpoint_dir: Path | None = None


@dataclass(frozen=True, slots=True)
class TrainResult:
    """Finite metrics, and where the trained weights were written (if they were)."""

    metrics: dict[str, float]
    checkpoint: str | None = field(default=None)


class TrainContext(Protocol):
    """What the agent lends a running trainer."""

    def progress(self, step: int, total: int | None, metrics: Mapping[str, float]) -> None:
        """Report that ``step`` of ``total`` epochs are done (thread-safe; never blocks long)."""

    def should_stop(self) -> bool:
        """True when the agent is shutting down or the job was cancelled."""


TrainFn = Callable[[TrainRequest, TrainContext], TrainResult]
