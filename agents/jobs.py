"""A job while an agent trains it: its lease, progress so far, and the switch that stops it.

The trainer runs in a worker thread and sees only :class:`JobContext`; progress it reports is
handed to the event loop (heartbeats read it there), and the stop switch is a thread-safe event.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field

__all__ = ["JobContext", "RunningJob"]


@dataclass(slots=True)
class RunningJob:
    """A job being trained: its lease (epoch and token), progress so far, and its stop switch.

    ``token`` is the lease token of ``epoch`` from the daemon's ``trial.assign``: every result
    for the job echoes it, and only a ``trial.cancel`` carrying it stops the job.
    """

    job_id: str
    epoch: int
    token: str
    started_at: float
    stop: threading.Event = field(default_factory=threading.Event)
    cancelled: bool = False
    step: int = 0
    total: int | None = None
    metrics: dict[str, float] = field(default_factory=dict)
    task: asyncio.Task[None] | None = None  # the agent's task training it, in its task group


class JobContext:
    """The TrainContext lent to a trainer thread; forwards progress to the event loop."""

    def __init__(self, job: RunningJob, loop: asyncio.AbstractEventLoop) -> None:
        self._job = job
        self._loop = loop

    def progress(self, step: int, total: int | None, metrics: Mapping[str, float]) -> None:
        def update() -> None:
            self._job.step, self._job.total = step, total
            self._job.metrics = {k: float(v) for k, v in metrics.items()}

        self._loop.call_soon_threadsafe(update)

    def should_stop(self) -> bool:
        return self._job.stop.is_set()
