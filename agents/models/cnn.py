"""The PyTorch network of a ``cnn`` space genotype (see :mod:`nasd.core.space.cnn` for the rules).

The layout comes from :meth:`nasd.core.space.cnn.CnnSpace.plan`, the same resolution the
space's cost model uses, so ``sum(p.numel() for p in model.parameters())`` equals
``space.cost(g)["params"]``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn
from torch.nn import functional

from nasd.core.space.cnn import CnnPlan, CnnSpace, LayerPlan

_LAYERS: dict[int, dict[str, Any]] = {
    1: {
        "conv": nn.Conv1d,
        "norm": nn.BatchNorm1d,
        "max": nn.MaxPool1d,
        "avg": nn.AvgPool1d,
        "adaptive": functional.adaptive_avg_pool1d,
    },
    2: {
        "conv": nn.Conv2d,
        "norm": nn.BatchNorm2d,
        "max": nn.MaxPool2d,
        "avg": nn.AvgPool2d,
        "adaptive": functional.adaptive_avg_pool2d,
    },
}


def _block(layer: LayerPlan, kinds: Mapping[str, Any]) -> nn.Sequential:
    """Conv (no bias, same padding) -> BatchNorm -> ReLU -> optional 2x2 pool."""
    modules: list[nn.Module] = [
        kinds["conv"](
            layer.in_channels,
            layer.out_channels,
            layer.kernel,
            stride=layer.stride,
            padding=layer.kernel // 2,
            bias=False,
        ),
        kinds["norm"](layer.out_channels),
        nn.ReLU(inplace=True),
    ]
    if layer.pool != "none":
        modules.append(kinds[layer.pool](kernel_size=2, stride=2))
    return nn.Sequential(*modules)


class CnnNet(nn.Module):
    """A chain of conv blocks with concatenated, adaptively pooled skip inputs and a linear head."""

    def __init__(self, plan: CnnPlan) -> None:
        super().__init__()
        kinds = _LAYERS[len(plan.input_size)]
        self.plan = plan
        self._adaptive_pool = kinds["adaptive"]
        self.blocks = nn.ModuleList(_block(layer, kinds) for layer in plan.layers)
        self.head = nn.Linear(plan.head_features, plan.num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits ``(N, num_classes)`` for a float batch ``(N, *input_shape)``."""
        outputs: list[torch.Tensor] = []
        for layer, block in zip(self.plan.layers, self.blocks, strict=True):
            if layer.skips:
                size = x.shape[2:]
                sources = [x]
                for j in layer.skips:
                    source = outputs[j]
                    if source.shape[2:] != size:
                        source = self._adaptive_pool(source, tuple(size))
                    sources.append(source)
                x = torch.cat(sources, dim=1)
            x = block(x)
            outputs.append(x)
        x = (
            torch.flatten(x, 1)
            if self.plan.head == "flatten"
            else x.mean(dim=tuple(range(2, x.dim())))
        )
        return self.head(x)


def build_cnn(spec: Mapping[str, Any], genotype: Mapping[str, Any]) -> nn.Module:
    """The network of ``genotype`` in the ``cnn`` space ``spec``; validates both first.

    Raises :class:`nasd.errors.ConfigError` for a bad spec and
    :class:`nasd.errors.InvalidGenotype` for a genotype outside the space.
    """
    space = CnnSpace.from_spec(spec)
    return CnnNet(space.plan(dict(genotype)))
