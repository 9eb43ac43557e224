"""Scenario 11: a Hypothesis state machine of the engine against a real SQLite file.

The machine drives :class:`nasd.engine.Engine` through its :class:`nasd.store.Writer` on a WAL
database file, exactly as the daemon does, with any interleaving of: agents coming online, going
offline and announcing ``ready``; results delivered (in one to three copies at once, again later,
from an older epoch after the lease moved on); heartbeats; the clock advancing past lease expiry;
forged results (the wrong agent, the wrong token); and crashes: the writer closed without a
snapshot, the file reopened and the engine rebuilt from it.

After every step it checks what the fault suite promises (issue 6, scenario 11):

* at most one result row per job, and each stored result came from the agent that held that
  very lease, with the metrics that agent sent;
* every job is in exactly one state, the same in memory and in the database;
* a job's lease epoch never decreases, not even across a crash;
* the live engine equals the one a rebuild reads back from the file;
* a result with its lease's token, from its lease's holder, for a trial that is not finished,
  finishes the trial (DESIGN.md section 3: work done is not wasted); a forged one changes nothing.
"""

from __future__ import annotations

import json
import shutil
import sqlite3
import tempfile
from collections.abc import Mapping
from functools import partial
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, event, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from nasd.config import experiment_from_dict
from nasd.engine import Engine, Inbound, Outbound, rebuild
from nasd.engine.records import TrialStatus
from nasd.engine.security import lease_token
from nasd.store import Writer
from tests.unit.engine_harness import PROFILE, config, result, view

AGENTS = ("a", "b", "c")
LIVE = {TrialStatus.PENDING, TrialStatus.RUNNING}
FINISHED = {"succeeded", "failed", "cancelled"}
TTL_S = 10.0
FORGED_VAL_ACC = 0.999
"""The metric forged results claim: honest deliveries draw theirs from [0, 0.9]."""

Lease = tuple[str, int]


class EngineMachine(RuleBasedStateMachine):
    """The engine and its database file under any sequence of inputs and crashes."""

    def __init__(self) -> None:
        super().__init__()
        self.dir = Path(tempfile.mkdtemp(prefix="nasd-machine-"))
        self.path = self.dir / "nasd.db"
        self.now = 1000.0
        self.writer = Writer(self.path)
        self.engine: Engine = self.writer.run_sync(lambda c: rebuild(c, self.now))
        self.secret = self.engine.lease_secret
        for name, strategy in (("one", "random"), ("two", "aging-evolution")):
            conf = experiment_from_dict(
                config(name=name, budget=4, strategy=strategy, lease_ttl_s=TTL_S)
            )
            self.writer.run_sync(partial(self.engine.submit, config=conf, now=self.now))
        self.issued: dict[Lease, str] = {}  # every lease ever granted -> its agent
        self.sent: dict[Lease, dict[str, Any]] = {}  # the last honest result body per lease
        self.honest: dict[str, set[float]] = {}  # job -> val_acc values its holders sent
        self.epochs: dict[str, int] = {}  # job -> highest epoch seen in the database
        self.renewed: dict[Lease, float] = {}  # lease -> when it was granted or last renewed

    def teardown(self) -> None:
        self.writer.close()
        shutil.rmtree(self.dir, ignore_errors=True)

    # -- plumbing ---------------------------------------------------------------------------------

    def apply(self, *inputs: Inbound) -> list[Outbound]:
        out = self.writer.run_sync(lambda c: self.engine.apply(c, list(inputs), self.now))
        for message in out:
            if message.type == "trial.assign":
                body = message.body
                lease = (str(body["job_id"]), int(body["epoch"]))
                holder = message.topic.split("/")[3]
                assert body.get("token") == lease_token(self.secret, *lease), body
                if lease not in self.issued:
                    self.renewed[lease] = self.now  # granted now, with a full TTL
                assert self.issued.setdefault(lease, holder) == holder, "an epoch was reused"
        # Leases also come back from a rebuild (re-sent assignments); the ledger has them all.
        for trial in self.engine.ledger.trials():
            for epoch, agent in trial.assignments.items():
                assert self.issued.setdefault((trial.job_id, epoch), agent) == agent
        return out

    def query(self, sql: str, *args: Any) -> list[tuple[Any, ...]]:
        conn = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True)
        try:
            return conn.execute(sql, args).fetchall()
        finally:
            conn.close()

    def pick(self, index: int) -> Lease | None:
        leases = sorted(self.issued)
        return leases[index % len(leases)] if leases else None

    def results(self) -> dict[str, tuple[str, int, str]]:
        rows = self.query("SELECT job_id, agent, epoch, metrics FROM results")
        return {job: (agent, epoch, metrics) for job, agent, epoch, metrics in rows}

    def deliver(self, agent: str, body: Mapping[str, Any], copies: int = 1) -> None:
        self.apply(*[Inbound("trial.result", agent, dict(body))] * copies)

    # -- agents -----------------------------------------------------------------------------------

    @rule(agent=st.sampled_from(AGENTS), slots=st.integers(1, 3))
    def online(self, agent: str, slots: int) -> None:
        profile = {**PROFILE, "slots": slots, "trainers": ["zero"]}
        self.apply(Inbound("agent.state", agent, {"state": "online", "profile": profile}))

    @rule(agent=st.sampled_from(AGENTS))
    def offline(self, agent: str) -> None:
        self.apply(Inbound("agent.state", agent, {"state": "offline"}))

    @rule(agent=st.sampled_from(AGENTS), slots=st.integers(1, 3))
    def ready(self, agent: str, slots: int) -> None:
        self.apply(Inbound("agent.ready", agent, {"slots": slots, "running": []}))

    # -- results ----------------------------------------------------------------------------------

    @precondition(lambda self: bool(self.issued))
    @rule(
        index=st.integers(0, 200),
        status=st.sampled_from(["ok", "ok", "ok", "failed", "released"]),
        val_acc=st.floats(0.0, 0.9),
        copies=st.integers(1, 3),
    )
    def deliver_result(self, index: int, status: str, val_acc: float, copies: int) -> None:
        """The holder of some lease (current or long gone) reports, possibly several times."""
        lease = self.pick(index)
        assert lease is not None
        job_id, epoch = lease
        agent = self.issued[lease]
        live = self.engine.ledger.get(job_id)
        was_live = live is not None
        if live is not None and status == "ok":
            event("late result (any)" if live.epoch > epoch else "current result")
        body = result(job_id, epoch, lease_token(self.secret, *lease), status, val_acc)
        self.sent[lease] = body
        if status == "ok":
            self.honest.setdefault(job_id, set()).add(val_acc)
        self.deliver(agent, body, copies)
        if status == "ok" and was_live:
            stored = self.results().get(job_id)
            assert stored is not None and stored[:2] == (agent, epoch), (lease, stored)

    def stale_leases(self) -> list[Lease]:
        """Older leases of trials that are still live (their holders may still report)."""
        return sorted(
            (t.job_id, epoch)
            for t in self.engine.ledger.trials()
            for epoch in t.assignments
            if epoch < t.epoch
        )

    @precondition(lambda self: bool(self.stale_leases()))
    @rule(index=st.integers(0, 200), val_acc=st.floats(0.0, 0.9))
    def late_result(self, index: int, val_acc: float) -> None:
        """A zombie's result for an older lease of a live trial: it counts, the newer lease ends."""
        stale = self.stale_leases()
        lease = stale[index % len(stale)]
        job_id, epoch = lease
        agent = self.issued[lease]
        live = self.engine.ledger.get(job_id)
        assert live is not None
        current = (live.agent, live.epoch) if live.status is TrialStatus.RUNNING else None
        body = result(job_id, epoch, lease_token(self.secret, *lease), "ok", val_acc)
        self.sent[lease] = body
        self.honest.setdefault(job_id, set()).add(val_acc)
        out = self.apply(Inbound("trial.result", agent, body))
        event("late result")
        stored = self.results().get(job_id)
        assert stored is not None and stored[:2] == (agent, epoch), (lease, stored)
        if current is not None and current[0] is not None:
            holder, newer = current
            cancels = [
                m.body
                for m in out
                if m.type == "trial.cancel" and m.topic == f"nasd/v1/agents/{holder}/cancel"
            ]
            token = lease_token(self.secret, job_id, newer)
            assert {"job_id": job_id, "epoch": newer, "token": token} in cancels, cancels

    @precondition(lambda self: bool(self.sent))
    @rule(index=st.integers(0, 200))
    def redeliver(self, index: int) -> None:
        """A result delivered before arrives again (a QoS 1 duplicate, or a spool re-send)."""
        lease = sorted(self.sent)[index % len(self.sent)]
        before = self.results()
        job_id = lease[0]
        self.deliver(self.issued[lease], self.sent[lease])
        if job_id in before:
            assert self.results()[job_id] == before[job_id], "a duplicate changed a result"

    @precondition(lambda self: bool(self.issued))
    @rule(index=st.integers(0, 200), other=st.sampled_from(AGENTS))
    def forged_by_another_agent(self, index: int, other: str) -> None:
        """Another agent sends a result for a lease it does not hold (even with the token)."""
        lease = self.pick(index)
        assert lease is not None
        if self.issued[lease] == other:
            return
        body = result(*lease, lease_token(self.secret, *lease), val_acc=FORGED_VAL_ACC)
        before = self.results()
        self.deliver(other, body)
        assert self.results() == before, "a result from the wrong agent was stored"

    @precondition(lambda self: bool(self.issued))
    @rule(index=st.integers(0, 200), token=st.sampled_from(["0" * 32, "f" * 32, "other-epoch"]))
    def forged_token(self, index: int, token: str) -> None:
        """The holder's topic carries a result whose token is not its lease's."""
        lease = self.pick(index)
        assert lease is not None
        job_id, epoch = lease
        if token == "other-epoch":
            token = lease_token(self.secret, job_id, epoch + 1)
        body = result(job_id, epoch, token, val_acc=FORGED_VAL_ACC)
        before = self.results()
        self.deliver(self.issued[lease], body)
        assert self.results() == before, "a result with a wrong token was stored"

    @precondition(lambda self: bool(self.issued))
    @rule(index=st.integers(0, 200))
    def heartbeat(self, index: int) -> None:
        """The holder's heartbeat, with its token: renews the lease if it is the current one."""
        lease = self.pick(index)
        assert lease is not None
        self.beat(lease, lease_token(self.secret, *lease))
        if lease in self.current_leases():
            self.renewed[lease] = self.now

    @precondition(lambda self: bool(self.current_leases()))
    @rule(index=st.integers(0, 200))
    def forged_heartbeat(self, index: int) -> None:
        """A heartbeat on the holder's topic without the lease's token keeps nothing alive."""
        running = sorted(self.current_leases())
        self.beat(running[index % len(running)], "f" * 32)

    def beat(self, lease: Lease, token: str) -> None:
        body = {
            "job_id": lease[0],
            "epoch": lease[1],
            "token": token,
            "step": 1,
            "total": 2,
            "metrics": {},
        }
        self.apply(Inbound("trial.progress", self.issued[lease], body))

    def current_leases(self) -> set[Lease]:
        """The leases running now, per the engine."""
        return {(t.job_id, t.epoch) for t in self.engine.ledger.running()}

    # -- time and crashes -------------------------------------------------------------------------

    @rule(seconds=st.sampled_from([0.0, 3.0, TTL_S - 3.0, TTL_S + 1.0]))
    def advance_clock(self, seconds: float) -> None:
        """Time passes: exactly the leases not renewed within a TTL expire."""
        self.now += seconds
        running = self.current_leases()
        self.apply()
        after = self.current_leases()
        for lease in running:
            due = self.renewed[lease] + TTL_S
            if due <= self.now:
                assert lease not in after, f"{lease} outlived its lease (due at {due})"
            else:
                assert lease in after, f"{lease} expired early (due at {due}, now {self.now})"

    @rule()
    def crash_and_reopen(self) -> None:
        """The daemon dies between transactions: no snapshot; a new one rebuilds from the file."""
        self.writer.close()
        self.writer = Writer(self.path)
        self.engine = self.writer.run_sync(lambda c: rebuild(c, self.now))
        assert self.engine.lease_secret == self.secret, "the lease secret changed on restart"
        for lease in self.current_leases():
            self.renewed[lease] = self.now  # a rebuild gives every running lease a fresh TTL
        event(f"reopened with {sum(1 for _ in self.engine.ledger.running())} running")
        self.apply()

    # -- invariants -------------------------------------------------------------------------------

    @invariant()
    def at_most_one_result_per_job_and_only_from_its_lease(self) -> None:
        assert self.query("SELECT job_id FROM results GROUP BY job_id HAVING COUNT(*) > 1") == []
        for job_id, (agent, epoch, metrics) in self.results().items():
            assert self.issued.get((job_id, epoch)) == agent, (job_id, epoch, agent)
            assert json.loads(metrics)["val_acc"] in self.honest.get(job_id, set()), job_id

    @invariant()
    def every_job_is_in_exactly_one_state(self) -> None:
        self.engine.ledger.check()
        rows = self.query("SELECT job_id, status FROM trials")
        results = self.results()
        for job_id, status in rows:
            live = self.engine.ledger.get(job_id)
            if live is not None:
                assert live.status in LIVE and str(live.status) == status, (job_id, status)
            else:
                assert status in FINISHED, (job_id, status)
            assert (status == "succeeded") == (job_id in results), (job_id, status)
        assert {t.job_id for t in self.engine.ledger.trials()} <= {r[0] for r in rows}

    @invariant()
    def epochs_never_decrease(self) -> None:
        for job_id, epoch in self.query("SELECT job_id, epoch FROM trials"):
            assert epoch >= self.epochs.get(job_id, 0), (job_id, epoch, self.epochs[job_id])
            self.epochs[job_id] = epoch
            live = self.engine.ledger.get(job_id)
            assert live is None or live.epoch == epoch, (job_id, epoch)

    @invariant()
    def the_live_engine_equals_its_rebuild(self) -> None:
        rebuilt = self.writer.run_sync(lambda c: rebuild(c, self.now))
        rebuilt.ledger.check()
        assert view(rebuilt) == view(self.engine)


EngineMachine.TestCase.settings = settings(
    max_examples=40,
    stateful_step_count=30,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
test_engine_machine = EngineMachine.TestCase
