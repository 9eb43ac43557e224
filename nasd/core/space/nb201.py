"""The NAS-Bench-201 cell space (Dong & Yang, ICLR 2020): 6 edges, 5 operations, 15,625 cells.

A genotype is ``{"ops": [op, op, op, op, op, op]}`` with the edges in arch-string order
``1<-0, 2<-0, 2<-1, 3<-0, 3<-1, 3<-2``. Helpers convert to and from the official arch string
(``|nor_conv_3x3~0|+|none~0|nor_conv_3x3~1|+|...|``) and the 6-digit op code used by the
reference table (``303101``). :meth:`NB201Space.cost` counts the parameters and multiply-adds of
the standard NB201 CIFAR network, so multi-objective strategies get them without training. The
parameter counts equal the benchmark's ``params_MB`` column exactly for 15,475 of the 15,625 cells;
for the other 150 (cells with isomorphic duplicate edges, e.g. ``122124``, where ``skip_connect``
makes node 1 a copy of node 0) the table lists the smaller network of the merged, deduplicated cell,
while this module counts the network as written.
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

from nasd.core.events import Genotype
from nasd.core.space._base import SearchSpace
from nasd.core.space.decisions import Decision, check_choices
from nasd.core.space.domains import Discrete, Domain
from nasd.core.values import is_int
from nasd.errors import ConfigError, InvalidGenotype

OPS: tuple[str, ...] = ("none", "skip_connect", "nor_conv_1x1", "nor_conv_3x3", "avg_pool_3x3")
EDGES: tuple[tuple[int, int], ...] = ((1, 0), (2, 0), (2, 1), (3, 0), (3, 1), (3, 2))
"""(to_node, from_node) for each edge, in arch-string order."""
NUM_EDGES = len(EDGES)

# The standard NB201 CIFAR network: stem, 3 stages of 5 cells, a residual reduction between stages.
_STEM_CHANNELS = 16
_CELLS_PER_STAGE = 5
_INPUT_CHANNELS = 3
_INPUT_SIZE = 32


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def to_arch_str(genotype: Mapping[str, Any]) -> str:
    """The official NB201 arch string, e.g. ``|nor_conv_3x3~0|+|none~0|nor_conv_3x3~1|+|...|``."""
    ops = genotype["ops"]
    nodes = []
    for node in (1, 2, 3):
        edges = [f"{ops[i]}~{src}" for i, (dst, src) in enumerate(EDGES) if dst == node]
        nodes.append("|" + "|".join(edges) + "|")
    return "+".join(nodes)


def from_arch_str(arch_str: str) -> Genotype:
    """Parse an arch string; raise :class:`InvalidGenotype` if it is not a valid NB201 cell."""
    if not isinstance(arch_str, str):
        raise InvalidGenotype(f"expected an NB201 arch string, got {_short(arch_str)}")
    nodes = arch_str.split("+")
    ops: list[str] = []
    if len(nodes) == 3:
        for node, text in enumerate(nodes, start=1):
            if not (text.startswith("|") and text.endswith("|")):
                break
            edges = text[1:-1].split("|")
            if len(edges) != node:
                break
            for src, edge in enumerate(edges):
                op, sep, index = edge.partition("~")
                if sep != "~" or index != str(src) or op not in OPS:
                    break
                ops.append(op)
    if len(ops) != NUM_EDGES:
        raise InvalidGenotype(
            f"not an NB201 arch string: {_short(arch_str)} (expected "
            "'|op~0|+|op~0|op~1|+|op~0|op~1|op~2|' with op in " + ", ".join(OPS) + ")"
        )
    return {"ops": ops}


def op_code(genotype: Mapping[str, Any]) -> str:
    """The 6-digit code of the reference table: one digit per edge, an index into :data:`OPS`."""
    return "".join(str(OPS.index(op)) for op in genotype["ops"])


def from_op_code(code: str) -> Genotype:
    """Parse a 6-digit op code; raise :class:`InvalidGenotype` if it is malformed."""
    if not isinstance(code, str) or len(code) != NUM_EDGES or not all(c in "01234" for c in code):
        raise InvalidGenotype(f"not an NB201 op code: {_short(code)} (expected 6 digits 0-4)")
    return {"ops": [OPS[int(c)] for c in code]}


def _cell_cost(ops: Sequence[str], channels: int, size: int) -> tuple[int, int]:
    """(params, MACs) of one cell; pooling, skip and none edges have neither."""
    params = flops = 0
    for op in ops:
        kernel_area = {"nor_conv_1x1": 1, "nor_conv_3x3": 9}.get(op)
        if kernel_area is not None:  # ReLU -> Conv(no bias) -> BN(affine)
            params += kernel_area * channels * channels + 2 * channels
            flops += kernel_area * channels * channels * size * size
    return params, flops


def _reduction_cost(c_in: int, c_out: int, out_size: int) -> tuple[int, int]:
    """(params, MACs) of the ResNet basic block with stride 2 between stages."""
    area = out_size * out_size
    conv_a = 9 * c_in * c_out  # ReLU -> Conv3x3 stride 2 -> BN
    conv_b = 9 * c_out * c_out  # ReLU -> Conv3x3 -> BN
    shortcut = c_in * c_out  # AvgPool2 -> Conv1x1, no BN
    params = conv_a + conv_b + shortcut + 2 * (2 * c_out)
    return params, (conv_a + conv_b + shortcut) * area


def _cell_activations(ops: Sequence[str], channels: int, size: int) -> int:
    """Floats per sample one cell keeps: ReLU, conv and BN outputs of each conv edge, each
    pooling edge's output and the three node sums (skip and none edges add no tensor)."""
    plane = channels * size * size
    per_edge = {"nor_conv_1x1": 3 * plane, "nor_conv_3x3": 3 * plane, "avg_pool_3x3": plane}
    return sum(per_edge.get(op, 0) for op in ops) + 3 * plane


def _reduction_activations(c_in: int, c_out: int, in_size: int) -> int:
    """Floats per sample the stride-2 residual block keeps (see :func:`_reduction_cost`)."""
    out_plane = c_out * (in_size // 2) ** 2
    first = c_in * in_size * in_size + 2 * out_plane  # ReLU(input), conv, BN
    second = 3 * out_plane  # ReLU, conv, BN
    shortcut = c_in * (in_size // 2) ** 2 + out_plane  # AvgPool, conv 1x1
    return first + second + shortcut + out_plane  # + the residual sum


def network_cost(ops: Sequence[str], num_classes: int = 10) -> dict[str, float]:
    """Parameters, multiply-adds and activations of the NB201 CIFAR network (32x32 input).

    Batch-norm affine weights count as parameters; batch-norm, ReLU and pooling arithmetic is not
    counted in ``flops`` (they are not multiply-adds of weights). ``activations`` is a rough
    estimate of the floats per sample a training step keeps for the backward pass: the input,
    the stem's conv and BN outputs, every cell's and reduction block's tensors (16, 32 and 64
    channels at 32x32, 16x16 and 8x8), the head's BN, ReLU and pooled features and the logits.
    """
    size, channels = _INPUT_SIZE, _STEM_CHANNELS
    stem_weights = 9 * _INPUT_CHANNELS * channels
    params, flops = stem_weights + 2 * channels, stem_weights * size * size
    activations = _INPUT_CHANNELS * size * size + 2 * channels * size * size
    for stage in range(3):
        if stage > 0:
            activations += _reduction_activations(channels, 2 * channels, size)
            size //= 2
            p, f = _reduction_cost(channels, 2 * channels, size)
            params, flops, channels = params + p, flops + f, 2 * channels
        p, f = _cell_cost(ops, channels, size)
        params, flops = params + _CELLS_PER_STAGE * p, flops + _CELLS_PER_STAGE * f
        activations += _CELLS_PER_STAGE * _cell_activations(ops, channels, size)
    params += 2 * channels  # BN before global average pooling
    params += channels * num_classes + num_classes
    flops += channels * num_classes
    activations += 2 * channels * size * size + channels + num_classes  # BN, ReLU, GAP, logits
    return {"params": float(params), "flops": float(flops), "activations": float(activations)}


class NB201Space(SearchSpace):
    """The NAS-Bench-201 topology space; mutation changes one edge to a different op."""

    kind: ClassVar[str] = "nb201"
    SPEC_KEYS: ClassVar[frozenset[str]] = frozenset({"num_classes"})

    def __init__(self, *, num_classes: int = 10) -> None:
        if not is_int(num_classes) or num_classes < 1:
            raise ConfigError(f"space.num_classes: expected a positive int, got {num_classes!r}")
        self.num_classes = num_classes

    @classmethod
    def from_spec(cls, spec: Mapping[str, Any]) -> NB201Space:
        """Build from a ``[space]`` table (``kind`` is ignored); unknown keys are refused."""
        options = {k: v for k, v in spec.items() if k != "kind"}
        unknown = sorted(set(options) - cls.SPEC_KEYS)
        if unknown:
            raise ConfigError(
                f"space.{unknown[0]}: unknown key for kind 'nb201'; "
                f"allowed: {sorted(cls.SPEC_KEYS)}"
            )
        return cls(**options)

    def spec(self) -> dict[str, Any]:
        """The JSON-able spec that rebuilds this space."""
        return {"kind": self.kind, "num_classes": self.num_classes}

    def domains(self) -> list[Domain]:
        """Six ``Discrete(5)``: one op choice per edge, in arch-string order."""
        return [Discrete(len(OPS)) for _ in range(NUM_EDGES)]

    def decisions(self) -> list[Decision]:
        """One choice of :data:`OPS` per edge, in arch-string order (the NB201 6x5 logits)."""
        return [Decision(f"ops[{edge}]", len(OPS)) for edge in range(NUM_EDGES)]

    def from_decisions(self, choices: Sequence[int]) -> tuple[Genotype, list[bool]]:
        """The cell whose edge ``i`` has op ``OPS[choices[i]]``; every decision is used."""
        checked = check_choices(self.decisions(), choices)
        return {"ops": [OPS[c] for c in checked]}, [True] * NUM_EDGES

    def to_decisions(self, genotype: Genotype) -> list[int]:
        """Each edge's index into :data:`OPS`."""
        self.validate(genotype)
        return [OPS.index(op) for op in genotype["ops"]]

    def sample(self, rng: random.Random) -> Genotype:
        """Each edge's op drawn uniformly and independently."""
        return {"ops": [OPS[rng.randrange(len(OPS))] for _ in range(NUM_EDGES)]}

    def mutate(self, genotype: Genotype, rng: random.Random) -> Genotype:
        """One uniformly chosen edge set to a uniformly chosen different op (the NB201 protocol)."""
        self.validate(genotype)
        ops = list(genotype["ops"])
        edge = rng.randrange(NUM_EDGES)
        others = [op for op in OPS if op != ops[edge]]
        ops[edge] = others[rng.randrange(len(others))]
        return {"ops": ops}

    def validate(self, genotype: Any) -> None:
        """A table with exactly ``ops``: a list of 6 names from :data:`OPS`."""
        if not isinstance(genotype, Mapping):
            raise InvalidGenotype(f'expected {{"ops": [6 op names]}}, got {_short(genotype)}')
        if set(genotype) != {"ops"}:
            raise InvalidGenotype(
                f'expected exactly the key "ops", got keys {_short(list(genotype))}'
            )
        ops = genotype["ops"]
        if not isinstance(ops, list) or len(ops) != NUM_EDGES:
            raise InvalidGenotype(
                f"ops: expected a list of {NUM_EDGES} op names, got {_short(ops)}"
            )
        for i, op in enumerate(ops):
            if not isinstance(op, str) or op not in OPS:
                raise InvalidGenotype(f"ops[{i}]: {_short(op)} is not one of {list(OPS)}")

    def cost(self, genotype: Genotype) -> dict[str, float]:
        """``params``, ``flops`` (multiply-adds) and ``activations`` (floats kept per sample for
        the backward pass, estimated) of the standard NB201 CIFAR network."""
        self.validate(genotype)
        return network_cost(genotype["ops"], self.num_classes)

    def describe(self, genotype: Genotype) -> str:
        """The official arch string."""
        return to_arch_str(genotype)
