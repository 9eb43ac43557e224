"""Daemon settings: the ``[daemon]`` table of ``nasd.toml``, including SHADHO's class rules."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nasd.config.experiment import DEFAULT_BROKER, DEFAULT_CLIENT_ID, DEFAULT_DB, read_toml
from nasd.core.scheduler.classes import MODES as CLASS_MODES
from nasd.core.scheduler.classes import ClassRule, parse_class_rules
from nasd.errors import ConfigError

DEFAULT_REASSIGN_EVERY = 10


@dataclass(frozen=True, slots=True)
class DaemonSettings:
    """The ``[daemon]`` table of ``nasd.toml``: where the broker and the database are.

    ``experiments``, ``log_level`` and ``scheduling`` are read again on SIGHUP (``nasd serve``
    reloads them); ``log_level`` None leaves the level of the command line (``nasd --log-level``).
    """

    broker: str = DEFAULT_BROKER
    db: str = DEFAULT_DB
    client_id: str = DEFAULT_CLIENT_ID
    experiments: tuple[str, ...] = field(default=())
    log_level: str | None = None
    scheduling: SchedulingSettings = field(default_factory=lambda: SchedulingSettings())


@dataclass(frozen=True, slots=True)
class SchedulingSettings:
    """How SHADHO forms compute classes and how often it re-assigns models to them.

    ``[daemon] class_mode``: ``model`` (one class per device model) or ``speed`` (clusters of
    similar measured speed); ``[daemon.classes.<name>]``: match rules that name a class, tried
    in file order before the mode applies (:class:`nasd.core.scheduler.classes.ClassRule`);
    ``[daemon] reassign_every``: finished evaluations between two re-assignments.
    """

    classes: tuple[ClassRule, ...] = ()
    class_mode: str = "model"
    reassign_every: int = DEFAULT_REASSIGN_EVERY


def _scheduling(path: Path, table: Mapping[str, Any]) -> SchedulingSettings:
    mode = table.get("class_mode", "model")
    if mode not in CLASS_MODES:
        raise ConfigError(
            f"{path}: daemon.class_mode must be one of {', '.join(CLASS_MODES)}, not {mode!r}"
        )
    every = table.get("reassign_every", DEFAULT_REASSIGN_EVERY)
    if not isinstance(every, int) or isinstance(every, bool) or not 1 <= every <= 1_000_000:
        raise ConfigError(f"{path}: daemon.reassign_every must be an integer from 1 to 1000000")
    try:
        rules = parse_class_rules(table.get("classes", {}))
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from None
    return SchedulingSettings(rules, mode, every)


_DAEMON_KEYS = {
    "broker",
    "db",
    "client_id",
    "experiments",
    "log_level",
    "classes",
    "class_mode",
    "reassign_every",
}
LOG_LEVELS = ("debug", "info", "warning", "error")


def load_daemon_settings(path: str | Path) -> DaemonSettings:
    """Read ``[daemon]`` from ``path``; unknown keys and wrong types are ConfigErrors.

    ``experiments`` lists experiment files (relative to ``path``) to submit at start-up;
    submitting one that already exists with the same config is a no-op.
    """
    path = Path(path)
    data = read_toml(path)
    table = data.get("daemon")
    if not isinstance(table, dict):
        raise ConfigError(f"{path}: missing [daemon] table")
    unknown = sorted(set(table) - _DAEMON_KEYS)
    if unknown:
        raise ConfigError(
            f"{path}: unknown key daemon.{unknown[0]} (known: {', '.join(sorted(_DAEMON_KEYS))})"
        )
    for key in ("broker", "db", "client_id", "log_level"):
        if key in table and not isinstance(table[key], str):
            raise ConfigError(f"{path}: daemon.{key} must be a string")
    log_level = table.get("log_level")
    if log_level is not None and log_level not in LOG_LEVELS:
        raise ConfigError(
            f"{path}: daemon.log_level must be one of {', '.join(LOG_LEVELS)}, not {log_level!r}"
        )
    experiments = table.get("experiments", [])
    if not isinstance(experiments, list) or not all(isinstance(e, str) for e in experiments):
        raise ConfigError(f"{path}: daemon.experiments must be a list of file paths")
    db = table.get("db", DEFAULT_DB)
    return DaemonSettings(
        broker=table.get("broker", DEFAULT_BROKER),
        db=str((path.parent / db) if not Path(db).is_absolute() else db),
        client_id=table.get("client_id", DEFAULT_CLIENT_ID),
        experiments=tuple(str(path.parent / e) for e in experiments),
        log_level=log_level,
        scheduling=_scheduling(path, table),
    )
