"""The engine's SHADHO state: agents' compute classes and each model's classes.

The heuristics are pure (:mod:`nasd.core.scheduler`); this is where their inputs are gathered
from the live state and their outcome kept between scheduling passes. Classes are recomputed
from the online agents' profiles on every pass (cheap, and a class appears or disappears as soon
as its first agent is born or its last goes offline); the model-to-class assignment is recomputed
every ``reassign_every`` finished evaluations (:class:`nasd.config.SchedulingSettings`) and
whenever the set of classes or of active models changes. All of it is derived from the
experiments' results and the agents' births, so a restarted daemon rebuilds the same state
(:mod:`nasd.engine.rebuild` replays results into the experiments' loss ranges).

Each time the assignment changes, a summary is stored in ``meta`` (key ``scheduling``) so that
``nasd status`` run against the database file shows the classes too.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import structlog

from nasd.config import SchedulingSettings
from nasd.core.scheduler import ModelView, assign_models
from nasd.core.scheduler.classes import class_speeds, group_agents
from nasd.engine.experiment import ExperimentRuntime
from nasd.engine.records import AgentRecord
from nasd.store import repo

log = structlog.get_logger("nasd.engine.placement")


class Placement:
    """Compute classes and the model-to-class assignment (module docstring)."""

    def __init__(self, settings: SchedulingSettings | None = None) -> None:
        self.settings = settings or SchedulingSettings()
        self._agent_class: dict[str, str] = {}
        self._speeds: dict[str, float] = {}
        self._assignment: dict[str, tuple[str, ...]] = {}
        self._models: set[str] = set()
        self._finished_since = 0
        self._stale = True

    def configure(self, settings: SchedulingSettings) -> None:
        """New class rules or settings (start-up, SIGHUP): classes are formed again."""
        if settings != self.settings:
            self.settings = settings
            self._stale = True

    def note_finished(self) -> None:
        """One more evaluation finished (its loss is already in its experiment)."""
        self._finished_since += 1

    def klass(self, agent: str) -> str:
        """The compute class of an online agent ('' if it has none yet)."""
        return self._agent_class.get(agent, "")

    def class_speed(self, klass: str) -> float:
        """A class's speed: its agents' median (0 for a class unknown)."""
        return self._speeds.get(klass, 0.0)

    def classes_of(self, model: str) -> tuple[str, ...]:
        """The classes assigned to ``model`` (an experiment), fastest first."""
        return self._assignment.get(model, ())

    def refresh(
        self,
        conn: sqlite3.Connection,
        agents: Iterable[AgentRecord],
        models: Sequence[ExperimentRuntime],
        active: Callable[[ExperimentRuntime], bool],
    ) -> None:
        """Re-form the classes; re-assign the ``active`` models when due (module docstring).

        Every model is in the stored summary (its complexity and priority stay worth showing
        once it is done); only active ones are given classes.
        """
        profiles = {a.name: a.profile for a in agents if a.online}
        classes = group_agents(profiles, self.settings.classes, self.settings.class_mode)
        changed = set(classes.values()) != set(self._agent_class.values())
        moved = classes != self._agent_class
        self._agent_class = classes
        self._speeds = class_speeds(classes, profiles)
        everyone = [ModelView(m.name, m.complexity, m.priority) for m in models]
        views = [v for v, m in zip(everyone, models, strict=True) if active(m)]
        names = {v.name for v in views}
        changed = changed or names != self._models
        self._models = names
        if changed or self._stale or self._finished_since >= self.settings.reassign_every:
            assignment = assign_models(views, self._speeds)
            self._finished_since = 0
            self._stale = False
            if assignment != self._assignment or changed:
                self._assignment = assignment
                log.info(
                    "scheduling.assigned",
                    classes={c: round(s / 1e9, 3) for c, s in self._speeds.items()},
                    models={m: list(c) for m, c in assignment.items()},
                )
            moved = True
        if moved:
            self._store(conn, everyone)

    def _store(self, conn: sqlite3.Connection, views: Sequence[ModelView]) -> None:
        repo.set_meta(conn, "scheduling", json.dumps(self.summary(views), sort_keys=True))

    def summary(self, views: Sequence[ModelView]) -> dict[str, Any]:
        """Classes (speed, agents) and models (complexity, priority, classes), JSON-able."""
        members: dict[str, list[str]] = {}
        for agent, name in sorted(self._agent_class.items()):
            members.setdefault(name, []).append(agent)
        return {
            "classes": [
                {"name": name, "speed": self._speeds.get(name, 0.0), "agents": members[name]}
                for name in sorted(members, key=lambda c: (-self._speeds.get(c, 0.0), c))
            ],
            "models": {
                v.name: {
                    "complexity": v.complexity,
                    "priority": v.priority,
                    "classes": list(self._assignment.get(v.name, ())),
                }
                for v in views
            },
        }
