"""The reference network every agent times at birth: one calibrated speed for every device.

A matmul benchmark (the profile's ``throughput``) says little about how fast a device *trains*:
small convolutions, BatchNorm and the optimiser step are bound by memory and launch overhead, not
by peak FLOP/s. So each agent also trains this fixed small CNN (a :mod:`nasd.core.space.cnn`
genotype, built by the same code that builds children) for a few batches and reports
``samples_per_s``. The scheduler turns that into an effective training speed in FLOP/s
(:func:`training_flops_per_s`) and divides a child's FLOPs by it to estimate its duration.
"""

from __future__ import annotations

import functools
from typing import Any

from nasd.core.space.cnn import CnnSpace

REFERENCE_SPACE: dict[str, Any] = {
    "kind": "cnn",
    "input_shape": [3, 32, 32],
    "num_classes": 10,
    "min_layers": 3,
    "max_layers": 3,
    "kernels": [3],
    "filters": [32, 64],
    "strides": [1],
    "pools": ["none", "max"],
    "skips": False,
    "head": "gap",
}
"""The space the reference network is drawn from (CIFAR-sized input, 10 classes)."""

REFERENCE_GENOTYPE: dict[str, Any] = {
    "layers": [
        {"kernel": 3, "filters": 32, "stride": 1, "pool": "max", "skips": []},
        {"kernel": 3, "filters": 64, "stride": 1, "pool": "max", "skips": []},
        {"kernel": 3, "filters": 64, "stride": 1, "pool": "none", "skips": []},
    ]
}
"""A three-layer CNN of about 57 k parameters: small enough to time on a CPU in a second."""

REFERENCE_BATCH = 64
"""Samples per training step when timing the reference network."""

TRAINING_FLOPS_FACTOR = 3.0
"""A training step costs about three forward passes (forward, input and weight gradients)."""


def reference_space() -> CnnSpace:
    """The reference network's space (built on demand: the spec is the single source)."""
    return CnnSpace.from_spec(REFERENCE_SPACE)


@functools.cache
def reference_flops_per_sample() -> float:
    """Multiply-accumulates of one forward pass of the reference network on one sample.

    Cached: every scheduling pass rates every agent with it, and it never changes.
    """
    return reference_space().cost(REFERENCE_GENOTYPE)["flops"]


def training_flops_per_s(samples_per_s: float) -> float:
    """Effective training speed (multiply-accumulates per second) from a reference timing."""
    return max(0.0, samples_per_s) * TRAINING_FLOPS_FACTOR * reference_flops_per_sample()
