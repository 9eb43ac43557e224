"""Search strategies and the registry that builds them from an experiment's config.

Each strategy is a small class in its own module (see :mod:`nasd.core.strategy._base` for the
protocol).
:func:`build_strategy` is the one place where a user's ``[strategy]`` table becomes an object, so it
is also the one place that turns bad parameters into :class:`nasd.errors.ConfigError`.
"""

from __future__ import annotations

import inspect
import random
from collections.abc import Mapping
from typing import Any

from nasd.core.space._base import SearchSpace
from nasd.core.strategy._base import Candidate, Strategy
from nasd.core.strategy.aging_evolution import AgingEvolution
from nasd.core.strategy.random_search import RandomSearch
from nasd.core.strategy.reinforce import Reinforce
from nasd.core.strategy.reinforce_factorized import ReinforceFactorized
from nasd.core.strategy.tournament import Tournament
from nasd.errors import ConfigError

__all__ = [
    "STRATEGIES",
    "AgingEvolution",
    "Candidate",
    "RandomSearch",
    "Reinforce",
    "ReinforceFactorized",
    "Strategy",
    "Tournament",
    "build_strategy",
]

STRATEGIES: dict[str, type[Strategy]] = {
    RandomSearch.name: RandomSearch,
    AgingEvolution.name: AgingEvolution,
    Reinforce.name: Reinforce,
    ReinforceFactorized.name: ReinforceFactorized,
    Tournament.name: Tournament,
}
"""Every registered strategy by its config name; the contract tests run each one."""


def strategy_parameters(cls: type[Strategy]) -> list[str]:
    """The tunable parameters of ``cls``: keyword-only arguments of its ``__init__``, in order."""
    signature = inspect.signature(cls.__init__)
    return [
        name
        for name, parameter in signature.parameters.items()
        if parameter.kind is inspect.Parameter.KEYWORD_ONLY
    ]


def build_strategy(name: str, space: SearchSpace, seed: int, params: Mapping[str, Any]) -> Strategy:
    """Create strategy ``name`` over ``space`` with ``random.Random(seed)`` and keyword ``params``.

    Raises :class:`ConfigError` for an unknown strategy, an unknown parameter or a bad value, with a
    message that names the strategy and lists what is allowed.
    """
    cls = STRATEGIES.get(name)
    if cls is None:
        known = ", ".join(sorted(STRATEGIES))
        raise ConfigError(f"unknown strategy {name!r} (known: {known})")
    allowed = strategy_parameters(cls)
    for key in params:
        if key not in allowed:
            raise ConfigError(
                f"strategy {name!r}: unknown parameter {key!r} (known: {', '.join(allowed)})"
            )
    metric = params.get("metric", "val_acc")
    if not isinstance(metric, str) or not metric:
        raise ConfigError(f"strategy {name!r}: metric must be a non-empty string, got {metric!r}")
    try:
        return cls(space, random.Random(seed), **params)
    except ValueError as exc:
        raise ConfigError(f"strategy {name!r}: {exc}") from exc
