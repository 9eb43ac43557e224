"""Rebuilding the engine from the database after a start or a crash.

For each experiment: build its strategy from the config, load the latest snapshot, and replay the
logged strategy events after it, in order. Live trials come back from ``trials`` (pending ones in
their original order, running ones with their lease epoch and a fresh lease TTL). Agents start
offline until they are heard from (their retained state arrives as soon as the daemon subscribes),
but keep their strikes and quarantine: a restart does not make an untrusted agent trusted.
"""

from __future__ import annotations

import sqlite3

import structlog

from nasd.config import experiment_from_dict
from nasd.core.events import STRATEGY_EVENT_KINDS, event_from_dict
from nasd.engine.core import Engine
from nasd.engine.experiment import ExperimentRuntime
from nasd.engine.records import ExperimentStatus, LiveTrial, TrialStatus
from nasd.store import recovery, repo

log = structlog.get_logger("nasd.rebuild")


def rebuild(conn: sqlite3.Connection, now: float) -> Engine:
    """A fresh :class:`Engine` holding exactly the state the database describes."""
    engine = Engine(repo.lease_secret(conn))
    for stored in recovery.experiments(conn):
        config = experiment_from_dict(stored.config, source=f"stored experiment {stored.name}")
        runtime = ExperimentRuntime.create(config)
        runtime.status = ExperimentStatus(stored.status)
        _restore_strategy(conn, runtime)
        _restore_counters(conn, runtime)
        engine.experiments.restore(runtime)
    for stored_agent in recovery.agents(conn):
        record = engine.ledger.agent(stored_agent.name)
        record.slots = stored_agent.slots
        record.last_seen = stored_agent.last_seen
        record.strikes = stored_agent.strikes
        record.quarantines = stored_agent.quarantines
        record.quarantined_until = stored_agent.quarantined_until
    for row in recovery.unfinished_trials(conn):
        trial = LiveTrial(
            job_id=row.job_id,
            experiment=row.experiment,
            trial_id=row.trial_id,
            genotype=row.genotype,
            parent_id=row.parent_id,
            morphisms=row.morphisms,
            epochs=row.epochs,
            status=TrialStatus(row.status),
            attempts=row.attempts,
            epoch=row.epoch,
            agent=row.agent,
            assignments=row.leases,
        )
        ttl = engine.experiments[row.experiment].config.lease_ttl_s
        engine.ledger.restore(trial, now + ttl)
    log.info(
        "engine.rebuilt",
        experiments=len(engine.experiments),
        pending=engine.ledger.pending_count,
    )
    return engine


def _restore_strategy(conn: sqlite3.Connection, runtime: ExperimentRuntime) -> None:
    after = 0
    snapshot = recovery.snapshot(conn, runtime.name)
    if snapshot is not None:
        after, state = snapshot
        runtime.strategy.load_state_dict(state)
        runtime.last_seq = after
    replayed = 0
    for seq, kind, body in recovery.events_after(conn, runtime.name, after):
        if kind in STRATEGY_EVENT_KINDS:
            runtime.replay(event_from_dict(kind, body), seq)
            replayed += 1
    runtime.events_since_snapshot = replayed


def _restore_counters(conn: sqlite3.Connection, runtime: ExperimentRuntime) -> None:
    counts = recovery.trial_counts(conn, runtime.name)
    runtime.next_trial_id = counts.next_trial_id
    runtime.failed = counts.failed
    runtime.cancelled = counts.cancelled
    for trial_id, metrics in recovery.results(conn, runtime.name):
        runtime.note_success(trial_id, metrics)  # counts it in ``finished`` too
