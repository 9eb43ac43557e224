"""Read-side queries shared by the CLI (read-only connection) and the daemon's ``status`` command.

All functions take any ``sqlite3.Connection`` and return plain JSON-able data.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

from nasd.core.objective import BestSoFar, Objective

_TRIAL_STATES = ("pending", "running", "succeeded", "failed", "cancelled")


def experiment_names(conn: sqlite3.Connection) -> list[str]:
    """Every experiment in the database, oldest first."""
    return [r[0] for r in conn.execute("SELECT name FROM experiments ORDER BY created_at, name")]


def group_members(conn: sqlite3.Connection, group: str) -> list[tuple[str, str]]:
    """The models of a multi-model experiment: ``(experiment, model)`` pairs, by name."""
    out = []
    for name, config in conn.execute("SELECT name, config FROM experiments ORDER BY name"):
        table = json.loads(config).get("experiment", {})
        if table.get("group") == group:
            out.append((name, str(table.get("model") or name)))
    return out


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


def online_trainers(conn: sqlite3.Connection) -> frozenset[str]:
    """Every trainer that some agent marked online offers (from its stored birth profile)."""
    offered: set[str] = set()
    for (profile_json,) in conn.execute("SELECT profile FROM agents WHERE online = 1"):
        trainers = json.loads(profile_json).get("trainers", [])
        if isinstance(trainers, list):
            offered.update(str(t) for t in trainers)
    return frozenset(offered)


def experiment_summary(
    conn: sqlite3.Connection, experiment: str, offered: frozenset[str] | None = None
) -> dict[str, Any] | None:
    """Counts per trial state, budget, status and best-so-far of one experiment.

    ``waiting`` says why a running experiment with work left to hand out gets none done: no
    online agent offers its trainer (None otherwise). ``offered``: the trainers online agents offer,
    when the caller already has them (:func:`online_trainers` by default).
    """
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
    trainer = str(config["task"]["trainer"])
    # Work left to hand out: pending trials, or trials the budget allows that are not proposed
    # yet (the daemon proposes none while no agent could run them).
    unassigned = counts["pending"] or sum(counts.values()) < config["experiment"]["budget"]
    offered = online_trainers(conn) if offered is None and unassigned else offered
    waiting = None
    if row[1] == "running" and unassigned and trainer not in (offered or ()):
        waiting = f"no online agent offers trainer {trainer!r}"
    return {
        "name": experiment,
        "status": row[1],
        "budget": config["experiment"]["budget"],
        "strategy": config["strategy"]["name"],
        "trainer": trainer,
        "done": counts["succeeded"],
        "running": counts["running"],
        "pending": counts["pending"],
        "failed": counts["failed"],
        "cancelled": counts["cancelled"],
        "best": None if best is None else {k: best[k] for k in ("trial_id", "metric", "value")},
        "waiting": waiting,
        "created_at": row[2],
        "finished_at": row[3],
    }


def agent_summaries(conn: sqlite3.Connection) -> list[dict[str, Any]]:
    """Every agent known: online flag, slots, profile basics, trust and the jobs it holds now.

    ``strikes``: leases in a row that expired on it; ``quarantined_until``: when its quarantine
    ends (0 if it never was; compare with the current time), ``quarantines``: how many in a row.
    The trainers an agent offers are left out: up to 256 names per agent would swell a reply.
    """
    running: dict[str, list[str]] = {}
    for job_id, agent in conn.execute("SELECT job_id, agent FROM leases WHERE status = 'active'"):
        running.setdefault(agent, []).append(job_id)
    out = []
    for (
        name,
        profile_json,
        slots,
        online,
        draining,
        last_seen,
        strikes,
        quarantines,
        quarantined_until,
    ) in conn.execute(
        "SELECT name, profile, slots, online, draining, last_seen, strikes, quarantines,"
        " quarantined_until FROM agents ORDER BY name"
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
                "strikes": strikes,
                "quarantines": quarantines,
                "quarantined_until": quarantined_until,
            }
        )
    return out


def security_summary(conn: sqlite3.Connection) -> dict[str, dict[str, Any]]:
    """Refused inputs per kind: ``{kind: {count, first_at, last_at, last_source, last_detail}}``."""
    return {
        kind: {
            "count": count,
            "first_at": first_at,
            "last_at": last_at,
            "last_source": source,
            "last_detail": detail,
        }
        for kind, count, first_at, last_at, source, detail in conn.execute(
            "SELECT kind, count, first_at, last_at, last_source, last_detail"
            " FROM security_events ORDER BY kind"
        )
    }


def scheduling_summary(
    conn: sqlite3.Connection, agents: list[dict[str, Any]]
) -> dict[str, Any] | None:
    """SHADHO's compute classes (speed, agents, free slots now) and each model's complexity,
    priority and classes, as the daemon last stored them; None before it ever placed work.

    ``agents`` (from :func:`agent_summaries`) gain their ``class``; a class's ``free`` counts
    the slots of its online, undrained agents not covered by active leases.
    """
    row = conn.execute("SELECT value FROM meta WHERE key = 'scheduling'").fetchone()
    if row is None:
        return None
    stored = json.loads(row[0])
    by_name = {a["name"]: a for a in agents}
    classes = []
    for klass in stored.get("classes", []):
        free = 0
        for name in klass.get("agents", []):
            agent = by_name.get(name)
            if agent is None:
                continue
            agent["class"] = klass["name"]
            if agent["online"] and not agent["draining"]:
                free += max(0, (agent["slots"] or 0) - len(agent["jobs"]))
        classes.append({**klass, "free": free})
    return {"classes": classes, "models": stored.get("models", {})}


def status(conn: sqlite3.Connection) -> dict[str, Any]:
    """The whole picture for ``nasd status``: experiments, agents, classes, refused inputs."""
    offered = online_trainers(conn)
    experiments = [experiment_summary(conn, name, offered) for name in experiment_names(conn)]
    agents = agent_summaries(conn)
    out: dict[str, Any] = {
        "experiments": [e for e in experiments if e],
        "agents": agents,
        "security": security_summary(conn),
    }
    scheduling = scheduling_summary(conn, agents)
    if scheduling is not None:
        out["scheduling"] = scheduling
    return out


EXPORT_COLUMNS = (
    "trial_id",
    "genotype",
    "status",
    "agent",
    "attempts",
    "parent_id",
    "started_at",
    "finished_at",
    "started_at_iso",
    "finished_at_iso",
    "error",
)
"""The fixed columns of ``nasd export``. Times come twice: epoch seconds (``started_at``, easy to
subtract) and ISO-8601 in UTC (``started_at_iso``, easy to read); both are None when unset."""

_INTEGER_COLUMNS = ("trial_id", "attempts", "parent_id")


def iso_time(epoch: float | None) -> str | None:
    """``epoch`` seconds as ISO-8601 in UTC to the millisecond (``2026-12-02T14:56:39.123Z``)."""
    if epoch is None:
        return None
    moment = datetime.fromtimestamp(float(epoch), tz=UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def export_rows(conn: sqlite3.Connection, experiment: str) -> Iterator[dict[str, Any]]:
    """One row per trial, in trial order: the EXPORT_COLUMNS plus ``metrics``, a mapping.

    Metrics stay in their own namespace: a trainer may name a metric ``status`` or ``trial_id``
    and it must not replace those columns (:func:`nasd.cli.report.write_export` flattens them as
    ``metric.<name>`` for CSV). A trial without a result has ``metrics == {}``. The genotype is
    the decoded mapping (a JSON object in JSON lines, not a string inside JSON); ``trial_id``,
    ``attempts`` and ``parent_id`` are ints (or None).
    """
    for row in conn.execute(
        "SELECT t.trial_id, t.genotype, t.status, COALESCE(r.agent, t.agent), t.attempts,"
        " t.parent_id, t.started_at, COALESCE(r.finished_at, t.finished_at), t.error, r.metrics"
        " FROM trials t LEFT JOIN results r ON r.job_id = t.job_id"
        " WHERE t.experiment = ? ORDER BY t.trial_id",
        (experiment,),
    ):
        (trial_id, genotype, status_, agent, attempts, parent_id, started, finished, error) = row[
            :-1
        ]
        record: dict[str, Any] = {
            "trial_id": trial_id,
            "genotype": json.loads(genotype),
            "status": status_,
            "agent": agent,
            "attempts": attempts,
            "parent_id": parent_id,
            "started_at": started,
            "finished_at": finished,
            "started_at_iso": iso_time(started),
            "finished_at_iso": iso_time(finished),
            "error": error,
        }
        for column in _INTEGER_COLUMNS:
            if record[column] is not None:
                record[column] = int(record[column])
        record["metrics"] = json.loads(row[-1]) if row[-1] else {}
        yield record
