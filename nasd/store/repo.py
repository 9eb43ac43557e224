"""Write-side SQL of the daemon: small functions over the writer connection.

Each function is one statement (or a handful); the caller owns the transaction. Kept free of any
domain logic so the engine reads as the protocol it implements.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable, Mapping
from typing import Any

import msgpack

from nasd.core.space import canonical_json


def pack(value: Any) -> bytes:
    """msgpack for the event log and snapshots (never pickle)."""
    return msgpack.packb(value, use_bin_type=True)


def unpack(blob: bytes) -> Any:
    """Inverse of :func:`pack`."""
    return msgpack.unpackb(blob, raw=False, strict_map_key=False)


def insert_experiment(
    conn: sqlite3.Connection, name: str, config_json: str, status: str, now: float
) -> None:
    """Create an experiment row."""
    conn.execute(
        "INSERT INTO experiments (name, config, status, created_at) VALUES (?, ?, ?, ?)",
        (name, config_json, status, now),
    )


def set_experiment_status(
    conn: sqlite3.Connection, name: str, status: str, finished_at: float | None = None
) -> None:
    """Move an experiment to ``status`` (``running``, ``paused``, ``done``, ``cancelled``)."""
    conn.execute(
        "UPDATE experiments SET status = ?, finished_at = ? WHERE name = ?",
        (status, finished_at, name),
    )


def append_event(
    conn: sqlite3.Connection, experiment: str, kind: str, body: Mapping[str, Any], now: float
) -> int:
    """Append to the event log; returns the event's ``seq``."""
    cursor = conn.execute(
        "INSERT INTO events (experiment, kind, body, at) VALUES (?, ?, ?, ?)",
        (experiment, kind, pack(dict(body)), now),
    )
    seq = cursor.lastrowid
    assert seq is not None
    return seq


def set_experiment_config(conn: sqlite3.Connection, name: str, config_json: str) -> None:
    """Replace an experiment's stored config (only its budget may change; the caller checks)."""
    conn.execute("UPDATE experiments SET config = ? WHERE name = ?", (config_json, name))


def trial_exists(conn: sqlite3.Connection, job_id: str) -> bool:
    """True if ``job_id`` was ever proposed in this database."""
    return conn.execute("SELECT 1 FROM trials WHERE job_id = ?", (job_id,)).fetchone() is not None


def lease_holder(conn: sqlite3.Connection, job_id: str, epoch: int) -> str | None:
    """The agent lease ``(job_id, epoch)`` was issued to; None if it never was."""
    row = conn.execute(
        "SELECT agent FROM leases WHERE job_id = ? AND epoch = ?", (job_id, epoch)
    ).fetchone()
    return None if row is None else str(row[0])


def insert_trials(conn: sqlite3.Connection, rows: Iterable[tuple[Any, ...]]) -> None:
    """Insert proposed trials: (job_id, experiment, trial_id, genotype, parent_id, morphisms,
    epochs, status, created_at)."""
    conn.executemany(
        "INSERT INTO trials (job_id, experiment, trial_id, genotype, parent_id, morphisms, epochs,"
        " status, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
        rows,
    )


def trial_row(
    job_id: str,
    experiment: str,
    trial_id: int,
    genotype: Mapping[str, Any],
    parent_id: int | None,
    morphisms: Iterable[Mapping[str, Any]],
    epochs: int | None,
    status: str,
    now: float,
) -> tuple[Any, ...]:
    """The tuple :func:`insert_trials` expects, with the genotype in canonical JSON."""
    return (
        job_id,
        experiment,
        trial_id,
        canonical_json(genotype),
        parent_id,
        json.dumps([dict(m) for m in morphisms], sort_keys=True),
        epochs,
        status,
        now,
    )


def assign_trial(conn: sqlite3.Connection, job_id: str, epoch: int, agent: str, now: float) -> None:
    """Record a new lease and mark the trial running under it."""
    conn.execute(
        "INSERT INTO leases (job_id, epoch, agent, assigned_at, status) VALUES (?, ?, ?, ?, ?)",
        (job_id, epoch, agent, now, "active"),
    )
    conn.execute(
        "UPDATE trials SET status = 'running', epoch = ?, agent = ?,"
        " started_at = COALESCE(started_at, ?) WHERE job_id = ?",
        (epoch, agent, now, job_id),
    )


def end_lease(conn: sqlite3.Connection, job_id: str, epoch: int, status: str, now: float) -> None:
    """Close one lease with ``status`` (done, expired, failed, released, superseded)."""
    conn.execute(
        "UPDATE leases SET status = ?, ended_at = ? WHERE job_id = ? AND epoch = ?",
        (status, now, job_id, epoch),
    )


def requeue_trial(conn: sqlite3.Connection, job_id: str, attempts: int, error: str | None) -> None:
    """Put a trial back to pending after a lease ended without a result."""
    conn.execute(
        "UPDATE trials SET status = 'pending', attempts = ?, agent = NULL, error = ?"
        " WHERE job_id = ?",
        (attempts, error, job_id),
    )


def fail_trial(
    conn: sqlite3.Connection, job_id: str, attempts: int, error: str, now: float
) -> None:
    """Mark a trial permanently failed."""
    conn.execute(
        "UPDATE trials SET status = 'failed', attempts = ?, error = ?, finished_at = ?"
        " WHERE job_id = ?",
        (attempts, error, now, job_id),
    )


def cancel_trial(conn: sqlite3.Connection, job_id: str, now: float) -> None:
    """Mark an unfinished trial cancelled (its experiment was cancelled)."""
    conn.execute(
        "UPDATE trials SET status = 'cancelled', agent = NULL, error = 'cancelled',"
        " finished_at = ? WHERE job_id = ?",
        (now, job_id),
    )


def insert_result(
    conn: sqlite3.Connection,
    job_id: str,
    experiment: str,
    trial_id: int,
    agent: str,
    epoch: int,
    metrics: Mapping[str, float],
    checkpoint: str | None,
    started_at: float | None,
    finished_at: float | None,
    now: float,
) -> bool:
    """Store a result and mark its trial succeeded; False if ``job_id`` already has one."""
    cursor = conn.execute(
        "INSERT OR IGNORE INTO results (job_id, experiment, trial_id, agent, epoch, metrics,"
        " checkpoint, started_at, finished_at, received_at) VALUES (?,?,?,?,?,?,?,?,?,?)",
        (
            job_id,
            experiment,
            trial_id,
            agent,
            epoch,
            json.dumps(dict(metrics), sort_keys=True),
            checkpoint,
            started_at,
            finished_at,
            now,
        ),
    )
    if cursor.rowcount == 0:
        return False
    conn.execute(
        "UPDATE trials SET status = 'succeeded', agent = ?, finished_at = ?, error = NULL"
        " WHERE job_id = ?",
        (agent, now, job_id),
    )
    return True


def upsert_agent(
    conn: sqlite3.Connection,
    name: str,
    profile: Mapping[str, Any] | None,
    slots: int | None,
    online: bool,
    now: float,
) -> None:
    """Create or update an agent row; ``None`` profile/slots keep the stored values.

    Every state change and ``ready`` clears ``draining``: the agent has said it takes work.
    """
    profile_json = json.dumps(dict(profile), sort_keys=True) if profile is not None else None
    conn.execute(
        "INSERT INTO agents (name, profile, slots, online, first_seen, last_seen)"
        " VALUES (?, COALESCE(?, '{}'), COALESCE(?, 1), ?, ?, ?) ON CONFLICT(name) DO UPDATE SET"
        " profile = COALESCE(?, agents.profile), slots = COALESCE(?, agents.slots),"
        " online = excluded.online, last_seen = excluded.last_seen, draining = 0",
        (name, profile_json, slots, int(online), now, now, profile_json, slots),
    )


def set_agent_draining(conn: sqlite3.Connection, name: str, draining: bool) -> None:
    """Record whether an agent refuses work until it announces ``ready`` again."""
    conn.execute("UPDATE agents SET draining = ? WHERE name = ?", (int(draining), name))


def set_agent_trust(
    conn: sqlite3.Connection,
    name: str,
    strikes: int,
    quarantines: int,
    quarantined_until: float,
) -> None:
    """Record an agent's expired leases in a row, quarantines in a row and quarantine end."""
    conn.execute(
        "UPDATE agents SET strikes = ?, quarantines = ?, quarantined_until = ? WHERE name = ?",
        (strikes, quarantines, quarantined_until, name),
    )


def delete_agent(conn: sqlite3.Connection, name: str) -> None:
    """Forget an agent (pruned: offline, holding no lease, the least recently seen)."""
    conn.execute("DELETE FROM agents WHERE name = ?", (name,))


def save_snapshot(
    conn: sqlite3.Connection, experiment: str, seq: int, state: Mapping[str, Any], now: float
) -> None:
    """Replace the experiment's strategy snapshot (it covers events up to ``seq``)."""
    conn.execute(
        "INSERT INTO snapshots (experiment, seq, state, at) VALUES (?, ?, ?, ?)"
        " ON CONFLICT(experiment) DO UPDATE SET seq = excluded.seq, state = excluded.state,"
        " at = excluded.at",
        (experiment, seq, pack(dict(state)), now),
    )


def lease_secret(conn: sqlite3.Connection) -> bytes:
    """This database's lease secret (made by migration ``m003``), the key of lease tokens."""
    row = conn.execute("SELECT value FROM meta WHERE key = 'lease_secret'").fetchone()
    if row is None:  # pragma: no cover - the migration always creates it
        raise LookupError("the database has no lease secret")
    return bytes.fromhex(str(row[0]))


def set_meta(conn: sqlite3.Connection, key: str, value: str) -> None:
    """Store a per-database value in ``meta`` (replacing the previous one)."""
    conn.execute(
        "INSERT INTO meta (key, value) VALUES (?, ?)"
        " ON CONFLICT(key) DO UPDATE SET value = excluded.value",
        (key, value),
    )


def get_meta(conn: sqlite3.Connection, key: str) -> str | None:
    """A per-database value from ``meta``, or None."""
    row = conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
    return None if row is None else str(row[0])


MAX_DETAIL_CHARS = 200
"""Longest stored detail of a security event (they often echo hostile input)."""


def note_security(
    conn: sqlite3.Connection,
    kind: str,
    source: str | None,
    detail: str,
    now: float,
    count: int = 1,
) -> None:
    """Count ``count`` refused inputs of ``kind``, keeping the last source and detail
    (truncated)."""
    conn.execute(
        "INSERT INTO security_events (kind, count, first_at, last_at, last_source, last_detail)"
        " VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT(kind) DO UPDATE SET count = count + excluded.count,"
        " last_at = excluded.last_at, last_source = excluded.last_source,"
        " last_detail = excluded.last_detail",
        (
            kind,
            count,
            now,
            now,
            None if source is None else source[:64],
            detail[:MAX_DETAIL_CHARS],
        ),
    )
