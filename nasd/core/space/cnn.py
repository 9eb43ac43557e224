"""A plain CNN space for 1-D or 2-D inputs, in the spirit of Zoph & Le (ICLR 2017).

A genotype is ``{"layers": [{"kernel", "filters", "stride", "pool", "skips"}, ...]}``. Layer ``i``
reads the output of layer ``i-1`` (the network input for ``i = 0``) concatenated along channels
with the outputs of the layers in its ``skips`` (sorted, unique, each ``j <= i-2``), every skip
source adaptively average-pooled to the current spatial size. Each layer is
``Conv(bias=False, padding=kernel//2) -> BatchNorm -> ReLU -> pool(2, stride 2)``; the pool is
left out when any spatial dimension is already below 2, so sizes never reach 0. The head is
``flatten -> Linear`` or ``global average pool -> Linear``.

:meth:`CnnSpace.plan` resolves a genotype into channel counts and spatial sizes; the cost model
and the PyTorch builder (``agents.models.cnn``) both read that plan, so they cannot disagree.

This module holds :class:`CnnSpace` (spec, sampling, validation, plan and cost), the plan types
and the space's constants. The mutation operators live in :mod:`nasd.core.space.cnn_mutation`, split
out to keep this module small; they import nothing from here, so there is no import cycle.
"""

from __future__ import annotations

import itertools
import math
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

from nasd.core.events import Genotype
from nasd.core.space import cnn_decisions
from nasd.core.space._base import SearchSpace
from nasd.core.space.cnn_mutation import mutate_layers
from nasd.core.space.decisions import Decision
from nasd.core.space.domains import Discrete, Domain
from nasd.core.values import is_int
from nasd.errors import ConfigError, InvalidGenotype

POOLS: tuple[str, ...] = ("none", "max", "avg")
HEADS: tuple[str, ...] = ("flatten", "gap")
LAYER_KEYS: frozenset[str] = frozenset({"kernel", "filters", "stride", "pool", "skips"})
MAX_LAYERS_LIMIT = 64
SKIP_PROBABILITY = 0.25


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _choice_list(name: str, value: Any, what: str, ok: Any) -> tuple[Any, ...]:
    """A non-empty list without repeats whose items satisfy ``ok``; else a ConfigError."""
    if (
        not isinstance(value, Sequence)
        or isinstance(value, str)
        or not value
        or not all(ok(v) for v in value)
    ):
        raise ConfigError(f"space.{name}: expected a non-empty list of {what}, got {_short(value)}")
    if len(set(value)) != len(value):
        raise ConfigError(f"space.{name}: values must not repeat, got {_short(value)}")
    return tuple(value)


@dataclass(frozen=True, slots=True)
class LayerPlan:
    """One resolved layer: channels in and out, the effective pool and the spatial sizes."""

    in_channels: int
    out_channels: int
    kernel: int
    stride: int
    pool: str  # "none" when the genotype says so or when the input is too small to pool
    skips: tuple[int, ...]
    in_size: tuple[int, ...]  # spatial size of the concatenated input
    conv_size: tuple[int, ...]  # after the convolution
    out_size: tuple[int, ...]  # after the pool


@dataclass(frozen=True, slots=True)
class CnnPlan:
    """A genotype resolved against its space: everything a model builder or cost model needs."""

    in_channels: int
    input_size: tuple[int, ...]
    layers: tuple[LayerPlan, ...]
    head: str
    head_features: int
    num_classes: int


def plan_activations(plan: CnnPlan) -> int:
    """Floats per sample kept for the backward pass: a rough, monotone estimate.

    The network input; per layer the concatenated input when it has skips (a new tensor), the
    outputs of the convolution, batch norm and ReLU, and the pool's output when it pools; then
    the logits. The head's features are the last layer's output, already counted (``flatten``
    is a view of it; the ``gap`` vector is one float per channel, negligible): leaving them out
    keeps the estimate monotone, so appending a layer or widening one never lowers it.
    In-place ReLU and framework savings are ignored: the estimate errs on the high side, the
    safe side for placing a model on a device.
    """
    total = plan.in_channels * math.prod(plan.input_size)
    for layer in plan.layers:
        if layer.skips:
            total += layer.in_channels * math.prod(layer.in_size)
        total += 3 * layer.out_channels * math.prod(layer.conv_size)  # conv, BN, ReLU
        if layer.pool != "none":
            total += layer.out_channels * math.prod(layer.out_size)
    return total + plan.num_classes


class CnnSpace(SearchSpace):
    """Chain-structured CNNs with optional skip connections (see the module docstring)."""

    kind: ClassVar[str] = "cnn"
    SPEC_KEYS: ClassVar[frozenset[str]] = frozenset(
        {"input_shape", "num_classes", "min_layers", "max_layers", "skips", "head"}
        | {"kernels", "filters", "strides", "pools"}
    )
    REQUIRED_KEYS: ClassVar[frozenset[str]] = frozenset({"input_shape", "num_classes"})

    def __init__(
        self,
        *,
        input_shape: Sequence[int],
        num_classes: int,
        min_layers: int = 1,
        max_layers: int = 6,
        kernels: Sequence[int] = (3, 5, 7),
        filters: Sequence[int] = (16, 32, 64, 128),
        strides: Sequence[int] = (1, 2),
        pools: Sequence[str] = POOLS,
        skips: bool = True,
        head: str = "flatten",
    ) -> None:
        if (
            not isinstance(input_shape, Sequence)
            or len(input_shape) not in (2, 3)
            or not all(is_int(d) and d > 0 for d in input_shape)
        ):
            raise ConfigError(
                "space.input_shape: expected [channels, length] or [channels, height, width] "
                f"of positive ints, got {_short(input_shape)}"
            )
        if not is_int(num_classes) or num_classes < 1:
            raise ConfigError(f"space.num_classes: expected a positive int, got {num_classes!r}")
        if not is_int(min_layers) or min_layers < 1:
            raise ConfigError(f"space.min_layers: expected an int >= 1, got {min_layers!r}")
        if not is_int(max_layers) or not min_layers <= max_layers <= MAX_LAYERS_LIMIT:
            raise ConfigError(
                f"space.max_layers: expected an int in [min_layers={min_layers}, "
                f"{MAX_LAYERS_LIMIT}], got {max_layers!r}"
            )
        positive = lambda v: is_int(v) and v > 0  # noqa: E731
        self.kernels = _choice_list(
            "kernels", kernels, "odd ints", lambda v: positive(v) and v % 2 == 1
        )
        self.filters = _choice_list("filters", filters, "positive ints", positive)
        self.strides = _choice_list("strides", strides, "positive ints", positive)
        self.pools = _choice_list("pools", pools, f"names from {list(POOLS)}", lambda v: v in POOLS)
        if not isinstance(skips, bool):
            raise ConfigError(f"space.skips: expected true or false, got {_short(skips)}")
        if head not in HEADS:
            raise ConfigError(f"space.head: expected one of {list(HEADS)}, got {_short(head)}")
        # The per-layer choices, by genotype key; the order fixes how sampling consumes the rng.
        self._genes: dict[str, tuple[Any, ...]] = {
            "kernel": self.kernels,
            "filters": self.filters,
            "stride": self.strides,
            "pool": self.pools,
        }
        self.input_shape = tuple(input_shape)
        self.num_classes = num_classes
        self.min_layers = min_layers
        self.max_layers = max_layers
        self.skips = skips
        self.head = head

    @classmethod
    def from_spec(cls, spec: Mapping[str, Any]) -> CnnSpace:
        """Build from a ``[space]`` table (``kind`` is ignored); unknown keys are refused."""
        options = {k: v for k, v in spec.items() if k != "kind"}
        unknown = sorted(set(options) - cls.SPEC_KEYS)
        if unknown:
            raise ConfigError(
                f"space.{unknown[0]}: unknown key for kind 'cnn'; allowed: {sorted(cls.SPEC_KEYS)}"
            )
        missing = sorted(cls.REQUIRED_KEYS - set(options))
        if missing:
            raise ConfigError(f"space.{missing[0]}: required for kind 'cnn'")
        return cls(**options)

    def spec(self) -> dict[str, Any]:
        """The JSON-able spec, defaults filled in, that rebuilds this space."""
        return {
            "kind": self.kind,
            "input_shape": list(self.input_shape),
            "num_classes": self.num_classes,
            "min_layers": self.min_layers,
            "max_layers": self.max_layers,
            "kernels": list(self.kernels),
            "filters": list(self.filters),
            "strides": list(self.strides),
            "pools": list(self.pools),
            "skips": self.skips,
            "head": self.head,
        }

    def domains(self) -> list[Domain]:
        """The depth, then each of ``max_layers`` layers' choices, as if every layer existed.

        In order: ``Discrete(max_layers - min_layers + 1)`` for the depth; then for layer
        ``i = 0 .. max_layers - 1``: ``Discrete(len(kernels))``, ``Discrete(len(filters))``,
        ``Discrete(len(strides))``, ``Discrete(len(pools))``, and, when ``skips`` is on, one
        ``Discrete(2)`` (on or off) for each possible skip source ``j <= i - 2``. Choices with a
        single option are listed too (as ``Discrete(1)``), so the list's shape depends only on
        the spec's sizes.
        """
        domains: list[Domain] = [Discrete(self.max_layers - self.min_layers + 1)]
        for i in range(self.max_layers):
            domains += [Discrete(len(choices)) for choices in self._genes.values()]
            if self.skips:
                domains += [Discrete(2)] * max(0, i - 1)
        return domains

    # -- decisions (policy-gradient controllers; see nasd.core.space.cnn_decisions) ------------

    def decisions(self) -> list[Decision]:
        """The depth, then per possible layer its genes and skips, in :meth:`domains` order."""
        return cnn_decisions.decisions(self._genes, self.min_layers, self.max_layers, self.skips)

    def from_decisions(self, choices: Sequence[int]) -> tuple[Genotype, list[bool]]:
        """The network of the chosen depth; decisions of layers beyond it are unused."""
        return cnn_decisions.from_decisions(self._genes, self.min_layers, self.decisions(), choices)

    def to_decisions(self, genotype: Genotype) -> list[int]:
        """The choices that describe ``genotype``; layers beyond its depth get 0s."""
        self.validate(genotype)
        return cnn_decisions.to_decisions(self._genes, self.min_layers, self.decisions(), genotype)

    # -- genotypes -----------------------------------------------------------------------------

    def _random_layer(self, index: int, rng: random.Random) -> dict[str, Any]:
        skips = [j for j in range(index - 1) if self.skips and rng.random() < SKIP_PROBABILITY]
        genes = {key: choices[rng.randrange(len(choices))] for key, choices in self._genes.items()}
        return {**genes, "skips": skips}

    def sample(self, rng: random.Random) -> Genotype:
        """Depth uniform in [min_layers, max_layers]; choices uniform; each skip with p = 0.25.

        No rejection is needed: convolutions keep sizes >= 1 and pools are left out on inputs
        smaller than 2, so every sampled genotype is valid.
        """
        depth = rng.randint(self.min_layers, self.max_layers)
        return {"layers": [self._random_layer(i, rng) for i in range(depth)]}

    def mutate(self, genotype: Genotype, rng: random.Random) -> Genotype:
        """Apply one operator chosen uniformly among those applicable to ``genotype``.

        Operators: change the kernel, filters, stride or pool of one layer; insert a random
        layer; remove a layer (skips re-indexed); add or remove one skip connection. They live
        in :mod:`nasd.core.space.cnn_mutation`.
        """
        self.validate(genotype)
        layers = mutate_layers(
            genotype["layers"],
            rng,
            genes=self._genes,
            min_layers=self.min_layers,
            max_layers=self.max_layers,
            skips=self.skips,
            new_layer=self._random_layer,
        )
        return {"layers": layers}

    def validate(self, genotype: Any) -> None:
        """Check keys, choices, depth and skips; raise :class:`InvalidGenotype` with the path."""
        if not isinstance(genotype, Mapping) or set(genotype) != {"layers"}:
            raise InvalidGenotype(f'expected {{"layers": [...]}}, got {_short(genotype)}')
        layers = genotype["layers"]
        if not isinstance(layers, list):
            raise InvalidGenotype(f"layers: expected a list, got {_short(layers)}")
        if not self.min_layers <= len(layers) <= self.max_layers:
            raise InvalidGenotype(
                f"layers: expected {self.min_layers} to {self.max_layers} layers, got {len(layers)}"
            )
        for i, layer in enumerate(layers):
            self._check_layer(i, layer)

    def _check_layer(self, i: int, layer: Any) -> None:
        where = f"layers[{i}]"
        if not isinstance(layer, Mapping) or set(layer) != LAYER_KEYS:
            raise InvalidGenotype(
                f"{where}: expected a table with keys {sorted(LAYER_KEYS)}, got {_short(layer)}"
            )
        for key, choices in self._genes.items():
            value = layer[key]
            typed = isinstance(value, str) if key == "pool" else is_int(value)
            if not typed or value not in choices:
                raise InvalidGenotype(
                    f"{where}.{key}: {_short(value)} is not one of {list(choices)}"
                )
        skips = layer["skips"]
        allowed = list(range(i - 1)) if self.skips else []
        if (
            not isinstance(skips, list)
            or not all(is_int(j) and j in allowed for j in skips)
            or any(a >= b for a, b in itertools.pairwise(skips))
        ):
            raise InvalidGenotype(
                f"{where}.skips: expected sorted unique layer indices from {allowed}, "
                f"got {_short(skips)}"
            )

    # -- resolution and cost -------------------------------------------------------------------

    def plan(self, genotype: Genotype) -> CnnPlan:
        """Resolve channel counts and spatial sizes; validates ``genotype`` first."""
        self.validate(genotype)
        channels = [self.input_shape[0]]  # channels[i + 1] = output channels of layer i
        sizes = [tuple(self.input_shape[1:])]  # sizes[i + 1] = output size of layer i
        plans = []
        for i, layer in enumerate(genotype["layers"]):
            skips = tuple(layer["skips"])
            in_channels = channels[i] + sum(channels[j + 1] for j in skips)
            conv_size = tuple(math.ceil(s / layer["stride"]) for s in sizes[i])
            poolable = layer["pool"] != "none" and min(conv_size) >= 2
            out_size = tuple(s // 2 for s in conv_size) if poolable else conv_size
            plans.append(
                LayerPlan(
                    in_channels,
                    layer["filters"],
                    layer["kernel"],
                    layer["stride"],
                    layer["pool"] if poolable else "none",
                    skips,
                    sizes[i],
                    conv_size,
                    out_size,
                )
            )
            channels.append(layer["filters"])
            sizes.append(out_size)
        head_features = channels[-1] * (math.prod(sizes[-1]) if self.head == "flatten" else 1)
        return CnnPlan(
            self.input_shape[0], sizes[0], tuple(plans), self.head, head_features, self.num_classes
        )

    def cost(self, genotype: Genotype) -> dict[str, float]:
        """Exact ``params`` and multiply-accumulates (``flops``), and estimated ``activations``.

        ``params`` and ``flops`` count the convolutions, batch norms and the linear head exactly.
        ``activations`` is the number of floats per sample a training step keeps for the
        backward pass, a rough estimate that grows with every layer, filter and pixel (see
        :func:`plan_activations`); the scheduler turns it into a memory estimate.
        """
        plan = self.plan(genotype)
        params = flops = 0
        for layer in plan.layers:
            weights = layer.in_channels * layer.out_channels * layer.kernel ** len(layer.in_size)
            params += weights + 2 * layer.out_channels  # conv (no bias) + BN affine
            flops += weights * math.prod(layer.conv_size)
        params += plan.head_features * plan.num_classes + plan.num_classes
        flops += plan.head_features * plan.num_classes
        return {
            "params": float(params),
            "flops": float(flops),
            "activations": float(plan_activations(plan)),
        }

    def describe(self, genotype: Genotype) -> str:
        """One ``k<kernel> f<filters> s<stride> <pool> [+skips]`` group per layer."""
        parts = []
        for layer in genotype["layers"]:
            text = f"k{layer['kernel']} f{layer['filters']} s{layer['stride']} {layer['pool']}"
            if layer["skips"]:
                text += " +" + ",".join(str(j) for j in layer["skips"])
            parts.append(text)
        return " | ".join(parts)
