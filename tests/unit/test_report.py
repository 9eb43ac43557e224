"""nasd.cli.report: the layouts `nasd status|best|export` print, checked without a process."""

from __future__ import annotations

import csv
import io
import json

from nasd.cli.report import best_summary, status_table, write_export
from nasd.core.space import build_space
from nasd.store.queries import EXPORT_COLUMNS


def test_status_table_lists_experiments_then_agents() -> None:
    data = {
        "experiments": [
            {
                "name": "exp",
                "status": "running",
                "done": 3,
                "budget": 10,
                "running": 2,
                "pending": 5,
                "failed": 1,
                "cancelled": 2,
                "best": {"metric": "val_acc", "value": 0.91234, "trial_id": 7},
            },
            {
                "name": "new",
                "status": "pending",
                "done": 0,
                "budget": 5,
                "running": 0,
                "pending": 0,
                "failed": 0,
                "cancelled": 0,
                "best": None,
            },
        ],
        "agents": [
            {
                "name": "gpu-0",
                "online": True,
                "busy": True,
                "slots": 2,
                "device": "cuda:0",
                "jobs": ["exp:1", "exp:2"],
            },
            {
                "name": "cpu-0",
                "online": False,
                "busy": False,
                "slots": 1,
                "device": None,
                "jobs": [],
            },
            {
                "name": "cpu-1",
                "online": True,
                "busy": False,
                "draining": True,
                "slots": 1,
                "device": "cpu",
                "jobs": [],
            },
        ],
    }
    lines = status_table(data).splitlines()
    assert lines[0].startswith("EXPERIMENT")
    assert lines[1].split() == [
        "exp",
        "running",
        "3/10",
        "2",
        "5",
        "1",
        "2",
        "val_acc=0.9123",
        "(trial",
        "7)",
    ]
    assert lines[2].split()[-1] == "-"
    assert lines[3] == ""
    assert lines[4].startswith("AGENT")
    assert lines[5].split() == ["gpu-0", "yes", "yes", "2", "cuda:0", "exp:1,", "exp:2"]
    assert lines[6].split() == ["cpu-0", "no", "no", "1", "-", "-"]
    assert lines[7].split()[:6] == ["cpu-1", "yes", "no", "1", "cpu", "-"]
    assert "(draining:" in lines[7]


def test_status_table_says_why_an_experiment_waits_and_why_an_agent_is_quarantined() -> None:
    experiment = {
        "name": "exp",
        "status": "running",
        "done": 0,
        "budget": 5,
        "running": 0,
        "pending": 0,
        "failed": 0,
        "cancelled": 0,
        "best": None,
        "waiting": "no online agent offers trainer 'mnist1d'",
    }
    agent = {
        "name": "sink",
        "online": True,
        "busy": False,
        "slots": 4,
        "device": "cuda:0",
        "jobs": [],
        "strikes": 2,
        "quarantined_until": 1000.0 + 200,
    }
    data = {"experiments": [experiment], "agents": [agent]}
    lines = status_table(data, now=1000.0).splitlines()
    assert lines[2] == "  waiting: no online agent offers trainer 'mnist1d'"
    assert lines[-1].endswith("-  (quarantined 4 min: 2 leases expired in a row)")
    assert "quarantined" not in status_table(data, now=1200.0)
    assert "REFUSED" not in status_table(data, now=1000.0)
    refused = {
        "bad_token": {"count": 3, "last_source": "gpu-0", "last_detail": "exp:0 epoch 1: x"},
        "unknown_agent": {"count": 1, "last_source": "ghost", "last_detail": "ready"},
    }
    tail = status_table({**data, "security": refused}, now=1000.0).splitlines()[-3:]
    assert tail[0].startswith("REFUSED INPUT")
    assert tail[1].split() == ["bad_token", "3", "gpu-0", "exp:0", "epoch", "1:", "x"]
    assert tail[2].split() == ["unknown_agent", "1", "ghost", "ready"]
    one = {**agent, "strikes": 1, "quarantined_until": 1030.0}
    assert "(quarantined 1 min: 1 lease expired in a row)" in status_table(
        {"experiments": [], "agents": [one]}, now=1000.0
    )


def test_best_summary_has_metric_genotype_metrics_and_checkpoint() -> None:
    best = {
        "trial_id": 4,
        "metric": "val_acc",
        "value": 0.5,
        "genotype": {"b": 1, "a": [2]},
        "metrics": {"val_acc": 0.5, "params": 1200.0},
        "checkpoint": "ck/4.safetensors",
        "agent": "gpu-0",
    }
    text = best_summary("exp", best)
    assert text.splitlines() == [
        "exp: best is trial 4, val_acc = 0.5000",
        'genotype: {"a": [2], "b": 1}',
        "  params: 1,200",
        "  val_acc: 0.5000",
        "checkpoint: ck/4.safetensors (on agent gpu-0)",
    ]
    assert "checkpoint" not in best_summary("exp", {**best, "checkpoint": None})


def test_best_summary_with_the_space_describes_the_architecture_and_counts_parameters() -> None:
    space = build_space({"kind": "nb201"})
    genotype = {"ops": ["nor_conv_3x3"] * 6}
    best = {
        "trial_id": 0,
        "metric": "val_acc",
        "value": 0.9,
        "genotype": genotype,
        "metrics": {"val_acc": 0.9},
        "checkpoint": None,
        "agent": "a",
    }
    lines = best_summary("exp", best, space).splitlines()
    assert lines[1] == f"architecture: {space.describe(genotype)}"
    params = space.cost(genotype)["params"]
    assert f"  params: {int(params):,}" in lines


def test_export_writes_jsonl_and_csv_with_metric_columns_after_the_fixed_ones() -> None:
    base = dict.fromkeys(EXPORT_COLUMNS, "x")
    rows = [
        {**base, "metrics": {"val_acc": 0.9}},
        {**base, "metrics": {"test_acc": 0.8, "val_acc": 0.7, "status": 1.0}},
    ]
    out = io.StringIO()
    write_export(rows, out, "jsonl")
    assert [json.loads(line) for line in out.getvalue().splitlines()] == rows
    out = io.StringIO()
    write_export(rows, out, "csv")
    parsed = list(csv.DictReader(io.StringIO(out.getvalue())))
    header = out.getvalue().splitlines()[0].split(",")
    assert header == [*EXPORT_COLUMNS, "metric.status", "metric.test_acc", "metric.val_acc"]
    assert parsed[0]["metric.test_acc"] == "" and parsed[1]["metric.test_acc"] == "0.8"
    assert parsed[1]["status"] == "x"  # a metric named like a column never replaces it
