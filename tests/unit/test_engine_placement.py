"""SHADHO placement inside the engine: memory fit, jobs that fit nowhere, classes, restarts."""

from __future__ import annotations

from pathlib import Path

from nasd.engine import Inbound, rebuild
from tests.unit.engine_harness import PROFILE, Harness, assigns, config, reply, view


def online(h: Harness, agent: str, slots: int = 1, **profile: object) -> list:
    body = {"state": "online", "profile": {**PROFILE, "slots": slots, **profile}}
    return h.apply(Inbound("agent.state", agent, body))


def test_a_job_waits_for_the_agent_that_can_hold_it(tmp_path: Path) -> None:
    h = Harness(tmp_path / "n.db")
    online(h, "small", slots=2, free_memory_bytes=200 << 20, device_name="small-gpu")
    online(h, "big", slots=1, free_memory_bytes=8 << 30, device_name="big-gpu", samples_per_s=9e3)
    out = h.apply()
    h.submit(config(budget=3))
    out = h.apply()
    placed = assigns(out)
    # NB201 children need about a GiB at batch 64: only "big" holds one, and only one at a time.
    assert [a["job_id"] for a in placed] == ["exp:0"]
    assert [m.topic.split("/")[3] for m in out if m.type == "trial.assign"] == ["big"]
    assert h.query("SELECT status FROM trials ORDER BY trial_id")[1:] == [("pending",)] * 2
    out = h.apply(Inbound("trial.result", "big", reply(placed[0])))
    second = assigns(out)
    assert [a["job_id"] for a in second] == ["exp:1"]  # to big again, never to small
    assert h.query("SELECT DISTINCT agent FROM leases") == [("big",)]


def test_a_job_no_agent_can_ever_hold_fails_with_the_sizes(tmp_path: Path) -> None:
    h = Harness(tmp_path / "n.db")
    online(h, "tiny", slots=2, free_memory_bytes=100 << 20)
    h.submit(config(budget=2))
    out = h.apply()
    assert assigns(out) == []
    rows = h.query("SELECT status, error FROM trials ORDER BY trial_id")
    assert [r[0] for r in rows] == ["failed", "failed"]
    assert "out of memory everywhere" in rows[0][1] and "0.10 GiB free" in rows[0][1]
    assert h.engine.experiments["exp"].failed == 2
    assert h.query("SELECT status FROM experiments") == [("done",)]


def test_ready_reports_free_memory_net_of_the_jobs_it_runs(tmp_path: Path) -> None:
    h = Harness(tmp_path / "n.db")
    online(h, "a", slots=2, free_memory_bytes=4 << 30)
    h.submit(config(budget=1))
    placed = assigns(h.apply())
    assert len(placed) == 1
    job = h.engine.ledger.get(placed[0]["job_id"])
    assert job is not None
    need = h.engine._planner.sizing.demand(job).memory
    assert need is not None and need > 0
    # The agent now reports less free memory because our job runs there: its idle memory is
    # what it reports plus our job's estimate, not double-counted.
    h.apply(
        Inbound(
            "agent.ready",
            "a",
            {"slots": 2, "running": [job.job_id], "free_memory_bytes": (4 << 30) - need},
        )
    )
    record = h.engine.ledger.find_agent("a")
    assert record is not None and record.memory_idle == 4 << 30


def test_classes_and_models_reach_the_status_and_survive_a_restart(tmp_path: Path) -> None:
    h = Harness(tmp_path / "n.db")
    online(h, "fast", slots=1, device_name="A100", samples_per_s=5000.0)
    online(h, "slow", slots=1, device_name="Xeon", samples_per_s=50.0)
    h.submit(config(name="nb", budget=4))
    outstanding = [m for m in h.apply() if m.type == "trial.assign"]
    step = 0
    while outstanding:
        message = outstanding.pop(0)
        agent = message.topic.split("/")[3]
        body = reply(message.body, val_acc=0.3 + 0.1 * step)
        step += 1
        outstanding += [
            m for m in h.apply(Inbound("trial.result", agent, body)) if m.type == "trial.assign"
        ]
    exp = h.engine.experiments["nb"]
    assert exp.finished == 4 and exp.priority is not None and exp.priority > 0
    assert h.engine.placement.klass("fast") == "A100"
    before = view(h.engine)
    again = h.writer.run_sync(lambda c: rebuild(c, 0.0))
    assert view(again) == before
    assert again.experiments["nb"].priority == exp.priority


def test_agents_of_one_device_model_never_hold_work_for_each_other(tmp_path: Path) -> None:
    h = Harness(tmp_path / "n.db")
    # Same device, timings 3x apart (one was measured under load): one class, both busy.
    online(h, "a", slots=1, device_name="Xeon", samples_per_s=300.0)
    online(h, "b", slots=1, device_name="Xeon", samples_per_s=100.0)
    h.submit(config(budget=2))
    out = h.apply()
    assert sorted(m.topic.split("/")[3] for m in out if m.type == "trial.assign") == ["a", "b"]


def test_a_much_slower_class_gets_no_job_a_fast_one_finishes_sooner(tmp_path: Path) -> None:
    h = Harness(tmp_path / "n.db")
    online(h, "gpu", slots=1, device_name="H200", samples_per_s=50_000.0)
    online(h, "cpu", slots=1, device_name="Xeon", samples_per_s=50.0)
    h.submit(config(budget=2))
    out = h.apply()
    # The GPU takes one; the other waits for it rather than taking 1000x longer on the CPU.
    assert [m.topic.split("/")[3] for m in out if m.type == "trial.assign"] == ["gpu"]
    assert h.query("SELECT COUNT(*) FROM trials WHERE status = 'pending'") == [(1,)]


def test_parallel_limits_the_trials_in_flight(tmp_path: Path) -> None:
    h = Harness(tmp_path / "n.db")
    online(h, "a", slots=4)
    h.submit(config(budget=3, parallel=1))
    out = h.apply()
    placed = assigns(out)
    assert len(placed) == 1  # four free slots, but a sequential search
    assert h.query("SELECT COUNT(*) FROM trials") == [(1,)]
    out = h.apply(Inbound("trial.result", "a", reply(placed[0])))
    assert [a["trial_id"] for a in assigns(out)] == [1]
