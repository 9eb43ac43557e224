"""The fault suite's checker: did every planned evaluation finish exactly once, correctly?

After a scenario has hit the daemon, the broker or the agents, :func:`check` reads the database
(never the daemon's memory, never the broker) and counts, for one experiment:

- ``planned``: trials proposed (rows in ``trials``); equal to the budget once the search is done.
- ``finished``: planned trials finished *exactly once*: one ``results`` row and exactly one
  ``trial_succeeded`` event in the event log.
- ``lost``: planned trials without a result that did not fail for good either (work that vanished).
- ``duplicated``: trials with more than one ``trial_succeeded`` event (or result row).
- ``unexpected``: results or strategy events for trials that were never planned.
- ``wrong_metric``: trials whose stored ``val_acc`` (result row or logged event) is not
  ``agents.trainers.zero.score(genotype)``, the fault trainer's deterministic metric, or whose
  event and result disagree.
- ``failed``: trials that failed for good (their attempts ran out); a fault scenario expects none.

plus ``integrity`` (``PRAGMA integrity_check``) and ``replay_ok``: on a copy of the database,
:func:`nasd.engine.rebuild` gives the same finished/failed counts and the same best trial as the
tables, the event log on its own gives them too, and replaying the whole log into a fresh strategy
gives the same strategy state as the snapshot plus the events after it.

:meth:`Report.assert_clean` fails listing every problem found; :meth:`Report.line` is the one line
of counts each scenario prints (and appends to the file named by ``NASD_FAULT_REPORT``).
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import sqlite3
import tempfile
import time
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agents.trainers.zero import score
from nasd.config import experiment_from_dict
from nasd.core.events import STRATEGY_EVENT_KINDS, event_from_dict
from nasd.core.objective import BestSoFar
from nasd.engine.experiment import ExperimentRuntime
from nasd.store.repo import pack, unpack

__all__ = ["LINES", "REPORT_ENV", "Report", "check"]

REPORT_ENV = "NASD_FAULT_REPORT"
"""If set, :meth:`Report.line` also appends its line to this file (CI collects it)."""

LINES: list[str] = []
"""Every line :meth:`Report.line` printed in this process (the suite's summary shows them)."""

METRIC = "val_acc"
_MAX_LISTED = 8
"""Trial ids named per kind of problem in a failure message (the counts say how many)."""


@dataclass(slots=True)
class Report:
    """What :func:`check` found for one experiment; ``problems`` is empty when all is well."""

    experiment: str
    status: str | None = None
    budget: int = 0
    planned: int = 0
    finished: int = 0
    lost: int = 0
    duplicated: int = 0
    unexpected: int = 0
    wrong_metric: int = 0
    failed: int = 0
    integrity: str = "not checked"
    replay_ok: bool = False
    problems: list[str] = field(default_factory=list)

    def assert_clean(self) -> None:
        """AssertionError listing every problem, unless there are none."""
        if self.problems:
            listing = "\n".join(f"  - {problem}" for problem in self.problems)
            raise AssertionError(f"fault checker, experiment {self.experiment!r}:\n{listing}")

    def line(self, scenario: str) -> str:
        """One line of counts for ``scenario``; printed, and appended to ``$NASD_FAULT_REPORT``."""
        text = (
            f"fault-check {scenario}: status={self.status} budget={self.budget}"
            f" planned={self.planned} finished={self.finished} lost={self.lost}"
            f" duplicated={self.duplicated} unexpected={self.unexpected}"
            f" wrong_metric={self.wrong_metric} failed={self.failed}"
            f" integrity={self.integrity} replay={'ok' if self.replay_ok else 'MISMATCH'}"
            f" problems={len(self.problems)}"
        )
        print(text, flush=True)
        LINES.append(text)
        target = os.environ.get(REPORT_ENV)
        if target:
            with Path(target).open("a", encoding="utf-8") as handle:
                handle.write(text + "\n")
        return text


def _ids(ids: set[int] | list[int]) -> str:
    listed = sorted(ids)
    more = f" and {len(listed) - _MAX_LISTED} more" if len(listed) > _MAX_LISTED else ""
    return ", ".join(str(i) for i in listed[:_MAX_LISTED]) + more


def _same(a: float | None, b: float) -> bool:
    return a is not None and math.isclose(a, b, rel_tol=0.0, abs_tol=1e-12)


@dataclass(slots=True)
class _Tables:
    """The rows the checks look at, read once from a consistent copy."""

    config: dict[str, Any] | None
    status: str | None
    trials: dict[int, tuple[str, dict[str, Any], str]]  # trial_id -> (job_id, genotype, status)
    results: list[tuple[str, int, dict[str, float]]]  # (job_id, trial_id, metrics), rowid order
    events: list[tuple[int, str, dict[str, Any]]]  # (seq, kind, body) of strategy events
    open_leases: list[str]


def _read(conn: sqlite3.Connection, experiment: str) -> _Tables:
    row = conn.execute(
        "SELECT config, status FROM experiments WHERE name = ?", (experiment,)
    ).fetchone()
    trials = {
        int(trial_id): (str(job_id), json.loads(genotype), str(status))
        for job_id, trial_id, genotype, status in conn.execute(
            "SELECT job_id, trial_id, genotype, status FROM trials WHERE experiment = ?",
            (experiment,),
        )
    }
    results = [
        (str(job_id), int(trial_id), {str(k): float(v) for k, v in json.loads(metrics).items()})
        for job_id, trial_id, metrics in conn.execute(
            "SELECT job_id, trial_id, metrics FROM results WHERE experiment = ? ORDER BY rowid",
            (experiment,),
        )
    ]
    events = [
        (int(seq), str(kind), unpack(body))
        for seq, kind, body in conn.execute(
            "SELECT seq, kind, body FROM events WHERE experiment = ? ORDER BY seq", (experiment,)
        )
        if kind in STRATEGY_EVENT_KINDS
    ]
    open_leases = [
        str(job_id)
        for (job_id,) in conn.execute(
            "SELECT l.job_id FROM leases l JOIN trials t ON t.job_id = l.job_id"
            " WHERE t.experiment = ? AND l.status = 'active'",
            (experiment,),
        )
    ]
    return _Tables(
        config=None if row is None else json.loads(row[0]),
        status=None if row is None else str(row[1]),
        trials=trials,
        results=results,
        events=events,
        open_leases=open_leases,
    )


def check(db: Path, experiment: str) -> Report:
    """Count what happened to ``experiment``'s evaluations in the database at ``db``.

    Reads a private copy (SQLite's backup API over a read-only connection), so it can run while
    a daemon still writes, and so the replay check may rebuild an engine without touching ``db``.
    """
    report = Report(experiment)
    if not db.exists():
        report.problems.append(f"no database at {db}")
        return report
    with tempfile.TemporaryDirectory(prefix="nasd-check-") as scratch:
        copy = Path(scratch) / "copy.db"
        with contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=30)) as src:
            report.integrity = "; ".join(
                str(r[0]) for r in src.execute("PRAGMA integrity_check").fetchall()
            )
            with contextlib.closing(sqlite3.connect(copy)) as dst:
                src.backup(dst)
        if report.integrity != "ok":
            report.problems.append(f"integrity_check: {report.integrity}")
        with contextlib.closing(sqlite3.connect(copy)) as conn:
            tables = _read(conn, experiment)
            _count(report, tables)
            _check_replay(report, conn, tables)
    return report


def _count(report: Report, tables: _Tables) -> None:
    """Fill the counters and the problems from the tables (see the module docstring)."""
    problems = report.problems
    report.status = tables.status
    if tables.config is None:
        problems.append("the experiment does not exist")
        return
    report.budget = int(tables.config["experiment"]["budget"])
    planned = set(tables.trials)
    report.planned = len(planned)
    if tables.status != "done":
        problems.append(f"the search did not reach its end: status {tables.status!r}")
    if planned != set(range(report.budget)):
        problems.append(
            f"planned trials are not 0..{report.budget - 1}: {report.planned} planned"
            f", missing {_ids(set(range(report.budget)) - planned)}"
            f", beyond the budget {_ids(planned - set(range(report.budget)))}"
        )

    result_count: Counter[int] = Counter()
    result_metrics: dict[int, dict[str, float]] = {}
    unexpected: set[int] = set()
    wrong: set[int] = set()
    for job_id, trial_id, metrics in tables.results:
        result_count[trial_id] += 1
        result_metrics.setdefault(trial_id, metrics)
        if trial_id not in planned or tables.trials[trial_id][0] != job_id:
            unexpected.add(trial_id)
    succeeded: Counter[int] = Counter()
    failed_events: Counter[int] = Counter()
    event_metrics: dict[int, list[Mapping[str, Any]]] = {}
    for _seq, kind, body in tables.events:
        if kind == "slots_open":
            continue
        trial_id = int(body["trial_id"])
        if trial_id not in planned:
            unexpected.add(trial_id)
            continue
        if body.get("genotype") != tables.trials[trial_id][1]:
            wrong.add(trial_id)
        if kind == "trial_succeeded":
            succeeded[trial_id] += 1
            event_metrics.setdefault(trial_id, []).append(body["metrics"])
        else:
            failed_events[trial_id] += 1

    for trial_id in planned:
        expected = score(tables.trials[trial_id][1])
        stored = result_metrics.get(trial_id)
        if stored is not None and not _same(stored.get(METRIC), expected):
            wrong.add(trial_id)
        for logged in event_metrics.get(trial_id, []):
            if not _same(logged.get(METRIC), expected) or (
                stored is not None and dict(logged) != stored
            ):
                wrong.add(trial_id)

    failed = {t for t in planned if tables.trials[t][2] == "failed" or failed_events[t]}
    once = {t for t in planned if result_count[t] == 1 and succeeded[t] == 1}
    lost = {t for t in planned if result_count[t] == 0 and t not in failed}
    duplicated = {t for t in planned if succeeded[t] > 1 or result_count[t] > 1}
    unlogged = {t for t in planned if result_count[t] == 1 and succeeded[t] == 0}
    orphan_events = {t for t in planned if result_count[t] == 0 and succeeded[t] > 0}
    bad_status = {
        t for t in planned if (tables.trials[t][2] == "succeeded") != (result_count[t] > 0)
    }
    report.finished = len(once)
    report.lost = len(lost)
    report.duplicated = len(duplicated)
    report.unexpected = len(unexpected)
    report.wrong_metric = len(wrong)
    report.failed = len(failed)
    for label, ids in (
        ("lost (no result)", lost),
        ("duplicated (several trial_succeeded events)", duplicated),
        ("unexpected (results or events of trials never planned)", unexpected),
        ("wrong metric (val_acc != score(genotype), or event != result)", wrong),
        ("failed for good", failed),
        ("a result but no trial_succeeded event", unlogged),
        ("a trial_succeeded event but no result row", orphan_events),
        ("trial status disagrees with the results table", bad_status),
    ):
        if ids:
            problems.append(f"{len(ids)} {label}: trials {_ids(ids)}")
    if tables.status == "done" and tables.open_leases:
        problems.append(
            f"{len(tables.open_leases)} leases still active after the search ended:"
            f" {', '.join(tables.open_leases[:_MAX_LISTED])}"
        )


def _check_replay(report: Report, conn: sqlite3.Connection, tables: _Tables) -> None:
    """Rebuild the engine from the copy and compare it with the tables and the log."""
    if tables.config is None:
        return
    from nasd.engine.rebuild import rebuild  # the engine, only for this check

    mismatches: list[str] = []
    config = experiment_from_dict(tables.config, source="stored experiment")
    objective = ExperimentRuntime.create(config).strategy.objective
    from_results = BestSoFar(objective)
    for _job, trial_id, metrics in tables.results:
        from_results.offer(trial_id, metrics)
    from_log = BestSoFar(objective)
    log_succeeded = log_failed = 0
    fresh = ExperimentRuntime.create(config)  # the whole log, no snapshot
    for _seq, kind, body in tables.events:
        event = event_from_dict(kind, body)
        fresh.strategy.react(event)
        if kind == "trial_succeeded":
            log_succeeded += 1
            from_log.offer(int(body["trial_id"]), body["metrics"])
        elif kind == "trial_failed":
            log_failed += 1

    engine = rebuild(conn, time.time())
    runtime = engine.experiments[report.experiment]
    table_failed = sum(1 for _j, _g, status in tables.trials.values() if status == "failed")
    best_tables = from_results.best
    expected = {
        "finished": (len(tables.results), runtime.finished, log_succeeded),
        "failed": (table_failed, runtime.failed, log_failed),
        "best trial": (
            None if best_tables is None else best_tables.trial_id,
            None if runtime.best is None else runtime.best.trial_id,
            None if from_log.best is None else from_log.best.trial_id,
        ),
    }
    for what, (tables_value, rebuilt_value, log_value) in expected.items():
        if not tables_value == rebuilt_value == log_value:
            mismatches.append(
                f"{what}: tables {tables_value}, rebuilt engine {rebuilt_value},"
                f" event log {log_value}"
            )
    if pack(runtime.strategy.state_dict()) != pack(fresh.strategy.state_dict()):
        mismatches.append(
            "strategy state from the snapshot plus later events differs from a full replay"
        )
    report.replay_ok = not mismatches
    report.problems.extend(f"replay: {m}" for m in mismatches)
