"""A general hyperparameter space: categorical, int, uniform and log-uniform parameters.

Each parameter may carry a ``condition`` (``{"param": other, "in": [values]}``): it is *active*
only when ``other`` is active and takes one of the listed values. A genotype holds exactly the
active parameters. This is the space the random, evolutionary and hill-climbing strategies use
for plain hyperparameter optimisation, and the ``hparams`` MLP builder reads its ``layers``,
``width``, ``activation`` and ``dropout`` keys.

This module holds :class:`HparamsSpace` and the checks that span several parameters (conditions
naming unknown or continuous parents, cycles). Single parameters (:class:`Param`,
:class:`Condition`, :func:`parse_param`, :data:`PARAM_TYPES`) are defined in
:mod:`nasd.core.space._params`, split out to keep both modules small, and re-exported here.
"""

from __future__ import annotations

import math
import random
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

from nasd.core.events import Genotype
from nasd.core.space._base import SearchSpace
from nasd.core.space._params import PARAM_TYPES, Condition, Param, _short, parse_param
from nasd.core.space.decisions import Decision, check_choices
from nasd.core.space.domains import Domain
from nasd.core.values import is_int, is_number
from nasd.errors import ConfigError, InvalidGenotype

__all__ = ["PARAM_TYPES", "Condition", "HparamsSpace", "Param", "parse_param"]

CONTINUOUS_BINS = 8
"""Options of a uniform or log-uniform param's decision (bin centres; log-space for loguniform)."""
MAX_INT_CHOICES = 64
"""An int param with at most this many values is one option per value; a wider one is binned."""


def _one_per_value(param: Param) -> bool:
    """True for an int param narrow enough to get one option per value."""
    return param.type == "int" and int(param.high) - int(param.low) + 1 <= MAX_INT_CHOICES


def _decision_size(param: Param) -> int:
    """How many options ``param``'s decision has."""
    if param.type == "categorical":
        return len(param.choices)
    if _one_per_value(param):
        return int(param.high) - int(param.low) + 1
    return CONTINUOUS_BINS


def _bin_range(param: Param) -> tuple[float, float]:
    """The interval the bins split: log-space for loguniform, ``[low, high + 1)`` for ints."""
    if param.type == "loguniform":
        return math.log(param.low), math.log(param.high)
    if param.type == "int":
        return float(param.low), float(param.high) + 1.0
    return float(param.low), float(param.high)


def _value_of(param: Param, choice: int) -> Any:
    """The value option ``choice`` of ``param``'s decision stands for (a bin's centre)."""
    if param.type == "categorical":
        return param.choices[choice]
    if _one_per_value(param):
        return int(param.low) + choice
    start, stop = _bin_range(param)
    centre = start + (choice + 0.5) * (stop - start) / CONTINUOUS_BINS
    if param.type == "int":
        return min(int(param.high), max(int(param.low), math.floor(centre)))
    value = math.exp(centre) if param.type == "loguniform" else centre
    return min(param.high, max(param.low, value))


def _choice_of(param: Param, value: Any) -> int:
    """The option of ``param``'s decision that ``value`` (a valid value) falls in."""
    if param.type == "categorical":
        return next(i for i, c in enumerate(param.choices) if type(c) is type(value) and c == value)
    if _one_per_value(param):
        return int(value) - int(param.low)
    start, stop = _bin_range(param)
    position = math.log(value) if param.type == "loguniform" else float(value)
    bin_index = math.floor((position - start) / (stop - start) * CONTINUOUS_BINS)
    return min(CONTINUOUS_BINS - 1, max(0, bin_index))


def _check_conditions(params: Mapping[str, Param]) -> None:
    """Reject conditions on unknown or continuous parents, impossible values and cycles."""
    for param in params.values():
        cond = param.condition
        if cond is None:
            continue
        where = f"space.params.{param.name}.condition"
        parent = params.get(cond.param)
        if parent is None:
            raise ConfigError(f"{where}: unknown param {cond.param!r}; known: {sorted(params)}")
        if parent.type not in ("categorical", "int"):
            raise ConfigError(
                f"{where}: {cond.param!r} is {parent.type}; only categorical "
                "or int params can be conditioned on"
            )
        for value in cond.values:
            reason = parent.check(value)
            if reason is not None:
                raise ConfigError(f"{where}.in: {reason} (domain of {cond.param!r})")
    for name in params:
        seen = [name]
        cond = params[name].condition
        while cond is not None:
            if cond.param in seen:
                cycle = " -> ".join([*seen[seen.index(cond.param) :], cond.param])
                raise ConfigError(f"space.params: conditions form a cycle: {cycle}")
            seen.append(cond.param)
            cond = params[cond.param].condition


def _depth(params: Mapping[str, Param], name: str) -> int:
    depth, cond = 0, params[name].condition
    while cond is not None:
        depth, cond = depth + 1, params[cond.param].condition
    return depth


class HparamsSpace(SearchSpace):
    """A conditional hyperparameter space (see the module docstring for the spec format).

    ``input_shape`` and ``num_classes`` are carried through :meth:`spec` untouched so that model
    builders (the ``hparams`` MLP) can read them; the space itself ignores them.
    """

    kind: ClassVar[str] = "hparams"
    SPEC_KEYS: ClassVar[frozenset[str]] = frozenset({"params", "input_shape", "num_classes"})

    def __init__(
        self,
        params: Mapping[str, Any],
        *,
        input_shape: Sequence[int] | None = None,
        num_classes: int | None = None,
    ) -> None:
        if not isinstance(params, Mapping) or not params:
            raise ConfigError(f"space.params: expected a non-empty table, got {_short(params)}")
        parsed = {str(name): parse_param(str(name), d) for name, d in params.items()}
        _check_conditions(parsed)
        if input_shape is not None and (
            not isinstance(input_shape, Sequence)
            or not input_shape
            or not all(is_int(d) and d > 0 for d in input_shape)
        ):
            raise ConfigError(
                f"space.input_shape: expected a list of positive ints, got {_short(input_shape)}"
            )
        if num_classes is not None and not (is_int(num_classes) and num_classes >= 1):
            raise ConfigError(f"space.num_classes: expected a positive int, got {num_classes!r}")
        self.params: dict[str, Param] = parsed
        # Parents before children, then spec order: the order in which values are decided.
        self._order = sorted(parsed, key=lambda n: _depth(parsed, n))
        self.input_shape = None if input_shape is None else list(input_shape)
        self.num_classes = num_classes

    @classmethod
    def from_spec(cls, spec: Mapping[str, Any]) -> HparamsSpace:
        """Build from a ``[space]`` table (``kind`` is ignored); unknown keys are refused."""
        options = {k: v for k, v in spec.items() if k != "kind"}
        unknown = sorted(set(options) - cls.SPEC_KEYS)
        if unknown:
            raise ConfigError(
                f"space.{unknown[0]}: unknown key for kind 'hparams'; "
                f"allowed: {sorted(cls.SPEC_KEYS)}"
            )
        if "params" not in options:
            raise ConfigError("space.params: required for kind 'hparams'")
        return cls(**options)

    def spec(self) -> dict[str, Any]:
        """The JSON-able spec that rebuilds this space."""
        spec: dict[str, Any] = {
            "kind": self.kind,
            "params": {name: p.to_spec() for name, p in self.params.items()},
        }
        if self.input_shape is not None:
            spec["input_shape"] = list(self.input_shape)
        if self.num_classes is not None:
            spec["num_classes"] = self.num_classes
        return spec

    def active(self, genotype: Mapping[str, Any]) -> list[str]:
        """Names of the params whose conditions hold for ``genotype``, in spec order."""
        return [
            n for n, p in self.params.items() if p.condition is None or p.condition.holds(genotype)
        ]

    def domains(self) -> list[Domain]:
        """One domain per param, in spec order, conditional params included as if active.

        ``categorical`` is ``Discrete(len(choices))``, ``int`` is ``Discrete(high - low + 1)``,
        ``uniform`` is ``Uniform(low, high)``, ``loguniform`` is ``LogUniform(low, high)``.
        """
        return [param.domain() for param in self.params.values()]

    def decisions(self) -> list[Decision]:
        """One decision per param, parents before children (then spec order).

        ``categorical`` params choose among their choices, ``int`` params among their values
        (binned into :data:`CONTINUOUS_BINS` when wider than :data:`MAX_INT_CHOICES`),
        ``uniform`` and ``loguniform`` params among :data:`CONTINUOUS_BINS` bin centres (in
        log-space for ``loguniform``). A conditional param is always decided and used only when
        it is active.
        """
        return [Decision(name, _decision_size(self.params[name])) for name in self._order]

    def from_decisions(self, choices: Sequence[int]) -> tuple[Genotype, list[bool]]:
        """The active params' values; a decision is used when its param is active."""
        checked = check_choices(self.decisions(), choices)
        values = {
            name: _value_of(self.params[name], choice)
            for name, choice in zip(self._order, checked, strict=True)
        }
        genotype = self._repair(values, random.Random(0))  # every value given: rng unused
        return genotype, [name in genotype for name in self._order]

    def to_decisions(self, genotype: Genotype) -> list[int]:
        """Each active param's option (its bin for continuous ones); inactive params get 0."""
        self.validate(genotype)
        return [
            _choice_of(self.params[name], genotype[name]) if name in genotype else 0
            for name in self._order
        ]

    def sample(self, rng: random.Random) -> Genotype:
        """Every active param drawn from its domain, parents before children."""
        return self._repair({}, rng)

    def mutate(self, genotype: Genotype, rng: random.Random) -> Genotype:
        """Perturb one active param, then sample newly active and drop inactive params."""
        self.validate(genotype)
        candidates = [n for n in self.active(genotype) if self.params[n].mutable]
        if not candidates:
            return dict(genotype)  # the space has a single member
        name = candidates[rng.randrange(len(candidates))]
        child = dict(genotype)
        child[name] = self.params[name].perturb(genotype[name], rng)
        return self._repair(child, rng)

    def _repair(self, values: Mapping[str, Any], rng: random.Random) -> Genotype:
        decided: dict[str, Any] = {}
        for name in self._order:
            param = self.params[name]
            if param.condition is not None and not param.condition.holds(decided):
                continue
            decided[name] = values[name] if name in values else param.sample(rng)
        return {name: decided[name] for name in self.params if name in decided}

    def validate(self, genotype: Any) -> None:
        """Check types, domains, and that exactly the active params are present."""
        if not isinstance(genotype, Mapping):
            raise InvalidGenotype(f"expected a table of param values, got {_short(genotype)}")
        unknown = [k for k in genotype if k not in self.params]
        if unknown:
            raise InvalidGenotype(
                f"unknown param {_short(unknown[0])}; known: {sorted(self.params)}"
            )
        for name, value in genotype.items():
            reason = self.params[name].check(value)
            if reason is not None:
                raise InvalidGenotype(f"{name}: {reason}")
        active = set(self.active(genotype))
        missing = sorted(active - set(genotype))
        if missing:
            raise InvalidGenotype(f"{missing[0]}: missing (it is active)")
        inactive = sorted(set(genotype) - active)
        if inactive:
            cond = self.params[inactive[0]].condition
            assert cond is not None  # unconditional params are always active
            raise InvalidGenotype(
                f"{inactive[0]}: present but inactive (needs {cond.param} in {list(cond.values)!r})"
            )

    def cost(self, genotype: Genotype) -> dict[str, float]:
        """``activations`` for an MLP genotype, else ``{}``: a general setting has no cheap cost.

        When ``genotype`` holds ints ``layers`` and ``width`` (the keys the ``hparams`` MLP
        builder reads), ``activations`` estimates the floats per sample a training step keeps
        for the backward pass: the input (when ``input_shape`` is known), each hidden layer's
        linear and activation outputs (``2 * layers * width``, plus ``layers * width`` for the
        dropout mask when ``dropout > 0``) and the logits (when ``num_classes`` is known).
        """
        layers, width = genotype.get("layers"), genotype.get("width")
        if not (is_int(layers) and is_int(width) and layers >= 0 and width >= 1):
            return {}
        dropout = genotype.get("dropout", 0.0)
        per_layer = 3 if is_number(dropout) and dropout > 0 else 2
        inputs = math.prod(self.input_shape) if self.input_shape is not None else 0
        activations = inputs + per_layer * layers * width + (self.num_classes or 0)
        return {"activations": float(activations)}

    def describe(self, genotype: Genotype) -> str:
        """``name=value`` pairs in spec order, floats with 4 significant digits."""
        parts = []
        for name in self.params:
            if name in genotype:
                value = genotype[name]
                shown = f"{value:.4g}" if isinstance(value, float) else str(value)
                parts.append(f"{name}={shown}")
        return " ".join(parts)
