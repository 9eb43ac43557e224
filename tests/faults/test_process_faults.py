"""Process-level faults: kill, pause and restart the daemon, the broker and the agents.

Each scenario runs a real search (:class:`tests.faults.cluster.Cluster`: Mosquitto, ``nasd
serve``, ``nasd-agent`` processes with the zero-cost fault trainer), injects its fault at seeded
random moments while work is in flight, lets the search finish, and hands the database to the
one checker (:func:`tests.faults.checker.check`): every planned evaluation finished exactly once,
every metric is the trainer's f(genotype), the search ended, the file is intact and the event log
replays to the tables. Each prints its counts line (``pytest -s`` shows it; ``NASD_FAULT_REPORT``
collects them). Sizes are chosen to fit the suite's time budget on a two-core machine; the
docstring of each scenario says what it uses.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from nasd.faults import CRASH_EXIT_CODE, ENV, POINTS
from tests.faults.checker import Report, check
from tests.faults.cluster import Cluster
from tests.harness import free_port, kill, python_env, query, spawn, wait_port

pytestmark = pytest.mark.slow


def finish(cluster: Cluster, scenario: str, *, timeout: float = 90) -> Report:
    """Let the search end, drain the spools, stop everything, then run the checker.

    The daemon must also stop cleanly (exit 0) when asked: a SIGTERM drain is part of the deal.
    """
    cluster.wait_done(timeout)
    cluster.wait_spools_drained(20)
    exit_code = cluster.stop_daemon()
    cluster.close()
    report = check(cluster.db, cluster.experiment)
    report.line(scenario)
    report.assert_clean()
    assert exit_code == 0, f"the daemon's SIGTERM exit status was {exit_code}\n{cluster.log_tail()}"
    return report


def active_jobs(cluster: Cluster, agent: str) -> list[str]:
    """Jobs whose current lease belongs to ``agent``."""
    rows = query(
        cluster.db, "SELECT job_id FROM leases WHERE agent = ? AND status = 'active'", agent
    )
    return [str(row[0]) for row in rows]


def finished_jobs(log: Path, offset: int = 0) -> set[str]:
    """Job ids of the ``job.finished`` (status ok) lines of an agent's log after ``offset``."""
    jobs = set()
    with log.open("rb") as handle:
        handle.seek(offset)
        for line in handle.read().decode(errors="replace").splitlines():
            if '"job.finished"' in line and line.startswith("{"):
                with contextlib.suppress(ValueError):
                    entry = json.loads(line)
                    if entry.get("status") == "ok":
                        jobs.add(str(entry.get("job_id")))
    return jobs


# -- 1. the daemon killed at random moments ------------------------------------------------------


def test_daemon_sigkilled_twenty_times(tmp_path: Path) -> None:
    """SIGKILL the daemon 20 times at seeded random moments.

    About one kill in four lands while the daemon is still starting (opening the database,
    rebuilding, connecting); the others 0.1-0.8 s after it came online, mid-search. Sized down
    from the issue's 500 evaluations to 350 (3 agents x 2 slots, jobs of 0.05-0.5 s) to fit the
    suite's time budget; every kill still lands while work is in flight. Aging evolution, whose
    population is real state, so the checker's replay comparison means more.
    """
    rng = random.Random(1)
    budget = 350
    with Cluster(
        tmp_path, agents=3, slots=2, budget=budget, max_s=0.5, strategy="aging-evolution"
    ) as cluster:
        cluster.start()
        cluster.wait_results(3, 60)
        at_kill: list[int] = []
        during_startup = 0
        for _ in range(20):
            if rng.random() < 0.25:
                time.sleep(rng.uniform(0.0, 0.5))  # most likely still starting up
            else:
                cluster.wait_daemon_online()
                time.sleep(rng.uniform(0.1, 0.8))
            during_startup += not cluster.daemon_came_online()
            cluster.kill_daemon()
            at_kill.append(cluster.results())
            time.sleep(rng.uniform(0.0, 0.3))
            cluster.start_daemon(wait=False)
        cluster.wait_daemon_online()
        print(
            f"daemon-sigkill-x20: {during_startup} kills during start-up; results at each {at_kill}"
        )
        assert during_startup > 0, "no kill landed during a start-up"
        assert at_kill[-1] < budget, f"the search ended before the last kill: {at_kill}"
        finish(cluster, "daemon-sigkill-x20", timeout=120)


# -- 2. a crash at every commit boundary ---------------------------------------------------------

CRASH_HIT = {
    "result.before_insert": 4,  # the 4th accepted result dies before its insert
    "commit.before": 15,  # a few batches into the search
    "commit.after_before_publish": 15,
    "publish.after_first": 8,
    "snapshot.middle": 1,  # reached on SIGTERM, between the two experiments' snapshots
    "migration.middle": 1,  # reached once, creating the database
}
"""Which hit of each crash point kills the daemon: chosen to land mid-search."""


@pytest.mark.parametrize("point", sorted(POINTS))
def test_crash_at_every_commit_boundary(point: str, tmp_path: Path) -> None:
    """``NASD_CRASH_AT`` kills the daemon (exit 86) at ``point``; a restart without it finishes.

    Small on purpose (one agent with 4 slots, 16 trials of 0.05-0.3 s) since it runs once per
    point. A point the daemon reaches only on shutdown (``snapshot.middle``) gets a SIGTERM once
    the search is under way; it needs two experiments, so a second one runs beside the first.
    """
    hit = CRASH_HIT.get(point, 1)
    budget = 16
    with Cluster(
        tmp_path,
        agents=1,
        slots=4,
        budget=budget,
        max_s=0.3,
        daemon_env={ENV: f"{point}:{hit}"},
    ) as cluster:
        cluster.add_experiment("faults-second", 4)
        cluster.start(wait_online=False)
        deadline = time.monotonic() + 60
        while cluster.daemon_exit_code() is None:
            if cluster.results() >= budget // 2 or time.monotonic() > deadline:
                cluster.stop_daemon()  # a point reached only on the way out, or never
                break
            time.sleep(0.1)
        exit_code = cluster.daemon_exit_code()
        at_crash = cluster.results()
        print(f"crash-at-{point}: exit status {exit_code} with {at_crash}/{budget} results stored")
        crashed = f"crash point {point} reached" in cluster.daemon_log.read_text(errors="replace")
        assert exit_code == CRASH_EXIT_CODE and crashed, (
            f"the daemon never crashed at {point} (hit {hit}): exit status {exit_code}"
            f"\n{cluster.log_tail()}"
        )
        if point != "migration.middle":  # the only point reached before any work
            assert 0 < at_crash < budget, f"the crash did not land mid-search ({at_crash})"
        cluster.start_daemon(env={ENV: ""})
        cluster.wait_for(  # finish() waits for the main experiment only
            lambda: (
                query(cluster.db, "SELECT status FROM experiments WHERE name = ?", "faults-second")
                == [("done",)]
            ),
            90,
            "the second experiment to be done",
        )
        report = finish(cluster, f"crash-at-{point}")
        second = check(cluster.db, "faults-second")
        second.line(f"crash-at-{point}-second-experiment")
        second.assert_clean()
    assert report.finished == budget


# -- 3. the broker killed, with persistence; the embedded broker restarted empty -----------------


def test_mosquitto_sigkilled_ten_times_with_persistence(tmp_path: Path) -> None:
    """SIGKILL Mosquitto 10 times (persistence on) at random moments, restarting it each time.

    One clean restart first writes Mosquitto's persistence file; since its autosave runs only
    every 1800 s, every later start after a SIGKILL loads that same, stale state (old sessions,
    queued messages and retained states). 250 trials, 3 agents x 2 slots, jobs of 0.05-0.5 s.
    """
    rng = random.Random(3)
    budget = 250
    with Cluster(tmp_path, budget=budget, max_s=0.5, persistence=True) as cluster:
        cluster.start()
        cluster.wait_results(5, 60)
        cluster.broker.restart()
        assert (cluster.broker.workdir / "mosquitto.db").exists(), "no persistence file written"
        at_kill: list[int] = []
        for _ in range(10):
            time.sleep(rng.uniform(0.3, 1.2))
            cluster.broker.kill()
            at_kill.append(cluster.results())
            time.sleep(rng.uniform(0.0, 0.5))
            cluster.broker.start()
        print(f"mosquitto-sigkill-x10: results stored at each kill {at_kill}")
        assert at_kill[-1] < budget, f"the search ended before the last kill: {at_kill}"
        finish(cluster, "mosquitto-sigkill-x10-persistent", timeout=120)


def test_embedded_broker_restarted_empty(tmp_path: Path) -> None:
    """The daemon and agents on ``nasd broker``, SIGKILLed mid-search and restarted empty.

    40 trials, 2 agents x 2 slots. The embedded broker keeps nothing across a restart: every
    session, queued message and retained state is gone, and the search must not care.
    """
    port = free_port()
    log = tmp_path / "embedded-broker.log"
    argv = [sys.executable, "-m", "nasd.cli", "broker", "--host", "127.0.0.1", "--port", str(port)]

    def start_broker() -> subprocess.Popen[bytes]:
        process = spawn(argv, log, env=python_env())
        wait_port("127.0.0.1", port, 30, process=process)
        return process

    broker = start_broker()
    try:
        with Cluster(tmp_path, agents=2, budget=40, max_s=0.5) as cluster:
            cluster.broker_url = f"mqtt://127.0.0.1:{port}"
            cluster.start()
            cluster.wait_results(12, 60)
            kill(broker)
            time.sleep(0.5)
            broker = start_broker()
            assert cluster.results() < 40, "the search ended before the broker restart"
            finish(cluster, "embedded-broker-restarted-empty")
    finally:
        kill(broker)


# -- 4. the broker paused past the keep-alive -----------------------------------------------------


def test_mosquitto_paused_past_the_keepalive(tmp_path: Path) -> None:
    """SIGSTOP Mosquitto for 12 s (clients' keep-alive is 5 s), then SIGCONT.

    40 trials, 2 agents x 2 slots; leases of 3 s run out meanwhile, since no heartbeat gets
    through. Everyone must notice the dead connection, reconnect and go on.
    """
    with Cluster(tmp_path, agents=2, budget=40, max_s=0.5) as cluster:
        cluster.start()
        cluster.wait_results(8, 60)
        pid = cluster.broker.pid
        assert pid is not None
        connects = cluster.count_log_events("broker.connected")
        os.kill(pid, signal.SIGSTOP)
        try:
            time.sleep(12)
        finally:
            os.kill(pid, signal.SIGCONT)
        assert cluster.results() < 40, "the search ended during the pause"
        finish(cluster, "mosquitto-sigstop-12s")
    assert cluster.count_log_events("broker.connected") > connects, "the daemon never reconnected"


# -- 5. an agent kill storm ----------------------------------------------------------------------


def test_agent_kill_storm(tmp_path: Path) -> None:
    """Every 1-2 s a random agent is SIGKILLed and a new one started, 8 times.

    200 trials, 3 agents x 2 slots, leases of 3 s: the killed agents' jobs come back after their
    lease (or their last will) and run elsewhere.
    """
    rng = random.Random(5)
    budget = 200
    with Cluster(tmp_path, agents=3, budget=budget, max_s=0.6) as cluster:
        cluster.start()
        cluster.wait_results(4, 60)
        at_kill: list[int] = []
        for _ in range(8):
            time.sleep(rng.uniform(1.0, 2.0))
            victim = rng.choice(cluster.agent_names())
            cluster.kill_agent(victim)
            at_kill.append(cluster.results())
            cluster.start_agent(wait=False)
        print(f"agent-kill-storm: results stored at each kill {at_kill}")
        assert at_kill[-1] < budget, f"the search ended before the storm did: {at_kill}"
        finish(cluster, "agent-kill-storm", timeout=120)


# -- 6. a zombie agent -----------------------------------------------------------------------------


def test_zombie_agent_delivers_an_old_epoch_result(tmp_path: Path) -> None:
    """SIGSTOP an agent holding jobs until its leases expire, then SIGCONT it.

    30 trials, 2 agents x 2 slots, leases of 2 s, jobs of 0.5-1 s: the frozen agent's jobs are
    reassigned (a new epoch), and when it wakes it finishes and reports its old-epoch results.
    """
    with Cluster(tmp_path, agents=2, budget=30, lease_ttl_s=2, min_s=0.5, max_s=1.0) as cluster:
        cluster.start()
        cluster.wait_results(2, 60)
        deadline = time.monotonic() + 30
        while not (held := active_jobs(cluster, "agent-0")) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert held, f"agent-0 never held a job\n{cluster.log_tail()}"
        log_offset = cluster.agent_log("agent-0").stat().st_size
        cluster.pause_agent("agent-0")
        try:
            cluster.wait_for(
                lambda: all(
                    query(
                        cluster.db,
                        "SELECT status FROM leases WHERE job_id = ? AND agent = 'agent-0'",
                        job,
                    )
                    != [("active",)]
                    for job in held
                ),
                30,
                "the zombie's leases to expire",
            )
        finally:
            cluster.resume_agent("agent-0")
        report = finish(cluster, "zombie-agent")
    delivered = finished_jobs(cluster.agent_log("agent-0"), log_offset)
    assert delivered & set(held), (
        f"the zombie delivered none of its old jobs {held} (it finished {sorted(delivered)})"
    )
    assert report.finished == 30


# -- 9. the daemon down while agents finish their jobs ---------------------------------------------


def test_daemon_down_while_agents_finish(tmp_path: Path) -> None:
    """Stop the daemon (SIGTERM) for 10 s while jobs run; the spooled results arrive once.

    30 trials, 2 agents x 2 slots, jobs of 0.5-1 s: jobs in flight finish with no daemon to hear
    them; their results wait in the agents' spools (and in the broker's queue for the daemon's
    persistent session) and are counted exactly once when it returns.
    """
    with Cluster(tmp_path, agents=2, budget=30, min_s=0.5, max_s=1.0) as cluster:
        cluster.start()
        cluster.wait_results(6, 60)
        assert cluster.stop_daemon() == 0
        finished_before = cluster.count_log_events("job.finished", daemon=False)
        time.sleep(10)
        finished_while_down = cluster.count_log_events("job.finished", daemon=False)
        assert finished_while_down > finished_before, "no job finished while the daemon was down"
        assert cluster.spool_backlog() > 0, "nothing waited in the spools"
        cluster.start_daemon()
        finish(cluster, "daemon-down-10s")


# -- 13. the database stops taking writes ----------------------------------------------------------


def test_database_unwritable_then_writable_again(tmp_path: Path) -> None:
    """The daemon's writes fail for 5 s mid-search, then work again; nothing is lost.

    A full disk, emulated without privileges: ``RLIMIT_FSIZE`` 0 on the running daemon makes
    every write that extends a file fail (``EFBIG``, which SQLite reports as an I/O error, one of
    the outages the daemon recognises). Its log goes through a pipe, so only the database
    suffers. The daemon must stay up, store nothing and acknowledge nothing meanwhile (agents
    keep their results), and resume once a probe write commits. 60 trials, 2 agents x 2 slots.
    (A read-only file cannot be tested this way: the suite may run as root, which ignores file
    modes.)
    """
    with Cluster(tmp_path, agents=2, budget=60, max_s=0.5) as cluster:
        cluster.start(log_through_pipe=True)
        cluster.wait_results(10, 60)
        cluster.limit_daemon_writes(0)
        try:
            cluster.wait_for(
                lambda: cluster.count_log_events("store.unavailable") > 0,
                20,
                "the daemon to notice that its database is unwritable",
            )
            stored = cluster.results()
            time.sleep(5)
            assert cluster.results() == stored, "results were stored while writes failed"
            assert cluster.daemon_exit_code() is None, f"the daemon died\n{cluster.log_tail()}"
        finally:
            cluster.limit_daemon_writes(None)
        cluster.wait_for(
            lambda: cluster.count_log_events("store.available") > 0,
            20,
            "the daemon to notice that its database is writable again",
        )
        assert stored < 60, "the search ended before the outage"
        finish(cluster, "database-unwritable-5s")
