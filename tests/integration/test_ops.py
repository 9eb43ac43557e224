"""The operator's commands against a real search: backup mid-search, restore, resume.

A daemon and two agents (real processes, real Mosquitto) run a search; ``nasd backup`` copies
the database while they work; the daemon is killed; ``nasd restore`` puts the backup at a new
path and a daemon started on it finishes the search with the same agents. Every trial must end
done exactly once in the restored database: the results stored after the backup are gone from
it, so their trials run again (the lease secret travels with the backup, so tokens still match).
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from tests.harness import MosquittoProcess
from tests.integration import procs

pytestmark = pytest.mark.slow

SLEEPY = "tests.integration.trainers:sleepy"


def test_a_backup_taken_mid_search_restores_and_resumes_to_exactly_once(
    mosquitto: MosquittoProcess, tmp_path: Path
) -> None:
    url = mosquitto.url
    budget = 40
    first, second = tmp_path / "first", tmp_path / "second"
    first.mkdir()
    second.mkdir()
    experiment = procs.write_experiment(
        tmp_path / "exp.toml",
        "restored",
        budget,
        trainer=SLEEPY,
        lease_ttl_s=10,
        options="seconds = 0.3\nsteps = 2",
    )
    for directory in (first, second):
        (directory / experiment.name).write_text(experiment.read_text())
    db, restored = first / "nasd.db", second / "nasd.db"
    backup = tmp_path / "backups" / "mid.db"
    agents = [procs.start_agent(url, f"agent-{i}", tmp_path, slots=2) for i in range(2)]
    logs = [first / "daemon.log", second / "daemon.log"] + [
        tmp_path / f"agent-{i}.log" for i in range(2)
    ]
    daemon = procs.start_daemon(procs.write_settings(first, url, experiment), logs[0])
    try:
        procs.wait_until(
            lambda: procs.count_results(db, "restored") >= 8,
            90,
            "8 results before the backup",
            processes=[daemon, *agents],
            logs=logs,
        )
        made = procs.cli("backup", "--db", str(db), "--out", str(backup))  # daemon still running
        assert made.returncode == 0, made.stderr
        assert "integrity ok" in made.stdout
        assert daemon.poll() is None  # the backup did not disturb the daemon
        in_backup = procs.count_results(backup, "restored")
        assert 8 <= in_backup < budget
        procs.wait_until(  # the first daemon goes on past the backup: those results will be lost
            lambda: procs.count_results(db, "restored") >= in_backup + 4,
            60,
            "4 more results after the backup",
            processes=[daemon, *agents],
            logs=logs,
        )
        procs.kill(daemon)

        refused = procs.cli("restore", str(backup), "--db", str(db))  # no --force: refused
        assert refused.returncode == 2 and "--force" in refused.stderr
        done = procs.cli("restore", str(backup), "--db", str(restored))
        assert done.returncode == 0, done.stderr
        assert procs.count_results(restored, "restored") == in_backup

        daemon = procs.start_daemon(procs.write_settings(second, url, experiment), logs[1])
        procs.wait_until(
            lambda: procs.query(restored, "SELECT status FROM experiments") == [("done",)],
            120,
            "the restored search to finish",
            processes=[daemon, *agents],
            logs=logs,
        )
        busy = procs.cli("restore", str(backup), "--db", str(restored), "--force")
        assert busy.returncode == 2 and "open in another process" in busy.stderr
    finally:
        procs.stop(daemon)
        for agent in agents:
            procs.stop(agent)
    procs.check_exact(restored, "restored", budget, [])
    conn = sqlite3.connect(backup)  # the backup itself was never written to
    assert conn.execute("SELECT COUNT(*) FROM results").fetchone() == (in_backup,)
    conn.close()
