"""The CNN space's decision list, for the policy-gradient controllers (``reinforce``).

Zoph & Le's controller makes one decision after another: the depth, then for each possible layer
its kernel, filters, stride and pool (the pool completes the layer: its *anchor*), and, when skip
connections are on, one binary decision per earlier source ``j <= i - 2``, which the LSTM
controller takes by anchor-point attention. Decisions of layers beyond the chosen depth are made
but unused (no gradient). Split out of :mod:`nasd.core.space.cnn` to keep that module about the
space itself; like :mod:`nasd.core.space.cnn_mutation` it imports nothing from it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from nasd.core.events import Genotype
from nasd.core.space.decisions import Decision, check_choices

Genes = Mapping[str, Sequence[Any]]
"""Each layer gene (``kernel``, ``filters``, ``stride``, ``pool``, in order) and its choices."""


def decisions(genes: Genes, min_layers: int, max_layers: int, skips: bool) -> list[Decision]:
    """``depth`` (``max_layers - min_layers + 1`` options), then per layer its genes and skips."""
    out = [Decision("depth", max_layers - min_layers + 1)]
    for i in range(max_layers):
        for key, choices in genes.items():
            anchor = i if key == "pool" else None
            out.append(Decision(f"layers[{i}].{key}", len(choices), anchor=anchor))
        if skips:
            out += [Decision(f"layers[{i}].skips[{j}]", 2, skip=(i, j)) for j in range(i - 1)]
    return out


def layer_of(decision: Decision) -> int:
    """The layer index in a ``layers[<i>]...`` decision key."""
    return int(decision.key[len("layers[") : decision.key.index("]")])


def from_decisions(
    genes: Genes, min_layers: int, listed: Sequence[Decision], choices: Sequence[int]
) -> tuple[Genotype, list[bool]]:
    """The genotype ``choices`` describe, and which decisions it used."""
    checked = check_choices(listed, choices)
    depth = min_layers + checked[0]
    layers: list[dict[str, Any]] = [{"skips": []} for _ in range(depth)]
    used = [True]
    for decision, choice in zip(listed[1:], checked[1:], strict=True):
        index = layer_of(decision)
        used.append(index < depth)
        if index >= depth:
            continue
        layer = layers[index]
        if decision.skip is not None:
            if choice == 1:
                layer["skips"].append(decision.skip[1])
        else:
            gene = decision.key.rsplit(".", 1)[1]
            layer[gene] = genes[gene][choice]
    ordered = [{**{k: layer[k] for k in genes}, "skips": layer["skips"]} for layer in layers]
    return {"layers": ordered}, used


def to_decisions(
    genes: Genes, min_layers: int, listed: Sequence[Decision], genotype: Genotype
) -> list[int]:
    """The choices that describe a valid ``genotype``; layers beyond its depth get 0s."""
    layers = genotype["layers"]
    choices = [len(layers) - min_layers]
    for decision in listed[1:]:
        i = layer_of(decision)
        if i >= len(layers):
            choices.append(0)
        elif decision.skip is not None:
            choices.append(int(decision.skip[1] in layers[i]["skips"]))
        else:
            gene = decision.key.rsplit(".", 1)[1]
            choices.append(list(genes[gene]).index(layers[i][gene]))
    return choices
