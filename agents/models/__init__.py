"""Model builders: the PyTorch network a genotype of a given space kind describes.

``build_model(space_spec, genotype)`` dispatches on ``space_spec["kind"]``: ``cnn`` builds the
space's convolutional network; ``hparams`` builds an MLP from the genotype's ``layers``,
``width``, ``activation`` and ``dropout`` (defaults 2, 128, relu, 0.0), with the input size and
class count taken from the spec's ``input_shape`` and ``num_classes``; ``unet`` builds the
seed's segmentation U-Net (:mod:`agents.models.unet`); ``rnn-cell`` a tree-structured recurrent
cell unrolled over a sequence (:mod:`agents.models.rnn_cell`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

from torch import nn

from agents.models.cnn import build_cnn
from agents.models.rnn_cell import build_rnn_cell
from agents.models.unet import build_unet
from nasd.core.space.hparams import HparamsSpace
from nasd.core.values import is_int, is_number
from nasd.errors import InvalidGenotype

ACTIVATIONS: dict[str, Callable[[], nn.Module]] = {
    "relu": nn.ReLU,
    "tanh": nn.Tanh,
    "gelu": nn.GELU,
    "elu": nn.ELU,
}


def build_mlp(space_spec: Mapping[str, Any], genotype: Mapping[str, Any]) -> nn.Module:
    """Flatten -> ``layers`` x (Linear(width) -> activation [-> Dropout]) -> Linear(num_classes).

    Genotype keys other than the four read here (learning rate, batch size, ...) are left to the
    trainer. The genotype is validated against the space first. Raises ValueError when the spec
    lacks ``input_shape``/``num_classes`` and :class:`InvalidGenotype` for out-of-range values.
    """
    space = HparamsSpace.from_spec(space_spec)
    space.validate(genotype)
    input_shape, num_classes = space.input_shape, space.num_classes
    if input_shape is None or num_classes is None:
        raise ValueError("an hparams space needs 'input_shape' and 'num_classes' to build an MLP")
    layers, width = genotype.get("layers", 2), genotype.get("width", 128)
    activation, dropout = genotype.get("activation", "relu"), genotype.get("dropout", 0.0)
    if not is_int(layers) or layers < 0:
        raise InvalidGenotype(f"layers: expected an int >= 0, got {layers!r}")
    if not is_int(width) or width < 1:
        raise InvalidGenotype(f"width: expected an int >= 1, got {width!r}")
    if activation not in ACTIVATIONS:
        raise InvalidGenotype(
            f"activation: expected one of {sorted(ACTIVATIONS)}, got {activation!r}"
        )
    if not is_number(dropout) or not 0 <= dropout < 1:
        raise InvalidGenotype(f"dropout: expected a number in [0, 1), got {dropout!r}")
    modules: list[nn.Module] = [nn.Flatten()]
    features = math.prod(input_shape)
    for _ in range(layers):
        modules += [nn.Linear(features, width), ACTIVATIONS[activation]()]
        if dropout > 0:
            modules.append(nn.Dropout(float(dropout)))
        features = width
    modules.append(nn.Linear(features, num_classes))
    return nn.Sequential(*modules)


BUILDERS: dict[str, Callable[[Mapping[str, Any], Mapping[str, Any]], nn.Module]] = {
    "cnn": build_cnn,
    "hparams": build_mlp,
    "unet": build_unet,
    "rnn-cell": build_rnn_cell,
}


def build_model(space_spec: Mapping[str, Any], genotype: Mapping[str, Any]) -> nn.Module:
    """The network ``genotype`` describes in ``space_spec``; ValueError for unknown kinds."""
    kind = space_spec.get("kind")
    builder = BUILDERS.get(kind) if isinstance(kind, str) else None
    if builder is None:
        raise ValueError(f"no model builder for space kind {kind!r}")
    return builder(space_spec, genotype)


__all__ = ["ACTIVATIONS", "BUILDERS", "build_cnn", "build_mlp", "build_model"]
