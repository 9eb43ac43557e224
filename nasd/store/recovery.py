"""Read-side SQL of a daemon start: what the engine is rebuilt from (:mod:`nasd.engine.rebuild`).

Each function answers one question about the durable state and returns plain rows, so the engine
never sees SQL and the store never sees the engine's classes.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from nasd.store.repo import unpack


@dataclass(frozen=True, slots=True)
class StoredExperiment:
    """An experiment row: its name, config (as submitted, validated) and lifecycle status."""

    name: str
    config: dict[str, Any]
    status: str


@dataclass(frozen=True, slots=True)
class TrialCounts:
    """How far an experiment got: the next free trial id and trials per final status."""

    next_trial_id: int
    succeeded: int
    failed: int
    cancelled: int


@dataclass(frozen=True, slots=True)
class StoredTrial:
    """An unfinished (pending or running) trial row and every lease it ever had."""

    job_id: str
    experiment: str
    trial_id: int
    genotype: dict[str, Any]
    parent_id: int | None
    morphisms: list[dict[str, Any]]
    epochs: int | None
    status: str
    attempts: int
    epoch: int
    agent: str | None
    leases: dict[int, str]


def experiments(conn: sqlite3.Connection) -> list[StoredExperiment]:
    """Every experiment, oldest first."""
    rows = conn.execute("SELECT name, config, status FROM experiments ORDER BY created_at, name")
    return [StoredExperiment(name, json.loads(config), status) for name, config, status in rows]


def snapshot(conn: sqlite3.Connection, experiment: str) -> tuple[int, dict[str, Any]] | None:
    """The latest strategy snapshot: the event ``seq`` it covers and the state; None if none."""
    row = conn.execute(
        "SELECT seq, state FROM snapshots WHERE experiment = ?", (experiment,)
    ).fetchone()
    return None if row is None else (int(row[0]), unpack(row[1]))


def events_after(
    conn: sqlite3.Connection, experiment: str, seq: int
) -> Iterator[tuple[int, str, dict[str, Any]]]:
    """``(seq, kind, body)`` of the experiment's logged events after ``seq``, in order."""
    for event_seq, kind, body in conn.execute(
        "SELECT seq, kind, body FROM events WHERE experiment = ? AND seq > ? ORDER BY seq",
        (experiment, seq),
    ):
        yield int(event_seq), str(kind), unpack(body)


def trial_counts(conn: sqlite3.Connection, experiment: str) -> TrialCounts:
    """The next trial id and the number of succeeded, failed and cancelled trials."""
    row = conn.execute(
        "SELECT COALESCE(MAX(trial_id) + 1, 0), SUM(status = 'succeeded'), SUM(status = 'failed'),"
        " SUM(status = 'cancelled') FROM trials WHERE experiment = ?",
        (experiment,),
    ).fetchone()
    return TrialCounts(int(row[0]), int(row[1] or 0), int(row[2] or 0), int(row[3] or 0))


def results(conn: sqlite3.Connection, experiment: str) -> Iterator[tuple[int, dict[str, float]]]:
    """``(trial_id, metrics)`` of every stored result, in the order they were stored.

    Arrival order, not trial order: "best so far" keeps the earlier of two equal trials, so a
    rebuild must see them in the order the live engine did.
    """
    for trial_id, metrics in conn.execute(
        "SELECT trial_id, metrics FROM results WHERE experiment = ? ORDER BY rowid",
        (experiment,),
    ):
        yield int(trial_id), {str(k): float(v) for k, v in json.loads(metrics).items()}


@dataclass(frozen=True, slots=True)
class StoredAgent:
    """An agent row: slots, when last heard from, and its trust (see ``m004_agent_trust``)."""

    name: str
    slots: int
    last_seen: float
    strikes: int
    quarantines: int
    quarantined_until: float


def agents(conn: sqlite3.Connection) -> list[StoredAgent]:
    """Every agent known (born and not pruned), by name."""
    return [
        StoredAgent(str(n), int(s), float(seen), int(strikes), int(quarantines), float(until))
        for n, s, seen, strikes, quarantines, until in conn.execute(
            "SELECT name, slots, last_seen, strikes, quarantines, quarantined_until FROM agents"
            " ORDER BY name"
        )
    ]


def unfinished_trials(conn: sqlite3.Connection) -> list[StoredTrial]:
    """Pending and running trials in the order they were proposed, with their lease history."""
    leases: dict[str, dict[int, str]] = {}
    for job_id, epoch, agent in conn.execute(
        "SELECT l.job_id, l.epoch, l.agent FROM leases l JOIN trials t ON t.job_id = l.job_id"
        " WHERE t.status IN ('pending', 'running')"
    ):
        leases.setdefault(job_id, {})[int(epoch)] = str(agent)
    return [
        StoredTrial(
            job_id=row[0],
            experiment=row[1],
            trial_id=int(row[2]),
            genotype=json.loads(row[3]),
            parent_id=row[4],
            morphisms=json.loads(row[5]),
            epochs=row[6],
            status=row[7],
            attempts=int(row[8]),
            epoch=int(row[9]),
            agent=row[10],
            leases=leases.get(row[0], {}),
        )
        for row in conn.execute(
            "SELECT job_id, experiment, trial_id, genotype, parent_id, morphisms, epochs, status,"
            " attempts, epoch, agent FROM trials WHERE status IN ('pending', 'running')"
            " ORDER BY created_at, rowid"
        )
    ]
