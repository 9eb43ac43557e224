"""The PyTorch U-Net a ``unet`` genotype describes (see :mod:`nasd.core.space.unet`).

:func:`build_unet` creates one module per convolution of :meth:`UNetSpace.plan`, in the plan's
order, so its parameter count is the space's ``cost()["params"]`` exactly. The network maps
``(N, channels, H, W)`` to ``(N, 1, H, W)`` membrane logits for any ``H`` and ``W`` divisible by
``2**depth`` (the crops it trains on and the full slices it is evaluated on).

Choices where the seed's Keras code and PyTorch differ, made to follow Keras' defaults:

- ``prelu`` learns one slope per channel (Keras' ``shared_axes=[1, 2]``), starting at 0.25;
- ``leaky_relu`` has slope 0.3 (Keras' default ``alpha``), not PyTorch's 0.01;
- ``thresholded_relu`` is ``x`` where ``x > 1`` and 0 elsewhere (Keras' default ``theta=1``);
- ``glorot_normal`` and ``he_normal`` draw from Keras' truncated normal (cut at two standard
  deviations, the deviation rescaled so the variance is ``2 / (fan_in + fan_out)`` and
  ``2 / fan_in``); fans are ``in_channels * k * k`` and ``out_channels * k * k`` for every
  convolution, transposed ones included. Biases start at zero; PReLU slopes are left alone.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import nn

from nasd.core.space.unet import ConvPlan, UNetPlan, UNetSpace

LEAKY_SLOPE = 0.3
THRESHOLD = 1.0
_TRUNCATED_STD = 0.87962566103423978  # std of a unit normal truncated to [-2, 2]


class ThresholdedReLU(nn.Module):
    """``x`` where ``x > theta``, else 0 (Keras' ThresholdedReLU)."""

    def __init__(self, theta: float = THRESHOLD) -> None:
        super().__init__()
        self.theta = theta

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Zero out everything at or below the threshold."""
        return torch.where(x > self.theta, x, torch.zeros_like(x))

    def extra_repr(self) -> str:
        return f"theta={self.theta}"


ACTIVATIONS: dict[str, Callable[[int], nn.Module]] = {
    "sigmoid": lambda channels: nn.Sigmoid(),
    "tanh": lambda channels: nn.Tanh(),
    "relu": lambda channels: nn.ReLU(),
    "elu": lambda channels: nn.ELU(),
    "prelu": lambda channels: nn.PReLU(num_parameters=channels),
    "leaky_relu": lambda channels: nn.LeakyReLU(LEAKY_SLOPE),
    "thresholded_relu": lambda channels: ThresholdedReLU(),
}
"""Activation name -> factory taking the channel count (only PReLU uses it)."""


def _truncated_normal_(weight: torch.Tensor, variance: float) -> None:
    std = math.sqrt(variance) / _TRUNCATED_STD
    nn.init.trunc_normal_(weight, mean=0.0, std=std, a=-2 * std, b=2 * std)


def initialize(conv: nn.Conv2d | nn.ConvTranspose2d, initializer: str) -> None:
    """Set ``conv``'s weights by the named Keras initialiser and its bias to zero."""
    k = conv.kernel_size[0] * conv.kernel_size[1]
    fan_in, fan_out = conv.in_channels * k, conv.out_channels * k
    with torch.no_grad():
        if initializer == "zeros":
            nn.init.zeros_(conv.weight)
        elif initializer == "ones":
            nn.init.ones_(conv.weight)
        elif initializer == "glorot_normal":
            _truncated_normal_(conv.weight, 2.0 / (fan_in + fan_out))
        elif initializer == "he_normal":
            _truncated_normal_(conv.weight, 2.0 / fan_in)
        else:
            raise ValueError(f"unknown initializer {initializer!r}")
        if conv.bias is not None:
            nn.init.zeros_(conv.bias)


def _conv(plan: ConvPlan) -> nn.Conv2d | nn.ConvTranspose2d:
    if plan.transposed:
        return nn.ConvTranspose2d(plan.in_channels, plan.out_channels, plan.kernel, stride=2)
    return nn.Conv2d(plan.in_channels, plan.out_channels, plan.kernel, padding=plan.kernel // 2)


class UNet(nn.Module):
    """A U-Net built from a :class:`UNetPlan`; ``stages`` holds one ``Sequential`` per stage.

    Stages are named as in the plan: ``enc<l>``, ``bottleneck``, ``up<l>``, ``dec<l>``, ``head``.
    """

    def __init__(self, plan: UNetPlan, activation: str, dropout: float) -> None:
        super().__init__()
        self.depth = plan.depth
        stages: dict[str, list[nn.Module]] = {}
        for conv in plan.convs:
            modules = stages.setdefault(conv.stage, [])
            modules.append(_conv(conv))
            if conv.activated:
                modules.append(ACTIVATIONS[activation](conv.out_channels))
        stages["bottleneck"].append(nn.Dropout(dropout))
        self.stages = nn.ModuleDict({name: nn.Sequential(*mods) for name, mods in stages.items()})
        self.pool = nn.MaxPool2d(2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(N, C, H, W)`` -> ``(N, 1, H, W)`` logits; H and W divisible by ``2**depth``."""
        skips = []
        for level in range(self.depth):
            x = self.stages[f"enc{level}"](x)
            skips.append(x)
            x = self.pool(x)
        x = self.stages["bottleneck"](x)
        for level in reversed(range(self.depth)):
            x = self.stages[f"up{level}"](x)
            x = self.stages[f"dec{level}"](torch.cat([skips[level], x], dim=1))
        logits: torch.Tensor = self.stages["head"](x)
        return logits


def build_unet(space_spec: Mapping[str, Any], genotype: Mapping[str, Any]) -> UNet:
    """The U-Net ``genotype`` describes in the ``unet`` space ``space_spec``, initialised.

    Raises :class:`nasd.errors.ConfigError` for a bad spec and
    :class:`nasd.errors.InvalidGenotype` for a genotype outside the space. Draws its initial
    weights from torch's global generator: seed it (under ``fork_rng``) for reproducibility.
    """
    space = UNetSpace.from_spec(space_spec)
    plan = space.plan(dict(genotype))
    model = UNet(plan, str(genotype["activation"]), float(genotype["dropout"]))
    for module in model.modules():
        if isinstance(module, nn.Conv2d | nn.ConvTranspose2d):
            initialize(module, str(genotype["initializer"]))
    return model


def conv_weights(model: nn.Module) -> list[torch.Tensor]:
    """The weights (not biases) of every convolution: what the regularisers penalise."""
    return [m.weight for m in model.modules() if isinstance(m, nn.Conv2d | nn.ConvTranspose2d)]


__all__ = ["ACTIVATIONS", "ThresholdedReLU", "UNet", "build_unet", "conv_weights", "initialize"]
