"""Experiment configs and daemon settings: TOML in, validated frozen dataclasses out.

Every user mistake becomes a :class:`nasd.errors.ConfigError` whose message names the file and
the key, never a traceback. Three modules, one concern each: :mod:`nasd.config.experiment` (one
experiment), :mod:`nasd.config.models` (files with several ``[[model]]`` tables) and
:mod:`nasd.config.daemon` (``nasd.toml``).
"""

from nasd.config.daemon import (
    DEFAULT_REASSIGN_EVERY,
    LOG_LEVELS,
    DaemonSettings,
    SchedulingSettings,
    load_daemon_settings,
)
from nasd.config.experiment import (
    DEFAULT_BROKER,
    DEFAULT_CLIENT_ID,
    DEFAULT_DB,
    DEFAULT_LEASE_TTL_S,
    DEFAULT_MAX_ATTEMPTS,
    ExperimentConfig,
    experiment_from_dict,
    load_experiment,
    read_toml,
)
from nasd.config.models import load_experiments, split_budget

__all__ = [
    "DEFAULT_BROKER",
    "DEFAULT_CLIENT_ID",
    "DEFAULT_DB",
    "DEFAULT_LEASE_TTL_S",
    "DEFAULT_MAX_ATTEMPTS",
    "DEFAULT_REASSIGN_EVERY",
    "LOG_LEVELS",
    "DaemonSettings",
    "ExperimentConfig",
    "SchedulingSettings",
    "experiment_from_dict",
    "load_daemon_settings",
    "load_experiment",
    "load_experiments",
    "read_toml",
    "split_budget",
]
