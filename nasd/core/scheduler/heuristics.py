"""SHADHO's model heuristics (Kinnison et al., WACV 2018): complexity, priority, and a memory bound.

*Complexity* measures how large a model's search space is, per domain ``s``:

* continuous: ``C(s) = 2 + |b - a|``, where ``[a, b]`` is the central interval holding 99 % of
  the distribution: ``0.99 (high - low)`` for a uniform, the same in log space for a
  log-uniform (natural logarithm), ``2 z std`` for a normal with ``z = Φ⁻¹(0.995) ≈ 2.576``;
* discrete with ``n`` values: ``C(s) = 2 - 1/n`` (1 for a fixed choice, approaching 2);

and a model's complexity is the product over its domains (an empty space has complexity 1).

*Priority* measures how much a model's performance still varies with its parametrisation:
``P(L) = 1/min(L) - 1/max(L)`` over the losses ``L`` observed so far. SHADHO's own code crashed on
the edge cases, so here: fewer than two finite losses give ``None`` (unknown: nothing to compare
yet), equal losses give 0, and losses are floored at :data:`LOSS_FLOOR` so a perfect score (loss
0) gives a large finite priority instead of a division by zero.

The memory bound (:func:`memory_estimate`) is what a training step of a child needs: weights,
gradients and two Adam moments per parameter, activations kept for the backward pass (twice:
values and their gradients) for each sample of the batch, and a fixed allowance for the
allocator. It is deliberately an overestimate: a job placed on an agent that cannot hold it fails
after minutes of work, one kept off a borderline agent waits a little.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence

from nasd.core.space.domains import Discrete, Domain, LogUniform, Normal, Uniform

CENTRAL_MASS = 0.99
"""The share of a continuous distribution the complexity interval holds."""

NORMAL_Z = 2.5758293035489004
"""``Φ⁻¹(0.995)``: a normal's central 99 % interval is ``mean ± NORMAL_Z std``."""

LOSS_FLOOR = 1e-6
"""Losses below this count as this (a perfect score must not divide by zero)."""

BYTES_PER_VALUE = 4
"""float32 training."""

PARAM_COPIES = 4
"""Weights, gradients and Adam's two moments."""

ACTIVATION_COPIES = 2
"""Activations kept for the backward pass and their gradients."""

RUNTIME_ALLOWANCE_BYTES = 64 * 2**20
"""Allocator slack and workspace per job, on top of the model's own tensors."""


def domain_complexity(domain: Domain) -> float:
    """``C(s)`` of one domain (module docstring)."""
    if isinstance(domain, Discrete):
        return 2.0 - 1.0 / max(1, domain.size)
    if isinstance(domain, Uniform):
        return 2.0 + CENTRAL_MASS * abs(domain.high - domain.low)
    if isinstance(domain, LogUniform):
        low, high = sorted((domain.low, domain.high))
        if low <= 0:
            raise ValueError(f"log-uniform domain needs positive bounds, got {domain}")
        return 2.0 + CENTRAL_MASS * (math.log(high) - math.log(low))
    if isinstance(domain, Normal):
        return 2.0 + 2.0 * NORMAL_Z * abs(domain.std)
    raise TypeError(f"not a domain: {domain!r}")


def complexity(domains: Iterable[Domain]) -> float:
    """A model's complexity: the product of its domains' ``C(s)``."""
    return math.prod(domain_complexity(d) for d in domains)


def priority(losses: Sequence[float]) -> float | None:
    """``P(L) = 1/min(L) - 1/max(L)``; None with fewer than two finite losses (see module)."""
    finite = [loss for loss in losses if math.isfinite(loss)]
    if len(finite) < 2:
        return None
    low = max(min(finite), LOSS_FLOOR)
    high = max(max(finite), LOSS_FLOOR)
    return 1.0 / low - 1.0 / high


def as_loss(value: float, *, maximise: bool) -> float:
    """A metric value as a loss: ``1 - value`` for a maximised metric (accuracy-like, in [0, 1]),
    the value itself for a minimised one; never below 0 (NaN stays NaN: no score at all)."""
    if not math.isfinite(value):
        return math.nan
    return max(0.0, 1.0 - value if maximise else value)


def memory_estimate(cost: Mapping[str, float], batch_size: int) -> int | None:
    """Bytes a training step of a child with this ``space.cost`` needs; None if unknown.

    Needs ``params`` or ``activations`` (floats per sample) in ``cost``; a space that reports
    neither (plain hyperparameters) gives None: the scheduler then has no memory limit to apply.
    """
    params = cost.get("params")
    activations = cost.get("activations")
    if params is None and activations is None:
        return None
    values = PARAM_COPIES * (params or 0.0) + ACTIVATION_COPIES * (activations or 0.0) * max(
        1, batch_size
    )
    return int(values * BYTES_PER_VALUE) + RUNTIME_ALLOWANCE_BYTES
