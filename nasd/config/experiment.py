"""Experiment configs: an experiment file's TOML in, a validated frozen dataclass out.

Every user mistake becomes a :class:`nasd.errors.ConfigError` whose message names the file and the
key, never a traceback. An experiment config is checked three times over: against
``schemas/v1/experiment.json``, by building its search space, and by building its strategy.
"""

from __future__ import annotations

import json
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
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
    group: str | None = None
    """The experiment file's own name when this is one model of a multi-model file."""
    model: str | None = None
    """This model's name within its group (``name`` is ``<group>.<model>``)."""
    parallel: int | None = None
    """At most this many of its trials pending or running at once (None: as many as agents
    take). 1 reproduces a sequential search protocol, e.g. NAS-Bench-201's."""

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
        experiment: dict[str, Any] = {
            "name": self.name,
            "budget": self.budget,
            "seed": self.seed,
            "max_attempts": self.max_attempts,
            "lease_ttl_s": self.lease_ttl_s,
        }
        # Only when set, so that a single-model config keeps the JSON it always had (the stored
        # config of an existing experiment must compare equal on resubmission).
        if self.group is not None:
            experiment["group"] = self.group
        if self.parallel is not None:
            experiment["parallel"] = self.parallel
        if self.model is not None:
            experiment["model"] = self.model
        return {
            "experiment": experiment,
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
    return _build(data, source, "")


def _build(data: Mapping[str, Any], source: str, prefix: str) -> ExperimentConfig:
    """:func:`experiment_from_dict`; ``prefix`` (``model[1].``) locates space/strategy/task keys."""
    try:
        validate_experiment_config(data)
    except ConfigError as exc:
        raise _located(source, prefix, exc) from None
    exp = data["experiment"]
    config = ExperimentConfig(
        name=str(exp["name"]),
        budget=int(exp["budget"]),
        seed=int(exp.get("seed", 0)),
        max_attempts=int(exp.get("max_attempts", DEFAULT_MAX_ATTEMPTS)),
        lease_ttl_s=float(exp.get("lease_ttl_s", DEFAULT_LEASE_TTL_S)),
        group=None if exp.get("group") is None else str(exp["group"]),
        model=None if exp.get("model") is None else str(exp["model"]),
        parallel=None if exp.get("parallel") is None else int(exp["parallel"]),
        space=dict(data["space"]),
        strategy=dict(data["strategy"]),
        task={**data["task"], "options": dict(data["task"].get("options", {}))},
    )
    try:
        space = build_space(config.space)
        build_strategy(config.strategy_name, space, config.seed, config.strategy_params)
    except NasdError as exc:  # any deliberate error here is a config one
        raise _located(source, prefix, exc) from None
    return config


_MODEL_TABLES = ("space", "strategy", "task")


def _located(source: str, prefix: str, exc: Exception) -> ConfigError:
    """``source: model[1].space.kind: ...`` for an error about a model's own tables."""
    text = str(exc)
    if prefix and text.split(":", 1)[0].split(".", 1)[0] in _MODEL_TABLES:
        return ConfigError(f"{source}: {prefix}{text}")
    if prefix:
        return ConfigError(f"{source}: {prefix.rstrip('.')}: {text}")
    return ConfigError(f"{source}: {text}")


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
    """Read and validate a single-model experiment file (``examples/mnist1d.toml``).

    A file with ``[[model]]`` tables is refused: :func:`load_experiments` reads every kind.
    """
    data = read_toml(path)
    data.pop("daemon", None)  # an experiment file may carry daemon settings for `nasd run`
    if "model" in data:
        raise ConfigError(
            f"{path}: has [[model]] tables (a multi-model experiment):"
            " read it with load_experiments"
        )
    return experiment_from_dict(data, source=str(path))
