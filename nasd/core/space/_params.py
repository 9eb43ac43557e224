"""Hyperparameter definitions: :class:`Param`, :class:`Condition` and :func:`parse_param`.

This module holds one parameter at a time: how a ``[space.params.<name>]`` table is parsed and
checked (:func:`parse_param`), how a parameter samples, perturbs and checks its values
(:class:`Param`), and when it is active (:class:`Condition`). It was split out of
:mod:`nasd.core.space.hparams` to keep that module small;
:class:`~nasd.core.space.hparams.HparamsSpace` combines the parameters into a conditional space and
re-exports the public names here, so ``from nasd.core.space.hparams import Param`` keeps working.
The module is private: import the public names from :mod:`nasd.core.space.hparams`.
"""

from __future__ import annotations

import math
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from nasd.core.space.domains import Discrete, Domain, LogUniform, Uniform
from nasd.core.values import is_int, is_number
from nasd.errors import ConfigError

PARAM_TYPES = ("categorical", "int", "uniform", "loguniform")
_PARAM_KEYS = {
    "categorical": {"type", "choices", "condition"},
    "int": {"type", "low", "high", "condition"},
    "uniform": {"type", "low", "high", "condition"},
    "loguniform": {"type", "low", "high", "condition"},
}
_SIGMA_FRACTION = 0.2  # gaussian mutation width, as a fraction of the (log-)range
_RESAMPLE_PROBABILITY = 0.2  # int mutation: share of moves that resample instead of stepping


def _same_value(a: Any, b: Any) -> bool:
    """Equality that keeps ``True``, ``1`` and ``1.0`` apart (they are different choices)."""
    return type(a) is type(b) and a == b


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


@dataclass(frozen=True, slots=True)
class Condition:
    """``param`` must be active and take one of ``values`` for the owner to be active."""

    param: str
    values: tuple[Any, ...]

    def holds(self, genotype: Mapping[str, Any]) -> bool:
        """True when the parent is present in ``genotype`` with one of the listed values."""
        if self.param not in genotype:
            return False
        return any(_same_value(genotype[self.param], v) for v in self.values)


@dataclass(frozen=True, slots=True)
class Param:
    """One hyperparameter: its type, its domain and an optional activation condition."""

    name: str
    type: str
    choices: tuple[Any, ...] = ()
    low: float = 0.0
    high: float = 0.0
    condition: Condition | None = None

    @property
    def mutable(self) -> bool:
        """Whether the parameter has more than one value (a mutation can change it)."""
        if self.type == "categorical":
            return len(self.choices) > 1
        return self.high > self.low

    def domain(self) -> Domain:
        """The parameter's domain for SHADHO's complexity heuristic.

        ``categorical`` is ``Discrete(len(choices))``, ``int`` is ``Discrete(high - low + 1)``,
        ``uniform`` is ``Uniform(low, high)`` and ``loguniform`` is ``LogUniform(low, high)``.
        """
        if self.type == "categorical":
            return Discrete(len(self.choices))
        if self.type == "int":
            return Discrete(int(self.high) - int(self.low) + 1)
        if self.type == "uniform":
            return Uniform(self.low, self.high)
        return LogUniform(self.low, self.high)

    def sample(self, rng: random.Random) -> Any:
        """A value drawn uniformly (log-uniformly for ``loguniform``) from the domain."""
        if self.type == "categorical":
            return self.choices[rng.randrange(len(self.choices))]
        if self.type == "int":
            return rng.randint(int(self.low), int(self.high))
        if self.type == "uniform":
            return min(self.high, max(self.low, rng.uniform(self.low, self.high)))
        value = math.exp(rng.uniform(math.log(self.low), math.log(self.high)))
        return min(self.high, max(self.low, value))

    def perturb(self, value: Any, rng: random.Random) -> Any:
        """A different value near ``value``; the parameter must be :attr:`mutable`."""
        if self.type == "categorical":
            others = [c for c in self.choices if not _same_value(c, value)]
            return others[rng.randrange(len(others))]
        if self.type == "int":
            return self._perturb_int(value, rng)
        for _ in range(16):
            if self.type == "uniform":
                sigma = _SIGMA_FRACTION * (self.high - self.low)
                moved = value + rng.gauss(0.0, sigma)
            else:
                sigma = _SIGMA_FRACTION * (math.log(self.high) - math.log(self.low))
                moved = math.exp(math.log(value) + rng.gauss(0.0, sigma))
            moved = min(self.high, max(self.low, moved))
            if moved != value:
                return float(moved)
        # Only reachable when clipping keeps returning the bound we sit on: resample instead.
        while True:
            moved = self.sample(rng)
            if moved != value:
                return float(moved)

    def _perturb_int(self, value: int, rng: random.Random) -> int:
        low, high = int(self.low), int(self.high)
        if rng.random() < _RESAMPLE_PROBABILITY:
            offset = rng.randint(low, high - 1)
            return offset if offset < value else offset + 1
        step = max(1, round(_SIGMA_FRACTION * (high - low)))
        delta = rng.randint(1, step) * rng.choice((-1, 1))
        moved = min(high, max(low, value + delta))
        if moved == value:  # pinned at a bound: go the other way
            moved = min(high, max(low, value - delta))
        return moved

    def check(self, value: Any) -> str | None:
        """None if ``value`` is in the domain, else the reason it is not."""
        if self.type == "categorical":
            if any(_same_value(value, c) for c in self.choices):
                return None
            return f"{_short(value)} is not one of {list(self.choices)!r}"
        if self.type == "int":
            if not is_int(value):
                return f"expected an int, got {_short(value)}"
        elif not is_number(value) or not math.isfinite(value):
            return f"expected a finite number, got {_short(value)}"
        if not self.low <= value <= self.high:
            return f"{value!r} is outside [{self.low!r}, {self.high!r}]"
        return None

    def to_spec(self) -> dict[str, Any]:
        """The JSON-able definition that :func:`parse_param` turns back into this parameter."""
        spec: dict[str, Any] = {"type": self.type}
        if self.type == "categorical":
            spec["choices"] = list(self.choices)
        else:
            spec["low"], spec["high"] = self.low, self.high
        if self.condition is not None:
            spec["condition"] = {"param": self.condition.param, "in": list(self.condition.values)}
        return spec


def parse_param(name: str, definition: Any) -> Param:
    """Build a :class:`Param` from its spec table; raise :class:`ConfigError` naming the key."""
    where = f"space.params.{name}"
    if not isinstance(definition, Mapping):
        raise ConfigError(f"{where}: expected a table, got {_short(definition)}")
    kind = definition.get("type")
    if kind not in PARAM_TYPES:
        raise ConfigError(f"{where}.type: expected one of {list(PARAM_TYPES)}, got {_short(kind)}")
    unknown = sorted(set(definition) - _PARAM_KEYS[kind])
    if unknown:
        allowed = sorted(_PARAM_KEYS[kind])
        raise ConfigError(
            f"{where}: unknown key {unknown[0]!r} for type {kind!r}; allowed: {allowed}"
        )
    condition = _parse_condition(where, definition.get("condition"))
    if kind == "categorical":
        return Param(
            name,
            kind,
            choices=_parse_choices(where, definition.get("choices")),
            condition=condition,
        )
    low: Any = definition.get("low")
    high: Any = definition.get("high")
    if kind == "int":
        if not (is_int(low) and is_int(high) and low <= high):
            raise ConfigError(f"{where}: expected int low <= high, got low={low!r} high={high!r}")
        return Param(name, kind, low=low, high=high, condition=condition)
    finite = is_number(low) and is_number(high) and math.isfinite(low) and math.isfinite(high)
    if not finite or not low < high or (kind == "loguniform" and low <= 0):
        need = "0 < low < high" if kind == "loguniform" else "low < high"
        raise ConfigError(
            f"{where}: expected finite numbers with {need}, got low={low!r} high={high!r}"
        )
    return Param(name, kind, low=float(low), high=float(high), condition=condition)


def _parse_choices(where: str, choices: Any) -> tuple[Any, ...]:
    scalar = (str, int, float, bool)
    if (
        not isinstance(choices, Sequence)
        or isinstance(choices, str)
        or not choices
        or not all(isinstance(c, scalar) for c in choices)
    ):
        raise ConfigError(
            f"{where}.choices: expected a non-empty list of strings, numbers or booleans, "
            f"got {_short(choices)}"
        )
    for i, choice in enumerate(choices):
        if isinstance(choice, float) and not math.isfinite(choice):
            raise ConfigError(f"{where}.choices: {choice!r} is not a finite number")
        if any(_same_value(choice, other) for other in choices[:i]):
            raise ConfigError(f"{where}.choices: {choice!r} is listed twice")
    return tuple(choices)


def _parse_condition(where: str, condition: Any) -> Condition | None:
    if condition is None:
        return None
    values = condition.get("in") if isinstance(condition, Mapping) else None
    if (
        not isinstance(condition, Mapping)
        or set(condition) != {"param", "in"}
        or not isinstance(condition["param"], str)
        or not isinstance(values, Sequence)
        or isinstance(values, str)
        or not values
    ):
        raise ConfigError(
            f'{where}.condition: expected {{"param": <name>, "in": [values...]}}, '
            f"got {_short(condition)}"
        )
    return Condition(condition["param"], tuple(values))
