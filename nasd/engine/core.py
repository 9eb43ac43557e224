"""The engine: the daemon's protocol logic, applied one batch of messages per transaction.

:meth:`Engine.apply` runs on the writer thread inside one SQLite transaction. It consumes decoded,
validated messages, updates the in-memory state and the database together, and returns the messages
to publish once the transaction has committed (acks, assignments, cancels, events). If anything
unexpected raises, the transaction rolls back and the daemon exits; the next start rebuilds the
engine from the database (:mod:`nasd.engine.rebuild`), so memory never outlives a lost commit.

Result policy (DESIGN.md section 3): a result counts only for a ``(job_id, epoch)`` that was
leased to the agent whose topic it came on, and only if it echoes that lease's token
(:func:`nasd.engine.security.lease_token`, sent in ``trial.assign``). The first such result
finishes the trial, even one from an older epoch whose lease had expired (work done is not
wasted); the newer lease is then cancelled. Anything else is refused, counted as a
``security.<kind>`` event, not acknowledged, and changes nothing else:

* ``never_issued``: the epoch was never leased for that job;
* ``wrong_agent``: the lease is another agent's (the topic names the sender);
* ``bad_token``: the right agent's topic, the wrong token (a forgery by anyone who can publish
  there but cannot read the agent's assignments).

A result for a finished trial is a duplicate: acknowledged (echoing its token, so the agent's
spool drains) only if it passes the same checks against the stored lease. A result for a job this
database never proposed (e.g. spooled before a ``--fresh`` start) cannot be checked: there is no
lease to hold it against. It is acknowledged so the spool drains, stores nothing, and is counted
as ``unknown_job`` so that a flood of them shows in ``nasd status``.

Agents come and go through :class:`nasd.engine.roster.Roster` (births, strangers refused, pruning,
strikes and quarantine); the engine re-runs the trials of an agent that leaves.
"""

from __future__ import annotations

import math
import sqlite3
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import structlog

from nasd.config import ExperimentConfig
from nasd.core.events import TrialFailed, TrialSucceeded
from nasd.core.wire import MessageType
from nasd.engine import control, security
from nasd.engine.ledger import Ledger
from nasd.engine.lifecycle import Experiments
from nasd.engine.outbox import Outbox, assign_message
from nasd.engine.placement import Placement
from nasd.engine.records import EventKind, LeaseStatus, LiveTrial, Outbound, TrialStatus
from nasd.engine.roster import Roster
from nasd.engine.security import SecurityKind, token_matches
from nasd.engine.work import Planner
from nasd.faults import crash_point
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
    :attr:`experiments` (runtimes and their lifecycle), the planner (SHADHO placement, see
    :attr:`placement`) and the outbox.
    The engine wires them together and implements the agent-facing protocol.
    """

    def __init__(self, lease_secret: bytes) -> None:
        self.lease_secret = lease_secret
        self.ledger = Ledger()
        self.roster = Roster(self.ledger)
        self._outbox = Outbox(lease_secret)
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
                    self.roster.ready(conn, agent, message.body, now)
                    free = message.body.get("free_memory_bytes")
                    running = [str(j) for j in message.body["running"]]
                    self._planner.sizing.note_free_memory(
                        agent, int(free) if free is not None else None, running
                    )
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
        for trial in self._planner.assign(conn, now):
            self._too_big(conn, trial, now)
        self.experiments.finish_complete(conn, now)
        return self._outbox.drain()

    @property
    def placement(self) -> Placement:
        """SHADHO's compute classes and model assignment (configured from the daemon settings)."""
        return self._planner.placement

    def note_link(self, up: bool, now: float) -> None:
        """Whether the daemon's broker link is up, told before each batch.

        While it is down, and for one lease TTL after it is back, expired leases say nothing
        about their agents: heartbeats could not reach the daemon, and jobs it leased meanwhile
        could not reach them. Those expiries are no strikes, so a partition of the daemon's own
        never quarantines every honest agent (found by the fault suite's partition test).
        """
        if not up:
            self.roster.blind_until = math.inf
        elif self.roster.blind_until == math.inf:
            longest = max((e.config.lease_ttl_s for e in self.experiments.values()), default=0.0)
            self.roster.blind_until = now + longest

    def submit(
        self,
        conn: sqlite3.Connection,
        config: ExperimentConfig,
        now: float,
        *,
        check_trainer: bool = False,
    ) -> dict[str, Any]:
        """Create (or extend, see :meth:`Experiments.submit`) an experiment.

        ``check_trainer``: refuse a new experiment whose trainer no online agent offers (a
        submit over MQTT); configs the daemon starts with are taken as they are.
        """
        return self.experiments.submit(conn, config, now, check_trainer=check_trainer)

    def assignments_to_resend(self) -> list[Outbound]:
        """``trial.assign`` for every active lease: published again after (re)connecting."""
        return [
            assign_message(trial, self.experiments[trial.experiment].config, self.lease_secret)
            for trial in self.ledger.running()
        ]

    def snapshot_all(self, conn: sqlite3.Connection, now: float) -> None:
        """Save every strategy's state (graceful shutdown)."""
        self.experiments.snapshot_all(conn, now)

    # -- agents ---------------------------------------------------------------------------------

    def _on_agent_state(
        self, conn: sqlite3.Connection, name: str, body: Mapping[str, Any], now: float
    ) -> None:
        if body["state"] == "online":
            self.roster.birth(conn, name, dict(body["profile"]), now)
            return
        for job_id in self.roster.offline(conn, name, now):
            trial = self.ledger.get(job_id)
            if trial is not None and trial.status is TrialStatus.RUNNING:
                self._lease_lost(conn, trial, LeaseStatus.EXPIRED, "agent went offline", now)

    # -- trials ---------------------------------------------------------------------------------

    def _on_progress(self, name: str, body: Mapping[str, Any], now: float) -> None:
        trial = self.ledger.get(str(body["job_id"]))
        epoch = int(body["epoch"])
        if trial is None or trial.assignments.get(epoch) != name:
            return
        # A heartbeat without its lease's token is ignored, not counted: heartbeats are frequent
        # QoS 0 messages and counting each would turn a flood into database writes.
        if not token_matches(self.lease_secret, trial.job_id, epoch, body["token"]):
            log.debug("progress.bad_token", job_id=trial.job_id, agent=name)
            return
        ttl = self.experiments[trial.experiment].config.lease_ttl_s
        self.ledger.renew(trial.job_id, epoch, now + ttl)

    def _on_result(
        self, conn: sqlite3.Connection, name: str, body: Mapping[str, Any], now: float
    ) -> None:
        job_id = str(body["job_id"])
        epoch = int(body["epoch"])
        token = str(body["token"])
        trial = self.ledger.get(job_id)
        if trial is None:
            self._on_result_of_no_live_trial(conn, name, job_id, epoch, token, now)
            return
        if not self._lease_checks_out(
            conn, name, job_id, epoch, token, trial.assignments.get(epoch), now
        ):
            return
        status = body["status"]
        if status == "ok":
            self._succeed(conn, trial, name, epoch, body, now)
        elif status == "released":
            # Handed back (the agent is stopping, or refused the job): never an attempt.
            self.roster.drain(conn, name)
            if trial.status is TrialStatus.RUNNING and trial.epoch == epoch:
                self._lease_lost(
                    conn, trial, LeaseStatus.RELEASED, "handed back", now, count_attempt=False
                )
        elif trial.status is TrialStatus.RUNNING and trial.epoch == epoch:
            error = str(body.get("error") or "training failed")
            self._lease_lost(conn, trial, LeaseStatus.FAILED, error, now)
        self._ack(name, job_id, epoch, token)

    def _on_result_of_no_live_trial(
        self, conn: sqlite3.Connection, name: str, job_id: str, epoch: int, token: str, now: float
    ) -> None:
        """A result for a finished trial (a duplicate) or an unknown job: ack, store nothing."""
        if not repo.trial_exists(conn, job_id):
            security.note(
                conn, SecurityKind.UNKNOWN_JOB, name, f"result for {job_id} epoch {epoch}", now
            )
            self._ack(name, job_id, epoch, token)  # unverifiable, but the spool must drain
            return
        holder = repo.lease_holder(conn, job_id, epoch)
        if self._lease_checks_out(conn, name, job_id, epoch, token, holder, now):
            log.info("result.duplicate", job_id=job_id, epoch=epoch, agent=name)
            self._ack(name, job_id, epoch, token)

    def _lease_checks_out(
        self,
        conn: sqlite3.Connection,
        name: str,
        job_id: str,
        epoch: int,
        token: str,
        holder: str | None,
        now: float,
    ) -> bool:
        """True if ``(job_id, epoch)`` was leased to ``name`` and ``token`` is its token.

        Otherwise the refusal is counted (see the module docstring) and False returned.
        """
        lease = f"{job_id} epoch {epoch}"
        if holder is None:
            security.note(conn, SecurityKind.NEVER_ISSUED, name, f"{lease}: no lease", now)
        elif holder != name:
            detail = f"{lease}: leased to {holder}"
            security.note(conn, SecurityKind.WRONG_AGENT, name, detail, now)
        elif not token_matches(self.lease_secret, job_id, epoch, token):
            security.note(conn, SecurityKind.BAD_TOKEN, name, f"{lease}: wrong token", now)
        else:
            return True
        return False

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
        crash_point("result.before_insert")
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
        started, finished = body.get("started_at"), body.get("finished_at")
        took = (
            finished - started
            if isinstance(started, float | int) and isinstance(finished, float | int)
            else None
        )
        self._planner.sizing.note_duration(trial, name, took, now)
        if trial.status is TrialStatus.RUNNING and trial.epoch != epoch and trial.agent:
            repo.end_lease(conn, trial.job_id, trial.epoch, LeaseStatus.SUPERSEDED, now)
            self._outbox.cancel(trial.agent, trial.job_id, trial.epoch)
        self.ledger.retire(trial)
        self.roster.trusted_again(conn, name)
        is_best = exp.note_success(trial.trial_id, metrics)
        self.placement.note_finished()
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
        self._give_up(conn, trial, reason, now)

    def _too_big(self, conn: sqlite3.Connection, trial: LiveTrial, now: float) -> None:
        """Fail a pending trial no agent that runs its trainer can hold (memory estimate)."""
        job = self._planner.sizing.demand(trial)
        largest = self._planner.sizing.largest_agent_memory(job.trainer or "")
        reason = (
            f"out of memory everywhere: needs about {(job.memory or 0) / 2**30:.2f} GiB, the "
            f"largest agent running {job.trainer} has {largest / 2**30:.2f} GiB free"
        )
        self._give_up(conn, trial, reason, now)

    def _give_up(self, conn: sqlite3.Connection, trial: LiveTrial, reason: str, now: float) -> None:
        """A trial fails for good: tell its strategy and the watchers."""
        exp = self.experiments[trial.experiment]
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
                self.roster.strike(conn, trial.agent, now)
            self._lease_lost(conn, trial, LeaseStatus.EXPIRED, "lease expired", now)

    def _ack(self, agent: str, job_id: str, epoch: int, token: str) -> None:
        if agent:
            self._outbox.ack(agent, job_id, epoch, token)
