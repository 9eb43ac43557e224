"""Control commands (``nasd submit``, ``status``, ``pause``, ``resume``, ``cancel``) over MQTT.

Each request carries a client id and a correlation id; the reply goes to
``nasd/v1/control/response/<client>``. A bad request gets ``ok: false`` and an error message;
it never changes anything.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import structlog

from nasd.config import ExperimentConfig, experiment_from_dict
from nasd.engine.experiment import ExperimentRuntime
from nasd.engine.records import ExperimentStatus, LeaseStatus, Outbound, TrialStatus
from nasd.errors import ConfigError
from nasd.store import queries, repo
from nasd.wire import control_response_topic

if TYPE_CHECKING:
    from nasd.engine.core import Engine

log = structlog.get_logger("nasd.control")


class CommandError(Exception):
    """A control request that cannot be carried out; its message goes back to the client."""


def handle(engine: Engine, conn: sqlite3.Connection, body: Mapping[str, Any], now: float) -> None:
    """Run one control request and queue the response."""
    command = str(body["command"])
    args = dict(body.get("args", {}))
    try:
        result = _COMMANDS[command](engine, conn, args, now)
        reply = {
            "correlation_id": body["correlation_id"],
            "ok": True,
            "result": result,
            "error": None,
        }
    except (CommandError, ConfigError) as exc:
        log.info("control.refused", command=command, error=str(exc))
        reply = {
            "correlation_id": body["correlation_id"],
            "ok": False,
            "result": None,
            "error": str(exc),
        }
    except Exception as exc:  # a request must never take the daemon down (it would be redelivered)
        log.exception("control.failed", command=command)
        reply = {
            "correlation_id": body["correlation_id"],
            "ok": False,
            "result": None,
            "error": f"internal error: {type(exc).__name__}: {exc}",
        }
    engine.emit(Outbound(control_response_topic(str(body["client"])), "control.response", reply))


def submit(
    engine: Engine, conn: sqlite3.Connection, config_data: Mapping[str, Any], now: float
) -> dict[str, Any]:
    """Create an experiment from a config mapping.

    Resubmitting the same config is a no-op; resubmitting it with another budget changes the
    budget (a finished search can be extended); any other difference is refused.
    """
    config = experiment_from_dict(config_data, source="submitted config")
    existing = engine.experiments.get(config.name)
    if existing is not None:
        if existing.config.budget != config.budget and (
            existing.config.with_budget(config.budget).to_json() == config.to_json()
        ):
            return _change_budget(conn, existing, config, now)
        if existing.config.to_json() != config.to_json():
            raise CommandError(
                f"experiment {config.name!r} already exists with a different config; "
                "choose another [experiment].name"
            )
        return {"experiment": config.name, "created": False, "status": existing.status.value}
    runtime = ExperimentRuntime.create(config)
    engine.experiments[config.name] = runtime
    repo.insert_experiment(conn, config.name, config.to_json(), runtime.status, now)
    repo.append_event(conn, config.name, "experiment_created", config.to_dict(), now)
    log.info(
        "experiment.created",
        experiment=config.name,
        budget=config.budget,
        strategy=config.strategy_name,
    )
    return {"experiment": config.name, "created": True, "status": runtime.status.value}


def _change_budget(
    conn: sqlite3.Connection, runtime: ExperimentRuntime, config: ExperimentConfig, now: float
) -> dict[str, Any]:
    if config.budget < runtime.next_trial_id:
        raise CommandError(
            f"experiment {config.name!r} already has {runtime.next_trial_id} trials; "
            f"its budget cannot go down to {config.budget}"
        )
    runtime.config = config
    runtime.waiting = False
    conn.execute(
        "UPDATE experiments SET config = ? WHERE name = ?", (config.to_json(), config.name)
    )
    repo.append_event(conn, config.name, "budget_changed", {"budget": config.budget}, now)
    if runtime.status is ExperimentStatus.DONE and not runtime.complete:
        runtime.status = ExperimentStatus.RUNNING
        repo.set_experiment_status(conn, config.name, runtime.status)
    log.info("experiment.budget_changed", experiment=config.name, budget=config.budget)
    return {"experiment": config.name, "created": False, "status": runtime.status.value}


def _submit(engine: Engine, conn: sqlite3.Connection, args: dict[str, Any], now: float) -> Any:
    config = args.get("config")
    if not isinstance(config, dict):
        raise CommandError("submit needs args.config: the experiment config as a mapping")
    return submit(engine, conn, config, now)


def _status(engine: Engine, conn: sqlite3.Connection, args: dict[str, Any], now: float) -> Any:
    return queries.status(conn)


def _runtime(engine: Engine, args: dict[str, Any]) -> ExperimentRuntime:
    name = args.get("experiment")
    runtime = engine.experiments.get(str(name)) if isinstance(name, str) else None
    if runtime is None:
        raise CommandError(f"no experiment named {name!r}")
    return runtime


def _set_status(
    engine: Engine,
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


def _pause(engine: Engine, conn: sqlite3.Connection, args: dict[str, Any], now: float) -> Any:
    runtime = _runtime(engine, args)
    if runtime.status is not ExperimentStatus.RUNNING:
        raise CommandError(f"experiment {runtime.name!r} is {runtime.status.value}, not running")
    return _set_status(engine, conn, runtime, ExperimentStatus.PAUSED, now)


def _resume(engine: Engine, conn: sqlite3.Connection, args: dict[str, Any], now: float) -> Any:
    runtime = _runtime(engine, args)
    if runtime.status is not ExperimentStatus.PAUSED:
        raise CommandError(f"experiment {runtime.name!r} is {runtime.status.value}, not paused")
    return _set_status(engine, conn, runtime, ExperimentStatus.RUNNING, now)


def _cancel(engine: Engine, conn: sqlite3.Connection, args: dict[str, Any], now: float) -> Any:
    """Stop an experiment for good: unfinished trials fail with reason ``cancelled``."""
    runtime = _runtime(engine, args)
    if runtime.status in (ExperimentStatus.DONE, ExperimentStatus.CANCELLED):
        raise CommandError(f"experiment {runtime.name!r} is already {runtime.status.value}")
    for trial in [t for t in engine.trials.values() if t.experiment == runtime.name]:
        if trial.status is TrialStatus.RUNNING and trial.agent is not None:
            repo.end_lease(conn, trial.job_id, trial.epoch, LeaseStatus.RELEASED, now)
            engine.send_cancel(trial.agent, trial.job_id, trial.epoch)
            engine.release_agent(trial)
        engine.pending.pop(trial.job_id, None)
        del engine.trials[trial.job_id]
        repo.fail_trial(conn, trial.job_id, trial.attempts, "cancelled", now)
    return _set_status(engine, conn, runtime, ExperimentStatus.CANCELLED, now)


_COMMANDS = {
    "submit": _submit,
    "status": _status,
    "pause": _pause,
    "resume": _resume,
    "cancel": _cancel,
}
