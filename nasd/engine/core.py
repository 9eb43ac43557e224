"""The engine: the daemon's protocol logic, applied one batch of messages per transaction.

:meth:`Engine.apply` runs on the writer thread inside one SQLite transaction. It consumes decoded,
validated messages, updates the in-memory state and the database together, and returns the messages
to publish once the transaction has committed (acks, assignments, cancels, events). If anything
unexpected raises, the transaction rolls back and the daemon exits; the next start rebuilds the
engine from the database (:mod:`nasd.engine.rebuild`), so memory never outlives a lost commit.

Result policy (DESIGN.md section 3): a result is accepted from an agent only for a ``(job_id,
epoch)`` that was leased to that very agent. The first accepted result finishes the trial, even one
from an older epoch whose lease had expired (work done is not wasted); the newer lease is then
cancelled. Results for finished trials are duplicates: acknowledged and ignored.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import structlog

from nasd.config import ExperimentConfig
from nasd.core.events import TrialFailed, TrialSucceeded
from nasd.core.wire import MessageType
from nasd.engine import control
from nasd.engine.ledger import Ledger
from nasd.engine.lifecycle import Experiments
from nasd.engine.outbox import Outbox, assign_message
from nasd.engine.records import EventKind, LeaseStatus, LiveTrial, Outbound, TrialStatus
from nasd.engine.work import Planner
from nasd.store import repo

log = structlog.get_logger("nasd.engine")


@dataclass(frozen=True, slots=True)
class Inbound:
    """A decoded, schema-valid message: its type, the agent its topic names, and its body."""

    type: str
    agent: str | None
    body: Mapping[str, Any]


class Engine:
    """All live state of the daemon; see the module docstring for the rules it enforces.

    State has one owner per piece: :attr:`ledger` (trials, queue, agents, leases),
    :attr:`experiments` (runtimes and their lifecycle), the planner (rotation) and the outbox.
    The engine wires them together and implements the agent-facing protocol.
    """

    def __init__(self) -> None:
        self.ledger = Ledger()
        self._outbox = Outbox()
        self.experiments = Experiments(self.ledger, self._outbox)
        self._planner = Planner(self.experiments, self.ledger, self._outbox)

    # -- entry points -------------------------------------------------------------------------

    def apply(
        self, conn: sqlite3.Connection, inputs: Sequence[Inbound], now: float
    ) -> list[Outbound]:
        """Handle ``inputs`` in order, then expire leases, propose and assign work."""
        for message in inputs:
            agent = message.agent or ""
            match message.type:
                case MessageType.TRIAL_RESULT:
                    self._on_result(conn, agent, message.body, now)
                case MessageType.TRIAL_PROGRESS:
                    self._on_progress(agent, message.body, now)
                case MessageType.AGENT_READY:
                    self._on_ready(conn, agent, message.body, now)
                case MessageType.AGENT_STATE:
                    self._on_agent_state(conn, agent, message.body, now)
                case MessageType.CONTROL_REQUEST:
                    self._outbox.reply(
                        str(message.body["client"]), control.handle(self, conn, message.body, now)
                    )
                case _:
                    raise ValueError(f"the engine does not take {message.type} messages")
        self._expire_leases(conn, now)
        self._planner.propose(conn, now)
        self._planner.assign(conn, now)
        self.experiments.finish_complete(conn, now)
        return self._outbox.drain()

    def submit(
        self, conn: sqlite3.Connection, config: ExperimentConfig, now: float
    ) -> dict[str, Any]:
        """Create (or extend, see :meth:`Experiments.submit`) an experiment."""
        return self.experiments.submit(conn, config, now)

    def assignments_to_resend(self) -> list[Outbound]:
        """``trial.assign`` for every active lease: published again after (re)connecting."""
        return [
            assign_message(trial, self.experiments[trial.experiment].config)
            for trial in self.ledger.running()
        ]

    def snapshot_all(self, conn: sqlite3.Connection, now: float) -> None:
        """Save every strategy's state (graceful shutdown)."""
        self.experiments.snapshot_all(conn, now)

    # -- agents ---------------------------------------------------------------------------------

    def _on_agent_state(
        self, conn: sqlite3.Connection, name: str, body: Mapping[str, Any], now: float
    ) -> None:
        record = self.ledger.agent(name)
        if body["state"] == "online":
            profile = dict(body["profile"])
            record.online = True
            record.draining = False
            record.profile = profile
            record.slots = int(profile["slots"])
            record.throughput = float(profile["throughput"])
            repo.upsert_agent(conn, name, profile, record.slots, True, now)
            log.info("agent.online", agent=name, slots=record.slots, device=profile["device"])
            return
        was_online = record.online
        record.online = False
        record.draining = False
        repo.upsert_agent(conn, name, None, None, False, now)
        for job_id in sorted(record.leases):
            trial = self.ledger.get(job_id)
            if trial is not None and trial.status is TrialStatus.RUNNING:
                self._lease_lost(conn, trial, LeaseStatus.EXPIRED, "agent went offline", now)
        if was_online:
            log.info("agent.offline", agent=name)

    def _on_ready(
        self, conn: sqlite3.Connection, name: str, body: Mapping[str, Any], now: float
    ) -> None:
        record = self.ledger.agent(name)
        slots = int(body["slots"])
        if not record.online or record.slots != slots or record.draining:
            record.online = True
            record.slots = slots
            record.draining = False
            repo.upsert_agent(conn, name, None, slots, True, now)

    def _drain(self, conn: sqlite3.Connection, name: str) -> None:
        """``name`` handed work back: give it none until it announces ``ready`` again."""
        record = self.ledger.agent(name)
        if not record.draining:
            record.draining = True
            repo.set_agent_draining(conn, name, True)
            log.info("agent.draining", agent=name)

    # -- trials ---------------------------------------------------------------------------------

    def _on_progress(self, name: str, body: Mapping[str, Any], now: float) -> None:
        trial = self.ledger.get(str(body["job_id"]))
        epoch = int(body["epoch"])
        if trial is None or trial.assignments.get(epoch) != name:
            return
        ttl = self.experiments[trial.experiment].config.lease_ttl_s
        self.ledger.renew(trial.job_id, epoch, now + ttl)

    def _on_result(
        self, conn: sqlite3.Connection, name: str, body: Mapping[str, Any], now: float
    ) -> None:
        job_id = str(body["job_id"])
        epoch = int(body["epoch"])
        trial = self.ledger.get(job_id)
        if trial is None:
            # Finished (a duplicate) or unknown (e.g. from before a --fresh start): ack either way
            # so the agent's spool drains; nothing is stored.
            known = repo.trial_exists(conn, job_id)
            log.info(
                "result.duplicate" if known else "result.unknown_job", job_id=job_id, agent=name
            )
            self._ack(name, job_id, epoch)
            return
        if trial.assignments.get(epoch) != name:
            log.warning(
                "result.rejected",
                job_id=job_id,
                agent=name,
                epoch=epoch,
                reason="no lease for this agent and epoch",
            )
            return
        status = body["status"]
        if status == "ok":
            self._succeed(conn, trial, name, epoch, body, now)
        elif status == "released":
            # Handed back (the agent is stopping, or refused the job): never an attempt.
            self._drain(conn, name)
            if trial.status is TrialStatus.RUNNING and trial.epoch == epoch:
                self._lease_lost(
                    conn, trial, LeaseStatus.RELEASED, "handed back", now, count_attempt=False
                )
        elif trial.status is TrialStatus.RUNNING and trial.epoch == epoch:
            error = str(body.get("error") or "training failed")
            self._lease_lost(conn, trial, LeaseStatus.FAILED, error, now)
        self._ack(name, job_id, epoch)

    def _succeed(
        self,
        conn: sqlite3.Connection,
        trial: LiveTrial,
        name: str,
        epoch: int,
        body: Mapping[str, Any],
        now: float,
    ) -> None:
        exp = self.experiments[trial.experiment]
        metrics = {str(k): float(v) for k, v in body["metrics"].items()}
        repo.insert_result(
            conn,
            trial.job_id,
            trial.experiment,
            trial.trial_id,
            name,
            epoch,
            metrics,
            body.get("checkpoint"),
            body.get("started_at"),
            body.get("finished_at"),
            now,
        )
        repo.end_lease(conn, trial.job_id, epoch, LeaseStatus.DONE, now)
        if trial.status is TrialStatus.RUNNING and trial.epoch != epoch and trial.agent:
            repo.end_lease(conn, trial.job_id, trial.epoch, LeaseStatus.SUPERSEDED, now)
            self._outbox.cancel(trial.agent, trial.job_id, trial.epoch)
        self.ledger.retire(trial)
        is_best = exp.note_success(trial.trial_id, metrics)
        exp.feed(conn, TrialSucceeded(trial.trial_id, trial.genotype, metrics), now)
        log.info(
            "trial.finished",
            experiment=exp.name,
            trial_id=trial.trial_id,
            agent=name,
            **{exp.metric: metrics.get(exp.metric)},
        )
        self._outbox.event(exp.name, EventKind.FINISHED, trial.trial_id, metrics, trial.genotype)
        if is_best:
            self._outbox.event(exp.name, EventKind.BEST, trial.trial_id, metrics, trial.genotype)

    def _lease_lost(
        self,
        conn: sqlite3.Connection,
        trial: LiveTrial,
        how: LeaseStatus,
        reason: str,
        now: float,
        *,
        count_attempt: bool = True,
    ) -> None:
        """The current lease ended without a result: retry the trial or give up on it."""
        exp = self.experiments[trial.experiment]
        repo.end_lease(conn, trial.job_id, trial.epoch, how, now)
        if count_attempt:
            trial.attempts += 1
        if trial.attempts < exp.config.max_attempts:
            self.ledger.requeue(trial)
            repo.requeue_trial(conn, trial.job_id, trial.attempts, reason)
            log.info("trial.requeued", job_id=trial.job_id, reason=reason, attempts=trial.attempts)
            return
        self.ledger.retire(trial)
        exp.note_failure()
        repo.fail_trial(conn, trial.job_id, trial.attempts, reason, now)
        exp.feed(conn, TrialFailed(trial.trial_id, trial.genotype, reason), now)
        log.warning("trial.failed", job_id=trial.job_id, reason=reason, attempts=trial.attempts)
        self._outbox.event(exp.name, EventKind.FAILED, trial.trial_id, {}, trial.genotype)

    def _expire_leases(self, conn: sqlite3.Connection, now: float) -> None:
        for trial in self.ledger.expired(now):
            if trial.agent is not None:
                self._outbox.cancel(trial.agent, trial.job_id, trial.epoch)
            self._lease_lost(conn, trial, LeaseStatus.EXPIRED, "lease expired", now)

    def _ack(self, agent: str, job_id: str, epoch: int) -> None:
        if agent:
            self._outbox.ack(agent, job_id, epoch)
