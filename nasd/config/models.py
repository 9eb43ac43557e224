"""Multi-model experiment files: one file, several models sharing the agents (SHADHO).

An experiment file holds one model (top-level ``[space]`` and ``[strategy]``) or several
(``[[model]]`` tables, each with its own space, strategy, optional task overrides and budget
share). Each model becomes an ordinary experiment named ``<experiment>.<model>`` that carries
``group`` and ``model``, so the engine, the store and the strategies see nothing new:
:func:`load_experiments` reads either kind of file.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from fractions import Fraction
from pathlib import Path
from typing import Any

from nasd.config.experiment import (
    ExperimentConfig,
    _build,
    experiment_from_dict,
    read_toml,
)
from nasd.core.wire import EXPERIMENT_NAME_RE
from nasd.errors import ConfigError


def load_experiments(path: str | Path, *, budget: int | None = None) -> list[ExperimentConfig]:
    """Every experiment an experiment file defines: one, or one per ``[[model]]`` table.

    ``budget`` replaces the file's total budget (``nasd run --budget``); in a multi-model file
    the models share it by their ``share`` weights, as they share the file's own budget.
    """
    data = read_toml(path)
    data.pop("daemon", None)
    if "model" not in data:
        config = experiment_from_dict(data, source=str(path))
        return [config if budget is None else config.with_budget(budget)]
    return _models_from_dict(data, str(path), budget)


MAX_NAME_LENGTH = 64
"""Longest experiment name (a topic level and the prefix of every job id)."""

_NAME = re.compile(EXPERIMENT_NAME_RE)
_FILE_TABLES = ("experiment", "task", "model")
_MODEL_KEYS = ("name", "share", "space", "strategy", "task")


def _models_from_dict(
    data: Mapping[str, Any], source: str, budget: int | None
) -> list[ExperimentConfig]:
    """One experiment per ``[[model]]`` table of a multi-model file (see the module docstring)."""
    mixed = [key for key in ("space", "strategy") if key in data]
    if mixed:
        raise ConfigError(
            f"{source}: [{mixed[0]}] and [[model]] tables cannot be mixed: a file has either"
            " top-level [space] and [strategy] (one model) or [[model]] tables (several)"
        )
    unknown = sorted(set(data) - set(_FILE_TABLES))
    if unknown:
        raise ConfigError(
            f"{source}: unknown table {unknown[0]} (known: {', '.join(_FILE_TABLES)})"
        )
    models = data["model"]
    if not isinstance(models, list) or not models or not all(isinstance(m, dict) for m in models):
        raise ConfigError(f"{source}: model: expected one or more [[model]] tables")
    experiment = data.get("experiment")
    if not isinstance(experiment, dict):
        raise ConfigError(f"{source}: missing [experiment] table")
    for key in ("group", "model"):
        if key in experiment:
            raise ConfigError(f"{source}: experiment.{key}: set from the [[model]] tables only")
    group = _checked_name(experiment.get("name"), f"{source}: experiment.name")
    seed = experiment.get("seed", 0)
    if not _is_int(seed):
        raise ConfigError(f"{source}: experiment.seed: must be an integer, not {seed!r}")
    task = data.get("task", {})
    if not isinstance(task, dict):
        raise ConfigError(f"{source}: task: expected a table")
    names = _model_names(models, group, source)
    shares = [_share(model, index, source) for index, model in enumerate(models)]
    budgets = split_budget(_total_budget(experiment, len(models), source, budget), shares)
    configs = []
    for index, model in enumerate(models):
        unknown = sorted(set(model) - set(_MODEL_KEYS))
        if unknown:
            raise ConfigError(
                f"{source}: model[{index}].{unknown[0]}: unknown key"
                f" (known: {', '.join(_MODEL_KEYS)})"
            )
        member = {
            **experiment,
            "name": f"{group}.{names[index]}",
            "budget": budgets[index],
            "seed": seed + index,
            "group": group,
            "model": names[index],
        }
        tables = {key: _table(model, key, index, source) for key in ("space", "strategy")}
        merged = _merged_task(task, model.get("task", {}), index, source)
        built = {"experiment": member, **tables, "task": merged}
        configs.append(_build(built, source, f"model[{index}]."))
    return configs


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _checked_name(name: object, where: str) -> str:
    if not isinstance(name, str) or _NAME.fullmatch(name) is None:
        raise ConfigError(f"{where}: {name!r} must match {EXPERIMENT_NAME_RE}")
    return name


def _model_names(models: list[dict[str, Any]], group: str, source: str) -> list[str]:
    """Each model's name, checked: the pattern, unique, and ``<group>.<model>`` fits the limit."""
    names: list[str] = []
    for index, model in enumerate(models):
        where = f"{source}: model[{index}].name"
        if "name" not in model:
            raise ConfigError(f"{where}: required")
        name = _checked_name(model["name"], where)
        full = f"{group}.{name}"
        if len(full) > MAX_NAME_LENGTH:
            raise ConfigError(
                f"{where}: {full!r} has {len(full)} characters; the experiment and model names"
                f" together (with the dot) must fit in {MAX_NAME_LENGTH}"
            )
        if name in names:
            raise ConfigError(f"{where}: {name!r} is also the name of model[{names.index(name)}]")
        names.append(name)
    return names


def _share(model: Mapping[str, Any], index: int, source: str) -> float:
    share = model.get("share", 1)
    number = isinstance(share, int | float) and not isinstance(share, bool)
    if not number or not math.isfinite(share) or share <= 0:
        raise ConfigError(f"{source}: model[{index}].share: must be a number > 0, not {share!r}")
    return float(share) if isinstance(share, float) else int(share)


def _total_budget(
    experiment: Mapping[str, Any], models: int, source: str, override: int | None
) -> int:
    where = "--budget" if override is not None else "experiment.budget"
    total = override if override is not None else experiment.get("budget")
    if total is None:
        raise ConfigError(f"{source}: {where}: required")
    if not _is_int(total):
        raise ConfigError(f"{source}: {where}: must be an integer, not {total!r}")
    if total < models:
        raise ConfigError(
            f"{source}: {where}: {total} is less than the number of models ({models});"
            " each model needs at least one evaluation"
        )
    return int(total)


def _table(model: Mapping[str, Any], key: str, index: int, source: str) -> dict[str, Any]:
    if key not in model:
        raise ConfigError(f"{source}: model[{index}].{key}: required ([model.{key}] table)")
    table = model[key]
    if not isinstance(table, dict):
        raise ConfigError(f"{source}: model[{index}].{key}: expected a table")
    return dict(table)


def _merged_task(shared: Mapping[str, Any], own: object, index: int, source: str) -> dict[str, Any]:
    """``[model.task]`` over ``[task]``: its keys win; ``options`` are merged key by key."""
    if not isinstance(own, dict):
        raise ConfigError(f"{source}: model[{index}].task: expected a table")
    merged = {**shared, **own}
    shared_options, own_options = shared.get("options", {}), own.get("options", {})
    both_tables = isinstance(shared_options, dict) and isinstance(own_options, dict)
    if both_tables and (shared_options or own_options):
        merged["options"] = {**shared_options, **own_options}
    return merged


def split_budget(total: int, shares: Sequence[float]) -> list[int]:
    """Split ``total`` evaluations by ``shares`` (largest remainder); each gets at least one.

    Every model first gets the whole part of its exact quota; the evaluations left go one each to
    the largest fractional parts (ties: the earlier model). A model whose quota rounds to zero
    then takes one from the largest budget (ties: the earlier model). Needs
    ``total >= len(shares)`` and every share > 0; the budgets always sum to ``total``.
    """
    if total < len(shares) or not shares:
        raise ValueError(f"cannot split {total} evaluations over {len(shares)} models")
    weights = [Fraction(share) for share in shares]
    whole = sum(weights, Fraction(0))
    quotas = [total * weight / whole for weight in weights]
    budgets = [math.floor(quota) for quota in quotas]
    by_remainder = sorted(range(len(quotas)), key=lambda i: (budgets[i] - quotas[i], i))
    for index in by_remainder[: total - sum(budgets)]:
        budgets[index] += 1
    for index, budget in enumerate(budgets):
        if budget == 0:
            donor = max(range(len(budgets)), key=lambda j: (budgets[j], -j))
            budgets[donor] -= 1
            budgets[index] = 1
    return budgets
