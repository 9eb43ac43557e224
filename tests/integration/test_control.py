"""Control over the broker (``nasd submit/status/pause/resume/cancel``), ``nasd broker``, and the
systemd notifications of ``nasd serve``."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from nasd.mqtt.broker import free_port
from tests.brokers import wait_port
from tests.integration import procs

SLEEPY = "tests.integration.trainers:sleepy"


def test_submit_status_pause_resume_cancel_through_a_running_daemon(
    mosquitto: object, tmp_path: Path
) -> None:
    url = mosquitto.url  # type: ignore[attr-defined]
    settings = tmp_path / "nasd.toml"
    settings.write_text(f'[daemon]\nbroker = "{url}"\ndb = "nasd.db"\n')
    db = tmp_path / "nasd.db"

    absent = procs.cli("submit", str(procs.ROOT / "examples" / "digits.toml"), "--broker", url)
    assert absent.returncode == 2 and "no nasd daemon is running" in absent.stderr

    notify = tmp_path / "notify.sock"
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    listener.bind(str(notify))
    listener.settimeout(20)
    env = {**os.environ, "NOTIFY_SOCKET": str(notify), "WATCHDOG_USEC": "1000000"}
    with (tmp_path / "daemon.log").open("ab") as log:
        daemon = subprocess.Popen(
            [sys.executable, "-m", "nasd.cli", "serve", "--config", str(settings)],
            cwd=procs.ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        received = []
        while not any(m.startswith("READY=1") for m in received):
            received.append(listener.recv(4096).decode())
        while "WATCHDOG=1" not in received:
            received.append(listener.recv(4096).decode())

        one = procs.write_experiment(
            tmp_path / "one.toml", "one", 6, trainer=SLEEPY, options="seconds = 0.3\nsteps = 1"
        )
        two = procs.write_experiment(
            tmp_path / "two.toml", "two", 50, trainer=SLEEPY, options="seconds = 0.3\nsteps = 1"
        )
        nobody = procs.cli("submit", str(one), "--config", str(settings))
        assert nobody.returncode == 2
        assert f"no online agent offers trainer '{SLEEPY}'" in nobody.stderr
        agent = procs.start_agent(url, "worker", tmp_path)
        procs.wait_until(
            lambda: procs.query(db, "SELECT online FROM agents WHERE name = 'worker'") == [(1,)],
            60,
            "the agent to come online",
            logs=[tmp_path / "daemon.log", tmp_path / "worker.log"],
        )
        for path in (one, two):
            submitted = procs.cli("submit", str(path), "--config", str(settings))
            assert submitted.returncode == 0, submitted.stderr
            assert "submitted" in submitted.stdout
        again = procs.cli("submit", str(one), "--config", str(settings))
        assert again.returncode == 0 and "already present" in again.stdout
        bad = tmp_path / "bad.toml"
        bad.write_text(one.read_text().replace('name = "random"', 'name = "random"\nx = 1'))
        refused = procs.cli("submit", str(bad), "--broker", url)
        assert refused.returncode == 2 and "unknown parameter 'x'" in refused.stderr

        assert procs.cli("pause", "two", "--broker", url).stdout.strip() == "two: paused"
        before_pause = procs.count_results(db, "two")
        procs.wait_until(
            lambda: procs.count_results(db, "one") >= 6,
            60,
            "experiment one",
            logs=[tmp_path / "daemon.log", tmp_path / "worker.log"],
        )
        time.sleep(1.0)
        # Paused: at most the one trial the agent was already training when the pause came.
        assert procs.count_results(db, "two") <= before_pause + 1
        assert procs.cli("resume", "two", "--broker", url).returncode == 0
        procs.wait_until(lambda: procs.count_results(db, "two") >= 3, 60, "two to resume")
        cancelled = procs.cli("cancel", "two", "--broker", url)
        assert cancelled.stdout.strip() == "two: cancelled", cancelled.stderr

        status = procs.cli("status", "--broker", url, "--json")
        assert status.returncode == 0, status.stderr
        by_name = {e["name"]: e for e in json.loads(status.stdout)["experiments"]}
        assert by_name["one"]["status"] == "done" and by_name["one"]["done"] == 6
        assert by_name["two"]["status"] == "cancelled"
        assert by_name["two"]["done"] + by_name["two"]["failed"] < 50
        agents = json.loads(status.stdout)["agents"]
        assert [(a["name"], a["online"]) for a in agents] == [("worker", True)]
        procs.stop(agent)
    finally:
        assert procs.stop(daemon) == 0
        listener.close()


def test_nasd_broker_serves_until_sigterm(tmp_path: Path) -> None:
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "nasd.cli", "broker", "--port", str(port)],
        cwd=procs.ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wait_port("127.0.0.1", port, 30)
        assert (
            procs.retained_state(f"mqtt://127.0.0.1:{port}", "nasd/v1/daemon/state", timeout=1)
            is None
        )
    finally:
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert f"127.0.0.1:{port}" in out and "Traceback" not in err


def test_cancelling_one_experiment_never_strands_the_other_on_a_busy_agent(
    mosquitto: object, tmp_path: Path
) -> None:
    """A user's report: cancel an experiment while a 1-slot agent trains its trial.

    The daemon frees the credit as it sends ``trial.cancel`` and assigns the other experiment's
    trial at once; the agent, still inside the cancelled job, refuses it and is marked draining.
    When the cancelled job ends the agent must say ``ready``, or the other experiment waits
    forever with an idle agent (the lease TTL is long here, so no expiry rescues it).
    """
    url = mosquitto.url  # type: ignore[attr-defined]
    one = procs.write_experiment(
        tmp_path / "one.toml", "one", 2, trainer=SLEEPY, options="seconds = 8\nsteps = 1"
    )
    two = procs.write_experiment(
        tmp_path / "two.toml", "two", 3, trainer=SLEEPY, lease_ttl_s=600, options="seconds = 0.2"
    )
    settings = procs.write_settings(tmp_path, url, one)
    db = tmp_path / "nasd.db"
    logs = [tmp_path / "daemon.log", tmp_path / "worker.log"]
    daemon = procs.start_daemon(settings, logs[0])
    agent = procs.start_agent(url, "worker", tmp_path, slots=1)
    try:
        procs.wait_until(
            lambda: (
                procs.query(db, "SELECT job_id FROM leases WHERE status = 'active'") == [("one:0",)]
            ),
            60,
            "one:0 to be training",
            logs=logs,
        )
        assert procs.cli("submit", str(two), "--config", str(settings)).returncode == 0
        cancelled = procs.cli("cancel", "one", "--config", str(settings))
        assert cancelled.stdout.strip() == "one: cancelled", cancelled.stderr
        procs.wait_until(
            lambda: (
                procs.query(db, "SELECT status FROM experiments WHERE name = 'two'") == [("done",)]
            ),
            60,
            "experiment two to finish on the agent that refused its first trial",
            logs=logs,
        )
        status = procs.cli("status", "--config", str(settings), "--json")
        assert status.returncode == 0, status.stderr
        by_name = {e["name"]: e for e in json.loads(status.stdout)["experiments"]}
        assert (by_name["one"]["cancelled"], by_name["one"]["failed"]) == (1, 0)
        assert by_name["two"]["done"] == 3
        assert [a["draining"] for a in json.loads(status.stdout)["agents"]] == [False]
    finally:
        procs.stop(agent)
        assert procs.stop(daemon) == 0
    # The race really happened: the agent refused and the daemon drained it.
    assert "assign.refused" in logs[1].read_text()
    assert "agent.draining" in logs[0].read_text()
