"""Defects 10 and 11: metrics live in their own namespace in exports; a closed pipe is quiet."""

from __future__ import annotations

import csv
import io
import json
import subprocess
import sys
from pathlib import Path

import pytest

from nasd.cli.report import write_export
from nasd.store import open_reader, open_writer, queries, repo
from nasd.store.queries import EXPORT_COLUMNS

CONFIG = (
    '{"experiment": {"budget": 4, "name": "exp"}, "space": {"kind": "nb201"},'
    ' "strategy": {"name": "random", "metric": "loss", "mode": "min"}, "task": {"trainer": "zero"}}'
)
HOSTILE = {"trial_id": 999.0, "status": 7.0, "genotype": 1.5, "loss": 0.25}


def _database(path: Path, trials: int) -> Path:
    """A real nasd database: one experiment, ``trials`` trials, the first of which succeeded."""
    conn = open_writer(path)
    conn.execute("BEGIN")
    repo.insert_experiment(conn, "exp", CONFIG, "running", 1.0)
    repo.insert_trials(
        conn,
        [
            repo.trial_row(f"exp:{i}", "exp", i, {"ops": [i]}, None, [], None, "pending", 1.0)
            for i in range(trials)
        ],
    )
    repo.assign_trial(conn, "exp:0", 1, "agent-a", 2.0)
    repo.insert_result(conn, "exp:0", "exp", 0, "agent-a", 1, HOSTILE, None, 2.0, 3.0, 3.0)
    conn.execute("COMMIT")
    conn.close()
    return path


def _rows(db: Path) -> list[dict[str, object]]:
    conn = open_reader(db)
    try:
        return list(queries.export_rows(conn, "exp"))
    finally:
        conn.close()


def test_metric_names_never_replace_the_fixed_columns_in_csv(tmp_path: Path) -> None:
    rows = _rows(_database(tmp_path / "n.db", 2))
    out = io.StringIO()
    write_export(rows, out, "csv")
    header = out.getvalue().splitlines()[0].split(",")
    assert header == [
        *EXPORT_COLUMNS,
        "metric.genotype",
        "metric.loss",
        "metric.status",
        "metric.trial_id",
    ]
    done, pending = csv.DictReader(io.StringIO(out.getvalue()))
    assert (done["trial_id"], done["status"], json.loads(done["genotype"])) == (
        "0",
        "succeeded",
        {"ops": [0]},
    )
    assert done["genotype"] == '{"ops":[0]}'  # canonical JSON text: CSV cells are text
    assert (done["metric.trial_id"], done["metric.status"], done["metric.genotype"]) == (
        "999.0",
        "7.0",
        "1.5",
    )
    assert (pending["trial_id"], pending["status"], pending["metric.loss"]) == ("1", "pending", "")


def test_metric_names_never_replace_the_fixed_columns_in_jsonl(tmp_path: Path) -> None:
    rows = _rows(_database(tmp_path / "n.db", 2))
    out = io.StringIO()
    write_export(rows, out, "jsonl")
    done, pending = (json.loads(line) for line in out.getvalue().splitlines())
    # The genotype is a JSON object, not a string holding JSON.
    assert (done["trial_id"], done["status"], done["genotype"]) == (0, "succeeded", {"ops": [0]})
    assert done["metrics"] == HOSTILE
    assert set(done) == {*EXPORT_COLUMNS, "metrics"}
    assert (pending["status"], pending["metrics"]) == ("pending", {})


def test_export_has_integers_and_iso_8601_times_next_to_epoch_seconds(tmp_path: Path) -> None:
    """Issue 10: ints stay ints, and every time is given as epoch seconds and as ISO-8601 UTC."""
    done, pending = _rows(_database(tmp_path / "n.db", 2))
    for column in ("trial_id", "attempts"):
        assert type(done[column]) is int and type(pending[column]) is int
    assert done["parent_id"] is None
    assert (done["started_at"], done["started_at_iso"]) == (2.0, "1970-01-01T00:00:02.000Z")
    assert (done["finished_at"], done["finished_at_iso"]) == (3.0, "1970-01-01T00:00:03.000Z")
    assert (pending["started_at_iso"], pending["finished_at_iso"]) == (None, None)
    assert queries.iso_time(1796223399.5) == "2026-12-02T14:56:39.500Z"
    line = io.StringIO()
    write_export([done], line, "jsonl")
    assert '"trial_id": 0}' in line.getvalue() and '"attempts": 0,' in line.getvalue()


@pytest.mark.parametrize("fmt", ["csv", "jsonl"])
def test_export_into_a_reader_that_closes_early_ends_quietly(tmp_path: Path, fmt: str) -> None:
    """``nasd export ... | head -n 1``: no BrokenPipeError traceback, the SIGPIPE-like status."""
    db = _database(tmp_path / "big.db", 20_000)  # far more than one pipe buffer of output
    export = subprocess.Popen(
        [sys.executable, "-m", "nasd.cli", "export", "exp", "--db", str(db), "--format", fmt],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert export.stdout is not None and export.stderr is not None
    first = export.stdout.readline()
    export.stdout.close()  # what `head -n 1` does after its line
    status = export.wait(timeout=60)
    stderr = export.stderr.read().decode()
    export.stderr.close()
    assert first  # it did write before the pipe closed
    assert "Traceback" not in stderr and "BrokenPipe" not in stderr, stderr
    assert stderr == ""
    assert status == 141


def test_export_piped_into_head(tmp_path: Path) -> None:
    """The real ``head`` as the reader, connected by an OS pipe as a shell would."""
    db = _database(tmp_path / "big.db", 20_000)
    export = subprocess.Popen(
        [sys.executable, "-m", "nasd.cli", "export", "exp", "--db", str(db)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert export.stdout is not None and export.stderr is not None
    head = subprocess.run(
        ["head", "-n", "2"], stdin=export.stdout, capture_output=True, timeout=60, check=False
    )
    export.stdout.close()
    assert export.wait(timeout=60) == 141
    assert export.stderr.read() == b""
    export.stderr.close()
    assert head.returncode == 0
    assert len(head.stdout.splitlines()) == 2


def _member_config(model: str) -> str:
    return json.dumps(
        {
            "experiment": {"budget": 2, "name": f"grp.{model}", "group": "grp", "model": model},
            "space": {"kind": "nb201"},
            "strategy": {"name": "random", "metric": "loss", "mode": "min"},
            "task": {"trainer": "zero"},
        }
    )


def _group_database(path: Path) -> Path:
    """A real nasd database holding a two-model group and an unrelated experiment ``exp``.

    ``grp.a`` has two results (losses 0.5 and 0.25), ``grp.b`` one pending trial only.
    """
    conn = open_writer(path)
    conn.execute("BEGIN")
    repo.insert_experiment(conn, "exp", CONFIG, "running", 1.0)
    for model in ("a", "b"):
        repo.insert_experiment(conn, f"grp.{model}", _member_config(model), "running", 1.0)
    rows = [
        repo.trial_row(f"grp.a:{i}", "grp.a", i, {"ops": [i]}, None, [], None, "pending", 1.0)
        for i in range(2)
    ]
    rows.append(repo.trial_row("grp.b:0", "grp.b", 0, {"ops": [9]}, None, [], None, "pending", 1.0))
    repo.insert_trials(conn, rows)
    for trial, loss in ((0, 0.5), (1, 0.25)):
        repo.assign_trial(conn, f"grp.a:{trial}", 1, "agent-a", 2.0)
        repo.insert_result(
            conn, f"grp.a:{trial}", "grp.a", trial, "agent-a", 1, {"loss": loss}, None, 2, 3, 3
        )
    conn.execute("COMMIT")
    conn.close()
    return path


def _nasd(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "nasd.cli", *args], capture_output=True, text=True, check=False
    )


def test_export_of_a_group_has_every_models_rows_with_a_model_column(tmp_path: Path) -> None:
    db = str(_group_database(tmp_path / "g.db"))
    done = _nasd("export", "grp", "--db", db)
    assert done.returncode == 0, done.stderr
    rows = list(csv.DictReader(io.StringIO(done.stdout)))
    assert done.stdout.splitlines()[0].split(",") == [
        "model",
        "model.complexity",
        "model.priority",
        "model.classes",
        *EXPORT_COLUMNS,
        "metric.loss",
    ]
    assert [(r["model"], r["trial_id"], r["status"], r["metric.loss"]) for r in rows] == [
        ("a", "0", "succeeded", "0.5"),
        ("a", "1", "succeeded", "0.25"),
        ("b", "0", "pending", ""),
    ]
    lines = _nasd("export", "grp", "--db", db, "--format", "jsonl").stdout.splitlines()
    assert [(r["model"], r["trial_id"]) for r in map(json.loads, lines)] == [
        ("a", 0),
        ("a", 1),
        ("b", 0),
    ]
    # A member is still an experiment of its own, exported as before.
    member = _nasd("export", "grp.a", "--db", db).stdout.splitlines()
    assert member[0].split(",") == [*EXPORT_COLUMNS, "metric.loss"] and len(member) == 3


def test_best_of_a_group_shows_each_models_best(tmp_path: Path) -> None:
    db = str(_group_database(tmp_path / "g.db"))
    done = _nasd("best", "grp", "--db", db)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("grp: 2 models\n")
    assert "grp.a: best is trial 1, loss = 0.2500" in done.stdout
    assert "grp.b: no finished evaluation yet" in done.stdout
    data = json.loads(_nasd("best", "grp", "--db", db, "--json").stdout)
    assert data["group"] == "grp"
    assert [(m["experiment"], m["model"]) for m in data["models"]] == [
        ("grp.a", "a"),
        ("grp.b", "b"),
    ]
    assert data["models"][0]["best"]["trial_id"] == 1 and data["models"][1]["best"] is None
    unknown = _nasd("best", "grp.c", "--db", db)
    assert unknown.returncode == 2
    assert "no experiment or model group named 'grp.c'" in unknown.stderr
