"""Trainers: the functions that turn a genotype into metrics, found by name.

:func:`load_trainer` resolves a task's ``trainer`` name in this order:

1. a built-in: ``mnist1d`` and ``digits`` (CNNs trained with PyTorch), ``mnist1d-seq``
   (recurrent cells on MNIST-1D read as a sequence), ``unet_em`` (U-Nets
   segmenting the ISBI-2012 EM membrane slices), ``nb201`` (a tabular NAS-Bench-201 lookup, no
   training) and ``zero`` (instant, for throughput benchmarks);
2. an entry point in the ``nasd.trainers`` group, so a third-party package can add trainers;
3. a ``package.module:function`` import path.

An agent runs only the trainers it *offers* (:func:`offered_trainers`): the built-ins, the installed
entry points, and the ``module:function`` paths its own operator listed (``--trainer``,
``$NASD_AGENT_TRAINERS``). A name from anywhere else (a forged assign, a hostile ``submit``) is
refused by :func:`require_offered` before anything is imported: importing a module runs its
code, so the module name in a message must never choose what the agent imports.

Built-in modules are imported only when asked for, so ``import agents.trainers`` stays cheap and
the agent starts fast. See :mod:`agents.trainers._base` for the interface a trainer implements.
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Collection, Iterable, Mapping
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
    "TRAINERS_ENV",
    "TrainContext",
    "TrainFn",
    "TrainRequest",
    "TrainResult",
    "TrainerNotOffered",
    "TrainingStopped",
    "UnknownTrainer",
    "configured_trainers",
    "installed_trainers",
    "load_trainer",
    "offered_trainers",
    "require_offered",
]

ENTRY_POINT_GROUP = "nasd.trainers"
TRAINERS_ENV = "NASD_AGENT_TRAINERS"
"""Environment variable: comma-separated trainers an agent offers beyond the installed ones."""
MAX_OFFERED = 256
"""At most this many trainer names in an agent's profile (the ``agent.state`` schema's limit)."""
_TRAINER_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_.-]{0,127}(:[A-Za-z_][A-Za-z0-9_]{0,63})?")
"""A trainer name as the wire schemas allow it: a plain name or ``package.module:function``."""

BUILTIN_TRAINERS: dict[str, str] = {
    "mnist1d": "agents.trainers.mnist1d:train",
    "digits": "agents.trainers.digits:train",
    "nb201": "agents.trainers.nb201:train",
    "zero": "agents.trainers.zero:train",
    "unet_em": "agents.trainers.unet_em:train",
    "mnist1d-seq": "agents.trainers.mnist1d_seq:train",
}
"""Built-in trainer names and the import path of each one's ``train`` function."""


class UnknownTrainer(ConfigError, ValueError):
    """No trainer answers to a name, or what the name points at is not a callable trainer."""


class TrainerNotOffered(UnknownTrainer):
    """A task names a trainer this agent does not offer; nothing was imported for it."""


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
    when nothing matches, or when the match is not callable or cannot be imported. This imports
    what ``name`` points at: an agent calls it only for a name it offers (:func:`require_offered`),
    never for one it merely read in a message.
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


def installed_trainers() -> set[str]:
    """The built-in names and the names of installed ``nasd.trainers`` entry points.

    Reads package metadata only: no entry point is loaded, no module imported.
    """
    names = set(BUILTIN_TRAINERS)
    names.update(entry_point.name for entry_point in entry_points(group=ENTRY_POINT_GROUP))
    return names


def configured_trainers(flags: Iterable[str], environ: Mapping[str, str]) -> list[str]:
    """The trainers an operator listed: ``--trainer`` flags, then ``$NASD_AGENT_TRAINERS``.

    The variable holds comma-separated names; blanks around and between them are ignored.
    """
    from_env = environ.get(TRAINERS_ENV, "")
    return [*flags, *(part.strip() for part in from_env.split(",") if part.strip())]


def offered_trainers(configured: Iterable[str] = ()) -> tuple[str, ...]:
    """Every trainer name an agent offers: installed ones plus ``configured``, sorted.

    A configured entry is a ``package.module:function`` path, or the name of an installed trainer
    (redundant but harmless). Raises :class:`ConfigError` for a malformed entry, a plain name that
    nothing installed answers to, or more than :data:`MAX_OFFERED` names in all.
    """
    installed = installed_trainers()
    names = set(installed)
    for entry in configured:
        if not isinstance(entry, str) or not _TRAINER_NAME.fullmatch(entry):
            raise ConfigError(
                f"trainer {str(entry)[:200]!r}: expected an installed trainer's name or a"
                " 'package.module:function' path"
            )
        if ":" not in entry and entry not in installed:
            raise ConfigError(
                f"trainer {entry!r}: not a built-in ({', '.join(sorted(BUILTIN_TRAINERS))}) or an"
                f" installed {ENTRY_POINT_GROUP!r} entry point; give a 'package.module:function'"
                " path instead"
            )
        names.add(entry)
    if len(names) > MAX_OFFERED:
        raise ConfigError(
            f"an agent offers at most {MAX_OFFERED} trainers, this one would offer {len(names)}"
        )
    return tuple(sorted(names))


def require_offered(name: str, offered: Collection[str]) -> None:
    """Raise :class:`TrainerNotOffered` unless ``name`` is in ``offered`` (imports nothing).

    The agent calls this before it loads a task's trainer, so a name that is not offered never
    reaches :func:`load_trainer`.
    """
    if name not in offered:
        raise TrainerNotOffered(f"trainer {name[:200]!r} is not offered by this agent")
