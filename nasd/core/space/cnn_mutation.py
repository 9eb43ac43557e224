"""Mutation operators of the CNN space (:class:`nasd.core.space.cnn.CnnSpace`).

This module holds the operators that turn a valid list of layers into a neighbouring one: change
the kernel, filters, stride or pool of one layer; insert a random layer; remove a layer (skips
re-indexed); add or remove one skip connection; and :func:`mutate_layers`, which picks one
operator uniformly among those applicable. It was split out of :mod:`nasd.core.space.cnn` to keep
that module about the space itself (spec, sampling, validation, plan and cost).

The operators see layers as plain dicts (``kernel``, ``filters``, ``stride``, ``pool``,
``skips``) and take the few space settings they need as arguments, so this module imports nothing
from :mod:`nasd.core.space.cnn` and there is no import cycle. Every random draw comes from the
``random.Random`` passed in, in a fixed order, so a seed gives the same mutations every time.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Mapping, Sequence
from typing import Any

Layer = dict[str, Any]
"""One layer of a CNN genotype: ``{"kernel", "filters", "stride", "pool", "skips"}``."""

LayerFactory = Callable[[int, random.Random], Layer]
"""Draws a random layer for index ``i`` (its skips may only name layers ``j <= i - 2``)."""


def mutate_layers(
    layers: Sequence[Mapping[str, Any]],
    rng: random.Random,
    *,
    genes: Mapping[str, Sequence[Any]],
    min_layers: int,
    max_layers: int,
    skips: bool,
    new_layer: LayerFactory,
) -> list[Layer]:
    """Apply one operator chosen uniformly among those applicable; never modifies ``layers``.

    ``genes`` maps each per-layer key to its choices (a key with one choice cannot change);
    ``min_layers`` and ``max_layers`` bound the depth; ``skips`` says whether skip connections
    are allowed; ``new_layer`` draws the layer that ``insert`` adds. When no operator applies
    (the space has a single member) an unchanged copy is returned.
    """
    copied = [{**layer, "skips": list(layer["skips"])} for layer in layers]
    operators = applicable_operators(
        copied, genes, min_layers=min_layers, max_layers=max_layers, skips=skips
    )
    if not operators:
        return copied
    operator = operators[rng.randrange(len(operators))]
    if operator in genes:
        return change_gene(copied, operator, genes[operator], rng)
    if operator == "insert":
        return insert_layer(copied, rng, new_layer)
    if operator == "remove":
        return remove_layer(copied, rng)
    if operator == "add_skip":
        return add_skip(copied, rng)
    return remove_skip(copied, rng)


def applicable_operators(
    layers: Sequence[Mapping[str, Any]],
    genes: Mapping[str, Sequence[Any]],
    *,
    min_layers: int,
    max_layers: int,
    skips: bool,
) -> list[str]:
    """The operators that can change ``layers``, in a fixed order (gene keys first)."""
    operators = [key for key, choices in genes.items() if len(choices) > 1]
    if len(layers) < max_layers:
        operators.append("insert")
    if len(layers) > min_layers:
        operators.append("remove")
    if skips and missing_skips(layers):
        operators.append("add_skip")
    if any(layer["skips"] for layer in layers):
        operators.append("remove_skip")
    return operators


def missing_skips(layers: Sequence[Mapping[str, Any]]) -> list[tuple[int, int]]:
    """Every allowed skip ``(i, j)`` (``j <= i - 2``) that layer ``i`` does not have yet."""
    return [(i, j) for i in range(len(layers)) for j in range(i - 1) if j not in layers[i]["skips"]]


def change_gene(
    layers: list[Layer], key: str, choices: Sequence[Any], rng: random.Random
) -> list[Layer]:
    """Give one random layer a different ``key`` value from ``choices`` (in place)."""
    layer = layers[rng.randrange(len(layers))]
    others = [c for c in choices if c != layer[key]]
    layer[key] = others[rng.randrange(len(others))]
    return layers


def insert_layer(layers: list[Layer], rng: random.Random, new_layer: LayerFactory) -> list[Layer]:
    """A new random layer at a random index (``0`` to ``len(layers)``); see :func:`insert_at`."""
    at = rng.randint(0, len(layers))
    return insert_at(layers, at, new_layer, rng)


def insert_at(
    layers: list[Layer], at: int, new_layer: LayerFactory, rng: random.Random
) -> list[Layer]:
    """A new random layer at index ``at``; later skips are shifted to follow their sources."""
    shifted = [
        {**layer, "skips": [j + 1 if j >= at else j for j in layer["skips"]]} if i >= at else layer
        for i, layer in enumerate(layers)
    ]
    return [*shifted[:at], new_layer(at, rng), *shifted[at:]]


def remove_layer(layers: list[Layer], rng: random.Random) -> list[Layer]:
    """Drop a random layer; see :func:`remove_at`."""
    return remove_at(layers, rng.randrange(len(layers)))


def remove_at(layers: Sequence[Mapping[str, Any]], at: int) -> list[Layer]:
    """Drop layer ``at``: skips to it vanish, later indices shift down, and a skip that now names
    its layer's direct predecessor (already its input) is dropped."""
    kept = []
    for i, layer in enumerate(layers):
        if i == at:
            continue
        new_index = i if i < at else i - 1
        skips = [j if j < at else j - 1 for j in layer["skips"] if j != at]
        kept.append({**layer, "skips": [j for j in skips if j <= new_index - 2]})
    return kept


def add_skip(layers: list[Layer], rng: random.Random) -> list[Layer]:
    """Add one random missing skip connection (in place); there must be one to add."""
    missing = missing_skips(layers)
    i, j = missing[rng.randrange(len(missing))]
    layers[i]["skips"] = sorted([*layers[i]["skips"], j])
    return layers


def remove_skip(layers: list[Layer], rng: random.Random) -> list[Layer]:
    """Remove one random skip connection (in place); there must be one to remove."""
    present = [(i, j) for i, layer in enumerate(layers) for j in layer["skips"]]
    i, j = present[rng.randrange(len(present))]
    layers[i]["skips"].remove(j)
    return layers
