"""The checker itself: clean on an honest search, and it fails on each kind of damage.

The databases are real: an engine driven through its writer (``tests/unit/engine_harness.py``)
runs a small search to its end with the fault trainer's metric, then a test damages a copy the way
a bug would (a duplicated event, a lost result, a wrong metric, a result nobody asked for).
"""

from __future__ import annotations

import json
import shutil
import sqlite3
from pathlib import Path

import pytest

from agents.trainers.zero import score
from nasd.engine import Inbound
from nasd.store.repo import pack
from tests.faults.checker import REPORT_ENV, check
from tests.unit.engine_harness import Harness, assigns, config

BUDGET = 6


@pytest.fixture(scope="module")
def finished_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A database whose search ran to its end honestly: every metric is score(genotype)."""
    path = tmp_path_factory.mktemp("checker") / "clean.db"
    harness = Harness(path)
    harness.submit(config(budget=BUDGET))
    out = harness.online("a", slots=BUDGET)
    for _round in range(BUDGET):
        jobs = assigns(out)
        if not jobs:
            break
        replies = []
        for job in jobs:
            body = {
                "job_id": job["job_id"],
                "epoch": job["epoch"],
                "token": job["token"],
                "status": "ok",
                "metrics": {"val_acc": score(job["genotype"])},
                "error": None,
                "started_at": 1.0,
                "finished_at": 2.0,
                "checkpoint": None,
            }
            replies.append(Inbound("trial.result", "a", body))
        out = harness.apply(*replies, advance=1.0)
    harness.writer.close()
    assert harness.query("SELECT status FROM experiments") == [("done",)]
    return path


def damaged(source: Path, tmp_path: Path, *statements: str) -> Path:
    """A copy of ``source`` with ``statements`` applied."""
    path = tmp_path / "damaged.db"
    shutil.copy(source, path)
    with sqlite3.connect(path) as conn:
        for statement in statements:
            conn.execute(statement)
    return path


def succeeded_event(db: Path, trial_id: int) -> tuple[str, bytes]:
    with sqlite3.connect(db) as conn:
        rows = conn.execute(
            "SELECT kind, body FROM events WHERE kind = 'trial_succeeded'"
        ).fetchall()
    from nasd.store.repo import unpack

    for kind, body in rows:
        if unpack(body)["trial_id"] == trial_id:
            return str(kind), bytes(body)
    raise LookupError(trial_id)


def test_an_honest_search_is_clean(
    finished_db: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    report = check(finished_db, "exp")
    report.assert_clean()
    assert (report.planned, report.finished, report.budget) == (BUDGET, BUDGET, BUDGET)
    assert (report.lost, report.duplicated, report.unexpected, report.wrong_metric) == (0, 0, 0, 0)
    assert (report.failed, report.integrity, report.replay_ok, report.status) == (
        0,
        "ok",
        True,
        "done",
    )
    sink = tmp_path / "report.txt"
    monkeypatch.setenv(REPORT_ENV, str(sink))
    line = report.line("checker-self-test")
    assert "planned=6 finished=6 lost=0 duplicated=0 unexpected=0" in line
    assert sink.read_text() == line + "\n"


def test_a_duplicated_success_event_is_counted(finished_db: Path, tmp_path: Path) -> None:
    kind, body = succeeded_event(finished_db, 2)
    path = damaged(finished_db, tmp_path)
    with sqlite3.connect(path) as conn:
        conn.execute(
            "INSERT INTO events (experiment, kind, body, at) VALUES ('exp', ?, ?, 9999)",
            (kind, body),
        )
    report = check(path, "exp")
    assert (report.duplicated, report.finished) == (1, BUDGET - 1)
    assert not report.replay_ok  # the log now counts one success more than the tables
    with pytest.raises(AssertionError, match="1 duplicated"):
        report.assert_clean()


def test_a_lost_result_is_counted(finished_db: Path, tmp_path: Path) -> None:
    path = damaged(
        finished_db,
        tmp_path,
        "DELETE FROM results WHERE trial_id = 3",
        "UPDATE trials SET status = 'pending' WHERE trial_id = 3",
    )
    report = check(path, "exp")
    assert (report.lost, report.finished, report.duplicated) == (1, BUDGET - 1, 0)
    with pytest.raises(AssertionError, match=r"1 lost \(no result\): trials 3"):
        report.assert_clean()


def test_a_wrong_metric_is_counted(finished_db: Path, tmp_path: Path) -> None:
    with sqlite3.connect(finished_db) as conn:
        (metrics,) = conn.execute("SELECT metrics FROM results WHERE trial_id = 1").fetchone()
    forged = json.dumps({**json.loads(metrics), "val_acc": 0.999})
    path = damaged(finished_db, tmp_path)
    with sqlite3.connect(path) as conn:
        conn.execute("UPDATE results SET metrics = ? WHERE trial_id = 1", (forged,))
    report = check(path, "exp")
    assert (report.wrong_metric, report.lost, report.duplicated) == (1, 0, 0)
    with pytest.raises(AssertionError, match="1 wrong metric"):
        report.assert_clean()


def test_a_result_for_a_trial_never_planned_is_unexpected(
    finished_db: Path, tmp_path: Path
) -> None:
    path = damaged(
        finished_db,
        tmp_path,
        "INSERT INTO results (job_id, experiment, trial_id, agent, epoch, metrics, received_at)"
        " VALUES ('exp:99', 'exp', 99, 'mallory', 1, '{\"val_acc\": 1.0}', 9999)",
    )
    body = pack({"trial_id": 98, "genotype": {}, "metrics": {"val_acc": 1.0}})
    with sqlite3.connect(path) as conn:
        conn.execute(
            "INSERT INTO events (experiment, kind, body, at)"
            " VALUES ('exp', 'trial_succeeded', ?, 9999)",
            (body,),
        )
    report = check(path, "exp")
    assert report.unexpected == 2
    with pytest.raises(AssertionError, match="2 unexpected"):
        report.assert_clean()


def test_an_unfinished_search_and_a_missing_experiment_are_problems(
    finished_db: Path, tmp_path: Path
) -> None:
    path = damaged(finished_db, tmp_path, "UPDATE experiments SET status = 'running'")
    with pytest.raises(AssertionError, match="did not reach its end"):
        check(path, "exp").assert_clean()
    with pytest.raises(AssertionError, match="does not exist"):
        check(finished_db, "nope").assert_clean()
