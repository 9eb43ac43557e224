"""Experiment configs and daemon settings: TOML in, validated frozen dataclasses out.

Every user mistake becomes a :class:`nasd.errors.ConfigError` whose message names the file and the
key, never a traceback. An experiment config is checked three times over: against
``schemas/v1/experiment.json``, by building its search space, and by building its strategy.
"""

from __future__ import annotations

import json
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nasd.core.space import build_space
from nasd.core.strategy import build_strategy
from nasd.core.wire import validate_experiment_config
from nasd.errors import ConfigError, NasdError

DEFAULT_MAX_ATTEMPTS = 3
DEFAULT_LEASE_TTL_S = 60.0
DEFAULT_BROKER = "mqtt://127.0.0.1:1883"
DEFAULT_DB = "nasd.db"
DEFAULT_CLIENT_ID = "nasd-daemon"


@dataclass(frozen=True, slots=True)
class ExperimentConfig:
    """One search: what to search (space), how (strategy), on what task, for how many trials."""

    name: str
    budget: int
    space: dict[str, Any]
    strategy: dict[str, Any]
    task: dict[str, Any]
    seed: int = 0
    max_attempts: int = DEFAULT_MAX_ATTEMPTS
    lease_ttl_s: float = DEFAULT_LEASE_TTL_S

    @property
    def strategy_name(self) -> str:
        """The registry name of the strategy (``random``, ``aging-evolution``, ...)."""
        return str(self.strategy["name"])

    @property
    def strategy_params(self) -> dict[str, Any]:
        """The strategy's own parameters (everything in ``[strategy]`` but ``name``)."""
        return {k: v for k, v in self.strategy.items() if k != "name"}

    @property
    def trainer(self) -> str:
        """The trainer the agents run (``mnist1d``, ``digits``, ``nb201``, or ``module:fn``)."""
        return str(self.task["trainer"])

    @property
    def epochs(self) -> int | None:
        """The default per-trial epoch budget, if the task sets one."""
        value = self.task.get("epochs")
        return int(value) if value is not None else None

    def to_dict(self) -> dict[str, Any]:
        """The config as the nested mapping it was read from (for the database and the wire)."""
        return {
            "experiment": {
                "name": self.name,
                "budget": self.budget,
                "seed": self.seed,
                "max_attempts": self.max_attempts,
                "lease_ttl_s": self.lease_ttl_s,
            },
            "space": dict(self.space),
            "strategy": dict(self.strategy),
            "task": dict(self.task),
        }

    def to_json(self) -> str:
        """Canonical JSON of :meth:`to_dict`; equal configs give equal text."""
        return json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))

    def with_budget(self, budget: int) -> ExperimentConfig:
        """A copy with another trial budget (``nasd run --budget``)."""
        data = self.to_dict()
        data["experiment"]["budget"] = budget
        return experiment_from_dict(data, source="--budget")


def experiment_from_dict(data: Mapping[str, Any], *, source: str = "config") -> ExperimentConfig:
    """Validate a parsed experiment config and build it; ConfigError names ``source``."""
    try:
        validate_experiment_config(data)
    except ConfigError as exc:
        raise ConfigError(f"{source}: {exc}") from None
    exp = data["experiment"]
    config = ExperimentConfig(
        name=str(exp["name"]),
        budget=int(exp["budget"]),
        seed=int(exp.get("seed", 0)),
        max_attempts=int(exp.get("max_attempts", DEFAULT_MAX_ATTEMPTS)),
        lease_ttl_s=float(exp.get("lease_ttl_s", DEFAULT_LEASE_TTL_S)),
        space=dict(data["space"]),
        strategy=dict(data["strategy"]),
        task={**data["task"], "options": dict(data["task"].get("options", {}))},
    )
    try:
        space = build_space(config.space)
        build_strategy(config.strategy_name, space, config.seed, config.strategy_params)
    except ConfigError as exc:
        raise ConfigError(f"{source}: {exc}") from None
    except NasdError as exc:  # pragma: no cover - defensive: any deliberate error is a config one
        raise ConfigError(f"{source}: {exc}") from None
    return config


def read_toml(path: str | Path) -> dict[str, Any]:
    """Parse a TOML file; a missing file or a syntax error becomes a ConfigError."""
    path = Path(path)
    try:
        with path.open("rb") as handle:
            return tomllib.load(handle)
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such file") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc}") from None


def load_experiment(path: str | Path) -> ExperimentConfig:
    """Read and validate an experiment file (``examples/mnist1d.toml``)."""
    data = read_toml(path)
    data.pop("daemon", None)  # an experiment file may carry daemon settings for `nasd run`
    return experiment_from_dict(data, source=str(path))


@dataclass(frozen=True, slots=True)
class DaemonSettings:
    """The ``[daemon]`` table of ``nasd.toml``: where the broker and the database are.

    ``experiments`` and ``log_level`` are read again on SIGHUP (``nasd serve`` reloads them);
    ``log_level`` None leaves the level of the command line (``nasd --log-level``).
    """

    broker: str = DEFAULT_BROKER
    db: str = DEFAULT_DB
    client_id: str = DEFAULT_CLIENT_ID
    experiments: tuple[str, ...] = field(default=())
    log_level: str | None = None


_DAEMON_KEYS = {"broker", "db", "client_id", "experiments", "log_level"}
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
    )
