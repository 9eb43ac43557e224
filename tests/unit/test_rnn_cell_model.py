"""The ``rnn-cell`` model: every sampled cell builds and runs, its parameter count is the space's,
and its arithmetic follows the tree the genotype describes (checked against a recursive reference
written from the space's docstring)."""

from __future__ import annotations

import random
from collections.abc import Mapping
from typing import Any

import pytest
import torch

from agents.models.rnn_cell import RnnCellNet, TreeCell, build_rnn_cell
from nasd.core.space.rnn_cell import RnnCellSpace, gated_cell
from nasd.errors import InvalidGenotype

_ACT = {
    "tanh": torch.tanh,
    "relu": torch.relu,
    "sigmoid": torch.sigmoid,
    "identity": lambda v: v,
}
_COMBINE = {"add": lambda a, b: a + b, "mul": lambda a, b: a * b}


def _step(
    cell: TreeCell, genotype: Mapping[str, Any], x_t: torch.Tensor, h: torch.Tensor, c: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """One time step computed node by node, recursively from the root, with the cell's weights."""
    leaves, hidden = cell.leaves, cell.hidden
    w, b = cell.input_proj.weight, cell.input_proj.bias
    u, d = cell.hidden_proj.weight, cell.hidden_proj.bias
    inject = genotype["cell_inject"]
    pre: dict[int, torch.Tensor] = {}

    def node(n: int) -> torch.Tensor:
        rows = slice(n * hidden, (n + 1) * hidden)
        if n < leaves:
            left, right = x_t @ w[rows].T + b[rows], h @ u[rows].T + d[rows]
        else:
            first = 2 * (n - leaves)
            left, right = node(first), node(first + 1)
        spec = genotype["nodes"][n]
        pre[n] = _COMBINE[spec["combine"]](left, right)
        out = _ACT[spec["activation"]](pre[n])
        if n == inject["node"]:
            out = _ACT[inject["activation"]](_COMBINE[inject["combine"]](out, c))
        return out

    h_next = node(2 * leaves - 2)
    return h_next, pre[genotype["cell_emit"]]


def _reference(net: RnnCellNet, genotype: Mapping[str, Any], x: torch.Tensor) -> torch.Tensor:
    """Logits of ``net`` for ``x`` from :func:`_step`, starting at ``h = c = 0``."""
    h = torch.zeros(x.shape[0], net.cell.hidden)
    c = torch.zeros_like(h)
    for t in range(x.shape[2]):
        h, c = _step(net.cell, genotype, x[:, :, t], h, c)
    logits: torch.Tensor = net.head(h)
    return logits


def test_fifty_sampled_cells_build_run_and_count_their_parameters() -> None:
    rng = random.Random(0)
    torch.manual_seed(0)
    x = torch.randn(3, 2, 6)
    for i in range(50):
        space = RnnCellSpace(nodes=(2, 4, 8)[i % 3], hidden=8, input_size=2, seq_len=6)
        genotype = space.sample(rng)
        model = build_rnn_cell(space.spec(), genotype)
        assert sum(p.numel() for p in model.parameters()) == space.cost(genotype)["params"]
        logits = model(x)
        assert logits.shape == (3, 10)
        if torch.isfinite(logits).all():
            logits.sum().backward()
            assert model.get_parameter("cell.input_proj.weight").grad is not None
        assert isinstance(model, RnnCellNet)
        with torch.no_grad():
            torch.testing.assert_close(logits, _reference(model, genotype, x))


def test_the_forty_step_mnist1d_shape_and_the_trainer_spec_form() -> None:
    spec = {"kind": "rnn-cell", "nodes": 4, "hidden": 16, "input_shape": [1, 40]}
    model = build_rnn_cell(spec, gated_cell())
    logits = model(torch.randn(5, 1, 40))
    assert logits.shape == (5, 10) and torch.isfinite(logits).all()
    logits.sum().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())


def test_the_hidden_state_carries_information_across_steps() -> None:
    """Changing only the first input sample changes the output at the last step."""
    torch.manual_seed(1)
    model = build_rnn_cell({"kind": "rnn-cell", "hidden": 16, "seq_len": 10}, gated_cell())
    x = torch.randn(1, 1, 10)
    y = x.clone()
    y[0, 0, 0] += 1.0
    assert not torch.allclose(model(x), model(y))


def test_invalid_genotypes_and_specs_are_refused() -> None:
    broken = gated_cell()
    broken["cell_emit"] = 9
    with pytest.raises(InvalidGenotype, match="cell_emit"):
        build_rnn_cell({"kind": "rnn-cell"}, broken)
    with pytest.raises(InvalidGenotype, match="nodes"):
        build_rnn_cell({"kind": "rnn-cell", "nodes": 2}, gated_cell())
