"""The PyTorch network of an ``rnn-cell`` genotype: the searched cell unrolled, a linear head.

The cell follows :mod:`nasd.core.space.rnn_cell` exactly: each leaf owns a projection of the
input (``W x_t + b``) and of the previous hidden state (``U h_{t-1} + d``); the tree combines them
without further weights; ``c_{t-1}`` is injected at one node and ``c_t`` taken from another before
its activation. All leaves' projections are computed by one ``Linear`` each for ``x`` and ``h``
(the leaves' weights stacked), and the input projections of every time step at once, so a step
costs one matrix product. The parameter count equals ``RnnCellSpace.cost(g)["params"]``. The
cell's weights and biases start uniform in ``+-1/sqrt(hidden)``, as torch's recurrent layers do
(``Linear``'s default would give the 1-feature input projection weights up to +-1).

Inputs are ``(N, input_size, seq_len)``, the channels-first layout the data sets and the ``cnn``
space use (MNIST-1D is ``(N, 1, 40)``); the head reads the last hidden state.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import nn

from nasd.core.space.rnn_cell import RnnCellSpace

_ACTIVATIONS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "tanh": torch.tanh,
    "relu": torch.relu,
    "sigmoid": torch.sigmoid,
    "identity": lambda x: x,
}
_COMBINES: dict[str, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = {
    "add": torch.add,
    "mul": torch.mul,
}


class TreeCell(nn.Module):
    """One step of the searched cell: ``(x_proj_t, h_{t-1}, c_{t-1}) -> (h_t, c_t)``."""

    def __init__(self, space: RnnCellSpace, genotype: Mapping[str, Any]) -> None:
        super().__init__()
        self.leaves, self.hidden = space.leaves, space.hidden
        self.input_proj = nn.Linear(space.input_size, space.leaves * space.hidden)
        self.hidden_proj = nn.Linear(space.hidden, space.leaves * space.hidden)
        self.children_of = space.children
        self.combines = [_COMBINES[node["combine"]] for node in genotype["nodes"]]
        self.activations = [_ACTIVATIONS[node["activation"]] for node in genotype["nodes"]]
        inject = genotype["cell_inject"]
        self.inject_node: int = inject["node"]
        self.inject_combine = _COMBINES[inject["combine"]]
        self.inject_activation = _ACTIVATIONS[inject["activation"]]
        self.emit_node: int = genotype["cell_emit"]
        bound = space.hidden**-0.5
        for weight in (*self.input_proj.parameters(), *self.hidden_proj.parameters()):
            nn.init.uniform_(weight, -bound, bound)

    def forward(
        self, x_proj: torch.Tensor, h: torch.Tensor, c: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``x_proj`` is this step's input projection ``(N, leaves * hidden)``."""
        h_proj = self.hidden_proj(h).split(self.hidden, dim=1)
        x_parts = x_proj.split(self.hidden, dim=1)
        outputs: list[torch.Tensor] = []
        c_next = c
        for n, children in enumerate(self.children_of):
            if children is None:
                left, right = x_parts[n], h_proj[n]
            else:
                left, right = outputs[children[0]], outputs[children[1]]
            value = self.combines[n](left, right)
            if n == self.emit_node:
                c_next = value
            out = self.activations[n](value)
            if n == self.inject_node:
                out = self.inject_activation(self.inject_combine(out, c))
            outputs.append(out)
        return outputs[-1], c_next


class RnnCellNet(nn.Module):
    """The cell unrolled over the sequence from ``h_0 = c_0 = 0``; a linear head on ``h_T``."""

    def __init__(self, space: RnnCellSpace, genotype: Mapping[str, Any]) -> None:
        super().__init__()
        self.cell = TreeCell(space, genotype)
        self.head = nn.Linear(space.hidden, space.num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits ``(N, num_classes)`` for a float batch ``(N, input_size, seq_len)``."""
        projected = self.cell.input_proj(x.transpose(1, 2))  # (N, T, leaves * hidden)
        h = x.new_zeros(x.shape[0], self.cell.hidden)
        c = h
        for t in range(projected.shape[1]):
            h, c = self.cell(projected[:, t], h, c)
        return self.head(h)


def build_rnn_cell(spec: Mapping[str, Any], genotype: Mapping[str, Any]) -> nn.Module:
    """The network of ``genotype`` in the ``rnn-cell`` space ``spec``; validates both first.

    Raises :class:`nasd.errors.ConfigError` for a bad spec and
    :class:`nasd.errors.InvalidGenotype` for a genotype outside the space.
    """
    space = RnnCellSpace.from_spec(spec)
    space.validate(dict(genotype))
    return RnnCellNet(space, genotype)
