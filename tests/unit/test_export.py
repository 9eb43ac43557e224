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
    assert (done["trial_id"], done["status"], json.loads(done["genotype"])) == (
        0,
        "succeeded",
        {"ops": [0]},
    )
    assert done["metrics"] == HOSTILE
    assert set(done) == {*EXPORT_COLUMNS, "metrics"}
    assert (pending["status"], pending["metrics"]) == ("pending", {})


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
