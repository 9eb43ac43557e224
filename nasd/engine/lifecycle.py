"""The experiments a daemon serves, and the only code that changes their status or config.

Submitting, extending a budget, pausing, resuming, cancelling and finishing each write the
experiment row and the event log in the caller's transaction, and keep the runtime in memory in
step with what :func:`nasd.engine.rebuild.rebuild` would read back.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator, Mapping
from typing import Any

import structlog

from nasd.config import ExperimentConfig
from nasd.engine import security
from nasd.engine.experiment import ExperimentRuntime
from nasd.engine.ledger import Ledger
from nasd.engine.outbox import Outbox
from nasd.engine.records import EventKind, ExperimentStatus, LeaseStatus, TrialStatus
from nasd.errors import CommandError
from nasd.faults import crash_point
from nasd.store import repo

log = structlog.get_logger("nasd.engine")

MAX_LISTED_TRAINERS = 20
"""Most trainer names an error message lists (the rest are counted)."""


class Experiments(Mapping[str, ExperimentRuntime]):
    """Experiment runtimes by name, oldest first, with their lifecycle transitions."""

    def __init__(self, ledger: Ledger, outbox: Outbox) -> None:
        self._runtimes: dict[str, ExperimentRuntime] = {}
        self._ledger = ledger
        self._outbox = outbox

    def __getitem__(self, name: str) -> ExperimentRuntime:
        return self._runtimes[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._runtimes)

    def __len__(self) -> int:
        return len(self._runtimes)

    def restore(self, runtime: ExperimentRuntime) -> None:
        """Add an experiment rebuilt from the database."""
        self._runtimes[runtime.name] = runtime

    def runnable(self) -> list[ExperimentRuntime]:
        """Running experiments whose budget allows more trials and whose strategy is not waiting."""
        return [
            e
            for e in self._runtimes.values()
            if e.status is ExperimentStatus.RUNNING and e.remaining > 0 and not e.waiting
        ]

    def find(self, name: object) -> ExperimentRuntime:
        """The experiment called ``name``; CommandError if there is none."""
        runtime = self._runtimes.get(name) if isinstance(name, str) else None
        if runtime is None:
            raise CommandError(f"no experiment named {name!r}")
        return runtime

    # -- transitions ------------------------------------------------------------------------------

    def submit(
        self,
        conn: sqlite3.Connection,
        config: ExperimentConfig,
        now: float,
        *,
        check_trainer: bool = False,
    ) -> dict[str, Any]:
        """Create an experiment.

        Resubmitting the same config is a no-op; resubmitting it with another budget changes the
        budget (a finished search can be extended); any other difference is refused. The reply's
        ``changed`` says what a resubmission did, in words for the CLI to print (``"unchanged"``,
        ``"budget 40 -> 60: reopened"``), so that extending a search is never silent. With
        ``check_trainer`` a new experiment whose trainer no online agent offers is refused
        (counted as ``trainer_not_offered``): every trial would wait, or fail on an agent that
        cannot load it (defect 11 of issue 6).
        """
        existing = self._runtimes.get(config.name)
        if check_trainer and existing is None:
            self._check_trainer(conn, config, now)
        if existing is not None:
            same_but_budget = existing.config.with_budget(config.budget).to_json()
            if existing.config.budget != config.budget and same_but_budget == config.to_json():
                return self._change_budget(conn, existing, config, now)
            if existing.config.to_json() != config.to_json():
                raise CommandError(
                    f"experiment {config.name!r} already exists with a different config; "
                    "choose another [experiment].name"
                )
            return {
                "experiment": config.name,
                "created": False,
                "status": existing.status.value,
                "changed": "unchanged",
            }
        runtime = ExperimentRuntime.create(config)
        self._runtimes[config.name] = runtime
        repo.insert_experiment(conn, config.name, config.to_json(), runtime.status, now)
        repo.append_event(conn, config.name, "experiment_created", config.to_dict(), now)
        log.info(
            "experiment.created",
            experiment=config.name,
            budget=config.budget,
            strategy=config.strategy_name,
        )
        return {"experiment": config.name, "created": True, "status": runtime.status.value}

    def _check_trainer(
        self, conn: sqlite3.Connection, config: ExperimentConfig, now: float
    ) -> None:
        offered = sorted(self._ledger.online_trainers())
        if config.trainer in offered:
            return
        listed = ", ".join(offered[:MAX_LISTED_TRAINERS]) or "none"
        if len(offered) > MAX_LISTED_TRAINERS:
            listed += f" and {len(offered) - MAX_LISTED_TRAINERS} more"
        trainer = config.trainer[:200]
        security.note(
            conn,
            security.SecurityKind.TRAINER_NOT_OFFERED,
            None,
            f"experiment {config.name[:64]!r}: trainer {trainer!r}",
            now,
        )
        raise CommandError(
            f"no online agent offers trainer {trainer!r} (online agents offer: {listed})"
        )

    def _change_budget(
        self,
        conn: sqlite3.Connection,
        runtime: ExperimentRuntime,
        config: ExperimentConfig,
        now: float,
    ) -> dict[str, Any]:
        if config.budget < runtime.next_trial_id:
            raise CommandError(
                f"experiment {config.name!r} already has {runtime.next_trial_id} trials; "
                f"its budget cannot go down to {config.budget}"
            )
        old_budget = runtime.config.budget
        runtime.config = config
        runtime.waiting = False
        repo.set_experiment_config(conn, config.name, config.to_json())
        repo.append_event(conn, config.name, "budget_changed", {"budget": config.budget}, now)
        changed = f"budget {old_budget} -> {config.budget}"
        if runtime.status is ExperimentStatus.DONE and not runtime.complete:
            runtime.status = ExperimentStatus.RUNNING
            repo.set_experiment_status(conn, config.name, runtime.status)
            changed += ": reopened"
        log.info(
            "experiment.budget_changed",
            experiment=config.name,
            budget=config.budget,
            previous=old_budget,
        )
        return {
            "experiment": config.name,
            "created": False,
            "status": runtime.status.value,
            "changed": changed,
        }

    def pause(self, conn: sqlite3.Connection, name: object, now: float) -> dict[str, Any]:
        """Stop proposing and assigning new trials; running ones finish."""
        runtime = self.find(name)
        if runtime.status is not ExperimentStatus.RUNNING:
            raise CommandError(
                f"experiment {runtime.name!r} is {runtime.status.value}, not running"
            )
        return self._set_status(conn, runtime, ExperimentStatus.PAUSED, now)

    def resume(self, conn: sqlite3.Connection, name: object, now: float) -> dict[str, Any]:
        """Undo :meth:`pause`."""
        runtime = self.find(name)
        if runtime.status is not ExperimentStatus.PAUSED:
            raise CommandError(f"experiment {runtime.name!r} is {runtime.status.value}, not paused")
        return self._set_status(conn, runtime, ExperimentStatus.RUNNING, now)

    def cancel(self, conn: sqlite3.Connection, name: object, now: float) -> dict[str, Any]:
        """Stop an experiment for good: its unfinished trials become ``cancelled``.

        Running ones are told to stop (``trial.cancel``); their leases end as ``released``. The
        strategy is not told (it will never be asked again) and no attempt is counted.
        """
        runtime = self.find(name)
        if runtime.status in (ExperimentStatus.DONE, ExperimentStatus.CANCELLED):
            raise CommandError(f"experiment {runtime.name!r} is already {runtime.status.value}")
        for trial in self._ledger.of_experiment(runtime.name):
            if trial.status is TrialStatus.RUNNING and trial.agent is not None:
                repo.end_lease(conn, trial.job_id, trial.epoch, LeaseStatus.RELEASED, now)
                self._outbox.cancel(trial.agent, trial.job_id, trial.epoch)
            self._ledger.retire(trial)
            repo.cancel_trial(conn, trial.job_id, now)
            runtime.cancelled += 1
        return self._set_status(conn, runtime, ExperimentStatus.CANCELLED, now)

    def _set_status(
        self,
        conn: sqlite3.Connection,
        runtime: ExperimentRuntime,
        status: ExperimentStatus,
        now: float,
    ) -> dict[str, Any]:
        runtime.status = status
        runtime.waiting = False
        repo.set_experiment_status(conn, runtime.name, status)
        repo.append_event(conn, runtime.name, f"experiment_{status.value}", {}, now)
        log.info("experiment.status", experiment=runtime.name, status=status.value)
        return {"experiment": runtime.name, "status": status.value}

    def finish_complete(self, conn: sqlite3.Connection, now: float) -> None:
        """Mark running experiments whose whole budget is accounted for as done; snapshot."""
        for exp in self._runtimes.values():
            if exp.status is ExperimentStatus.RUNNING and exp.complete:
                exp.status = ExperimentStatus.DONE
                repo.set_experiment_status(conn, exp.name, exp.status, now)
                repo.append_event(conn, exp.name, "experiment_done", {}, now)
                exp.maybe_snapshot(conn, now, force=True)
                log.info(
                    "experiment.done", experiment=exp.name, finished=exp.finished, failed=exp.failed
                )
                self._outbox.event(exp.name, EventKind.DONE)
            else:
                exp.maybe_snapshot(conn, now)

    def snapshot_all(self, conn: sqlite3.Connection, now: float) -> None:
        """Save every strategy's state that changed since its last snapshot (at shutdown)."""
        for index, exp in enumerate(self._runtimes.values()):
            if index == 1:
                crash_point("snapshot.middle")  # the first snapshot is written, the rest are not
            exp.maybe_snapshot(conn, now, force=True)
