"""Fault injection with real processes and a real Mosquitto: kill -9 the daemon, lose an agent.

After every scenario the checker counts: exactly ``budget`` finished evaluations, no trial id twice,
no result lost (every agent spool drained), and ``PRAGMA integrity_check`` is ok.
"""

from __future__ import annotations

import json
import random
import signal
import time
from pathlib import Path

import pytest

from tests.integration import procs

pytestmark = pytest.mark.slow

SLEEPY = "tests.integration.trainers:sleepy"


def test_daemon_killed_five_times_loses_and_duplicates_nothing(
    mosquitto: object, tmp_path: Path
) -> None:
    url = mosquitto.url  # type: ignore[attr-defined]
    budget = 60
    experiment = procs.write_experiment(
        tmp_path / "exp.toml",
        "restarts",
        budget,
        trainer=SLEEPY,
        strategy="aging-evolution",
        lease_ttl_s=20,
        options="seconds = 0.4\nsteps = 2",
    )
    settings = procs.write_settings(tmp_path, url, experiment)
    db = tmp_path / "nasd.db"
    log = tmp_path / "daemon.log"
    agents = [procs.start_agent(url, f"agent-{i}", tmp_path, slots=2) for i in range(2)]
    logs = [log, tmp_path / "agent-0.log", tmp_path / "agent-1.log"]
    daemon = procs.start_daemon(settings, log)
    rng = random.Random(7)
    at_kill: list[int] = []  # results stored when each kill landed
    try:
        for threshold in (6, 16, 26, 36, 46):
            procs.wait_until(
                lambda t=threshold: procs.count_results(db, "restarts") >= t,
                120,
                f"{threshold} results before kill #{len(at_kill) + 1}",
                logs=logs,
            )
            time.sleep(rng.uniform(0.0, 0.5))  # land the kill anywhere in the work cycle
            procs.kill(daemon)
            at_kill.append(procs.count_results(db, "restarts"))
            time.sleep(rng.uniform(0.0, 1.0))
            daemon = procs.start_daemon(settings, log)
        procs.wait_until(
            lambda: procs.query(db, "SELECT status FROM experiments") == [("done",)],
            180,
            "the search to finish after the restarts",
            logs=logs,
        )
        time.sleep(1.0)  # the last acks reach the agents
    finally:
        for agent in agents:
            procs.stop(agent)
        procs.stop(daemon)
    # Five kills, each while work was still outstanding, and six daemon lives in the log.
    assert len(at_kill) == 5 and all(n < budget for n in at_kill), at_kill
    assert log.read_text().count("engine.rebuilt") == 6
    procs.check_exact(db, "restarts", budget, [tmp_path / "spool" / f"agent-{i}" for i in range(2)])
    # The strategy kept its history across restarts: children have parents that exist.
    orphans = procs.query(
        db,
        "SELECT COUNT(*) FROM trials c WHERE c.parent_id IS NOT NULL AND"
        " NOT EXISTS (SELECT 1 FROM results p WHERE p.experiment ="
        " c.experiment AND p.trial_id = c.parent_id)",
    )
    assert orphans == [(0,)]
    assert procs.query(db, "SELECT COUNT(*) FROM trials WHERE parent_id IS NOT NULL")[0][0] > 20


def test_agent_killed_mid_job_has_its_job_finished_elsewhere(
    mosquitto: object, tmp_path: Path
) -> None:
    url = mosquitto.url  # type: ignore[attr-defined]
    budget = 12
    experiment = procs.write_experiment(
        tmp_path / "exp.toml",
        "agentloss",
        budget,
        trainer=SLEEPY,
        lease_ttl_s=5,
        options="seconds = 1.5\nsteps = 3",
    )
    settings = procs.write_settings(tmp_path, url, experiment)
    db = tmp_path / "nasd.db"
    logs = [tmp_path / "daemon.log", tmp_path / "victim.log", tmp_path / "survivor.log"]
    daemon = procs.start_daemon(settings, logs[0])
    victim = procs.start_agent(url, "victim", tmp_path)
    survivor = procs.start_agent(url, "survivor", tmp_path)
    try:
        procs.wait_until(
            lambda: bool(
                procs.query(db, "SELECT 1 FROM leases WHERE agent = 'victim' AND status = 'active'")
            ),
            60,
            "the victim to hold a job",
            logs=logs,
        )
        time.sleep(0.5)  # mid-job
        (victim_job,) = procs.query(
            db, "SELECT job_id FROM leases WHERE agent = 'victim' AND status = 'active'"
        )[0]
        procs.kill(victim)
        procs.wait_until(
            lambda: procs.count_results(db, "agentloss") >= budget,
            120,
            "the search to finish on the survivor",
            logs=logs,
        )
        procs.wait_until(
            lambda: procs.query(db, "SELECT status FROM experiments") == [("done",)],
            30,
            "the experiment to be done",
            logs=logs,
        )
        time.sleep(0.5)
    finally:
        procs.stop(survivor)
        procs.stop(daemon)
    assert procs.query(db, "SELECT agent FROM results WHERE job_id = ?", victim_job) == [
        ("survivor",)
    ]
    assert procs.query(
        db, "SELECT status FROM leases WHERE job_id = ? AND agent = 'victim'", victim_job
    ) == [("expired",)]
    procs.check_exact(db, "agentloss", budget, [tmp_path / "spool" / "survivor"])


def test_agent_stopped_with_ctrl_c_hands_its_job_back(mosquitto: object, tmp_path: Path) -> None:
    url = mosquitto.url  # type: ignore[attr-defined]
    experiment = procs.write_experiment(
        tmp_path / "exp.toml",
        "handback",
        4,
        trainer=SLEEPY,
        lease_ttl_s=60,
        options="seconds = 3\nsteps = 6",
    )
    settings = procs.write_settings(tmp_path, url, experiment)
    db = tmp_path / "nasd.db"
    logs = [tmp_path / "daemon.log", tmp_path / "quitter.log", tmp_path / "stayer.log"]
    daemon = procs.start_daemon(settings, logs[0])
    quitter = procs.start_agent(url, "quitter", tmp_path)
    try:
        procs.wait_until(
            lambda: bool(
                procs.query(
                    db, "SELECT 1 FROM leases WHERE agent = 'quitter' AND status = 'active'"
                )
            ),
            60,
            "the quitter to hold a job",
            logs=logs,
        )
        (job,) = procs.query(db, "SELECT job_id FROM leases WHERE agent = 'quitter'")[0]
        time.sleep(0.5)
        quitter.send_signal(signal.SIGINT)
        assert quitter.wait(30) == 0
        # Handed back at once (not after the 60 s lease), without using up an attempt.
        procs.wait_until(
            lambda: (
                procs.query(db, "SELECT status FROM leases WHERE job_id = ?", job)
                == [("released",)]
            ),
            10,
            "the lease to be released",
            logs=logs,
        )
        assert procs.query(db, "SELECT status, attempts FROM trials WHERE job_id = ?", job) == [
            ("pending", 0)
        ]
        stayer = procs.start_agent(url, "stayer", tmp_path)
        procs.wait_until(
            lambda: procs.count_results(db, "handback") >= 4,
            90,
            "the search to finish on the stayer",
            logs=logs,
        )
        procs.stop(stayer)
    finally:
        procs.stop(daemon)
    assert procs.query(db, "SELECT agent FROM results WHERE job_id = ?", job) == [("stayer",)]
    state = [json.loads(line) for line in logs[1].read_text().splitlines() if line.startswith("{")]
    assert any(e.get("event") == "agent.handed_back" for e in state)


def test_mosquitto_restarted_empty_mid_search_loses_nothing(
    mosquitto: object, tmp_path: Path
) -> None:
    """The broker is never the source of truth: it restarts without persistence (every queued
    message, session and retained state gone) and the search still ends exact."""
    url = mosquitto.url  # type: ignore[attr-defined]
    budget = 30
    experiment = procs.write_experiment(
        tmp_path / "exp.toml",
        "brokerloss",
        budget,
        trainer=SLEEPY,
        strategy="aging-evolution",
        lease_ttl_s=30,
        options="seconds = 0.4\nsteps = 2",
    )
    settings = procs.write_settings(tmp_path, url, experiment)
    db = tmp_path / "nasd.db"
    logs = [tmp_path / "daemon.log", tmp_path / "agent-0.log", tmp_path / "agent-1.log"]
    daemon = procs.start_daemon(settings, logs[0])
    agents = [procs.start_agent(url, f"agent-{i}", tmp_path, slots=2) for i in range(2)]
    try:
        for threshold in (8, 18):
            procs.wait_until(
                lambda t=threshold: procs.count_results(db, "brokerloss") >= t,
                90,
                f"{threshold} results before the broker restart",
                logs=logs,
            )
            mosquitto.restart()  # type: ignore[attr-defined]
        procs.wait_until(
            lambda: procs.query(db, "SELECT status FROM experiments") == [("done",)],
            120,
            "the search to finish after the broker restarts",
            logs=logs,
        )
        # Once an agent has reconnected it re-sends its spool, and the daemon's acks drain it.
        spools = [tmp_path / "spool" / f"agent-{i}" / "spool.db" for i in range(2)]
        procs.wait_until(
            lambda: all(procs.query(s, "SELECT COUNT(*) FROM results") == [(0,)] for s in spools),
            45,
            "the agents' spools to drain",
            logs=logs,
        )
    finally:
        for agent in agents:
            procs.stop(agent)
        assert procs.stop(daemon) == 0
    spools = [tmp_path / "spool" / f"agent-{i}" for i in range(2)]
    procs.check_exact(db, "brokerloss", budget, spools)
    events = [json.loads(line) for line in logs[0].read_text().splitlines() if line.startswith("{")]
    assert sum(e.get("event") == "broker.connected" for e in events) >= 3
