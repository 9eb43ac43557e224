"""Issue 10, "the first hour of a new user": what a resubmission changed, the architecture legend
of ``nasd best``, the attach hint of ``nasd status``, ``status | head`` and the log format."""

from __future__ import annotations

import io
import json
import random
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import structlog

from nasd.cli.report import NOTATION_LEGENDS, best_summary, status_table, submit_line
from nasd.config import experiment_from_dict
from nasd.core.space import build_space
from nasd.engine import Inbound
from nasd.errors import ConfigError
from nasd.logs import configure
from nasd.store import open_writer, repo
from tests.unit.engine_harness import Harness, assigns, config, reply

CNN_SPACE = {
    "kind": "cnn",
    "input_shape": [1, 8, 8],
    "num_classes": 10,
    "min_layers": 3,
    "max_layers": 4,
}


@pytest.fixture
def h(tmp_path: Path) -> Harness:
    return Harness(tmp_path / "nasd.db")


def _submit(h: Harness, data: dict[str, Any]) -> dict[str, Any]:
    conf = experiment_from_dict(data)
    result: dict[str, Any] = h.writer.run_sync(lambda c: h.engine.submit(c, conf, h.now))
    return result


# -- 1. resubmission says what changed -------------------------------------------------------------


def test_resubmitting_says_what_changed_and_whether_it_reopened(h: Harness) -> None:
    assert _submit(h, config(budget=1))["created"] is True
    again = _submit(h, config(budget=1))
    assert (again["created"], again["changed"]) == (False, "unchanged")
    job = assigns(h.online("a", slots=1))[0]
    h.apply(Inbound("trial.result", "a", reply(job)))
    assert h.engine.experiments["exp"].status == "done"
    reopened = _submit(h, config(budget=3))
    assert reopened == {
        "experiment": "exp",
        "created": False,
        "status": "running",
        "changed": "budget 1 -> 3: reopened",
    }
    # A running search is extended, not reopened.
    extended = _submit(h, config(budget=5))
    assert (extended["changed"], extended["status"]) == ("budget 3 -> 5", "running")


def test_submit_prints_one_line_per_experiment_saying_what_happened() -> None:
    created = {"experiment": "e", "created": True, "status": "running"}
    assert submit_line(created) == "e: submitted (running)"
    same = {"experiment": "e", "created": False, "status": "done", "changed": "unchanged"}
    assert submit_line(same) == "e: already present, unchanged (done)"
    grown = {**same, "status": "running", "changed": "budget 40 -> 60: reopened"}
    assert submit_line(grown) == "e: budget 40 -> 60: reopened (running)"
    older_daemon = {"experiment": "e", "created": False, "status": "done"}
    assert submit_line(older_daemon) == "e: already present (done)"


# -- 2. the architecture notation has a legend ---------------------------------------------------


def _cnn_best() -> tuple[Any, dict[str, Any]]:
    space = build_space(CNN_SPACE)
    genotype = space.sample(random.Random(3))
    best = {
        "trial_id": 2,
        "metric": "val_acc",
        "value": 0.75,
        "genotype": genotype,
        "metrics": {"val_acc": 0.75},
        "checkpoint": None,
        "agent": "a",
    }
    return space, best


def test_best_summary_explains_the_cnn_notation_under_the_architecture() -> None:
    space, best = _cnn_best()
    lines = best_summary("exp", best, space).splitlines()
    assert lines[1] == f"architecture: {space.describe(best['genotype'])}"
    assert lines[1].startswith("architecture: k") and " f" in lines[1] and " s" in lines[1]
    assert lines[2] == f"  {NOTATION_LEGENDS['cnn']}"
    for word in ("k kernel", "f filters", "s stride", "pool", "+j", "layer 0"):
        assert word in lines[2]
    # A space without a compact notation gets no legend line; without a space, no architecture.
    nb201 = build_space({"kind": "nb201"})
    other = {**best, "genotype": {"ops": ["nor_conv_3x3"] * 6}}
    assert "legend" not in best_summary("exp", other, nb201)
    assert "legend" not in best_summary("exp", best)


def _cnn_database(path: Path) -> Path:
    """A real nasd database: one cnn experiment whose one trial succeeded."""
    _, best = _cnn_best()
    conf = {
        "experiment": {"budget": 2, "name": "exp"},
        "space": CNN_SPACE,
        "strategy": {"name": "random"},
        "task": {"trainer": "zero"},
    }
    conn = open_writer(path)
    conn.execute("BEGIN")
    repo.insert_experiment(conn, "exp", json.dumps(conf), "running", 1.0)
    row = repo.trial_row("exp:0", "exp", 0, best["genotype"], None, [], None, "pending", 1.0)
    repo.insert_trials(conn, [row])
    repo.assign_trial(conn, "exp:0", 1, "agent-a", 2.0)
    repo.insert_result(conn, "exp:0", "exp", 0, "agent-a", 1, {"val_acc": 0.75}, None, 2, 3, 3)
    conn.execute("COMMIT")
    conn.close()
    return path


def _nasd(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "nasd.cli", *args], capture_output=True, text=True, check=False
    )


def test_nasd_best_prints_the_compact_form_and_its_legend(tmp_path: Path) -> None:
    space, best = _cnn_best()
    done = _nasd("best", "exp", "--db", str(_cnn_database(tmp_path / "c.db")))
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0] == "exp: best is trial 0, val_acc = 0.7500"
    assert lines[1] == f"architecture: {space.describe(best['genotype'])}"
    assert lines[2] == f"  {NOTATION_LEGENDS['cnn']}"
    assert any(line.startswith("  params: ") for line in lines)  # filled in from the space


# -- 4. status: an attach hint with no agent online; `status | head` ends quietly ----------------


def test_status_with_no_agent_online_says_how_to_attach_one() -> None:
    data: dict[str, Any] = {"experiments": [], "agents": []}
    hint = "no agent online: attach one with `nasd-agent --broker URL --name NAME`"
    assert hint in status_table(data, now=0.0).splitlines()
    url = "mqtt://search-host:1883"
    assert f"`nasd-agent --broker {url} --name NAME`" in status_table(data, now=0.0, broker=url)
    offline = {"name": "a", "online": False, "busy": False, "slots": 1, "device": None, "jobs": []}
    assert hint in status_table({**data, "agents": [offline]}, now=0.0)
    online = {**offline, "online": True}
    assert "attach" not in status_table({**data, "agents": [online]}, now=0.0)


def test_nasd_status_from_a_database_without_agents_shows_the_hint(tmp_path: Path) -> None:
    done = _nasd("status", "--db", str(_cnn_database(tmp_path / "c.db")))
    assert done.returncode == 0, done.stderr
    assert "attach one with `nasd-agent --broker URL --name NAME`" in done.stdout


def test_status_piped_into_head_ends_quietly(tmp_path: Path) -> None:
    db = _cnn_database(tmp_path / "c.db")
    conn = open_writer(db)
    with conn:  # far more agents than one pipe buffer of output holds
        for i in range(3000):
            repo.upsert_agent(conn, f"agent-{i:05d}", {"device": "cpu"}, 1, True, 1.0)
    conn.close()
    status = subprocess.Popen(
        [sys.executable, "-m", "nasd.cli", "status", "--db", str(db)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert status.stdout is not None and status.stderr is not None
    head = subprocess.run(
        ["head", "-n", "2"], stdin=status.stdout, capture_output=True, timeout=60, check=False
    )
    status.stdout.close()
    assert status.wait(timeout=60) == 141
    assert status.stderr.read() == b""
    status.stderr.close()
    assert len(head.stdout.splitlines()) == 2


# -- 4. logs: people on a terminal, JSON for everything else ---------------------------------------


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_logs_are_json_off_a_terminal_and_readable_on_one(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("NO_COLOR", raising=False)
    pipe = io.StringIO()
    configure("info", stream=pipe)
    structlog.get_logger("t").info("thing.happened", key=7)
    record = json.loads(pipe.getvalue())
    assert (record["event"], record["key"], record["level"]) == ("thing.happened", 7, "info")

    terminal = _Terminal()
    configure("info", stream=terminal)
    structlog.get_logger("t").info("thing.happened", key=7)
    text = terminal.getvalue()
    assert "thing.happened" in text and "key" in text and "\x1b[" in text  # coloured
    with pytest.raises(json.JSONDecodeError):
        json.loads(text)

    monkeypatch.setenv("NO_COLOR", "1")
    plain = _Terminal()
    configure("info", stream=plain)
    structlog.get_logger("t").info("thing.happened", key=7)
    assert "thing.happened" in plain.getvalue() and "\x1b[" not in plain.getvalue()

    forced = _Terminal()
    configure("info", fmt="json", stream=forced)  # a service can insist on JSON anyway
    structlog.get_logger("t").info("thing.happened", key=7)
    assert json.loads(forced.getvalue())["key"] == 7
    with pytest.raises(ConfigError, match="log format"):
        configure("info", fmt="xml", stream=pipe)
