"""Real processes for integration tests: the daemon (``nasd serve``) and agents (``nasd-agent``).

Each runs as ``python -m ...`` from the repository root so that test trainers under ``tests/`` are
importable by ``module:function`` path, exactly as a user's plug-in would be. What the benchmarks
need too (starting and stopping processes, the daemon, experiment files, read-only queries,
waiting) lives in :mod:`tests.harness` and is re-exported here under the names the tests use.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path

from tests.harness import (
    ROOT,
    count_results,
    kill,
    python_env,
    query,
    retained_state,
    spawn,
    start_daemon,
    stop,
    wait_until,
    write_experiment,
    write_settings,
)

__all__ = [
    "ROOT",
    "check_exact",
    "cli",
    "count_results",
    "kill",
    "query",
    "retained_state",
    "start_agent",
    "start_daemon",
    "stop",
    "wait_until",
    "write_experiment",
    "write_settings",
]


def cli(
    *args: str,
    env: dict[str, str] | None = None,
    cwd: Path = ROOT,
    timeout: float = 60,
) -> subprocess.CompletedProcess[str]:
    """Run ``nasd ARGS`` to completion (``timeout`` s at most) and capture its output."""
    return subprocess.run(
        [sys.executable, "-m", "nasd.cli", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def start_agent(
    broker_url: str,
    name: str,
    directory: Path,
    *,
    slots: int = 1,
    heartbeat: float = 0.5,
    profile: Mapping[str, object] | None = None,
) -> subprocess.Popen[bytes]:
    """A ``nasd-agent`` with one torch thread, its spool and log under ``directory``.

    ``profile``: hardware profile fields to pretend (``--profile-override``), e.g. a device
    name, speed and free memory, so one machine can play a heterogeneous pool.
    """
    argv = [
        *(sys.executable, "-m", "agents.cli", "--broker", broker_url, "--name", name),
        *("--slots", str(slots), "--threads", "1", "--benchmark-seconds", "0.1"),
        *("--heartbeat", str(heartbeat), "--spool", str(directory / "spool" / name)),
        *("--checkpoints", str(directory / "checkpoints")),
    ]
    for key, value in (profile or {}).items():
        argv += ["--profile-override", f"{key}={value}"]
    return spawn(argv, directory / f"{name}.log", env=python_env())


def check_exact(db: Path, experiment: str, budget: int, spools: list[Path]) -> None:
    """The evaluation count is exact and nothing is lost or duplicated."""
    assert query(db, "PRAGMA integrity_check") == [("ok",)]
    assert query(
        db,
        "SELECT COUNT(*), COUNT(DISTINCT trial_id), MIN(trial_id),"
        " MAX(trial_id) FROM trials WHERE experiment = ?",
        experiment,
    ) == [(budget, budget, 0, budget - 1)]
    assert query(
        db, "SELECT COUNT(*), COUNT(DISTINCT job_id) FROM results WHERE experiment = ?", experiment
    ) == [(budget, budget)]
    assert query(db, "SELECT status, COUNT(*) FROM trials GROUP BY status") == [
        ("succeeded", budget)
    ]
    assert query(db, "SELECT COUNT(*) FROM leases WHERE status = 'active'") == [(0,)]
    for spool in spools:
        assert query(spool / "spool.db", "SELECT COUNT(*) FROM results") == [(0,)]
