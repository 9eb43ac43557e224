"""The recurrent-cell space (``rnn-cell``): tree layout, spec, sampling, mutation, validation,
decisions and the cost model."""

from __future__ import annotations

import copy
import random
from typing import Any

import pytest

from nasd.core.space.domains import Discrete
from nasd.core.space.rnn_cell import (
    ACTIVATIONS,
    COMBINES,
    RnnCellSpace,
    gated_cell,
    plain_cell,
    tree_children,
)
from nasd.errors import ConfigError, InvalidGenotype


def _choices(space: RnnCellSpace, genotype: dict[str, Any]) -> list[Any]:
    """Every choice of ``genotype`` in decision order (a flat view for comparisons)."""
    flat = [v for node in genotype["nodes"] for v in (node["combine"], node["activation"])]
    inject = genotype["cell_inject"]
    return [*flat, inject["node"], inject["combine"], inject["activation"], genotype["cell_emit"]]


def test_the_tree_is_numbered_level_by_level_from_the_leaves() -> None:
    assert tree_children(2) == [None, None, (0, 1)]
    assert tree_children(4) == [None] * 4 + [(0, 1), (2, 3), (4, 5)]
    children = tree_children(8)
    assert len(children) == 15 and children[:8] == [None] * 8
    assert children[8:] == [(0, 1), (2, 3), (4, 5), (6, 7), (8, 9), (10, 11), (12, 13)]
    # every node but the root is read by exactly one parent
    for leaves in (2, 4, 8):
        read = sorted(i for pair in tree_children(leaves) if pair for i in pair)
        assert read == list(range(2 * leaves - 2))


def test_spec_round_trips_and_accepts_the_data_shape() -> None:
    space = RnnCellSpace.from_spec({"kind": "rnn-cell", "nodes": 8, "hidden": 32})
    assert RnnCellSpace.from_spec(space.spec()).spec() == space.spec()
    assert space.spec() == {
        "kind": "rnn-cell",
        "nodes": 8,
        "hidden": 32,
        "input_size": 1,
        "seq_len": 40,
        "num_classes": 10,
    }
    shaped = RnnCellSpace.from_spec({"kind": "rnn-cell", "input_shape": [3, 12], "input_size": 3})
    assert (shaped.input_size, shaped.seq_len) == (3, 12)


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"nodes": 3}, "space.nodes"),
        ({"nodes": True}, "space.nodes"),
        ({"hidden": 0}, "space.hidden"),
        ({"num_classes": 1.5}, "space.num_classes"),
        ({"depth": 2}, "space.depth: unknown key"),
        ({"input_shape": [1]}, "space.input_shape"),
        ({"input_shape": [1, 40], "seq_len": 20}, "disagrees with space.seq_len"),
    ],
)
def test_bad_specs_name_the_key(spec: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        RnnCellSpace.from_spec({"kind": "rnn-cell", **spec})


@pytest.mark.parametrize("leaves", [2, 4, 8])
def test_samples_are_valid_deterministic_and_cover_every_option(leaves: int) -> None:
    space = RnnCellSpace(nodes=leaves)
    samples = [space.sample(random.Random(7)) for _ in range(2)]
    assert samples[0] == samples[1]
    rng = random.Random(0)
    seen: set[Any] = set()
    for _ in range(300):
        genotype = space.sample(rng)
        space.validate(genotype)
        assert len(genotype["nodes"]) == 2 * leaves - 1
        seen.update(node["activation"] for node in genotype["nodes"])
        seen.update(node["combine"] for node in genotype["nodes"])
        seen.add(("emit", genotype["cell_emit"]))
        seen.add(("inject", genotype["cell_inject"]["node"]))
    assert set(ACTIVATIONS) | set(COMBINES) <= seen
    for n in range(2 * leaves - 1):
        assert ("emit", n) in seen and ("inject", n) in seen


def test_mutation_changes_exactly_one_choice_and_leaves_the_input_alone() -> None:
    space = RnnCellSpace()
    rng = random.Random(3)
    changed_positions = set()
    for _ in range(300):
        parent = space.sample(rng)
        before = copy.deepcopy(parent)
        child = space.mutate(parent, rng)
        assert parent == before
        space.validate(child)
        pairs = zip(_choices(space, parent), _choices(space, child), strict=True)
        diffs = [i for i, (a, b) in enumerate(pairs) if a != b]
        assert len(diffs) == 1
        changed_positions.update(diffs)
    assert changed_positions == set(range(len(space.decisions())))


def test_decisions_round_trip_and_match_the_domains() -> None:
    for leaves in (2, 4, 8):
        space = RnnCellSpace(nodes=leaves)
        decisions = space.decisions()
        assert len(decisions) == 2 * (2 * leaves - 1) + 4
        assert [Discrete(d.size) for d in decisions] == space.domains()
        assert all(d.skip is None for d in decisions)
        rng = random.Random(leaves)
        for _ in range(50):
            genotype = space.sample(rng)
            choices = space.to_decisions(genotype)
            rebuilt, used = space.from_decisions(choices)
            assert rebuilt == genotype and used == [True] * len(decisions)
            choices = [rng.randrange(d.size) for d in decisions]
            genotype, _ = space.from_decisions(choices)
            space.validate(genotype)
            assert space.to_decisions(genotype) == choices


def test_from_decisions_refuses_malformed_choices() -> None:
    space = RnnCellSpace(nodes=2)
    good = [0] * len(space.decisions())
    with pytest.raises(ValueError, match="expected 10 choices"):
        space.from_decisions(good[:-1])
    with pytest.raises(ValueError, match="cell_emit"):
        space.from_decisions([*good[:-1], 3])


def _with(genotype: dict[str, Any], path: tuple[Any, ...], value: Any) -> dict[str, Any]:
    broken = copy.deepcopy(genotype)
    target: Any = broken
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    return broken


@pytest.mark.parametrize(
    ("path", "value", "message"),
    [
        (("nodes",), [], "nodes: expected a list of 7 tables"),
        (("nodes", 2), {"combine": "add"}, r"nodes\[2\]: expected a table"),
        (("nodes", 5, "combine"), "sub", r"nodes\[5\].combine: 'sub' is not one of"),
        (("nodes", 0, "activation"), "gelu", r"nodes\[0\].activation: 'gelu'"),
        (("cell_inject", "node"), 7, "cell_inject.node: 7 is not one of"),
        (("cell_inject", "node"), True, "cell_inject.node: True"),
        (("cell_inject",), 0, "cell_inject: expected a table"),
        (("cell_emit",), "4", "cell_emit: '4' is not one of"),
        (("extra",), 1, "expected a table with keys"),
    ],
)
def test_validate_names_the_offending_path(path: tuple[Any, ...], value: Any, message: str) -> None:
    space = RnnCellSpace()
    space.validate(gated_cell())
    with pytest.raises(InvalidGenotype, match=message):
        space.validate(_with(gated_cell(), path, value))


def test_cost_counts_the_leaves_and_the_head() -> None:
    space = RnnCellSpace()  # 4 leaves, 64 hidden, 1 input, 40 steps, 10 classes
    cost = space.cost(plain_cell())
    leaf = (1 * 64 + 64) + (64 * 64 + 64)
    assert cost["params"] == 4 * leaf + 64 * 10 + 10 == 17802
    assert cost["flops"] == 40 * 4 * 64 * (1 + 64) + 64 * 10
    assert cost["activations"] > 40 * 64 * 4 * 4
    wide = RnnCellSpace(nodes=8, hidden=128, seq_len=80)
    bigger = wide.cost(plain_cell(8))
    assert all(bigger[key] > cost[key] for key in cost)
    # the cost depends on the tree's size, not on the choices
    assert space.cost(gated_cell()) == cost


def test_describe_lists_nodes_inject_and_emit() -> None:
    text = RnnCellSpace().describe(gated_cell())
    assert text.startswith("0:add/sigmoid 1:add/tanh")
    assert text.endswith("| c_in@0 mul/identity | c_out@4")
