"""Read-side queries shared by the CLI (read-only connection) and the daemon's ``status`` command.

All functions take any ``sqlite3.Connection`` and return plain JSON-able data.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from typing import Any

from nasd.core.objective import BestSoFar, Objective

_TRIAL_STATES = ("pending", "running", "succeeded", "failed", "cancelled")


def experiment_names(conn: sqlite3.Connection) -> list[str]:
    """Every experiment in the database, oldest first."""
    return [r[0] for r in conn.execute("SELECT name FROM experiments ORDER BY created_at, name")]


def best_trial(conn: sqlite3.Connection, experiment: str) -> dict[str, Any] | None:
    """The best finished trial by the experiment's objective, with genotype and metrics.

    Ranked by :class:`nasd.core.objective.BestSoFar` over results in arrival order: the same trial
    the daemon announced as best.
    """
    row = conn.execute("SELECT config FROM experiments WHERE name = ?", (experiment,)).fetchone()
    if row is None:
        return None
    objective = Objective.of_strategy(json.loads(row[0])["strategy"])
    tracker = BestSoFar(objective)
    details: dict[int, tuple[str, str | None, str | None]] = {}
    for trial_id, metrics_json, genotype, agent, checkpoint in conn.execute(
        "SELECT r.trial_id, r.metrics, t.genotype, r.agent, r.checkpoint FROM results r"
        " JOIN trials t ON t.job_id = r.job_id WHERE r.experiment = ? ORDER BY r.rowid",
        (experiment,),
    ):
        if tracker.offer(trial_id, json.loads(metrics_json)):
            details[trial_id] = (genotype, agent, checkpoint)
    best = tracker.best
    if best is None:
        return None
    genotype, agent, checkpoint = details[best.trial_id]
    return {
        "experiment": experiment,
        "trial_id": best.trial_id,
        "metric": objective.metric,
        "value": best.metrics[objective.metric],
        "metrics": best.metrics,
        "genotype": json.loads(genotype),
        "agent": agent,
        "checkpoint": checkpoint,
    }


def experiment_summary(conn: sqlite3.Connection, experiment: str) -> dict[str, Any] | None:
    """Counts per trial state, budget, status and best-so-far of one experiment."""
    row = conn.execute(
        "SELECT config, status, created_at, finished_at FROM experiments WHERE name = ?",
        (experiment,),
    ).fetchone()
    if row is None:
        return None
    config = json.loads(row[0])
    counts = dict.fromkeys(_TRIAL_STATES, 0)
    for status, count in conn.execute(
        "SELECT status, COUNT(*) FROM trials WHERE experiment = ? GROUP BY status", (experiment,)
    ):
        counts[status] = count
    best = best_trial(conn, experiment)
    return {
        "name": experiment,
        "status": row[1],
        "budget": config["experiment"]["budget"],
        "strategy": config["strategy"]["name"],
        "trainer": config["task"]["trainer"],
        "done": counts["succeeded"],
        "running": counts["running"],
        "pending": counts["pending"],
        "failed": counts["failed"],
        "cancelled": counts["cancelled"],
        "best": None if best is None else {k: best[k] for k in ("trial_id", "metric", "value")},
        "created_at": row[2],
        "finished_at": row[3],
    }


def agent_summaries(conn: sqlite3.Connection) -> list[dict[str, Any]]:
    """Every agent seen: online flag, slots, profile basics and the jobs it holds now."""
    running: dict[str, list[str]] = {}
    for job_id, agent in conn.execute("SELECT job_id, agent FROM leases WHERE status = 'active'"):
        running.setdefault(agent, []).append(job_id)
    out = []
    for name, profile_json, slots, online, draining, last_seen in conn.execute(
        "SELECT name, profile, slots, online, draining, last_seen FROM agents ORDER BY name"
    ):
        profile = json.loads(profile_json)
        jobs = sorted(running.get(name, []))
        out.append(
            {
                "name": name,
                "online": bool(online),
                "busy": bool(jobs),
                "draining": bool(online and draining),
                "slots": slots,
                "jobs": jobs,
                "device": profile.get("device"),
                "device_name": profile.get("device_name"),
                "throughput": profile.get("throughput"),
                "last_seen": last_seen,
            }
        )
    return out


def status(conn: sqlite3.Connection) -> dict[str, Any]:
    """The whole picture for ``nasd status``: experiments and agents."""
    experiments = [experiment_summary(conn, name) for name in experiment_names(conn)]
    return {"experiments": [e for e in experiments if e], "agents": agent_summaries(conn)}


EXPORT_COLUMNS = (
    "trial_id",
    "genotype",
    "status",
    "agent",
    "attempts",
    "parent_id",
    "started_at",
    "finished_at",
    "error",
)


def export_rows(conn: sqlite3.Connection, experiment: str) -> Iterator[dict[str, Any]]:
    """One row per trial: the EXPORT_COLUMNS plus every metric (flattened), trial order."""
    for row in conn.execute(
        "SELECT t.trial_id, t.genotype, t.status, COALESCE(r.agent, t.agent), t.attempts,"
        " t.parent_id, t.started_at, COALESCE(r.finished_at, t.finished_at), t.error, r.metrics"
        " FROM trials t LEFT JOIN results r ON r.job_id = t.job_id"
        " WHERE t.experiment = ? ORDER BY t.trial_id",
        (experiment,),
    ):
        record = dict(zip(EXPORT_COLUMNS, row[:-1], strict=True))
        metrics = json.loads(row[-1]) if row[-1] else {}
        record.update(metrics)
        yield record
