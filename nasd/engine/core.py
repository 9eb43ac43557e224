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

from nasd.engine import control, work
from nasd.engine.experiment import ExperimentRuntime
from nasd.engine.records import (
    AgentRecord,
    ExperimentStatus,
    LeaseStatus,
    LiveTrial,
    Outbound,
    TrialStatus,
)
from nasd.events import TrialFailed, TrialSucceeded
from nasd.scheduler import LeaseClock
from nasd.store import repo
from nasd.wire import AgentLeaf, agent_topic, experiment_events_topic

log = structlog.get_logger("nasd.engine")


@dataclass(frozen=True, slots=True)
class Inbound:
    """A decoded, schema-valid message: its type, the agent its topic names, and its body."""

    type: str
    agent: str | None
    body: Mapping[str, Any]


class Engine:
    """All live state of the daemon; see the module docstring for the rules it enforces."""

    def __init__(self) -> None:
        self.experiments: dict[str, ExperimentRuntime] = {}
        self.trials: dict[str, LiveTrial] = {}
        self.pending: dict[str, None] = {}
        self.agents: dict[str, AgentRecord] = {}
        self.lease_clock = LeaseClock()
        self._out: list[Outbound] = []
        self.rotation = 0

    # -- entry points -------------------------------------------------------------------------

    def apply(
        self, conn: sqlite3.Connection, inputs: Sequence[Inbound], now: float
    ) -> list[Outbound]:
        """Handle ``inputs`` in order, then expire leases, propose and assign work."""

        self._out = []
        for message in inputs:
            if message.type == "trial.result":
                self._on_result(conn, message.agent or "", message.body, now)
            elif message.type == "trial.progress":
                self._on_progress(message.agent or "", message.body, now)
            elif message.type == "agent.ready":
                self._on_ready(conn, message.agent or "", message.body, now)
            elif message.type == "agent.state":
                self._on_agent_state(conn, message.agent or "", message.body, now)
            elif message.type == "control.request":
                control.handle(self, conn, message.body, now)
        self._expire_leases(conn, now)
        work.propose(self, conn, now)
        work.assign(self, conn, now)
        self._finish_experiments(conn, now)
        out, self._out = self._out, []
        return out

    def assignments_to_resend(self) -> list[Outbound]:
        """``trial.assign`` for every active lease: published again after (re)connecting."""
        return [
            work.assign_message(self, trial)
            for trial in self.trials.values()
            if trial.status is TrialStatus.RUNNING and trial.agent is not None
        ]

    def emit(self, message: Outbound) -> None:
        """Queue a message for publication after the current transaction commits."""
        self._out.append(message)

    # -- agents ---------------------------------------------------------------------------------

    def agent(self, name: str) -> AgentRecord:
        """The record of agent ``name`` (created, offline, on first mention)."""
        record = self.agents.get(name)
        if record is None:
            record = self.agents[name] = AgentRecord(name)
        return record

    def _on_agent_state(
        self, conn: sqlite3.Connection, name: str, body: Mapping[str, Any], now: float
    ) -> None:
        record = self.agent(name)
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
        repo.upsert_agent(conn, name, None, None, False, now)
        for job_id in sorted(record.leases):
            trial = self.trials.get(job_id)
            if trial is not None and trial.status is TrialStatus.RUNNING:
                self._lease_lost(conn, trial, LeaseStatus.EXPIRED, "agent went offline", now)
        if was_online:
            log.info("agent.offline", agent=name)

    def _on_ready(
        self, conn: sqlite3.Connection, name: str, body: Mapping[str, Any], now: float
    ) -> None:
        record = self.agent(name)
        slots = int(body["slots"])
        record.draining = False
        if not record.online or record.slots != slots:
            record.online = True
            record.slots = slots
            repo.upsert_agent(conn, name, None, slots, True, now)

    # -- trials ---------------------------------------------------------------------------------

    def _on_progress(self, name: str, body: Mapping[str, Any], now: float) -> None:
        trial = self.trials.get(str(body["job_id"]))
        epoch = int(body["epoch"])
        if trial is None or trial.assignments.get(epoch) != name:
            return
        ttl = self.experiments[trial.experiment].config.lease_ttl_s
        self.lease_clock.renew(trial.job_id, epoch, now + ttl)

    def _on_result(
        self, conn: sqlite3.Connection, name: str, body: Mapping[str, Any], now: float
    ) -> None:
        job_id = str(body["job_id"])
        epoch = int(body["epoch"])
        trial = self.trials.get(job_id)
        if trial is None:
            # Finished (a duplicate) or unknown (e.g. from before a --fresh start): ack either way
            # so the agent's spool drains; nothing is stored.
            known = conn.execute("SELECT 1 FROM trials WHERE job_id = ?", (job_id,)).fetchone()
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
        elif trial.status is TrialStatus.RUNNING and trial.epoch == epoch:
            if status == "failed":
                error = str(body.get("error") or "training failed")
                self._lease_lost(conn, trial, LeaseStatus.FAILED, error, now)
            else:
                self.agent(name).draining = True
                self._lease_lost(
                    conn, trial, LeaseStatus.RELEASED, "handed back", now, count_attempt=False
                )
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
            self.send_cancel(trial.agent, trial.job_id, trial.epoch)
        self.release_agent(trial)
        self.pending.pop(trial.job_id, None)
        del self.trials[trial.job_id]
        exp.finished += 1
        exp.waiting = False
        exp.feed(conn, TrialSucceeded(trial.trial_id, trial.genotype, metrics), now)
        log.info(
            "trial.finished",
            experiment=exp.name,
            trial_id=trial.trial_id,
            agent=name,
            **{exp.metric: metrics.get(exp.metric)},
        )
        kinds = ["finished", "best"] if exp.note_success(trial.trial_id, metrics) else ["finished"]
        for kind in kinds:
            self._event(exp.name, kind, trial.trial_id, metrics, trial.genotype)

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
        self.release_agent(trial)
        if count_attempt:
            trial.attempts += 1
        if trial.attempts < exp.config.max_attempts:
            trial.status = TrialStatus.PENDING
            self.pending[trial.job_id] = None
            repo.requeue_trial(conn, trial.job_id, trial.attempts, reason)
            log.info("trial.requeued", job_id=trial.job_id, reason=reason, attempts=trial.attempts)
            return
        del self.trials[trial.job_id]
        exp.failed += 1
        exp.waiting = False
        repo.fail_trial(conn, trial.job_id, trial.attempts, reason, now)
        exp.feed(conn, TrialFailed(trial.trial_id, trial.genotype, reason), now)
        log.warning("trial.failed", job_id=trial.job_id, reason=reason, attempts=trial.attempts)
        self._event(exp.name, "failed", trial.trial_id, {}, trial.genotype)

    def release_agent(self, trial: LiveTrial) -> None:
        if trial.agent is not None:
            self.agent(trial.agent).leases.discard(trial.job_id)
        self.lease_clock.stop(trial.job_id)
        trial.agent = None

    def _expire_leases(self, conn: sqlite3.Connection, now: float) -> None:
        for job_id, epoch in self.lease_clock.expired(now):
            trial = self.trials.get(job_id)
            if trial is None or trial.status is not TrialStatus.RUNNING or trial.epoch != epoch:
                continue
            if trial.agent is not None:
                self.send_cancel(trial.agent, job_id, epoch)
            self._lease_lost(conn, trial, LeaseStatus.EXPIRED, "lease expired", now)

    # -- experiments ----------------------------------------------------------------------------

    def _finish_experiments(self, conn: sqlite3.Connection, now: float) -> None:
        for exp in self.experiments.values():
            if exp.status is ExperimentStatus.RUNNING and exp.complete:
                exp.status = ExperimentStatus.DONE
                repo.set_experiment_status(conn, exp.name, exp.status, now)
                repo.append_event(conn, exp.name, "experiment_done", {}, now)
                exp.maybe_snapshot(conn, now, force=True)
                log.info(
                    "experiment.done", experiment=exp.name, finished=exp.finished, failed=exp.failed
                )
                self._event(exp.name, "done", None, {}, None)
            else:
                exp.maybe_snapshot(conn, now)

    # -- outbound helpers -----------------------------------------------------------------------

    def _ack(self, agent: str, job_id: str, epoch: int) -> None:
        if agent:
            self.emit(
                Outbound(
                    agent_topic(agent, AgentLeaf.ACK),
                    "trial.ack",
                    {"job_id": job_id, "epoch": epoch},
                )
            )

    def send_cancel(self, agent: str, job_id: str, epoch: int) -> None:
        self.emit(
            Outbound(
                agent_topic(agent, AgentLeaf.CANCEL),
                "trial.cancel",
                {"job_id": job_id, "epoch": epoch},
            )
        )

    def _event(
        self,
        experiment: str,
        kind: str,
        trial_id: int | None,
        metrics: Mapping[str, float],
        genotype: Mapping[str, Any] | None,
    ) -> None:
        body = {
            "experiment": experiment,
            "kind": kind,
            "trial_id": trial_id,
            "metrics": dict(metrics),
            "genotype": dict(genotype) if genotype else None,
        }
        self.emit(Outbound(experiment_events_topic(experiment), "experiment.event", body, qos=0))
