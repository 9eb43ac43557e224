"""The NAS-Bench-201 search protocol as ``nasd bench nb201`` applies it, without any I/O.

What one run of the protocol is (Dong & Yang, ICLR 2020, and the authors' scripts; see
``../shared/data/README.md``): a strategy proposes cells one at a time (``parallel = 1``); each
evaluation returns the cell's 12-epoch validation accuracy (the fitness) and costs its simulated
12-epoch training time. The run's clock is the sum of those costs in completion order. The first
evaluation that takes the clock past the budget ends the run *and does not count* (the authors'
scripts stop before adding it); among the evaluations that fit, the one with the best fitness is
the run's choice, and its 200-epoch validation accuracy is the run's result.

This module holds that bookkeeping (:class:`RunTally`), the experiment config of each run
(:func:`run_config`), the strategies' protocol parameters (:data:`PROTOCOL_PARAMS`), the
figures over runs (:func:`summarise`) and :func:`replay`: the same protocol played directly
against a strategy object and the table, with no daemon. With ``parallel = 1`` every run is
deterministic given its seed, so the daemon path and the replay must choose the same cell; the
tests hold the daemon path to that.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from nasd.config import ExperimentConfig, experiment_from_dict
from nasd.core.events import SlotsOpen, TrialSucceeded
from nasd.core.space.nb201 import NB201Space, op_code
from nasd.core.strategy import STRATEGIES, build_strategy, strategy_parameters
from nasd.errors import ConfigError

__all__ = [
    "DATASETS",
    "PROTOCOL_PARAMS",
    "RunOutcome",
    "RunTally",
    "protocol_params",
    "replay",
    "run_config",
    "run_name",
    "summarise",
    "table_metrics",
    "trial_budget",
]

DATASETS: dict[str, str] = {"cifar10": "c10", "cifar100": "c100", "imagenet16": "in16"}
"""The ``--dataset`` names and the column prefix of each in ``nb201.csv.gz``."""

SEARCH_EPOCHS = 12
"""The protocol's fitness is the 12-epoch accuracy, and its cost the 12-epoch training time."""

PROTOCOL_PARAMS: dict[str, dict[str, Any]] = {
    "random": {},
    "aging-evolution": {"population": 10, "sample": 3},
    "tournament": {"population": 10, "sample": 3},
    "reinforce-factorized": {"lr": 0.05},
}
"""Each strategy's parameters under the NB201 protocol. Regularized evolution uses population 10
and tournament sample 3 (the paper's). ``reinforce-factorized`` keeps the protocol's 6x5 logits
and EMA baseline (momentum 0.9); the protocol does not state a learning rate, and Adam's 0.01
(the strategy's default) learns too slowly within 12,000 s on this table (90.96 +- 0.27 over 100
replayed runs, no better than random search): 0.05 was picked from {0.01, 0.02, 0.05, 0.1, 0.2}
on runs 0-99 (91.10 +- 0.34) and confirmed on the unseen runs 1000-1199 (91.10 +- 0.33; random
search 90.96, regularized evolution 91.20 on the same runs). A strategy not listed runs with its
defaults. A listed parameter the strategy does not accept is
left out (:func:`protocol_params`)."""


def protocol_params(strategy: str) -> dict[str, Any]:
    """The parameters ``strategy`` runs with; ConfigError (one line) if it is not registered.

    Only parameters the strategy's constructor accepts are kept, so a strategy whose author
    chose other names still runs (with its defaults for those).
    """
    cls = STRATEGIES.get(strategy)
    if cls is None:
        known = ", ".join(sorted(STRATEGIES))
        raise ConfigError(f"unknown strategy {strategy!r} (registered: {known})")
    accepted = set(strategy_parameters(cls))
    return {k: v for k, v in PROTOCOL_PARAMS.get(strategy, {}).items() if k in accepted}


def run_name(strategy: str, index: int) -> str:
    """The experiment name of run ``index`` of ``strategy``: ``nb201-<strategy>-<index>``."""
    return f"nb201-{strategy}-{index}"


def trial_budget(budget_seconds: float, cheapest_seconds: float) -> int:
    """A trial budget the run can never exhaust before its simulated time does.

    Even a strategy that only proposed the cheapest cell would cross ``budget_seconds`` within
    this many trials; the experiment is cancelled when it does, so the trial budget only bounds a
    run that somehow never reports time.
    """
    if cheapest_seconds <= 0:
        raise ValueError(f"the cheapest cell must cost > 0 s, got {cheapest_seconds}")
    return min(1_000_000, math.ceil(budget_seconds / cheapest_seconds) + 2)


def run_config(
    strategy: str,
    index: int,
    *,
    data: str,
    dataset: str,
    trials: int,
) -> ExperimentConfig:
    """The experiment of run ``index``: seed ``index``, space nb201, ``parallel = 1``.

    ``dataset`` is a column prefix (``c10``); ``data`` the table's path as the agents read it.
    """
    return experiment_from_dict(
        {
            "experiment": {
                "name": run_name(strategy, index),
                "budget": trials,
                "seed": index,
                "parallel": 1,
            },
            "space": {"kind": "nb201"},
            "strategy": {"name": strategy, **protocol_params(strategy)},
            "task": {"trainer": "nb201", "options": {"data": data, "dataset": dataset}},
        },
        source=f"nasd bench nb201 (run {run_name(strategy, index)})",
    )


@dataclass(slots=True)
class RunTally:
    """One run's clock and choice so far, fed its evaluations in completion order."""

    budget_seconds: float
    sim_seconds: float = 0.0
    trials: int = 0
    """Evaluations that fit in the budget (the one that crossed it is not counted)."""
    best_fitness: float = -math.inf
    best_val200: float | None = None
    best_trial: int | None = None
    over: bool = False

    def add(self, trial_id: int, metrics: Mapping[str, Any]) -> bool:
        """Count one finished evaluation; True when this one ends the run.

        An evaluation without ``sim_train_seconds`` (a failed one reports no metrics) costs
        nothing and is never chosen. Evaluations after the end are ignored.
        """
        if self.over:
            return False
        cost = metrics.get("sim_train_seconds")
        if cost is None:
            return False
        clock = self.sim_seconds + float(cost)
        if clock > self.budget_seconds:
            self.over = True
            return True
        self.sim_seconds = clock
        self.trials += 1
        fitness = float(metrics["val_acc"])
        if fitness > self.best_fitness:  # the first of equals stays chosen
            self.best_fitness = fitness
            self.best_val200 = float(metrics["val200"])
            self.best_trial = trial_id
        if clock >= self.budget_seconds:
            self.over = True
            return True
        return False


@dataclass(frozen=True, slots=True)
class RunOutcome:
    """What one run chose. Accuracies in percent; ``val200`` is the run's result."""

    strategy: str
    index: int
    val200: float | None
    """200-epoch validation accuracy (%) of the chosen cell; None if no evaluation fit."""
    fitness: float | None
    """Its 12-epoch validation accuracy (%), the fitness it was chosen by."""
    trial_id: int | None
    trials: int
    sim_seconds: float
    budget_reached: bool
    """False when the run ended otherwise (its experiment finished first)."""

    @classmethod
    def of(cls, strategy: str, index: int, tally: RunTally) -> RunOutcome:
        """The outcome of a finished (or abandoned) run from its tally."""
        chosen = tally.best_val200 is not None
        return cls(
            strategy=strategy,
            index=index,
            val200=tally.best_val200 * 100 if tally.best_val200 is not None else None,
            fitness=tally.best_fitness * 100 if chosen else None,
            trial_id=tally.best_trial,
            trials=tally.trials,
            sim_seconds=tally.sim_seconds,
            budget_reached=tally.over,
        )


def table_metrics(row: Mapping[str, float], prefix: str) -> dict[str, float]:
    """The metrics the ``nb201`` trainer reports for a table row (the ones the protocol uses)."""
    return {
        "val_acc": row[f"{prefix}_val12"] / 100,
        "val200": row[f"{prefix}_val200_mean"] / 100,
        "sim_train_seconds": row[f"{prefix}_train_time200_s"] * SEARCH_EPOCHS / 200,
    }


def replay(
    strategy: str,
    index: int,
    rows: Mapping[str, Mapping[str, float]],
    prefix: str,
    budget_seconds: float,
) -> RunOutcome:
    """Run ``index`` of ``strategy`` played directly: the strategy object against the table.

    The events are the ones the daemon feeds a ``parallel = 1`` experiment: one slot offered,
    one result back, in turn. ``rows`` maps op codes to table rows (``NB201Table.rows``).
    """
    space = NB201Space()
    policy = build_strategy(strategy, space, index, protocol_params(strategy))
    tally = RunTally(budget_seconds)
    trial_id = 0
    while not tally.over:
        candidates = policy.react(SlotsOpen((trial_id,)))
        if not candidates:
            raise RuntimeError(f"{strategy} proposed nothing for a lone free slot (run {index})")
        genotype = candidates[0].genotype
        metrics = table_metrics(rows[op_code(genotype)], prefix)
        tally.add(trial_id, metrics)
        policy.react(TrialSucceeded(trial_id, genotype, metrics))
        trial_id += 1
    return RunOutcome.of(strategy, index, tally)


@dataclass(slots=True)
class StrategyFigures:
    """One strategy's figures over its runs (see :func:`summarise`)."""

    mean: float | None
    std: float | None
    runs: int
    mean_trials: float
    budget_not_reached: int
    wall_s: float
    params: dict[str, Any] = field(default_factory=dict)
    val200: list[float] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """The figures as JSON-able values."""
        return {
            "mean": self.mean,
            "std": self.std,
            "runs": self.runs,
            "mean_trials": self.mean_trials,
            "budget_not_reached": self.budget_not_reached,
            "wall_s": self.wall_s,
            "params": dict(self.params),
            "val200": list(self.val200),
        }


def summarise(strategy: str, outcomes: Sequence[RunOutcome], wall_s: float) -> StrategyFigures:
    """Mean and sample standard deviation (n-1) of the runs' 200-epoch accuracy (%), and more.

    Runs in which no evaluation fit the budget have no result and are left out of the mean (the
    count of runs stays, so the gap shows); the std needs two results.
    """
    values = [o.val200 for o in outcomes if o.val200 is not None]
    return StrategyFigures(
        mean=statistics.fmean(values) if values else None,
        std=statistics.stdev(values) if len(values) > 1 else None,
        runs=len(outcomes),
        mean_trials=statistics.fmean(o.trials for o in outcomes) if outcomes else 0.0,
        budget_not_reached=sum(1 for o in outcomes if not o.budget_reached),
        wall_s=wall_s,
        params=protocol_params(strategy) if strategy in STRATEGIES else {},
        val200=[round(v, 4) for v in values],
    )
