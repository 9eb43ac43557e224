"""The recurrent-cell example end to end at a tiny budget: ``nasd run`` on a copy of
``examples/mnist1d_rnn.toml`` (the ``rnn-cell`` space, real training of the searched cells on
MNIST-1D read as a sequence, through the embedded broker, the daemon and local agents).

The copy names the trainer by its import path (``agents.trainers.mnist1d_seq:train``), which
``nasd run`` offers to its agents, and trains 4 cells of 16 hidden units for 1 epoch.
"""

from __future__ import annotations

import json
import tomllib
from pathlib import Path

from tests.harness import ROOT, python_env, query
from tests.integration import procs

TRAINER = "agents.trainers.mnist1d_seq:train"


def tiny_copy(tmp_path: Path) -> Path:
    """The example with 4 evaluations of 1 epoch of a 16-unit cell, through the import path."""
    text = (ROOT / "examples" / "mnist1d_rnn.toml").read_text()
    example = tomllib.loads(text)
    assert example["space"]["kind"] == "rnn-cell" and example["task"]["trainer"] == "mnist1d-seq"
    text = text.replace("budget = 50", "budget = 4").replace("epochs = 10", "epochs = 1")
    text = text.replace("hidden = 64", "hidden = 16")
    text = text.replace('trainer = "mnist1d-seq"', f'trainer = "{TRAINER}"')
    assert tomllib.loads(text)["experiment"]["budget"] == 4
    path = tmp_path / "mnist1d_rnn.toml"
    path.write_text(text)
    return path


def test_the_rnn_example_searches_cells_end_to_end(tmp_path: Path) -> None:
    db = tmp_path / "rnn.db"
    run = procs.cli(
        "run",
        str(tiny_copy(tmp_path)),
        "--db",
        str(db),
        env=python_env(),
        cwd=tmp_path,
        timeout=300,
    )
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]
    trials = query(db, "SELECT genotype, status FROM trials WHERE experiment = 'mnist1d-rnn'")
    assert len(trials) == 4
    for genotype_json, _ in trials:
        genotype = json.loads(genotype_json)
        assert len(genotype["nodes"]) == 7 and set(genotype["cell_inject"]) == {
            "node",
            "combine",
            "activation",
        }
    rows = query(db, "SELECT metrics FROM results WHERE experiment = 'mnist1d-rnn'")
    assert rows, run.stdout[-2000:]
    for (metrics_json,) in rows:
        metrics = json.loads(metrics_json)
        for key in ("val_acc", "test_acc"):
            assert 0.0 <= metrics[key] <= 1.0, (key, metrics)
        # 4 leaves of 16 units: W (1x16 + bias) and U (16x16 + bias) each, and the 16x10 head
        assert metrics["params"] == 4 * (32 + 272) + 170
        assert metrics["flops"] == 40 * 4 * 16 * 17 + 160
        assert metrics["epochs"] == 1.0 and metrics["train_seconds"] > 0
    assert "architecture:" in run.stdout and "c_out@" in run.stdout
