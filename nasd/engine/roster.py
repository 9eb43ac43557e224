"""The agents' roster: births, departures, ``ready``, drains, pruning, strikes and quarantine.

An agent is *born* by ``state online`` with its profile: that is the only way a name becomes
known. ``ready`` and ``offline`` from a name never born are refused (``unknown_agent``), and a
known agent's ``ready`` counts only while it is online. At most :data:`MAX_AGENTS` agents are
kept: a new birth beyond that prunes the least recently seen offline agents holding no lease, or
is refused (``agent_limit``) if there are none (issue 6, defect 2). A lease that expires on an
agent is a strike; strikes in a row quarantine it with a growing back-off, and a result clears
them (defect 3; the rule itself is :meth:`nasd.engine.records.AgentRecord.strike`).

The roster changes agents only; what happens to the trials of an agent that leaves is the
engine's business (:meth:`Roster.offline` returns them).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Mapping
from typing import Any

import structlog

from nasd.engine import security
from nasd.engine.ledger import Ledger
from nasd.engine.security import SecurityKind
from nasd.store import repo

log = structlog.get_logger("nasd.engine.roster")

MAX_AGENTS = 1024
"""Most agents the daemon keeps rows for; offline idle ones are pruned beyond it (defect 2)."""


class Roster:
    """Every change to the agents of the :class:`~nasd.engine.ledger.Ledger` and their rows."""

    def __init__(self, ledger: Ledger) -> None:
        self.ledger = ledger
        # Until then an expired lease is no strike: the daemon's own link was down (see
        # nasd.engine.core.Engine.note_link), so the silence was ours, not the agent's.
        self.blind_until = 0.0

    def offline(self, conn: sqlite3.Connection, name: str, now: float) -> list[str]:
        """``state offline`` (or the last will): the job ids the agent held, to be re-run."""
        record = self.ledger.find_agent(name)
        if record is None:
            security.note(
                conn, SecurityKind.UNKNOWN_AGENT, name, "offline from an agent never online", now
            )
            return []
        was_online = record.online
        record.online = False
        record.draining = False
        record.last_seen = now
        repo.upsert_agent(conn, name, None, None, False, now)
        if was_online:
            log.info("agent.offline", agent=name)
        return sorted(record.leases)

    def birth(
        self, conn: sqlite3.Connection, name: str, profile: dict[str, Any], now: float
    ) -> None:
        """``state online`` with a profile: the only way an agent becomes known and online."""
        record = self.ledger.find_agent(name)
        if record is None:
            if not self._make_room(conn, now):
                detail = f"birth refused: {MAX_AGENTS} agents known, none offline and idle"
                security.note(conn, SecurityKind.AGENT_LIMIT, name, detail, now)
                return
            record = self.ledger.agent(name)
        record.online = True
        record.draining = False
        record.profile = profile
        record.trainers = frozenset(str(t) for t in profile["trainers"])
        record.slots = int(profile["slots"])
        record.throughput = float(profile["throughput"])
        free = profile.get("free_memory_bytes", profile.get("memory_bytes"))
        record.memory_idle = int(free) if isinstance(free, int) and free > 0 else None
        record.last_seen = now
        repo.upsert_agent(conn, name, profile, record.slots, True, now)
        log.info(
            "agent.online",
            agent=name,
            slots=record.slots,
            device=profile["device"],
            trainers=sorted(record.trainers),
        )

    def _make_room(self, conn: sqlite3.Connection, now: float) -> bool:
        """Prune agents so one more fits under :data:`MAX_AGENTS`; False if none can go.

        Only offline agents holding no lease go, least recently seen first.
        """
        excess = self.ledger.agent_count + 1 - MAX_AGENTS
        if excess <= 0:
            return True
        idle = sorted(
            (a for a in self.ledger.agents() if not a.online and not a.leases),
            key=lambda a: (a.last_seen, a.name),
        )
        if len(idle) < excess:
            return False
        for record in idle[:excess]:
            self.ledger.forget_agent(record.name)
            repo.delete_agent(conn, record.name)
            log.info("agent.pruned", agent=record.name, last_seen=record.last_seen)
        return True

    def ready(
        self, conn: sqlite3.Connection, name: str, body: Mapping[str, Any], now: float
    ) -> None:
        record = self.ledger.find_agent(name)
        if record is None:
            security.note(
                conn, SecurityKind.UNKNOWN_AGENT, name, "ready from an agent never online", now
            )
            return
        if not record.online:
            # A known agent's ready counts only after its birth (it re-announces on connect).
            log.info("agent.ready_ignored", agent=name, reason="offline until its birth")
            return
        slots = int(body["slots"])
        if record.slots != slots or record.draining:
            record.slots = slots
            record.draining = False
            record.last_seen = now
            repo.upsert_agent(conn, name, None, slots, True, now)

    def drain(self, conn: sqlite3.Connection, name: str) -> None:
        """``name`` handed work back: give it none until it announces ``ready`` again."""
        record = self.ledger.find_agent(name)  # None: pruned since it held that lease
        if record is not None and not record.draining:
            record.draining = True
            repo.set_agent_draining(conn, name, True)
            log.info("agent.draining", agent=name)

    def strike(self, conn: sqlite3.Connection, name: str, now: float) -> None:
        """A lease expired on ``name``: count it; quarantine the agent after too many in a row."""
        record = self.ledger.find_agent(name)
        if record is None:
            return
        if now < self.blind_until:
            log.info("agent.strike_skipped", agent=name, reason="the daemon's link was down")
            return
        started = record.strike(now)
        repo.set_agent_trust(
            conn, name, record.strikes, record.quarantines, record.quarantined_until
        )
        if started:
            log.warning(
                "agent.quarantined",
                agent=name,
                expired_in_a_row=record.strikes,
                quarantine_s=record.quarantined_until - now,
            )

    def trusted_again(self, conn: sqlite3.Connection, name: str) -> None:
        """``name`` delivered a result: clear its strikes and lift any quarantine."""
        record = self.ledger.find_agent(name)
        if record is not None and record.trusted_again():
            repo.set_agent_trust(conn, name, 0, 0, 0.0)
            log.info("agent.trusted_again", agent=name)
