"""Agents earn trust (issue 6, defects 2 and 3): births, a bounded agent table, quarantine."""

from __future__ import annotations

import pytest

from nasd.cli.report import status_table
from nasd.engine import Inbound, rebuild, roster
from nasd.engine.records import quarantine_length
from nasd.store import queries
from tests.unit.engine_harness import Harness, assigns, config, of_type, reply, view


def agent_rows(h: Harness) -> list[str]:
    return [name for (name,) in h.query("SELECT name FROM agents ORDER BY name")]


# -- strangers -------------------------------------------------------------------------------------


def test_ready_from_an_agent_never_online_is_refused_and_gets_no_work(h: Harness) -> None:
    h.submit(config(budget=4))
    out = h.apply(Inbound("agent.ready", "ghost", {"slots": 64, "running": []}))
    assert assigns(out) == [] and h.engine.ledger.find_agent("ghost") is None
    assert agent_rows(h) == [] and h.security() == {"unknown_agent": 1}


def test_offline_from_an_agent_never_online_stores_nothing(h: Harness) -> None:
    for i in range(50):
        h.apply(Inbound("agent.state", f"fake-{i}", {"state": "offline"}))
    assert agent_rows(h) == [] and h.security() == {"unknown_agent": 50}
    assert h.writer.run_sync(queries.status)["agents"] == []


def test_ready_counts_only_after_the_agents_birth(h: Harness) -> None:
    h.submit(config(budget=4))
    h.online("a", slots=1)
    h.apply(Inbound("agent.state", "a", {"state": "offline"}))
    out = h.apply(Inbound("agent.ready", "a", {"slots": 2, "running": []}))
    assert assigns(out) == [] and not h.engine.ledger.agent("a").online
    assert h.security() == {}  # a known agent, just not online: not hostile
    assert h.query("SELECT online, slots FROM agents") == [(0, 1)]
    assert len(assigns(h.online("a", slots=2))) == 2


def test_beyond_the_agent_limit_the_least_recently_seen_idle_agents_are_pruned(
    h: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(roster, "MAX_AGENTS", 3)
    h.submit(config(budget=1))
    h.online("busy", slots=1)  # holds the only job: never pruned
    for name in ("old", "newer"):
        h.online(name, slots=1)
        h.apply(Inbound("agent.state", name, {"state": "offline"}), advance=1)
    h.apply(Inbound("agent.state", "busy", {"state": "offline"}))  # its lease ends: now idle
    h.online("busy", slots=1)
    assert agent_rows(h) == ["busy", "newer", "old"]
    h.online("fresh", slots=1)
    assert agent_rows(h) == ["busy", "fresh", "newer"]
    assert h.engine.ledger.find_agent("old") is None
    h.online("fresh2", slots=1)
    assert agent_rows(h) == ["busy", "fresh", "fresh2"]
    # All three online now: a fourth birth is refused and stores nothing.
    out = h.online("one-too-many", slots=64)
    assert assigns(out) == [] and agent_rows(h) == ["busy", "fresh", "fresh2"]
    assert h.security() == {"agent_limit": 1}
    assert view(h.writer.run_sync(lambda c: rebuild(c, h.now))) == view(h.engine)


# -- quarantine ------------------------------------------------------------------------------------


def test_quarantine_lengths_double_up_to_an_hour() -> None:
    assert [quarantine_length(n) for n in (1, 2, 3, 6, 7, 60)] == [
        60.0,
        120.0,
        240.0,
        1920.0,
        3600.0,
        3600.0,
    ]


def test_an_agent_whose_leases_keep_expiring_is_quarantined_with_back_off(h: Harness) -> None:
    h.submit(config(budget=50, max_attempts=10))
    assert len(assigns(h.online("sink", slots=1))) == 1
    out = h.apply(advance=11)  # strike 1: still trusted, gets the job back
    assert [m.topic for m in of_type(out, "trial.assign")] == ["nasd/v1/agents/sink/assign"]
    out = h.apply(advance=11)  # strike 2: quarantined for 60 s
    assert assigns(out) == []
    assert h.query("SELECT strikes, quarantines, quarantined_until FROM agents") == [
        (2, 1, h.now + 60)
    ]
    # An honest agent arrives and gets the work; the quarantined one still gets none.
    out = h.online("honest", slots=1)
    (job,) = assigns(out)
    assert [m.topic for m in of_type(out, "trial.assign")] == ["nasd/v1/agents/honest/assign"]
    h.apply(Inbound("trial.result", "honest", reply(job)))
    h.apply(Inbound("agent.state", "honest", {"state": "offline"}))
    assert assigns(h.apply(Inbound("agent.ready", "sink", {"slots": 1, "running": []}))) == []
    # Shown by status, with how long and why.
    data = h.writer.run_sync(queries.status)
    text = status_table(data, now=h.now)
    (line,) = [row for row in text.splitlines() if row.startswith("sink")]
    assert "(quarantined 1 min: 2 leases expired in a row)" in line
    # It survives a restart.
    assert view(h.writer.run_sync(lambda c: rebuild(c, h.now))) == view(h.engine)
    # After the quarantine: work again; one more expiry quarantines it for twice as long.
    out = h.apply(advance=61)
    assert [m.topic for m in of_type(out, "trial.assign")] == ["nasd/v1/agents/sink/assign"]
    h.apply(advance=11)
    assert h.query(
        "SELECT strikes, quarantines, quarantined_until FROM agents WHERE name = 'sink'"
    ) == [(3, 2, h.now + 120)]
    assert "quarantined 2 min: 3 leases expired" in status_table(
        h.writer.run_sync(queries.status), now=h.now
    )
    assert "quarantined" not in status_table(h.writer.run_sync(queries.status), now=h.now + 121)


def test_leases_expiring_while_the_daemons_link_is_down_are_no_strikes(h: Harness) -> None:
    h.submit(config(budget=50, max_attempts=10))  # lease TTL 10 s
    assert len(assigns(h.online("a", slots=1))) == 1
    h.engine.note_link(False, h.now)
    h.apply(advance=11)
    h.apply(advance=11)
    h.engine.note_link(True, h.now)  # back: blind for one more lease TTL
    h.apply(advance=9)
    assert h.query("SELECT strikes, quarantines FROM agents") == [(0, 0)]
    h.apply(advance=11)  # a lease leased after the link came back expires: a strike again
    assert h.query("SELECT strikes FROM agents") == [(1,)]


def test_leases_expiring_together_quarantine_once_and_a_success_clears_the_strikes(
    h: Harness,
) -> None:
    h.submit(config(budget=50, max_attempts=10))
    held = assigns(h.online("a", slots=3))
    assert len(held) == 3
    h.apply(advance=11)  # three leases expire at once: one quarantine, not three
    assert h.query("SELECT strikes, quarantines FROM agents") == [(3, 1)]
    # A late result from one of them (its own token) proves it works: trusted again.
    out = h.apply(Inbound("trial.result", "a", reply(held[0])))
    assert h.query("SELECT strikes, quarantines, quarantined_until FROM agents") == [(0, 0, 0.0)]
    assert len(assigns(out)) == 3
    assert view(h.writer.run_sync(lambda c: rebuild(c, h.now))) == view(h.engine)


def test_leases_lost_by_going_offline_or_handing_back_are_no_strikes(h: Harness) -> None:
    h.submit(config(budget=50, max_attempts=10))
    for _ in range(3):
        jobs = assigns(h.online("a", slots=2))
        h.apply(Inbound("trial.result", "a", reply(jobs[0], status="released")))
        h.apply(Inbound("trial.result", "a", reply(jobs[1], status="failed")))
        h.apply(Inbound("agent.state", "a", {"state": "offline"}))
    assert h.query("SELECT strikes, quarantines FROM agents") == [(0, 0)]
