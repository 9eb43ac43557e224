"""The engine's live state always equals what a rebuild reads back from the database.

One owner per piece of state (``Ledger``, ``Experiments``) is what makes this hold; these tests
check it after cancelling, in the scenario a user hit, and after any sequence of inputs
(Hypothesis).
"""

from __future__ import annotations

import sqlite3
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nasd.engine import Engine, Inbound, Outbound, rebuild, roster
from nasd.engine.security import lease_token
from nasd.store import open_memory, queries
from tests.unit.engine_harness import (
    PROFILE,
    Harness,
    assigns,
    config,
    of_type,
    reply,
    result,
    view,
)


def control(command: str, **args: Any) -> Inbound:
    return Inbound(
        "control.request",
        None,
        {"client": "cli", "correlation_id": "c", "command": command, "args": args},
    )


def test_a_cancelled_experiment_is_counted_as_cancelled_and_survives_a_rebuild(
    h: Harness,
) -> None:
    h.submit(config(name="one", budget=6))
    h.submit(config(name="two", budget=6))
    out = h.online("a", slots=3)
    held = [j for j in assigns(out) if j["experiment"] == "one"]
    assert held
    out = h.apply(control("cancel", experiment="one"))
    assert of_type(out, "control.response")[0].body["ok"] is True
    cancels = {(m.body["job_id"], m.body["epoch"]) for m in of_type(out, "trial.cancel")}
    assert cancels == {(j["job_id"], j["epoch"]) for j in held}
    one = h.engine.experiments["one"]
    assert (one.status, one.failed, one.cancelled) == ("cancelled", 0, one.next_trial_id)
    statuses = h.query("SELECT DISTINCT status FROM trials WHERE experiment = 'one'")
    assert statuses == [("cancelled",)]
    assert h.query("SELECT status FROM leases WHERE job_id LIKE 'one:%'") == [("released",)] * len(
        held
    )
    summary = h.writer.run_sync(lambda c: queries.experiment_summary(c, "one"))
    assert summary is not None
    assert (summary["failed"], summary["cancelled"]) == (0, one.next_trial_id)
    rebuilt = h.writer.run_sync(lambda c: rebuild(c, h.now))
    assert view(rebuilt) == view(h.engine)
    h.engine.ledger.check()


def test_an_agent_that_refused_work_while_a_cancelled_job_ran_gets_work_after_ready(
    h: Harness,
) -> None:
    """The user's report: cancel one experiment while a 1-slot agent trains its trial."""
    h.submit(config(name="one", budget=4))
    job = assigns(h.online("a", slots=1))[0]
    other = "two" if job["experiment"] == "one" else "one"
    h.submit(config(name=other, budget=4))
    out = h.apply(control("cancel", experiment=job["experiment"]))
    # The credit is free in the daemon's eyes; the agent still trains the cancelled job.
    sent = assigns(out)
    assert [j["experiment"] for j in sent] == [other]
    out = h.apply(Inbound("trial.result", "a", reply(sent[0], status="released")))
    assert assigns(out) == []
    assert h.query("SELECT draining FROM agents WHERE name = 'a'") == [(1,)]
    agents = h.writer.run_sync(queries.agent_summaries)
    assert agents[0]["draining"] is True
    # The cancelled job ends on the agent; it announces ready; the other experiment goes on.
    out = h.apply(Inbound("agent.ready", "a", {"slots": 1, "running": []}))
    assert [(j["job_id"], j["epoch"]) for j in assigns(out)] == [(sent[0]["job_id"], 2)]
    assert h.query("SELECT draining FROM agents WHERE name = 'a'") == [(0,)]
    assert view(h.writer.run_sync(lambda c: rebuild(c, h.now))) == view(h.engine)


# -- any sequence of inputs ----------------------------------------------------------------------

AGENTS = ("a", "b")
STRANGERS = ("a", "b", "mallory")
FORGED_TOKEN = "0" * 32
EXPERIMENTS = ("one", "two")

operations = st.one_of(
    st.tuples(st.just("online"), st.sampled_from(AGENTS), st.integers(1, 3)),
    st.tuples(st.just("offline"), st.sampled_from(AGENTS)),
    st.tuples(st.just("ready"), st.sampled_from(AGENTS), st.integers(1, 3)),
    st.tuples(
        st.just("result"),
        st.sampled_from(AGENTS),
        st.integers(0, 50),
        st.sampled_from(["ok", "ok", "failed", "released"]),
        st.floats(0.0, 1.0),
    ),
    st.tuples(st.just("progress"), st.sampled_from(AGENTS), st.integers(0, 50)),
    # Hostile results: a held (or once held) lease's result with a forged token, on the holder's
    # topic or another's; a result for an epoch never leased; one for a job never proposed.
    st.tuples(
        st.just("forged"),
        st.sampled_from(AGENTS),
        st.sampled_from(STRANGERS),
        st.integers(0, 50),
        st.sampled_from(["bad_token", "wrong_agent", "never_issued", "unknown_job"]),
        st.sampled_from(["ok", "failed", "released"]),
    ),
    st.tuples(st.just("ready"), st.just("mallory"), st.integers(1, 3)),
    st.tuples(st.just("offline"), st.just("mallory")),
    st.tuples(st.just("tick"), st.sampled_from([0.0, 3.0, 11.0])),
    st.tuples(
        st.just("submit"),
        st.sampled_from(EXPERIMENTS),
        st.integers(1, 6),
        st.sampled_from(["random", "aging-evolution"]),
    ),
    st.tuples(st.sampled_from(["pause", "resume", "cancel"]), st.sampled_from(EXPERIMENTS)),
    st.tuples(st.just("restart")),
)


class Driver:
    """Feeds operations to an engine over an in-memory database, one transaction each."""

    def __init__(self) -> None:
        self.conn: sqlite3.Connection = open_memory()
        self.now = 1000.0
        self.engine: Engine = self.transaction(lambda: rebuild(self.conn, self.now))

    def transaction(self, fn: Any) -> Any:
        self.conn.execute("BEGIN IMMEDIATE")
        try:
            value = fn()
        except BaseException:
            self.conn.execute("ROLLBACK")
            raise
        self.conn.execute("COMMIT")
        return value

    def apply(self, *inputs: Inbound) -> list[Outbound]:
        return self.transaction(lambda: self.engine.apply(self.conn, list(inputs), self.now))

    def lease(self, agent: str, pick: int) -> tuple[str, int] | None:
        """A ``(job_id, epoch)`` ``agent`` holds or held (a stale one is a fine input too)."""
        leases = sorted(
            (t.job_id, epoch)
            for t in self.engine.ledger.trials()
            for epoch, holder in t.assignments.items()
            if holder == agent
        )
        return leases[pick % len(leases)] if leases else None

    def forge(self, holder: str, sender: str, pick: int, how: str, status: str) -> None:
        """Send one hostile result; it must change nothing but the security counters."""
        lease = self.lease(holder, pick)
        if lease is None:
            return
        job_id, epoch = lease
        token = lease_token(self.engine.lease_secret, job_id, epoch)
        if how == "bad_token":
            sender, token = holder, FORGED_TOKEN
        elif how == "wrong_agent":
            sender = "mallory" if sender == holder else sender
        elif how == "never_issued":
            epoch += 1000
            token = lease_token(self.engine.lease_secret, job_id, epoch)
        else:
            job_id = "ghost:7"
        refused = self.refused()
        stored = self.conn.execute("SELECT COUNT(*) FROM results").fetchone()[0]
        out = self.apply(Inbound("trial.result", sender, result(job_id, epoch, token, status)))
        acks = [m.body["job_id"] for m in of_type(out, "trial.ack")]
        assert acks == (["ghost:7"] if how == "unknown_job" else []), (how, acks)
        assert self.refused() == refused + 1
        assert self.conn.execute("SELECT COUNT(*) FROM results").fetchone()[0] == stored

    def refused(self) -> int:
        """Refused inputs counted so far (every kind)."""
        return int(
            self.conn.execute("SELECT COALESCE(SUM(count), 0) FROM security_events").fetchone()[0]
        )

    def run(self, op: tuple[Any, ...]) -> None:
        kind = op[0]
        if kind == "online":
            profile = {**PROFILE, "slots": op[2]}
            self.apply(Inbound("agent.state", op[1], {"state": "online", "profile": profile}))
        elif kind == "offline":
            self.apply(Inbound("agent.state", op[1], {"state": "offline"}))
        elif kind == "ready":
            self.apply(Inbound("agent.ready", op[1], {"slots": op[2], "running": []}))
        elif kind in ("result", "progress"):
            lease = self.lease(op[1], op[2])
            if lease is None:
                return
            if kind == "result":
                token = lease_token(self.engine.lease_secret, *lease)
                body = result(*lease, token, status=op[3], val_acc=op[4])
                self.apply(Inbound("trial.result", op[1], body))
            else:
                token = lease_token(self.engine.lease_secret, *lease)
                beat = {
                    "job_id": lease[0],
                    "epoch": lease[1],
                    "token": token,
                    "step": 1,
                    "total": 2,
                    "metrics": {},
                }
                self.apply(Inbound("trial.progress", op[1], beat))
        elif kind == "forged":
            self.forge(*op[1:])
        elif kind == "tick":
            self.now += op[1]
            self.apply()
        elif kind == "submit":
            data = config(name=op[1], budget=op[2], strategy=op[3])
            self.apply(control("submit", config=data))
        elif kind in ("pause", "resume", "cancel"):
            self.apply(control(kind, experiment=op[1]))
        elif kind == "restart":
            self.engine = self.transaction(lambda: rebuild(self.conn, self.now))
        else:
            raise AssertionError(kind)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(operations, min_size=10, max_size=40))
def test_after_any_inputs_the_live_engine_equals_its_rebuild(ops: list[tuple[Any, ...]]) -> None:
    driver = Driver()
    for op in ops:
        driver.run(op)
        driver.engine.ledger.check()
        rebuilt = driver.transaction(lambda: rebuild(driver.conn, driver.now))
        rebuilt.ledger.check()
        assert view(rebuilt) == view(driver.engine), op


CROWD = ("a", "b", "c")  # one more than MAX_AGENTS in the test below: births prune or are refused

SETUP: list[tuple[Any, ...]] = [
    ("submit", "one", 6, "random"),
    ("submit", "two", 6, "aging-evolution"),
    ("online", "a", 2),
    ("online", "b", 2),
]

busy_operations = st.one_of(
    st.tuples(
        st.just("result"),
        st.sampled_from(AGENTS),
        st.integers(0, 50),
        st.sampled_from(["ok", "failed", "released"]),
        st.floats(0.0, 1.0),
    ),
    st.tuples(
        st.just("forged"),
        st.sampled_from(AGENTS),
        st.sampled_from(STRANGERS),
        st.integers(0, 50),
        st.sampled_from(["bad_token", "wrong_agent", "never_issued", "unknown_job"]),
        st.sampled_from(["ok", "failed", "released"]),
    ),
    st.tuples(st.just("tick"), st.sampled_from([3.0, 11.0, 61.0])),
    st.tuples(st.just("online"), st.sampled_from(CROWD), st.integers(1, 3)),
    st.tuples(st.just("ready"), st.sampled_from(CROWD), st.integers(1, 3)),
    st.tuples(st.just("offline"), st.sampled_from(CROWD)),
    st.tuples(st.just("restart")),
)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(busy_operations, min_size=5, max_size=30))
def test_forged_stale_and_misdirected_results_never_split_live_state_from_the_database(
    ops: list[tuple[Any, ...]],
) -> None:
    """Busy agents, expiring leases (strikes, quarantines), a full agent table (pruning and
    refused births) and hostile results mixed in."""
    saved, roster.MAX_AGENTS = roster.MAX_AGENTS, 2
    try:
        driver = Driver()
        for op in [*SETUP, *ops]:
            driver.run(op)
            driver.engine.ledger.check()
            rebuilt = driver.transaction(lambda: rebuild(driver.conn, driver.now))
            assert view(rebuilt) == view(driver.engine), op
    finally:
        roster.MAX_AGENTS = saved
