"""The database schema, as ordered migrations (``sqlite_utils.migrations``).

Tables:

- ``experiments``: one row per experiment, its validated config and lifecycle status.
- ``events``: the append-only log. Every event a strategy consumed (``slots_open``,
  ``trial_succeeded``, ``trial_failed``) plus lifecycle events, in the order they were fed;
  replaying it rebuilds each strategy.
- ``trials``: projection, one row per proposed trial (``job_id`` = ``"<experiment>:<trial_id>"``):
  genotype, status (pending, running, succeeded, failed, cancelled), attempts, current lease
  epoch and agent.
- ``results``: one row per finished evaluation; ``job_id`` is the primary key, so a duplicate result
  can never be stored twice.
- ``leases``: every assignment ever made, ``(job_id, epoch)``; the active ones are also the
  daemon's outbox: after a restart or reconnect their ``trial.assign`` is published again.
- ``agents``: the last profile (with the trainers it offers) and liveness of every agent born
  (seen ``online`` with a profile), whether it is draining, and its trust: leases that expired on
  it in a row (``strikes``), quarantines in a row and when the current one ends.
- ``snapshots``: the latest strategy ``state_dict`` per experiment and the event ``seq`` it covers.
- ``meta``: per-database values (the lease secret).
- ``security_events``: counts of refused messages per kind (forged, stale, malformed, ...).
"""

from __future__ import annotations

import secrets

from sqlite_utils import Database
from sqlite_utils.migrations import Migrations

from nasd.faults import crash_point

migrations = Migrations("nasd")


@migrations()
def m001_initial(db: Database) -> None:
    """Create the first version of every table."""
    db.execute(
        """
        CREATE TABLE experiments (
            name TEXT PRIMARY KEY,
            config TEXT NOT NULL,
            status TEXT NOT NULL,
            created_at REAL NOT NULL,
            finished_at REAL
        )"""
    )
    db.execute(
        """
        CREATE TABLE events (
            seq INTEGER PRIMARY KEY AUTOINCREMENT,
            experiment TEXT NOT NULL,
            kind TEXT NOT NULL,
            body BLOB NOT NULL,
            at REAL NOT NULL
        )"""
    )
    db.execute("CREATE INDEX events_by_experiment ON events (experiment, seq)")
    db.execute(
        """
        CREATE TABLE trials (
            job_id TEXT PRIMARY KEY,
            experiment TEXT NOT NULL,
            trial_id INTEGER NOT NULL,
            genotype TEXT NOT NULL,
            parent_id INTEGER,
            morphisms TEXT NOT NULL DEFAULT '[]',
            epochs INTEGER,
            status TEXT NOT NULL,
            attempts INTEGER NOT NULL DEFAULT 0,
            epoch INTEGER NOT NULL DEFAULT 0,
            agent TEXT,
            created_at REAL NOT NULL,
            started_at REAL,
            finished_at REAL,
            error TEXT,
            UNIQUE (experiment, trial_id)
        )"""
    )
    db.execute("CREATE INDEX trials_by_status ON trials (status)")
    db.execute(
        """
        CREATE TABLE results (
            job_id TEXT PRIMARY KEY,
            experiment TEXT NOT NULL,
            trial_id INTEGER NOT NULL,
            agent TEXT NOT NULL,
            epoch INTEGER NOT NULL,
            metrics TEXT NOT NULL,
            checkpoint TEXT,
            started_at REAL,
            finished_at REAL,
            received_at REAL NOT NULL
        )"""
    )
    db.execute("CREATE INDEX results_by_experiment ON results (experiment, trial_id)")
    db.execute(
        """
        CREATE TABLE leases (
            job_id TEXT NOT NULL,
            epoch INTEGER NOT NULL,
            agent TEXT NOT NULL,
            assigned_at REAL NOT NULL,
            status TEXT NOT NULL,
            ended_at REAL,
            PRIMARY KEY (job_id, epoch)
        )"""
    )
    db.execute("CREATE INDEX leases_by_status ON leases (status)")
    db.execute(
        """
        CREATE TABLE agents (
            name TEXT PRIMARY KEY,
            profile TEXT NOT NULL,
            slots INTEGER NOT NULL,
            online INTEGER NOT NULL,
            first_seen REAL NOT NULL,
            last_seen REAL NOT NULL
        )"""
    )
    db.execute(
        """
        CREATE TABLE snapshots (
            experiment TEXT PRIMARY KEY,
            seq INTEGER NOT NULL,
            state BLOB NOT NULL,
            at REAL NOT NULL
        )"""
    )


@migrations()
def m002_agent_draining(db: Database) -> None:
    """Remember which agents refused or handed back work and wait to announce ``ready``.

    ``nasd status`` shows it: an idle agent that gets no work is otherwise a mystery.
    """
    db.execute("ALTER TABLE agents ADD COLUMN draining INTEGER NOT NULL DEFAULT 0")


@migrations()
def m003_security(db: Database) -> None:
    """The lease secret and the counters of refused messages (``nasd status`` shows them).

    ``meta`` holds per-database values; ``lease_secret`` (64 hex characters, made once here) keys
    the HMAC that turns ``(job_id, epoch)`` into the token a result must echo, so the tokens of
    every lease, current or old, can be recomputed after a restart without storing them.
    ``security_events`` has one row per kind of refused input: how often, when first and last,
    and from whom; bounded by the number of kinds, whatever a flood sends.
    """
    db.execute("CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
    crash_point("migration.middle")  # fault suite: die with this migration's transaction half done
    db.execute("INSERT INTO meta (key, value) VALUES ('lease_secret', ?)", [secrets.token_hex(32)])
    db.execute(
        """
        CREATE TABLE security_events (
            kind TEXT PRIMARY KEY,
            count INTEGER NOT NULL,
            first_at REAL NOT NULL,
            last_at REAL NOT NULL,
            last_source TEXT,
            last_detail TEXT
        )"""
    )


@migrations()
def m004_agent_trust(db: Database) -> None:
    """Agents earn trust: strikes and quarantine survive a restart; strangers' rows go.

    ``strikes`` counts leases in a row that expired on the agent, ``quarantines`` the
    quarantines in a row (the back-off exponent) and ``quarantined_until`` when the current one
    ends (0: none); see :class:`nasd.engine.records.AgentRecord`. Rows of agents never born
    (made by a ``ready`` or ``offline`` from a name never seen online, which earlier versions
    stored: defect 2 of issue 6) are deleted unless they hold an active lease.
    """
    db.execute("ALTER TABLE agents ADD COLUMN strikes INTEGER NOT NULL DEFAULT 0")
    db.execute("ALTER TABLE agents ADD COLUMN quarantines INTEGER NOT NULL DEFAULT 0")
    db.execute("ALTER TABLE agents ADD COLUMN quarantined_until REAL NOT NULL DEFAULT 0")
    db.execute(
        "DELETE FROM agents WHERE profile = '{}'"
        " AND name NOT IN (SELECT agent FROM leases WHERE status = 'active')"
    )
