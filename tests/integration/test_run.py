"""``nasd run``: the one-command local mode (embedded broker, daemon, local agent processes)."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

from tests.integration import procs

EXAMPLE = procs.ROOT / "examples" / "digits.toml"


def _run(*args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "nasd.cli", "run", *args],
        cwd=procs.ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def test_run_is_interrupted_then_resumed_without_repeating_work(tmp_path: Path) -> None:
    db = tmp_path / "digits.db"
    args = [str(EXAMPLE), "--budget", "8", "--agents", "2", "--db", str(db)]
    first = subprocess.Popen(
        [sys.executable, "-m", "nasd.cli", "run", *args],
        cwd=procs.ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        procs.wait_until(
            lambda: procs.count_results(db, "digits-cnn") >= 3,
            180,
            "3 results before the interruption",
            logs=[tmp_path / "digits-cnn" / "daemon.log"],
        )
        before = dict(procs.query(db, "SELECT trial_id, metrics FROM results"))
        first.send_signal(signal.SIGINT)
        out, err = first.communicate(timeout=60)
    finally:
        if first.poll() is None:
            first.kill()
    assert first.returncode == 130, err
    assert "interrupted" in out and "resume" in out

    second = _run(*args)
    assert second.returncode == 0, second.stderr
    assert "architecture:" in second.stdout and "test_acc" in second.stdout
    assert "params:" in second.stdout and str(db) in second.stdout
    rows = dict(procs.query(db, "SELECT trial_id, metrics FROM results"))
    assert len(rows) == 8 and sorted(rows) == list(range(8))
    assert all(rows[t] == m for t, m in before.items()), "finished evaluations were redone"
    assert procs.query(db, "SELECT COUNT(*) FROM trials") == [(8,)]

    again = _run(*args)
    assert again.returncode == 0 and "already complete" in again.stdout
    assert procs.query(db, "SELECT COUNT(*) FROM trials") == [(8,)]

    started = time.monotonic()
    fresh = _run(str(EXAMPLE), "--budget", "2", "--agents", "1", "--db", str(db), "--fresh")
    assert fresh.returncode == 0, fresh.stderr
    assert procs.query(db, "SELECT COUNT(*) FROM results") == [(2,)]
    assert time.monotonic() - started < 120
    best = json.loads(
        subprocess.run(
            [sys.executable, "-m", "nasd.cli", "best", "digits-cnn", "--db", str(db), "--json"],
            cwd=procs.ROOT,
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    )
    assert best["trial_id"] in (0, 1)
