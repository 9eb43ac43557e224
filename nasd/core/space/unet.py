"""The seed's U-Net space for EM membrane segmentation (Kinnison et al., SHADHO for NAS).

A genotype holds seven hyperparameters of one fixed U-Net family, exactly the seed's space:

- ``min_kernels`` in {16, 32, 64, 128}: the filters of the first level;
- ``kernel_size`` in {1, 3, 5, 7, 9}: every convolution's kernel (the 2x2 up-convolutions and the
  1x1 output convolution excepted);
- ``activation`` in {sigmoid, tanh, relu, elu, prelu, leaky_relu, thresholded_relu};
- ``initializer`` in {zeros, ones, glorot_normal, he_normal}: the convolution weights' initialiser
  (biases start at zero);
- ``regularizer`` in {l1, l2, l1_l2}: the weight penalty the trainer adds to the loss;
- ``dropout`` uniform over [0, 1]: the dropout rate at the bottleneck;
- ``lr`` uniform over [1e-4, 1]: Adam's learning rate.

The architecture (the spec fixes ``depth`` D, ``input_size`` S and input ``channels``): level
``l`` (0 .. D) has ``min_kernels * 2**l`` filters. Each encoder level ``l < D`` is two
``kernel_size`` convolutions (padding "same", with bias), each followed by the activation; its
output is kept for the skip connection and max-pooled 2x2 down to the next level. The bottleneck
(level D) is the same two convolutions followed by dropout. Each decoder level ``l`` (D-1 .. 0)
up-samples with a 2x2 transposed convolution of stride 2 (level ``l + 1`` filters to level ``l``
filters, with bias, no activation), concatenates the encoder's skip along channels (twice level
``l``'s filters) and applies two convolutions with activations back to level ``l``'s filters. A
1x1 convolution maps level 0 to one logit per pixel. ``prelu`` learns one slope per channel, so
each activation after a convolution with C outputs adds C parameters.

:meth:`UNetSpace.plan` lists every convolution with its channels and sizes; the cost model and
the PyTorch builder (``agents.models.unet``) both follow it, so their parameter counts agree.
The seven hyperparameters reuse :class:`~nasd.core.space.hparams.HparamsSpace` for sampling,
mutation, validation and domains. Pure: no torch here.
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, ClassVar

from nasd.core.events import Genotype
from nasd.core.space._base import SearchSpace
from nasd.core.space.decisions import Decision
from nasd.core.space.domains import Domain
from nasd.core.space.hparams import HparamsSpace
from nasd.core.values import is_int
from nasd.errors import ConfigError

MIN_KERNELS: tuple[int, ...] = (16, 32, 64, 128)
KERNEL_SIZES: tuple[int, ...] = (1, 3, 5, 7, 9)
ACTIVATIONS: tuple[str, ...] = (
    "sigmoid",
    "tanh",
    "relu",
    "elu",
    "prelu",
    "leaky_relu",
    "thresholded_relu",
)
INITIALIZERS: tuple[str, ...] = ("zeros", "ones", "glorot_normal", "he_normal")
REGULARIZERS: tuple[str, ...] = ("l1", "l2", "l1_l2")
DROPOUT_RANGE = (0.0, 1.0)
LR_RANGE = (1e-4, 1.0)
MAX_DEPTH = 4

_PARAMS: dict[str, dict[str, Any]] = {
    "min_kernels": {"type": "categorical", "choices": list(MIN_KERNELS)},
    "kernel_size": {"type": "categorical", "choices": list(KERNEL_SIZES)},
    "activation": {"type": "categorical", "choices": list(ACTIVATIONS)},
    "initializer": {"type": "categorical", "choices": list(INITIALIZERS)},
    "regularizer": {"type": "categorical", "choices": list(REGULARIZERS)},
    "dropout": {"type": "uniform", "low": DROPOUT_RANGE[0], "high": DROPOUT_RANGE[1]},
    "lr": {"type": "uniform", "low": LR_RANGE[0], "high": LR_RANGE[1]},
}


@dataclass(frozen=True, slots=True)
class ConvPlan:
    """One convolution of the network: where it is, its channels, kernel and output size.

    ``stage`` is ``enc<l>``, ``bottleneck``, ``up<l>``, ``dec<l>`` or ``head``. ``transposed``
    marks the 2x2 stride-2 up-convolutions; ``activated`` marks the convolutions followed by the
    genotype's activation.
    """

    stage: str
    in_channels: int
    out_channels: int
    kernel: int
    out_size: int
    transposed: bool = False
    activated: bool = True


@dataclass(frozen=True, slots=True)
class UNetPlan:
    """A genotype resolved against its space: filters and side length per level, every conv."""

    channels: int
    input_size: int
    depth: int
    kernel: int
    filters: tuple[int, ...]  # level 0 .. depth
    sizes: tuple[int, ...]  # spatial side per level 0 .. depth
    convs: tuple[ConvPlan, ...]  # in execution order


def _plan_convs(
    channels: int, kernel: int, filters: tuple[int, ...], sizes: tuple[int, ...]
) -> tuple[ConvPlan, ...]:
    depth = len(filters) - 1
    convs: list[ConvPlan] = []
    in_channels = channels
    for level in range(depth):
        f, side = filters[level], sizes[level]
        convs += [
            ConvPlan(f"enc{level}", in_channels, f, kernel, side),
            ConvPlan(f"enc{level}", f, f, kernel, side),
        ]
        in_channels = f
    f, side = filters[depth], sizes[depth]
    convs += [
        ConvPlan("bottleneck", in_channels, f, kernel, side),
        ConvPlan("bottleneck", f, f, kernel, side),
    ]
    for level in reversed(range(depth)):
        f, side = filters[level], sizes[level]
        convs += [
            ConvPlan(
                f"up{level}", filters[level + 1], f, 2, side, transposed=True, activated=False
            ),
            ConvPlan(f"dec{level}", 2 * f, f, kernel, side),
            ConvPlan(f"dec{level}", f, f, kernel, side),
        ]
    convs.append(ConvPlan("head", filters[0], 1, 1, sizes[0], activated=False))
    return tuple(convs)


class UNetSpace(SearchSpace):
    """The seed's seven U-Net hyperparameters over a fixed U-Net family (module docstring).

    Spec: ``depth`` (down-samplings, 1-4, default 2), ``input_size`` (the side of the square
    training crops, divisible by ``2**depth``, default 32) and ``channels`` (default 1). The
    32-pixel default keeps a CPU trial of the default U-Net under a minute (about 40 s on one
    thread with the trainer's defaults; 64-pixel crops took 120 s for the same accuracy).
    """

    kind: ClassVar[str] = "unet"
    SPEC_KEYS: ClassVar[frozenset[str]] = frozenset({"depth", "input_size", "channels"})
    DEFAULT_GENOTYPE: ClassVar[Mapping[str, Any]] = MappingProxyType(
        {
            "min_kernels": 64,
            "kernel_size": 3,
            "activation": "relu",
            "initializer": "he_normal",
            "regularizer": "l2",
            "dropout": 0.0,
            "lr": 1e-3,
        }
    )
    """The seed's default U-Net: 64 kernels, 3x3, ReLU, he_normal, L2, no dropout, lr 1e-3.

    Read-only; ``dict(UNetSpace.DEFAULT_GENOTYPE)`` is a genotype to send or serialise."""

    def __init__(self, *, depth: int = 2, input_size: int = 32, channels: int = 1) -> None:
        if not is_int(depth) or not 1 <= depth <= MAX_DEPTH:
            raise ConfigError(f"space.depth: expected an int in [1, {MAX_DEPTH}], got {depth!r}")
        if not is_int(input_size) or input_size < 1 or input_size % 2**depth:
            raise ConfigError(
                f"space.input_size: expected a positive int divisible by 2**depth = {2**depth}, "
                f"got {input_size!r}"
            )
        if not is_int(channels) or channels < 1:
            raise ConfigError(f"space.channels: expected a positive int, got {channels!r}")
        self.depth = depth
        self.input_size = input_size
        self.channels = channels
        self._hparams = HparamsSpace(_PARAMS)

    @classmethod
    def from_spec(cls, spec: Mapping[str, Any]) -> UNetSpace:
        """Build from a ``[space]`` table (``kind`` is ignored); unknown keys are refused."""
        options = {k: v for k, v in spec.items() if k != "kind"}
        unknown = sorted(set(options) - cls.SPEC_KEYS)
        if unknown:
            raise ConfigError(
                f"space.{unknown[0]}: unknown key for kind 'unet'; allowed: {sorted(cls.SPEC_KEYS)}"
            )
        return cls(**options)

    def spec(self) -> dict[str, Any]:
        """The JSON-able spec, defaults filled in, that rebuilds this space."""
        return {
            "kind": self.kind,
            "depth": self.depth,
            "input_size": self.input_size,
            "channels": self.channels,
        }

    def domains(self) -> list[Domain]:
        """Seven domains in genotype order: ``Discrete`` of sizes 4, 5, 7, 4 and 3, then
        ``Uniform(0, 1)`` (dropout) and ``Uniform(1e-4, 1)`` (learning rate).

        The spec's ``depth``, ``input_size`` and ``channels`` are fixed, not searched.
        """
        return self._hparams.domains()

    def decisions(self) -> list[Decision]:
        """The seven hyperparameters' decisions (see :meth:`HparamsSpace.decisions`): the five
        categorical ones, then ``dropout`` and ``lr`` as 8 bins each."""
        return self._hparams.decisions()

    def from_decisions(self, choices: Sequence[int]) -> tuple[Genotype, list[bool]]:
        """The genotype the seven choices describe; every decision is used."""
        return self._hparams.from_decisions(choices)

    def to_decisions(self, genotype: Genotype) -> list[int]:
        """The seven choices that describe ``genotype`` (its bins for dropout and lr)."""
        return self._hparams.to_decisions(genotype)

    def sample(self, rng: random.Random) -> Genotype:
        """Each of the seven hyperparameters drawn uniformly from its domain."""
        return self._hparams.sample(rng)

    def mutate(self, genotype: Genotype, rng: random.Random) -> Genotype:
        """Change one hyperparameter: another choice, or a gaussian step of 20 % of the range."""
        return self._hparams.mutate(genotype, rng)

    def validate(self, genotype: Any) -> None:
        """All seven keys present, each in its domain; :class:`InvalidGenotype` otherwise."""
        self._hparams.validate(genotype)

    def plan(self, genotype: Genotype) -> UNetPlan:
        """Resolve filters, sizes and every convolution; validates ``genotype`` first."""
        self.validate(genotype)
        filters = tuple(genotype["min_kernels"] * 2**level for level in range(self.depth + 1))
        sizes = tuple(self.input_size // 2**level for level in range(self.depth + 1))
        kernel = genotype["kernel_size"]
        return UNetPlan(
            self.channels,
            self.input_size,
            self.depth,
            kernel,
            filters,
            sizes,
            _plan_convs(self.channels, kernel, filters, sizes),
        )

    def cost(self, genotype: Genotype) -> dict[str, float]:
        """Exact ``params``, multiply-accumulates (``flops``) and ``activations`` per sample.

        ``params``: every convolution's weights and bias, plus one PReLU slope per channel after
        each activated convolution when the activation is ``prelu``. ``flops``: the
        convolutions' multiply-accumulates for one ``input_size`` crop (a transposed 2x2
        convolution costs ``in * out * 4`` per *input* pixel); activations, pooling, bias adds
        and the concatenation are not counted. ``activations``: floats per sample a training
        step keeps for the backward pass: the input, every convolution's output, every
        activation's output, each pool's and concatenation's output, and the bottleneck dropout
        output (and mask) when ``dropout > 0``. It errs on the high side (in-place operations
        ignored), the safe side for placing a model on a device.
        """
        plan = self.plan(genotype)
        prelu = genotype["activation"] == "prelu"
        params = flops = 0
        activations = plan.channels * plan.input_size**2
        for conv in plan.convs:
            weights = conv.in_channels * conv.out_channels * conv.kernel**2
            params += weights + conv.out_channels
            if conv.activated and prelu:
                params += conv.out_channels
            in_pixels = (conv.out_size // 2) ** 2 if conv.transposed else conv.out_size**2
            flops += weights * in_pixels
            outputs = conv.out_channels * conv.out_size**2
            activations += 2 * outputs if conv.activated else outputs
        for level in range(plan.depth):
            pooled = plan.filters[level] * plan.sizes[level + 1] ** 2
            concatenated = 2 * plan.filters[level] * plan.sizes[level] ** 2
            activations += pooled + concatenated
        if genotype["dropout"] > 0:
            activations += 2 * plan.filters[-1] * plan.sizes[-1] ** 2
        return {
            "params": float(params),
            "flops": float(flops),
            "activations": float(activations),
        }

    def describe(self, genotype: Genotype) -> str:
        """``m<min_kernels> k<kernel_size> <activation> <initializer> <regularizer> drop= lr=``."""
        return (
            f"m{genotype['min_kernels']} k{genotype['kernel_size']} {genotype['activation']} "
            f"{genotype['initializer']} {genotype['regularizer']} "
            f"drop={genotype['dropout']:.3g} lr={genotype['lr']:.3g}"
        )
