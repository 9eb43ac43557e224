"""Recurrent cells as a tree of computation steps (Zoph & Le, ICLR 2017, section 3.4).

The cell is a full binary tree over ``L = nodes`` leaves (2, 4 or 8), ``2L - 1`` tree nodes in
all, numbered level by level from the leaves up: leaves ``0 .. L-1``, then the internal nodes, the
root last (``2L - 2``). Internal node ``n >= L`` combines nodes ``2(n - L)`` and ``2(n - L) + 1``
(for ``L = 4``: node 4 = (0, 1), node 5 = (2, 3), node 6 = (4, 5)). At each time step:

- leaf ``i`` computes ``a_i = act_i(combine_i(W_i x_t + b_i, U_i h_{t-1} + d_i))``: its own
  projections of the input and of the previous hidden state (the only learnable weights);
- internal node ``n`` computes ``a_n = act_n(combine_n(a_left, a_right))`` (no weights);
- cell inject: right after node ``k = cell_inject.node`` is computed, its output becomes
  ``inject_act(inject_combine(a_k, c_{t-1}))``; its parent (or ``h_t``) reads that value;
- cell emit: ``c_t`` is node ``cell_emit``'s value *before* its activation (the paper: "set c_t
  to the output of the tree at index 1 before the activation");
- ``h_t`` is the root's output; ``h_0 = c_0 = 0``.

``combine`` is ``add`` or ``mul`` (elementwise), ``activation`` one of :data:`ACTIVATIONS`. The
paper's controller predicts the two cell indices among tree nodes; this space lets both point at
any node (the paper's base-2 example uses leaves), a superset that includes its cells.

A genotype is::

    {"nodes": [{"combine": "add", "activation": "tanh"}, ...],   # 2L - 1 entries, by index
     "cell_inject": {"node": 0, "combine": "add", "activation": "relu"},
     "cell_emit": 1}

The PyTorch model is :mod:`agents.models.rnn_cell`; the parameter count here equals the model's.
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

COMBINES: tuple[str, ...] = ("add", "mul")
ACTIVATIONS: tuple[str, ...] = ("tanh", "relu", "sigmoid", "identity")
LEAF_COUNTS: tuple[int, ...] = (2, 4, 8)
NODE_KEYS: frozenset[str] = frozenset({"combine", "activation"})
INJECT_KEYS: frozenset[str] = frozenset({"node", "combine", "activation"})
GENOTYPE_KEYS: frozenset[str] = frozenset({"nodes", "cell_inject", "cell_emit"})
MAX_HIDDEN = 4096


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def tree_children(leaves: int) -> list[tuple[int, int] | None]:
    """For every tree node in index order, the two nodes it combines (``None`` for a leaf)."""
    children: list[tuple[int, int] | None] = [None] * leaves
    children += [(2 * (n - leaves), 2 * (n - leaves) + 1) for n in range(leaves, 2 * leaves - 1)]
    return children


def plain_cell(leaves: int = 4) -> Genotype:
    """A reference cell: every node ``add``/``tanh``, ``c_{t-1}`` added (identity) at leaf 0,
    ``c_t`` emitted from the root before its tanh: a deep tanh RNN with an additive memory."""
    return {
        "nodes": [{"combine": "add", "activation": "tanh"} for _ in range(2 * leaves - 1)],
        "cell_inject": {"node": 0, "combine": "add", "activation": "identity"},
        "cell_emit": 2 * leaves - 2,
    }


def gated_cell() -> Genotype:
    """A reference gated (LSTM-like) cell of the 4-leaf tree.

    Leaf 0 is a forget gate ``f = sigmoid(.)`` multiplied into ``c_{t-1}`` (inject ``mul`` /
    identity); leaf 1 a tanh candidate ``g``; node 4 adds them, and its value before the tanh is
    ``c_t = f * c_{t-1} + g``; leaves 2 and 3 are sigmoid output gates multiplied at node 5; the
    root is ``h_t = tanh(c_t) * o_2 * o_3``.
    """
    return {
        "nodes": [
            {"combine": "add", "activation": "sigmoid"},
            {"combine": "add", "activation": "tanh"},
            {"combine": "add", "activation": "sigmoid"},
            {"combine": "add", "activation": "sigmoid"},
            {"combine": "add", "activation": "tanh"},
            {"combine": "mul", "activation": "identity"},
            {"combine": "mul", "activation": "identity"},
        ],
        "cell_inject": {"node": 0, "combine": "mul", "activation": "identity"},
        "cell_emit": 4,
    }


def _positive_int(name: str, value: Any, upper: int | None = None) -> int:
    if not is_int(value) or value < 1 or (upper is not None and value > upper):
        bound = f" <= {upper}" if upper is not None else ""
        raise ConfigError(f"space.{name}: expected an int >= 1{bound}, got {_short(value)}")
    return value


class RnnCellSpace(SearchSpace):
    """Zoph & Le's tree-structured recurrent cells (see the module docstring)."""

    kind: ClassVar[str] = "rnn-cell"
    SPEC_KEYS: ClassVar[frozenset[str]] = frozenset(
        {"nodes", "hidden", "input_size", "seq_len", "num_classes", "input_shape"}
    )

    def __init__(
        self,
        *,
        nodes: int = 4,
        hidden: int = 64,
        input_size: int = 1,
        seq_len: int = 40,
        num_classes: int = 10,
    ) -> None:
        if not is_int(nodes) or nodes not in LEAF_COUNTS:
            raise ConfigError(
                f"space.nodes: expected the number of leaves, one of {list(LEAF_COUNTS)}, "
                f"got {_short(nodes)}"
            )
        self.leaves = nodes
        self.hidden = _positive_int("hidden", hidden, MAX_HIDDEN)
        self.input_size = _positive_int("input_size", input_size)
        self.seq_len = _positive_int("seq_len", seq_len)
        self.num_classes = _positive_int("num_classes", num_classes)
        self.node_count = 2 * nodes - 1
        self.children = tree_children(nodes)

    @classmethod
    def from_spec(cls, spec: Mapping[str, Any]) -> RnnCellSpace:
        """Build from a ``[space]`` table (``kind`` is ignored); unknown keys are refused.

        ``input_shape = [input_size, seq_len]`` is accepted instead of the two keys (the shared
        training loop fills it in from the data set, whose inputs are ``(N, features, length)``);
        when both forms are given they must agree.
        """
        options = {k: v for k, v in spec.items() if k != "kind"}
        unknown = sorted(set(options) - cls.SPEC_KEYS)
        if unknown:
            raise ConfigError(
                f"space.{unknown[0]}: unknown key for kind 'rnn-cell'; "
                f"allowed: {sorted(cls.SPEC_KEYS)}"
            )
        shape = options.pop("input_shape", None)
        if shape is not None:
            if (
                not isinstance(shape, Sequence)
                or isinstance(shape, str)
                or len(shape) != 2
                or not all(is_int(d) and d > 0 for d in shape)
            ):
                raise ConfigError(
                    "space.input_shape: expected [input_size, seq_len] of positive ints, "
                    f"got {_short(shape)}"
                )
            for key, value in zip(("input_size", "seq_len"), shape, strict=True):
                if options.setdefault(key, value) != value:
                    raise ConfigError(
                        f"space.input_shape: {list(shape)} disagrees with space.{key} = "
                        f"{options[key]!r}"
                    )
        return cls(**options)

    def spec(self) -> dict[str, Any]:
        """The JSON-able spec, defaults filled in, that rebuilds this space."""
        return {
            "kind": self.kind,
            "nodes": self.leaves,
            "hidden": self.hidden,
            "input_size": self.input_size,
            "seq_len": self.seq_len,
            "num_classes": self.num_classes,
        }

    # -- the choices, in one fixed order ---------------------------------------------------------

    def _genes(self) -> list[tuple[str, tuple[Any, ...]]]:
        """Every independent choice as (path, options), in the order of :meth:`decisions`:
        each node's combine then activation, then the inject node, combine and activation, then
        the emit node (Zoph & Le's order: the tree, the cell inject, the cell indices)."""
        genes: list[tuple[str, tuple[Any, ...]]] = []
        for n in range(self.node_count):
            genes += [(f"nodes[{n}].combine", COMBINES), (f"nodes[{n}].activation", ACTIVATIONS)]
        indices = tuple(range(self.node_count))
        genes += [
            ("cell_inject.node", indices),
            ("cell_inject.combine", COMBINES),
            ("cell_inject.activation", ACTIVATIONS),
            ("cell_emit", indices),
        ]
        return genes

    @staticmethod
    def _get(genotype: Mapping[str, Any], path: str) -> Any:
        if path.startswith("nodes["):
            index, _, key = path[len("nodes[") :].partition("].")
            return genotype["nodes"][int(index)][key]
        if path.startswith("cell_inject."):
            return genotype["cell_inject"][path[len("cell_inject.") :]]
        return genotype[path]

    def _build(self, values: Sequence[Any]) -> Genotype:
        """The genotype whose genes, in :meth:`_genes` order, take ``values``."""
        count = 2 * self.node_count
        nodes = [
            {"combine": values[2 * n], "activation": values[2 * n + 1]}
            for n in range(self.node_count)
        ]
        inject = {"node": values[count], "combine": values[count + 1]}
        inject["activation"] = values[count + 2]
        return {"nodes": nodes, "cell_inject": inject, "cell_emit": values[count + 3]}

    def domains(self) -> list[Domain]:
        """One ``Discrete`` per choice, in :meth:`decisions` order: per node ``Discrete(2)``
        (combine) and ``Discrete(4)`` (activation); the inject node ``Discrete(2L - 1)``, its
        combine and activation; the emit node ``Discrete(2L - 1)``."""
        return [Discrete(len(options)) for _, options in self._genes()]

    def decisions(self) -> list[Decision]:
        """The controller's decisions, one per choice (see :meth:`domains`); all always used."""
        return [Decision(path, len(options)) for path, options in self._genes()]

    def from_decisions(self, choices: Sequence[int]) -> tuple[Genotype, list[bool]]:
        """The genotype ``choices`` (one option index per decision) describe; every decision is
        used. ValueError (naming the decision) for a wrong count or an index out of range."""
        genes = self._genes()
        checked = check_choices(self.decisions(), choices)
        values = [options[c] for (_, options), c in zip(genes, checked, strict=True)]
        return self._build(values), [True] * len(genes)

    def to_decisions(self, genotype: Genotype) -> list[int]:
        """The option index of each decision for a valid ``genotype`` (inverse of
        :meth:`from_decisions`)."""
        self.validate(genotype)
        return [options.index(self._get(genotype, path)) for path, options in self._genes()]

    # -- genotypes ---------------------------------------------------------------------------

    def sample(self, rng: random.Random) -> Genotype:
        """Every choice drawn uniformly and independently, in :meth:`decisions` order."""
        return self._build([options[rng.randrange(len(options))] for _, options in self._genes()])

    def mutate(self, genotype: Genotype, rng: random.Random) -> Genotype:
        """One choice, picked uniformly among all of them, set to a uniformly drawn different
        option (every choice has at least two options, so the result always differs)."""
        self.validate(genotype)
        genes = self._genes()
        values = [self._get(genotype, path) for path, _ in genes]
        index = rng.randrange(len(genes))
        others = [option for option in genes[index][1] if option != values[index]]
        values[index] = others[rng.randrange(len(others))]
        return self._build(values)

    def validate(self, genotype: Any) -> None:
        """Check keys, the node list's length and every choice; the message names the path."""
        if not isinstance(genotype, Mapping) or set(genotype) != GENOTYPE_KEYS:
            raise InvalidGenotype(
                f"expected a table with keys {sorted(GENOTYPE_KEYS)}, got {_short(genotype)}"
            )
        nodes = genotype["nodes"]
        if not isinstance(nodes, list) or len(nodes) != self.node_count:
            raise InvalidGenotype(
                f"nodes: expected a list of {self.node_count} tables (a tree over "
                f"{self.leaves} leaves), got {_short(nodes)}"
            )
        for n, node in enumerate(nodes):
            if not isinstance(node, Mapping) or set(node) != NODE_KEYS:
                raise InvalidGenotype(
                    f"nodes[{n}]: expected a table with keys {sorted(NODE_KEYS)}, "
                    f"got {_short(node)}"
                )
        inject = genotype["cell_inject"]
        if not isinstance(inject, Mapping) or set(inject) != INJECT_KEYS:
            raise InvalidGenotype(
                f"cell_inject: expected a table with keys {sorted(INJECT_KEYS)}, "
                f"got {_short(inject)}"
            )
        for path, options in self._genes():
            value = self._get(genotype, path)
            typed = isinstance(value, str) if isinstance(options[0], str) else is_int(value)
            if not typed or value not in options:
                raise InvalidGenotype(f"{path}: {_short(value)} is not one of {list(options)}")

    # -- cost ------------------------------------------------------------------------------------

    def cost(self, genotype: Genotype) -> dict[str, float]:
        """Exact ``params``; ``flops`` and ``activations`` for a whole sequence of ``seq_len``.

        ``params``: per leaf ``W`` (``input_size x hidden`` + bias) and ``U`` (``hidden x
        hidden`` + bias), then the linear head. ``flops`` counts the multiply-adds of weights:
        ``seq_len`` steps of the leaves' projections, plus the head once (elementwise combines
        and activations are not counted, as in the other spaces). ``activations`` estimates the
        floats per sample kept for backpropagation through time: per step both projections,
        the combine and the activation of every leaf, the combine and activation of every
        internal node and of the injection, and ``c_t``; plus the input and the logits.
        """
        self.validate(genotype)
        leaves, hidden = self.leaves, self.hidden
        per_leaf = (self.input_size + 1) * hidden + (hidden + 1) * hidden
        head = hidden * self.num_classes + self.num_classes
        step_macs = leaves * hidden * (self.input_size + hidden)
        step_floats = hidden * (4 * leaves + 2 * (leaves - 1) + 2 + 1)
        return {
            "params": float(leaves * per_leaf + head),
            "flops": float(self.seq_len * step_macs + hidden * self.num_classes),
            "activations": float(self.seq_len * (step_floats + self.input_size) + self.num_classes),
        }

    def describe(self, genotype: Genotype) -> str:
        """``combine/activation`` per node by index, then the inject and the emit, e.g.
        ``0:add/tanh 1:mul/relu 2:mul/sigmoid | c_in@0 add/relu | c_out@1``."""
        nodes = " ".join(
            f"{n}:{node['combine']}/{node['activation']}"
            for n, node in enumerate(genotype["nodes"])
        )
        inject = genotype["cell_inject"]
        return (
            f"{nodes} | c_in@{inject['node']} {inject['combine']}/{inject['activation']}"
            f" | c_out@{genotype['cell_emit']}"
        )
