"""Trainers (issue 6, defects 9 and 11): work goes only to agents that offer its trainer, and a
submit can be refused when no online agent offers it."""

from __future__ import annotations

import sqlite3

import pytest

from nasd.cli.report import status_table
from nasd.config import experiment_from_dict
from nasd.engine import Inbound
from nasd.errors import CommandError
from nasd.store import queries
from tests.unit.engine_harness import Harness, assigns, config


def with_trainer(name: str, trainer: str, budget: int = 4) -> dict:
    data = config(name=name, budget=budget)
    data["task"] = {"trainer": trainer}
    return data


def submit_checked(h: Harness, data: dict) -> dict:
    """Submit with the check, in one transaction that commits even when refused (as a control
    request does: the refusal is a reply, and the refusal's counter must be kept)."""
    conf = experiment_from_dict(data)

    def run(conn: sqlite3.Connection) -> dict | CommandError:
        try:
            return h.engine.submit(conn, conf, h.now, check_trainer=True)
        except CommandError as exc:
            return exc

    outcome = h.writer.run_sync(run)
    if isinstance(outcome, CommandError):
        raise outcome
    return outcome


def test_each_agent_gets_only_jobs_whose_trainer_it_offers(h: Harness) -> None:
    h.submit(with_trainer("z", "zero"))
    h.submit(with_trainer("o", "other"))
    out = h.online("a", slots=2, trainers=("zero",))
    out += h.online("b", slots=2, trainers=("other", "mnist1d"))
    got = {(m.topic.split("/")[3], m.body["experiment"]) for m in out if m.type == "trial.assign"}
    assert got == {("a", "z"), ("b", "o")}
    assert len(assigns(out)) == 4


def test_an_experiment_nobody_can_run_waits_without_starving_the_others(h: Harness) -> None:
    h.submit(with_trainer("x", "nobody"))
    h.submit(with_trainer("z", "zero"))
    out = h.online("a", slots=2)
    assert sorted(j["job_id"] for j in assigns(out)) == ["z:0", "z:1"]
    assert h.query("SELECT COUNT(*) FROM trials WHERE experiment = 'x'") == [(0,)]
    data = h.writer.run_sync(queries.status)
    waiting = {e["name"]: e["waiting"] for e in data["experiments"]}
    assert waiting == {"x": "no online agent offers trainer 'nobody'", "z": None}
    lines = status_table(data).splitlines()
    row = next(i for i, line in enumerate(lines) if line.startswith("x "))
    assert lines[row + 1] == "  waiting: no online agent offers trainer 'nobody'"


def test_pending_trials_of_a_departed_trainer_do_not_block_other_work(h: Harness) -> None:
    h.submit(with_trainer("o", "other", budget=2))
    assert len(assigns(h.online("b", slots=1, trainers=("other",)))) == 1
    h.apply(Inbound("agent.state", "b", {"state": "offline"}))
    assert h.query("SELECT status FROM trials WHERE experiment = 'o'") == [("pending",)]
    h.submit(with_trainer("z", "zero"))
    out = h.online("a", slots=2)
    assert sorted(j["job_id"] for j in assigns(out)) == ["z:0", "z:1"]
    summary = h.writer.run_sync(lambda c: queries.experiment_summary(c, "o"))
    assert summary is not None and summary["waiting"] == "no online agent offers trainer 'other'"


def test_a_checked_submit_of_a_trainer_no_online_agent_offers_is_refused(h: Harness) -> None:
    h.online("a", slots=1, trainers=("zero", "mnist1d"))
    with pytest.raises(CommandError) as refused:
        submit_checked(h, with_trainer("x", "evil.module:run"))
    assert str(refused.value) == (
        "no online agent offers trainer 'evil.module:run' (online agents offer: mnist1d, zero)"
    )
    assert h.query("SELECT COUNT(*) FROM experiments") == [(0,)]
    assert h.security() == {"trainer_not_offered": 1}
    assert submit_checked(h, with_trainer("z", "zero"))["created"] is True
    h.apply(Inbound("agent.state", "a", {"state": "offline"}))
    with pytest.raises(CommandError, match=r"online agents offer: none\)"):
        submit_checked(h, with_trainer("m", "mnist1d"))
    # Configs the daemon starts with are not checked (agents may come later).
    h.submit(with_trainer("later", "mnist1d"))
    assert h.query("SELECT name FROM experiments ORDER BY name") == [("later",), ("z",)]
