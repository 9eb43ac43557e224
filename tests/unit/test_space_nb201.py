"""The NAS-Bench-201 cell space: encodings, mutation protocol, validation and the cost model."""

from __future__ import annotations

import contextlib
import copy
import csv
import gzip
import itertools
import random
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nasd.core.space import NB201Space, build_space
from nasd.core.space.nb201 import OPS, from_arch_str, from_op_code, op_code, to_arch_str
from nasd.errors import ConfigError, InvalidGenotype

DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "nb201.csv.gz"
RESNET_ARCH = "|nor_conv_3x3~0|+|none~0|nor_conv_3x3~1|+|skip_connect~0|none~1|skip_connect~2|"


@pytest.fixture(scope="module")
def rows() -> list[dict[str, str]]:
    if not DATA.exists():
        pytest.skip(f"reference table {DATA} is absent (see shared/data/README.md)")
    with gzip.open(DATA, "rt") as handle:
        return list(csv.DictReader(handle))


def test_encodings_round_trip_for_every_cell() -> None:
    space = NB201Space()
    seen = set()
    for digits in itertools.product("01234", repeat=6):
        code = "".join(digits)
        genotype = from_op_code(code)
        space.validate(genotype)
        assert op_code(genotype) == code
        arch = to_arch_str(genotype)
        assert from_arch_str(arch) == genotype
        seen.add(arch)
    assert len(seen) == 5**6


def test_the_resnet_like_cell() -> None:
    genotype = from_op_code("303101")
    assert to_arch_str(genotype) == RESNET_ARCH
    assert genotype["ops"] == [
        "nor_conv_3x3",
        "none",
        "nor_conv_3x3",
        "skip_connect",
        "none",
        "skip_connect",
    ]
    assert NB201Space().describe(genotype) == RESNET_ARCH


def test_the_resnet_like_cell_matches_the_table(rows: list[dict[str, str]]) -> None:
    row = rows[11472]
    assert row["index"] == "11472" and row["op_code"] == "303101"
    assert from_arch_str(row["arch_str"]) == from_op_code("303101")
    assert to_arch_str(from_op_code("303101")) == row["arch_str"]


@pytest.mark.parametrize(
    "text",
    [
        "",
        "|nor_conv_3x3~0|",
        RESNET_ARCH.replace("~1", "~2"),
        RESNET_ARCH.replace("none", "zero"),
        RESNET_ARCH.replace("+", "|"),
        RESNET_ARCH[1:],
        RESNET_ARCH + "+|none~0|",
        "|none~0|+|none~0|none~1|none~2|+|none~0|none~1|",
    ],
)
def test_from_arch_str_rejects_malformed_strings(text: str) -> None:
    with pytest.raises(InvalidGenotype, match="not an NB201 arch string"):
        from_arch_str(text)


@pytest.mark.parametrize("code", ["", "30310", "3031011", "303105", "30310a", 303101])
def test_from_op_code_rejects_malformed_codes(code: Any) -> None:
    with pytest.raises(InvalidGenotype, match="not an NB201 op code"):
        from_op_code(code)


def test_samples_are_valid_and_cover_every_op() -> None:
    space = NB201Space()
    rng = random.Random(1)
    used = set()
    for _ in range(200):
        genotype = space.sample(rng)
        space.validate(genotype)
        used.update(genotype["ops"])
    assert used == set(OPS)


def test_mutation_changes_exactly_one_edge_and_leaves_the_input_alone() -> None:
    space = NB201Space()
    rng = random.Random(2)
    genotype = space.sample(rng)
    edges_changed = set()
    for _ in range(300):
        before = copy.deepcopy(genotype)
        child = space.mutate(genotype, rng)
        assert genotype == before
        space.validate(child)
        diff = [i for i in range(6) if child["ops"][i] != genotype["ops"][i]]
        assert len(diff) == 1
        edges_changed.update(diff)
        genotype = child
    assert edges_changed == set(range(6))


def test_same_seed_same_sequence() -> None:
    space = NB201Space()

    def run(seed: int) -> list[str]:
        rng = random.Random(seed)
        genotype = space.sample(rng)
        trail = [op_code(genotype)]
        for _ in range(20):
            genotype = space.mutate(genotype, rng)
            trail.append(op_code(genotype))
        return trail

    assert run(5) == run(5)
    assert run(5) != run(6)


@pytest.mark.parametrize(
    "genotype",
    [
        None,
        [],
        "303101",
        {},
        {"ops": None},
        {"ops": "303101"},
        {"ops": ["none"] * 5},
        {"ops": ["none"] * 7},
        {"ops": ["none"] * 5 + ["conv_3x3"]},
        {"ops": ["none"] * 5 + [3]},
        {"ops": ("none",) * 6},
        {"ops": ["none"] * 6, "extra": 1},
    ],
)
def test_validate_rejects_bad_genotypes(genotype: Any) -> None:
    with pytest.raises(InvalidGenotype):
        NB201Space().validate(genotype)


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.sampled_from(OPS),
    lambda inner: st.lists(inner, max_size=7) | st.dictionaries(st.just("ops"), inner, max_size=1),
    max_leaves=12,
)


@settings(max_examples=60, deadline=None)
@given(JSON)
def test_validate_raises_only_invalid_genotype_on_garbage(genotype: Any) -> None:
    with contextlib.suppress(InvalidGenotype):
        NB201Space().validate(genotype)


def test_spec_round_trip_and_bad_specs() -> None:
    assert build_space({"kind": "nb201"}).spec() == {"kind": "nb201", "num_classes": 10}
    space = build_space({"kind": "nb201", "num_classes": 100})
    assert build_space(space.spec()).spec() == space.spec() == {"kind": "nb201", "num_classes": 100}
    with pytest.raises(ConfigError, match=r"space\.num_classes"):
        build_space({"kind": "nb201", "num_classes": 0})
    with pytest.raises(
        ConfigError, match=r"space\.cells: unknown key .* allowed: \['num_classes'\]"
    ):
        build_space({"kind": "nb201", "cells": 5})


def test_cost_of_the_empty_cell_is_stem_reductions_and_head() -> None:
    cost = NB201Space().cost(from_op_code("000000"))
    stem = 3 * 16 * 9 + 2 * 16
    reductions = (9 * 16 * 32 + 9 * 32 * 32 + 16 * 32 + 4 * 32) + (
        9 * 32 * 64 + 9 * 64 * 64 + 32 * 64 + 4 * 64
    )
    assert cost["params"] == stem + reductions + 2 * 64 + 64 * 10 + 10
    macs = 27 * 16 * 32 * 32 + (9 * 16 * 32 + 9 * 32 * 32 + 16 * 32) * 16 * 16
    macs += (9 * 32 * 64 + 9 * 64 * 64 + 32 * 64) * 8 * 8 + 64 * 10
    assert cost["flops"] == macs


def test_one_conv_edge_adds_five_convs_per_stage() -> None:
    space = NB201Space()
    base = space.cost(from_op_code("000000"))
    one = space.cost(from_op_code("000300"))
    per_stage = ((16, 32), (32, 16), (64, 8))  # (channels, spatial size)
    assert one["params"] - base["params"] == 5 * sum(9 * c * c + 2 * c for c, _ in per_stage)
    assert one["flops"] - base["flops"] == 5 * sum(9 * c * c * s * s for c, s in per_stage)
    # skip, pooling and none edges cost no parameters or multiply-adds (pooling keeps activations)
    other = space.cost(from_op_code("141414"))
    assert (other["params"], other["flops"]) == (base["params"], base["flops"])


def test_params_match_the_benchmark_table(rows: list[dict[str, str]]) -> None:
    cifar10, cifar100 = NB201Space(), NB201Space(num_classes=100)
    for index in [*range(0, 15625, 781), 11472]:
        row = rows[index]
        genotype = from_arch_str(row["arch_str"])
        for space, column in ((cifar10, "c10_params_MB"), (cifar100, "c100_params_MB")):
            expected = float(row[column]) * 1e6
            assert space.cost(genotype)["params"] == pytest.approx(expected, abs=1.0), index


def test_params_match_the_table_for_all_but_its_merged_duplicates(
    rows: list[dict[str, str]],
) -> None:
    # The table stores, for 150 cells with duplicated isomorphic edges (e.g. 122124, where
    # skip_connect makes node 1 equal node 0), the smaller count of the deduplicated cell.
    space = NB201Space()
    exact = sum(
        round(space.cost(from_op_code(row["op_code"]))["params"])
        == round(float(row["c10_params_MB"]) * 1e6)
        for row in rows
    )
    assert exact >= 15625 - 150
