"""``nasd best`` and ``nasd export``: the results of one experiment, or of every model of a
multi-model experiment (a *group*), read from the database file."""

from __future__ import annotations

import argparse
import json
import sqlite3
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from nasd.cli.options import db_path
from nasd.errors import ConfigError

if TYPE_CHECKING:
    from nasd.core.space import SearchSpace


def _open(args: argparse.Namespace) -> sqlite3.Connection:
    from nasd.store import open_reader  # lazily: `nasd --help` must not load the store

    return open_reader(db_path(args))


def members_of(conn: sqlite3.Connection, name: str, db: Path) -> dict[str, str | None]:
    """What ``name`` stands for: ``{experiment: None}`` for an experiment, else the experiments
    of the group ``name`` (the models of a multi-model file) as ``{experiment: model}``."""
    from nasd.store import queries

    if name in queries.experiment_names(conn):
        return {name: None}
    members: dict[str, str | None] = dict(queries.group_members(conn, name))
    if not members:
        raise ConfigError(f"no experiment or model group named {name!r} in {db}")
    return members


def cmd_best(args: argparse.Namespace) -> int:
    from nasd.cli import report
    from nasd.store import queries

    conn = _open(args)
    try:
        members = members_of(conn, args.name, db_path(args))
        bests = {experiment: queries.best_trial(conn, experiment) for experiment in members}
        spaces = {experiment: space_of(conn, experiment) for experiment in members}
        # A group's models as the scheduler sees them, where the database keeps that view.
        grouped = members != {args.name: None}
        scheduling = queries.status(conn).get("scheduling") if grouped else None
    finally:
        conn.close()
    if grouped:
        return _print_group_best(args, members, bests, scheduling, spaces)
    best = bests[args.name]
    if best is None:
        raise ConfigError(f"experiment {args.name!r} has no finished evaluation yet")
    if args.json:
        print(json.dumps(best, indent=2, sort_keys=True))
    else:
        print(report.best_summary(args.name, best, spaces[args.name]))
    return 0


def space_of(conn: sqlite3.Connection, experiment: str) -> SearchSpace | None:
    """The search space of ``experiment`` as its stored config describes it, so that ``nasd best``
    can print the compact architecture form (and its legend); None where it cannot be built
    (a space kind this installation lacks): the genotype is still printed."""
    from nasd.core.space import build_space

    row = conn.execute("SELECT config FROM experiments WHERE name = ?", (experiment,)).fetchone()
    if row is None:
        return None
    try:
        return build_space(json.loads(row[0])["space"])
    except (ConfigError, KeyError, TypeError, ValueError):
        return None


def _print_group_best(
    args: argparse.Namespace,
    members: dict[str, str | None],
    bests: dict[str, dict[str, Any] | None],
    scheduling: Any,
    spaces: dict[str, SearchSpace | None],
) -> int:
    """``nasd best GROUP``: each model's best, with its complexity, priority and classes."""
    from nasd.cli import report

    if all(best is None for best in bests.values()):
        raise ConfigError(f"no model of {args.name!r} has a finished evaluation yet")
    models = (scheduling.get("models") or {}) if isinstance(scheduling, dict) else {}
    if args.json:
        group = [
            {
                "experiment": experiment,
                "model": model,
                "best": bests[experiment],
                "scheduling": models.get(experiment),
            }
            for experiment, model in members.items()
        ]
        print(json.dumps({"group": args.name, "models": group}, indent=2, sort_keys=True))
    else:
        print(report.group_best_summary(args.name, bests, models, spaces))
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from nasd.cli import report
    from nasd.store import queries

    conn = _open(args)
    try:
        members = members_of(conn, args.name, db_path(args))
        if members == {args.name: None}:
            rows = list(queries.export_rows(conn, args.name))
        else:  # a group: every model's rows, saying which model and how SHADHO saw it
            scheduling = queries.scheduling_summary(conn, []) or {}
            seen = scheduling.get("models", {})
            rows = [
                {
                    "model": model,
                    "model.complexity": seen.get(experiment, {}).get("complexity"),
                    "model.priority": seen.get(experiment, {}).get("priority"),
                    "model.classes": ",".join(seen.get(experiment, {}).get("classes", [])),
                    **row,
                }
                for experiment, model in members.items()
                for row in queries.export_rows(conn, experiment)
            ]
    finally:
        conn.close()
    out = args.output.open("w", newline="") if args.output else sys.stdout
    leading = (
        ()
        if members == {args.name: None}
        else ("model", "model.complexity", "model.priority", "model.classes")
    )
    try:
        report.write_export(rows, out, args.format, leading=leading)
    finally:
        if args.output:
            out.close()
    return 0
