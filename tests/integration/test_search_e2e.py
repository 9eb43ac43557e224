"""End to end: ``nasd serve`` + two ``nasd-agent`` processes train real CNNs on digits.

Runs against a real Mosquitto and against the embedded broker (the ``broker`` fixture).
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

from tests.integration import procs

DIGITS_SPACE = (
    'kind = "cnn"\ninput_shape = [1, 8, 8]\nnum_classes = 10\nmin_layers = 1\nmax_layers = 3\n'
    'kernels = [3, 5]\nfilters = [16, 32]\nstrides = [1]\npools = ["none", "max"]\n'
    'head = "flatten"'
)


def test_digits_search_finishes_with_30_results(broker: object, tmp_path: Path) -> None:
    url = broker.url  # type: ignore[attr-defined]
    experiment = procs.write_experiment(
        tmp_path / "digits.toml",
        "digits",
        30,
        trainer="digits",
        space=DIGITS_SPACE,
        strategy="aging-evolution",
        epochs=6,
    )
    settings = procs.write_settings(tmp_path, url, experiment)
    db = tmp_path / "nasd.db"
    daemon = procs.start_daemon(settings, tmp_path / "daemon.log")
    agents = [procs.start_agent(url, f"agent-{i}", tmp_path) for i in range(2)]
    logs = [tmp_path / "daemon.log", tmp_path / "agent-0.log", tmp_path / "agent-1.log"]
    try:
        procs.wait_until(
            lambda: procs.count_results(db, "digits") >= 30,
            300,
            "30 digits results",
            [daemon, *agents],
            logs,
        )
        procs.wait_until(
            lambda: procs.query(db, "SELECT status FROM experiments") == [("done",)],
            30,
            "the experiment to be done",
            logs=logs,
        )
    finally:
        for agent in agents:
            assert procs.stop(agent) == 0
        assert procs.stop(daemon) == 0
    assert procs.query(db, "SELECT COUNT(*), COUNT(DISTINCT trial_id) FROM results") == [(30, 30)]
    best = max(json.loads(m)["val_acc"] for (m,) in procs.query(db, "SELECT metrics FROM results"))
    assert best >= 0.9
    agents_used = {a for (a,) in procs.query(db, "SELECT DISTINCT agent FROM results")}
    assert agents_used == {"agent-0", "agent-1"}
    # Every result was acknowledged: nothing is left in the agents' spools.
    for i in range(2):
        spool = tmp_path / "spool" / f"agent-{i}" / "spool.db"
        assert procs.query(spool, "SELECT COUNT(*) FROM results") == [(0,)]

    status = procs.cli("status", "--db", str(db), "--json")
    assert status.returncode == 0, status.stderr
    summary = json.loads(status.stdout)["experiments"][0]
    assert (summary["name"], summary["status"], summary["done"]) == ("digits", "done", 30)
    assert {a["name"] for a in json.loads(status.stdout)["agents"]} == {"agent-0", "agent-1"}

    best_out = procs.cli("best", "digits", "--db", str(db), "--json")
    assert best_out.returncode == 0, best_out.stderr
    assert json.loads(best_out.stdout)["value"] == best

    exported = procs.cli("export", "digits", "--db", str(db), "--format", "csv")
    assert exported.returncode == 0, exported.stderr
    rows = list(csv.DictReader(io.StringIO(exported.stdout)))
    assert len(rows) == 30
    assert {
        "trial_id",
        "genotype",
        "metric.val_acc",
        "metric.test_acc",
        "metric.params",
        "status",
        "agent",
        "attempts",
        "started_at",
        "finished_at",
    } <= set(rows[0])
    assert json.loads(rows[0]["genotype"])["layers"]
    jsonl = procs.cli("export", "digits", "--db", str(db), "--format", "jsonl")
    assert len(jsonl.stdout.splitlines()) == 30


def test_cli_errors_are_one_clear_line(tmp_path: Path) -> None:
    missing = procs.cli("status", "--db", str(tmp_path / "nope.db"))
    assert missing.returncode == 2
    assert "no database" in missing.stderr and "Traceback" not in missing.stderr
    bad = tmp_path / "bad.toml"
    procs.write_experiment(bad, "x", 0, trainer="zero")
    run = procs.cli("run", str(bad))
    assert run.returncode == 2 and "budget" in run.stderr and "Traceback" not in run.stderr
    nobroker = procs.cli("submit", str(bad), "--broker", "mqtt://127.0.0.1:1")
    assert nobroker.returncode == 2 and "Traceback" not in nobroker.stderr
