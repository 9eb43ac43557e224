"""``nasd bench nb201`` through the real path: embedded broker, daemon, agents, control API.

A small bench (3 runs per strategy, 2,000 simulated seconds) checks the code path and the output,
not the published bands (``benchmarks/README.md`` has those figures). With ``parallel = 1`` every
run is deterministic given its seed, so each run's choice must equal the protocol played directly
against the strategy object and the table (:func:`nasd.bench.nb201_protocol.replay`): the daemon
path neither loses, reorders nor adds evaluations. Needs ``../shared/data/nb201.csv.gz``; the
tests that run a bench skip with a clear reason without it.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from nasd.bench import nb201
from nasd.bench.nb201_protocol import RunTally, replay
from nasd.core.strategy import STRATEGIES

ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT.parent / "shared" / "data" / "nb201.csv.gz"

needs_table = pytest.mark.skipif(
    not DATA.is_file(), reason=f"reference table {DATA} is absent (see shared/data/README.md)"
)


@needs_table
def test_small_bench_runs_through_the_daemon_and_matches_the_protocol(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Random and REA, 3 runs each: JSON figures, each run's choice = the direct replay's,
    every experiment cancelled, one trial at a time, and no temporary folder left behind."""
    temp = tmp_path / "temp"
    temp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(temp))
    db = tmp_path / "bench.db"
    argv = ["--strategy", "random", "--strategy", "aging-evolution", "--runs", "3"]
    argv += ["--budget-seconds", "2000", "--data", str(DATA), "--db", str(db), "--json"]
    argv += ["--agents", "2"]

    assert nb201.main(argv) == 0

    out, err = capsys.readouterr()
    report = json.loads(out)
    assert report["bench"] == "nb201"
    assert report["dataset"] == "cifar10"
    assert report["budget_seconds"] == 2000.0
    assert report["runs"] == 3
    assert report["agents"] == 2
    assert list(report["strategies"]) == ["random", "aging-evolution"]
    from agents.trainers.nb201 import load_table

    rows = load_table(DATA).rows
    for name, figures in report["strategies"].items():
        assert set(figures) >= {"mean", "std", "runs", "mean_trials", "wall_s", "val200"}
        assert figures["runs"] == 3
        assert figures["budget_not_reached"] == 0
        expected = [replay(name, i, rows, "c10", 2000.0) for i in range(3)]
        assert figures["val200"] == [round(o.val200 or 0.0, 4) for o in expected]
        assert figures["mean_trials"] == pytest.approx(sum(o.trials for o in expected) / 3)
        assert 80.0 < figures["mean"] < 92.0
        assert f"nb201 {name}: 3/3 runs done" in err
    assert report["strategies"]["aging-evolution"]["params"] == {"population": 10, "sample": 3}

    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        statuses = dict(conn.execute("SELECT name, status FROM experiments"))
        assert statuses == {
            f"nb201-{s}-{i}": "cancelled" for s in ("random", "aging-evolution") for i in range(3)
        }
        # parallel = 1: each trial is proposed only after the previous one's result committed.
        trials = conn.execute(
            "SELECT t.experiment, t.trial_id, t.created_at, r.received_at FROM trials t"
            " LEFT JOIN results r ON r.job_id = t.job_id ORDER BY t.experiment, t.trial_id"
        ).fetchall()
    finally:
        conn.close()
    previous: dict[str, float | None] = {}
    for experiment, trial_id, created, received in trials:
        if trial_id > 0:
            assert previous[experiment] is not None, (experiment, trial_id)
            assert created >= previous[experiment], (experiment, trial_id)
        previous[experiment] = received
    assert list(temp.iterdir()) == []  # the temporary folder (spools) is gone
    assert (tmp_path / "bench.db.log").is_file()


@needs_table
def test_table_output_lists_every_strategy(capsys: pytest.CaptureFixture[str]) -> None:
    """Without ``--json``: one table row per strategy with mean ± std, runs and trials/run.

    ``--concurrent 1``: the second run is submitted only once the first is over.
    """
    argv = ["--strategy", "random", "--runs", "2", "--budget-seconds", "1000"]
    argv += ["--data", str(DATA), "--agents", "1", "--concurrent", "1"]
    assert nb201.main(argv) == 0
    out = capsys.readouterr().out.splitlines()
    header = next(line for line in out if line.startswith("strategy"))
    assert "val200 % (mean ± std)" in header
    assert "trials/run" in header
    row = next(line for line in out if line.startswith("random"))
    assert "±" in row
    assert " 2 " in row


@pytest.mark.parametrize("name", ["no-such-strategy", "reinforce-lstm"])
def test_unregistered_strategy_is_refused_with_one_line(
    name: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """A strategy that is not registered exits 2 with one line naming it."""
    assert name not in STRATEGIES
    argv = ["--strategy", "random", "--strategy", name, "--runs", "1", "--data", str(DATA)]
    assert nb201.main(argv) == nb201.EXIT_USAGE
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1
    assert f"unknown strategy {name!r}" in lines[0]
    assert captured.out == ""


def test_missing_table_is_refused_with_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """No table at ``--data``: exit 2, one line that names the path."""
    missing = tmp_path / "nb201.csv.gz"
    assert nb201.main(["--strategy", "random", "--data", str(missing)]) == nb201.EXIT_USAGE
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1
    assert str(missing) in lines[0]


def test_existing_db_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """``--db`` must be a new file: a bench never mixes with an earlier database."""
    db = tmp_path / "old.db"
    db.write_bytes(b"")
    argv = ["--strategy", "random", "--data", str(DATA), "--db", str(db)]
    if not DATA.is_file():
        argv[3] = str(Path(__file__))  # any file: the db check is what is tested
    assert nb201.main(argv) == nb201.EXIT_USAGE
    assert "--db" in capsys.readouterr().err


def test_the_crossing_evaluation_does_not_count() -> None:
    """The protocol's clock: an evaluation that takes it past the budget ends the run unseen."""
    tally = RunTally(100.0)
    assert not tally.add(0, {"val_acc": 0.5, "val200": 0.80, "sim_train_seconds": 40.0})
    assert not tally.add(1, {"val_acc": 0.7, "val200": 0.85, "sim_train_seconds": 40.0})
    assert tally.add(2, {"val_acc": 0.9, "val200": 0.95, "sim_train_seconds": 40.0})
    assert (tally.trials, tally.sim_seconds, tally.best_trial, tally.best_val200) == (
        2,
        80.0,
        1,
        0.85,
    )
    assert not tally.add(3, {"val_acc": 1.0, "val200": 1.0, "sim_train_seconds": 1.0})
    assert tally.best_trial == 1


def test_an_evaluation_ending_exactly_at_the_budget_counts_and_ends_the_run() -> None:
    """Within the budget means <= it; equal fitness keeps the first of the tied cells."""
    tally = RunTally(100.0)
    assert not tally.add(0, {"val_acc": 0.7, "val200": 0.85, "sim_train_seconds": 60.0})
    assert tally.add(1, {"val_acc": 0.7, "val200": 0.90, "sim_train_seconds": 40.0})
    assert (tally.trials, tally.best_trial, tally.over) == (2, 0, True)


def test_a_result_without_a_cost_is_not_counted() -> None:
    """A failed evaluation reports no metrics: it costs nothing and is never chosen."""
    tally = RunTally(100.0)
    assert not tally.add(0, {})
    assert (tally.trials, tally.sim_seconds, tally.best_trial) == (0, 0.0, None)


@needs_table
def test_ctrl_c_stops_everything_and_leaves_nothing(tmp_path: Path) -> None:
    """SIGINT mid-bench: exit 130 within seconds, and the temporary folder is gone."""
    temp = tmp_path / "temp"
    temp.mkdir()
    env = {**os.environ, "TMPDIR": str(temp), "PYTHONPATH": str(ROOT)}
    argv = [sys.executable, "-m", "nasd.bench.nb201", "--strategy", "random", "--runs", "20"]
    argv += ["--data", str(DATA), "--agents", "2"]
    proc = subprocess.Popen(
        argv, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        assert proc.stderr is not None
        first = proc.stderr.readline()  # the first progress line: the runs are being submitted
        assert first.startswith("nb201 random:"), first
        assert any(temp.iterdir()), "the bench works in a temporary folder under TMPDIR"
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == nb201.EXIT_INTERRUPTED, err
    assert "interrupted" in err
    assert list(temp.iterdir()) == []
