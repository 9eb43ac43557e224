"""The engine's protocol rules, against a real SQLite file and no broker."""

from __future__ import annotations

from pathlib import Path

import pytest

from nasd.engine import Inbound, rebuild
from nasd.errors import CommandError
from tests.unit.engine_harness import Harness, assigns, config, of_type, reply


def test_work_is_assigned_up_to_the_agents_slots(h: Harness) -> None:
    h.submit(config(budget=10))
    out = h.online("a", slots=3)
    jobs = assigns(out)
    assert [j["job_id"] for j in jobs] == ["exp:0", "exp:1", "exp:2"]
    assert all(m.topic == "nasd/v1/agents/a/assign" for m in of_type(out, "trial.assign"))
    assert assigns(h.apply()) == []  # nothing more: every slot is leased
    assert h.query("SELECT COUNT(*) FROM leases WHERE status = 'active'") == [(3,)]


def test_result_is_stored_once_and_acked_every_time(h: Harness) -> None:
    h.submit(config(budget=4))
    job = assigns(h.online("a", slots=1))[0]
    out = h.apply(Inbound("trial.result", "a", reply(job)))
    ack = {"job_id": "exp:0", "epoch": 1, "token": job["token"]}
    assert [m.body for m in of_type(out, "trial.ack")] == [ack]
    assert [j["job_id"] for j in assigns(out)] == ["exp:1"]
    again = h.apply(Inbound("trial.result", "a", reply(job, val_acc=0.9)))
    assert len(of_type(again, "trial.ack")) == 1
    assert h.query("SELECT COUNT(*) FROM results") == [(1,)]
    assert h.query("SELECT metrics FROM results") == [('{"val_acc": 0.5}',)]
    assert h.engine.experiments["exp"].finished == 1


def test_result_from_an_agent_without_the_lease_is_refused(h: Harness) -> None:
    h.submit(config(budget=2))
    job = assigns(h.online("a", slots=1))[0]
    out = h.apply(Inbound("trial.result", "intruder", reply(job)))
    assert of_type(out, "trial.ack") == []
    assert h.query("SELECT COUNT(*) FROM results") == [(0,)]
    assert h.query("SELECT status FROM trials WHERE job_id = 'exp:0'") == [("running",)]
    assert h.security() == {"wrong_agent": 1}


def test_expired_lease_is_retried_then_fails_after_max_attempts(h: Harness) -> None:
    h.submit(config(budget=1))
    first = assigns(h.online("a", slots=1))[0]
    out = h.apply(advance=11)  # past lease_ttl_s: expired, requeued, reassigned
    cancel = {"job_id": "exp:0", "epoch": 1, "token": first["token"]}
    assert [m.body for m in of_type(out, "trial.cancel")] == [cancel]
    second = assigns(out)[0]
    assert second["job_id"] == first["job_id"] and second["epoch"] == 2
    out = h.apply(advance=11)  # second attempt expires too: max_attempts = 2
    assert assigns(out) == []
    assert h.query("SELECT status, attempts FROM trials") == [("failed", 2)]
    assert h.engine.experiments["exp"].status == "done"
    kinds = [r[0] for r in h.query("SELECT kind FROM events ORDER BY seq")]
    assert "trial_failed" in kinds and kinds[-1] == "experiment_done"


def test_progress_heartbeats_keep_a_lease_alive(h: Harness) -> None:
    h.submit(config(budget=1))
    job = assigns(h.online("a", slots=1))[0]
    for _ in range(5):
        beat = {
            "job_id": job["job_id"],
            "epoch": job["epoch"],
            "token": job["token"],
            "step": 1,
            "total": 5,
            "metrics": {},
        }
        assert (
            of_type(h.apply(Inbound("trial.progress", "a", beat), advance=6), "trial.cancel") == []
        )
    assert h.query("SELECT status FROM trials") == [("running",)]


def test_a_heartbeat_without_the_lease_token_does_not_keep_the_lease(h: Harness) -> None:
    h.submit(config(budget=1))
    job = assigns(h.online("a", slots=1))[0]
    forged = {
        "job_id": job["job_id"],
        "epoch": job["epoch"],
        "token": "0" * 32,
        "step": 1,
        "total": 5,
        "metrics": {},
    }
    h.apply(Inbound("trial.progress", "a", forged), advance=6)
    out = h.apply(Inbound("trial.progress", "a", forged), advance=6)
    assert [m.body["job_id"] for m in of_type(out, "trial.cancel")] == [job["job_id"]]


def test_late_result_from_an_older_lease_wins_and_cancels_the_newer(h: Harness) -> None:
    h.submit(config(budget=1))
    h.online("a", slots=1)
    h.online("b", slots=1)
    old = h.query("SELECT agent, epoch FROM leases")[0]
    out = h.apply(advance=11)
    new = assigns(out)[0]
    assert new["epoch"] == 2
    out = h.apply(Inbound("trial.result", old[0], h.result("exp:0", old[1])))
    assert of_type(out, "trial.ack")[0].body == {
        "job_id": "exp:0",
        "epoch": 1,
        "token": h.token("exp:0", 1),
    }
    cancels = of_type(out, "trial.cancel")
    assert [c.body for c in cancels] == [{"job_id": "exp:0", "epoch": 2, "token": new["token"]}]
    assert h.query("SELECT status FROM trials") == [("succeeded",)]
    assert sorted(h.query("SELECT epoch, status FROM leases")) == [(1, "done"), (2, "superseded")]


def test_agent_offline_requeues_its_jobs(h: Harness) -> None:
    h.submit(config(budget=2))
    h.online("a", slots=2)
    out = h.apply(Inbound("agent.state", "a", {"state": "offline"}))
    assert assigns(out) == []
    assert h.query("SELECT status, attempts FROM trials ORDER BY trial_id") == [
        ("pending", 1),
        ("pending", 1),
    ]
    out = h.online("b", slots=2)
    assert sorted(j["job_id"] for j in assigns(out)) == ["exp:0", "exp:1"]


def test_released_job_is_requeued_without_using_an_attempt(h: Harness) -> None:
    h.submit(config(budget=1))
    job = assigns(h.online("a", slots=1))[0]
    h.online("b", slots=1)
    out = h.apply(Inbound("trial.result", "a", reply(job, status="released")))
    assert [(j["job_id"], j["epoch"]) for j in assigns(out)] == [("exp:0", 2)]
    assert of_type(out, "trial.assign")[0].topic == "nasd/v1/agents/b/assign"
    assert h.query("SELECT attempts FROM trials") == [(0,)]


def test_agent_never_holds_more_than_its_slots(h: Harness) -> None:
    h.submit(config(budget=20))
    held: set[str] = set()
    out = h.online("a", slots=3)
    for _ in range(20):
        held |= {j["job_id"] for j in assigns(out)}
        assert len(held) <= 3
        if not held:
            break
        done = sorted(held)[0]
        held.discard(done)
        epoch = h.query("SELECT epoch FROM trials WHERE job_id = ?", done)[0][0]
        out = h.apply(Inbound("trial.result", "a", h.result(done, epoch)))
    assert h.query("SELECT COUNT(*) FROM results") == [(20,)]


def test_rebuild_restores_strategy_counters_and_leases(h: Harness, tmp_path: Path) -> None:
    h.submit(config(budget=30, strategy="aging-evolution"))
    held = {j["job_id"]: j["epoch"] for j in assigns(h.online("a", slots=3))}
    for step in range(14):
        job_id = sorted(held)[0]
        out = h.apply(
            Inbound("trial.result", "a", h.result(job_id, held.pop(job_id), val_acc=step / 20))
        )
        held |= {j["job_id"]: j["epoch"] for j in assigns(out)}
    assert h.engine.experiments["exp"].strategy.evolving  # type: ignore[attr-defined]
    live = h.engine.experiments["exp"]
    rebuilt = h.writer.run_sync(lambda c: rebuild(c, h.now)).experiments["exp"]
    assert rebuilt.strategy.state_dict() == live.strategy.state_dict()
    assert (rebuilt.next_trial_id, rebuilt.finished, rebuilt.best) == (
        live.next_trial_id,
        live.finished,
        live.best,
    )
    engine = h.writer.run_sync(lambda c: rebuild(c, h.now))
    live_ids = {t.job_id for t in h.engine.ledger.trials()}
    assert {t.job_id for t in engine.ledger.trials()} == live_ids
    assert {j.body["job_id"] for j in engine.assignments_to_resend()} == {
        t.job_id for t in h.engine.ledger.running()
    }


def test_resubmitting_the_same_config_is_a_noop_and_a_different_one_is_refused(
    h: Harness,
) -> None:
    h.submit(config(budget=3))
    h.submit(config(budget=3))
    out = h.apply(
        Inbound(
            "control.request",
            None,
            {
                "client": "cli",
                "correlation_id": "c1",
                "command": "submit",
                "args": {"config": config(budget=3, strategy="aging-evolution")},
            },
        )
    )
    reply = of_type(out, "control.response")[0]
    assert reply.topic == "nasd/v1/control/response/cli"
    assert reply.body["ok"] is False and "different config" in reply.body["error"]
    assert h.query("SELECT COUNT(*) FROM experiments") == [(1,)]


def test_invalid_submitted_config_gets_an_error_reply_and_changes_nothing(h: Harness) -> None:
    bad = config()
    bad["strategy"] = {"name": "aging-evolution", "popsize": 3}
    out = h.apply(
        Inbound(
            "control.request",
            None,
            {"client": "cli", "correlation_id": "c2", "command": "submit", "args": {"config": bad}},
        )
    )
    reply = of_type(out, "control.response")[0].body
    assert reply["ok"] is False and "popsize" in reply["error"]
    assert h.query("SELECT COUNT(*) FROM experiments") == [(0,)]


def test_pause_stops_new_proposals_and_resume_continues(h: Harness) -> None:
    h.submit(config(budget=10))
    request = {"client": "cli", "correlation_id": "c", "args": {"experiment": "exp"}}
    h.apply(Inbound("control.request", None, {**request, "command": "pause"}))
    out = h.online("a", slots=2)
    assert assigns(out) == []
    out = h.apply(Inbound("control.request", None, {**request, "command": "resume"}))
    assert len(assigns(out)) == 2


def test_two_experiments_share_the_agents(h: Harness) -> None:
    h.submit(config(name="one", budget=10))
    h.submit(config(name="two", budget=10))
    out = h.online("a", slots=4)
    names = sorted(j["experiment"] for j in assigns(out))
    assert names == ["one", "one", "two", "two"]


def test_resubmitting_with_a_larger_budget_extends_a_finished_search(h: Harness) -> None:
    h.submit(config(budget=1))
    job = assigns(h.online("a", slots=1))[0]
    h.apply(Inbound("trial.result", "a", reply(job)))
    assert h.engine.experiments["exp"].status == "done"
    h.submit(config(budget=3))
    out = h.apply()
    assert h.engine.experiments["exp"].status == "running"
    assert [j["job_id"] for j in assigns(out)] == ["exp:1"]
    assert h.query("SELECT status FROM experiments") == [("running",)]
    rebuilt = h.writer.run_sync(lambda c: rebuild(c, h.now)).experiments["exp"]
    assert rebuilt.config.budget == 3
    with pytest.raises(CommandError, match="cannot go down"):
        h.submit(config(budget=1))


def test_an_agent_that_hands_a_job_back_gets_no_work_until_it_is_ready_again(
    h: Harness,
) -> None:
    h.submit(config(budget=2))
    job = assigns(h.online("a", slots=1))[0]
    out = h.apply(Inbound("trial.result", "a", reply(job, status="released")))
    assert assigns(out) == []
    out = h.apply(Inbound("agent.ready", "a", {"slots": 1, "running": []}))
    assert [j["job_id"] for j in assigns(out)] == ["exp:0"]


def test_rebuild_from_a_snapshot_plus_the_log_tail_matches_the_live_strategy(
    h: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    from nasd.engine import experiment

    monkeypatch.setattr(experiment, "SNAPSHOT_EVERY", 7)
    h.submit(config(budget=40, strategy="aging-evolution"))
    held = {j["job_id"]: j["epoch"] for j in assigns(h.online("a", slots=3))}
    for step in range(25):
        job_id = sorted(held)[0]
        out = h.apply(
            Inbound(
                "trial.result",
                "a",
                h.result(job_id, held.pop(job_id), val_acc=(step * 7 % 11) / 11),
            )
        )
        held |= {j["job_id"]: j["epoch"] for j in assigns(out)}
    (seq,) = h.query("SELECT seq FROM snapshots WHERE experiment = 'exp'")[0]
    (last,) = h.query("SELECT MAX(seq) FROM events WHERE experiment = 'exp'")[0]
    assert 0 < seq < last  # a snapshot exists and events were logged after it
    live = h.engine.experiments["exp"].strategy.state_dict()
    assert (
        h.writer.run_sync(lambda c: rebuild(c, h.now)).experiments["exp"].strategy.state_dict()
        == live
    )
    # The snapshot alone is not the live state: the tail was replayed on top of it.
    from nasd.store.repo import unpack

    (blob,) = h.query("SELECT state FROM snapshots WHERE experiment = 'exp'")[0]
    assert unpack(blob) != live
