"""Rebuilding the engine from the database after a start or a crash.

For each experiment: build its strategy from the config, load the latest snapshot, and replay the
logged strategy events after it, in order. Live trials come back from ``trials`` (pending ones in
their original order, running ones with their lease epoch and a fresh lease TTL). Agents start
offline until they are heard from: their retained state arrives as soon as the daemon subscribes.
"""

from __future__ import annotations

import json
import sqlite3

import structlog

from nasd.config import experiment_from_dict
from nasd.engine.core import Engine
from nasd.engine.experiment import ExperimentRuntime
from nasd.engine.records import AgentRecord, ExperimentStatus, LiveTrial, TrialStatus
from nasd.events import STRATEGY_EVENT_KINDS, event_from_dict
from nasd.store.repo import unpack

log = structlog.get_logger("nasd.rebuild")


def rebuild(conn: sqlite3.Connection, now: float) -> Engine:
    """A fresh :class:`Engine` holding exactly the state the database describes."""
    engine = Engine()
    for name, config_json, status in conn.execute(
        "SELECT name, config, status FROM experiments ORDER BY created_at, name"
    ).fetchall():
        config = experiment_from_dict(json.loads(config_json), source=f"stored experiment {name}")
        runtime = ExperimentRuntime.create(config)
        runtime.status = ExperimentStatus(status)
        _restore_strategy(conn, runtime)
        _restore_counters(conn, runtime)
        engine.experiments[name] = runtime
    for name, slots in conn.execute("SELECT name, slots FROM agents"):
        engine.agents[name] = AgentRecord(name, slots=slots, online=False)
    _restore_trials(conn, engine, now)
    log.info(
        "engine.rebuilt",
        experiments=len(engine.experiments),
        live_trials=len(engine.trials),
        pending=len(engine.pending),
    )
    return engine


def _restore_strategy(conn: sqlite3.Connection, runtime: ExperimentRuntime) -> None:
    after = 0
    row = conn.execute(
        "SELECT seq, state FROM snapshots WHERE experiment = ?", (runtime.name,)
    ).fetchone()
    if row is not None:
        after = row[0]
        runtime.strategy.load_state_dict(unpack(row[1]))
        runtime.last_seq = after
    replayed = 0
    for seq, kind, body in conn.execute(
        "SELECT seq, kind, body FROM events WHERE experiment = ? AND seq > ? ORDER BY seq",
        (runtime.name, after),
    ):
        if kind in STRATEGY_EVENT_KINDS:
            runtime.replay(event_from_dict(kind, unpack(body)), seq)
            replayed += 1
    runtime.events_since_snapshot = replayed


def _restore_counters(conn: sqlite3.Connection, runtime: ExperimentRuntime) -> None:
    row = conn.execute(
        "SELECT COALESCE(MAX(trial_id) + 1, 0),"
        " SUM(status = 'succeeded'), SUM(status = 'failed') FROM trials WHERE experiment = ?",
        (runtime.name,),
    ).fetchone()
    runtime.next_trial_id = int(row[0])
    runtime.finished = int(row[1] or 0)
    runtime.failed = int(row[2] or 0)
    for trial_id, metrics in conn.execute(
        "SELECT trial_id, metrics FROM results WHERE experiment = ? ORDER BY trial_id",
        (runtime.name,),
    ):
        runtime.note_success(trial_id, {k: float(v) for k, v in json.loads(metrics).items()})


def _restore_trials(conn: sqlite3.Connection, engine: Engine, now: float) -> None:
    leases: dict[str, dict[int, str]] = {}
    for job_id, epoch, agent in conn.execute(
        "SELECT l.job_id, l.epoch, l.agent FROM leases l JOIN trials t ON t.job_id = l.job_id"
        " WHERE t.status IN ('pending', 'running')"
    ):
        leases.setdefault(job_id, {})[epoch] = agent
    for row in conn.execute(
        "SELECT job_id, experiment, trial_id, genotype, parent_id, morphisms, epochs, status,"
        " attempts, epoch, agent FROM trials WHERE status IN ('pending', 'running')"
        " ORDER BY created_at, rowid"
    ):
        job_id, experiment, trial_id, genotype, parent_id, morphisms, epochs = row[:7]
        status, attempts, epoch, agent = row[7:]
        trial = LiveTrial(
            job_id=job_id,
            experiment=experiment,
            trial_id=trial_id,
            genotype=json.loads(genotype),
            parent_id=parent_id,
            morphisms=json.loads(morphisms),
            epochs=epochs,
            status=TrialStatus(status),
            attempts=attempts,
            epoch=epoch,
            agent=agent,
            assignments=leases.get(job_id, {}),
        )
        engine.trials[job_id] = trial
        if trial.status is TrialStatus.PENDING:
            engine.pending[job_id] = None
        elif agent is not None:
            record = engine.agents.setdefault(agent, AgentRecord(agent, online=False))
            record.leases.add(job_id)
            ttl = engine.experiments[experiment].config.lease_ttl_s
            engine.lease_clock.start(job_id, epoch, now + ttl)
