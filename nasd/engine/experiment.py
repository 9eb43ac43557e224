"""One experiment's runtime: its strategy, counters, and the log of what the strategy consumed."""

from __future__ import annotations

import math
import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass

from nasd.config import ExperimentConfig
from nasd.core.events import StrategyEvent, event_kind, event_to_dict
from nasd.core.objective import Best, BestSoFar
from nasd.core.scheduler.heuristics import as_loss, complexity, priority
from nasd.core.space import SearchSpace, build_space
from nasd.core.strategy import Candidate, Strategy, build_strategy
from nasd.engine.records import ExperimentStatus
from nasd.store import repo

SNAPSHOT_EVERY = 500
"""Strategy events between two snapshots; a snapshot bounds the replay work after a restart."""


@dataclass(slots=True)
class ExperimentRuntime:
    """Strategy + counters; :meth:`feed` is the only way events reach the strategy."""

    config: ExperimentConfig
    space: SearchSpace
    strategy: Strategy
    best_so_far: BestSoFar  # ranks by the strategy's own objective (see :meth:`create`)
    status: ExperimentStatus = ExperimentStatus.RUNNING
    next_trial_id: int = 0
    finished: int = 0
    failed: int = 0
    cancelled: int = 0
    waiting: bool = False
    last_seq: int = 0
    events_since_snapshot: int = 0
    complexity: float = 1.0  # SHADHO's size of the space (nasd.core.scheduler.heuristics)
    loss_low: float = float("inf")  # the least and greatest loss seen: all a priority needs
    loss_high: float = float("-inf")

    @classmethod
    def create(cls, config: ExperimentConfig) -> ExperimentRuntime:
        """Build the space and a fresh strategy (seeded from the config)."""
        space = build_space(config.space)
        strategy = build_strategy(config.strategy_name, space, config.seed, config.strategy_params)
        return cls(
            config=config,
            space=space,
            strategy=strategy,
            best_so_far=BestSoFar(strategy.objective),
            complexity=complexity(space.domains()),
        )

    @property
    def name(self) -> str:
        """The experiment's unique name."""
        return self.config.name

    @property
    def metric(self) -> str:
        """The metric the strategy optimises (``val_acc`` unless configured)."""
        return self.strategy.metric

    @property
    def remaining(self) -> int:
        """Trials the budget still allows to be proposed."""
        return max(0, self.config.budget - self.next_trial_id)

    @property
    def complete(self) -> bool:
        """True once every trial of the budget has finished, failed or been cancelled."""
        return self.next_trial_id >= self.config.budget and (
            self.finished + self.failed + self.cancelled >= self.config.budget
        )

    @property
    def priority(self) -> float | None:
        """SHADHO's priority from the losses seen so far (None before two distinct results)."""
        if self.loss_low > self.loss_high:
            return None
        return priority([self.loss_low, self.loss_high]) if self.finished >= 2 else None

    @property
    def best(self) -> Best | None:
        """The best successful trial so far (by the strategy's objective)."""
        return self.best_so_far.best

    def feed(
        self, conn: sqlite3.Connection, event: StrategyEvent, now: float
    ) -> Sequence[Candidate]:
        """Persist ``event`` to the log, then hand it to the strategy (write-ahead)."""
        self.last_seq = repo.append_event(
            conn, self.name, event_kind(event), event_to_dict(event), now
        )
        self.events_since_snapshot += 1
        return self.strategy.react(event)

    def replay(self, event: StrategyEvent, seq: int) -> None:
        """Re-feed a logged event during a rebuild; the candidates are already in ``trials``."""
        self.strategy.react(event)
        self.last_seq = seq

    def note_success(self, trial_id: int, metrics: dict[str, float]) -> bool:
        """Count a finished trial and update the best-so-far; True if it is the new best."""
        self.finished += 1
        self.waiting = False
        value = metrics.get(self.metric)
        if value is not None and math.isfinite(value):
            loss = as_loss(value, maximise=self.strategy.objective.mode == "max")
            self.loss_low = min(self.loss_low, loss)
            self.loss_high = max(self.loss_high, loss)
        return self.best_so_far.offer(trial_id, metrics)

    def note_failure(self) -> None:
        """Count a trial that failed for good."""
        self.failed += 1
        self.waiting = False

    def maybe_snapshot(self, conn: sqlite3.Connection, now: float, *, force: bool = False) -> None:
        """Save the strategy's state when enough events piled up since the last snapshot."""
        if self.events_since_snapshot and (force or self.events_since_snapshot >= SNAPSHOT_EVERY):
            repo.save_snapshot(conn, self.name, self.last_seq, self.strategy.state_dict(), now)
            self.events_since_snapshot = 0
