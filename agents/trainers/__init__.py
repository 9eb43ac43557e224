"""Trainers: the functions that turn a genotype into metrics, found by name.

:func:`load_trainer` resolves a task's ``trainer`` name in this order:

1. a built-in: ``mnist1d`` and ``digits`` (CNNs trained with PyTorch), ``nb201`` (a tabular
   NAS-Bench-201 lookup, no training) and ``zero`` (instant, for throughput benchmarks);
2. an entry point in the ``nasd.trainers`` group, so a third-party package can add trainers;
3. a ``package.module:function`` import path.

Built-in modules are imported only when asked for, so ``import agents.trainers`` stays cheap and
the agent starts fast. See :mod:`agents.trainers._base` for the interface a trainer implements.
"""

from __future__ import annotations

import importlib
from importlib.metadata import entry_points

from agents.trainers._base import (
    TrainContext,
    TrainFn,
    TrainingStopped,
    TrainRequest,
    TrainResult,
)
from nasd.errors import ConfigError

__all__ = [
    "BUILTIN_TRAINERS",
    "TrainContext",
    "TrainFn",
    "TrainRequest",
    "TrainResult",
    "TrainingStopped",
    "UnknownTrainer",
    "load_trainer",
]

ENTRY_POINT_GROUP = "nasd.trainers"

BUILTIN_TRAINERS: dict[str, str] = {
    "mnist1d": "agents.trainers.mnist1d:train",
    "digits": "agents.trainers.digits:train",
    "nb201": "agents.trainers.nb201:train",
    "zero": "agents.trainers.zero:train",
}
"""Built-in trainer names and the import path of each one's ``train`` function."""


class UnknownTrainer(ConfigError, ValueError):
    """No trainer answers to a name, or what the name points at is not a callable trainer."""


def _import_path(path: str, name: str) -> TrainFn:
    """The callable at ``module:attribute``; :class:`UnknownTrainer` when it is not there."""
    module_name, _, attribute = path.partition(":")
    if not module_name or not attribute:
        raise UnknownTrainer(f"trainer {name!r}: expected 'package.module:function', got {path!r}")
    try:
        module = importlib.import_module(module_name)
    except ImportError as error:
        raise UnknownTrainer(f"trainer {name!r}: cannot import {module_name!r}: {error}") from error
    function = getattr(module, attribute, None)
    if not callable(function):
        raise UnknownTrainer(
            f"trainer {name!r}: {module_name!r} has no callable {attribute!r}"
            + ("" if function is None else f" (found {type(function).__name__})")
        )
    trainer: TrainFn = function
    return trainer


def load_trainer(name: str) -> TrainFn:
    """The trainer function ``name`` refers to (see the module docstring for the search order).

    Raises :class:`UnknownTrainer` (a ``ValueError`` and a ``ConfigError``) listing the built-ins
    when nothing matches, or when the match is not callable or cannot be imported.
    """
    if name in BUILTIN_TRAINERS:
        return _import_path(BUILTIN_TRAINERS[name], name)
    for entry_point in entry_points(group=ENTRY_POINT_GROUP, name=name):
        try:
            loaded = entry_point.load()
        except (ImportError, AttributeError) as error:
            raise UnknownTrainer(
                f"trainer {name!r}: entry point {entry_point.value!r} failed to load: {error}"
            ) from error
        if not callable(loaded):
            raise UnknownTrainer(
                f"trainer {name!r}: entry point {entry_point.value!r} is not callable"
            )
        trainer: TrainFn = loaded
        return trainer
    if ":" in name:
        return _import_path(name, name)
    raise UnknownTrainer(
        f"unknown trainer {name!r}: expected one of {sorted(BUILTIN_TRAINERS)}, an entry point in "
        f"the {ENTRY_POINT_GROUP!r} group, or a 'package.module:function' path"
    )
