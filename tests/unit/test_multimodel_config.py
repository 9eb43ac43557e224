"""Multi-model experiment files: ``[[model]]`` tables become one experiment per model.

Each model is an ordinary experiment named ``<experiment>.<model>`` carrying ``group`` and
``model``; its budget is its share of the file's total, its seed the file's seed plus its index,
and its task the file's ``[task]`` under its own ``[model.task]``.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from nasd.config import (
    ExperimentConfig,
    experiment_from_dict,
    load_experiment,
    load_experiments,
    split_budget,
)
from nasd.errors import ConfigError

HEAD = """
[experiment]
name = "grp"
budget = 7
seed = 5
max_attempts = 2

[task]
trainer = "zero"
epochs = 2
[task.options]
data = "shared"
seconds = 0
"""

BIG = """
[[model]]
name = "big"
share = 2
[model.space]
kind = "nb201"
[model.strategy]
name = "random"
[model.task]
epochs = 4
[model.task.options]
seconds = 1
"""

SMALL = """
[[model]]
name = "small"
[model.space]
kind = "cnn"
input_shape = [1, 8, 8]
num_classes = 10
[model.strategy]
name = "aging-evolution"
population = 4
sample = 2
"""

SINGLE = """
[experiment]
name = "one"
budget = 3
[space]
kind = "nb201"
[strategy]
name = "random"
[task]
trainer = "zero"
"""


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "exp.toml"
    path.write_text(text)
    return path


def test_each_model_becomes_an_experiment_of_the_group(tmp_path: Path) -> None:
    big, small = load_experiments(_write(tmp_path, HEAD + BIG + SMALL))
    assert (big.name, big.group, big.model) == ("grp.big", "grp", "big")
    assert (small.name, small.group, small.model) == ("grp.small", "grp", "small")
    assert (big.budget, small.budget) == (5, 2)  # 7 * 2/3 = 4.67 and 2.33: the .67 gets the rest
    assert (big.seed, small.seed) == (5, 6)
    assert big.max_attempts == small.max_attempts == 2
    assert (big.space["kind"], big.strategy_name) == ("nb201", "random")
    assert (small.space["kind"], small.strategy_name) == ("cnn", "aging-evolution")
    # [model.task] keys win over [task]; options merge key by key.
    assert big.task == {"trainer": "zero", "epochs": 4, "options": {"data": "shared", "seconds": 1}}
    assert small.task == {
        "trainer": "zero",
        "epochs": 2,
        "options": {"data": "shared", "seconds": 0},
    }


def test_a_budget_override_is_the_new_total_shared_the_same_way(tmp_path: Path) -> None:
    path = _write(tmp_path, HEAD + BIG + SMALL)
    assert [c.budget for c in load_experiments(path, budget=30)] == [20, 10]
    assert [c.budget for c in load_experiments(path, budget=2)] == [1, 1]
    with pytest.raises(ConfigError, match=r"--budget: 1 is less than the number of models \(2\)"):
        load_experiments(path, budget=1)


def test_a_single_model_file_is_unchanged(tmp_path: Path) -> None:
    path = _write(tmp_path, SINGLE)
    (config,) = load_experiments(path)
    assert config == load_experiment(path)
    assert (config.name, config.group, config.model) == ("one", None, None)
    assert "group" not in config.to_dict()["experiment"]
    assert "model" not in config.to_dict()["experiment"]
    assert [c.budget for c in load_experiments(path, budget=9)] == [9]


def test_the_single_model_loader_refuses_a_multi_model_file(tmp_path: Path) -> None:
    path = _write(tmp_path, HEAD + BIG)
    with pytest.raises(ConfigError, match="load_experiments") as info:
        load_experiment(path)
    assert str(path) in str(info.value)


def test_group_and_model_survive_the_round_trip(tmp_path: Path) -> None:
    big, _ = load_experiments(_write(tmp_path, HEAD + BIG + SMALL))
    data = big.to_dict()
    assert (data["experiment"]["group"], data["experiment"]["model"]) == ("grp", "big")
    assert experiment_from_dict(data) == big
    assert experiment_from_dict(big.to_dict()).to_json() == big.to_json()
    moved = big.with_budget(11)
    assert (moved.budget, moved.group, moved.model) == (11, "grp", "big")


def test_group_and_model_must_be_names() -> None:
    data = ExperimentConfig(
        name="g.m", budget=1, space={"kind": "nb201"}, strategy={"name": "random"}, task={}
    ).to_dict()
    data["task"] = {"trainer": "zero"}
    data["experiment"]["group"] = "bad/name"
    with pytest.raises(ConfigError, match=r"src: experiment\.group"):
        experiment_from_dict(data, source="src")


@pytest.mark.parametrize(
    ("total", "shares", "budgets"),
    [
        (7, [2, 1], [5, 2]),
        (10, [1, 1, 1], [4, 3, 3]),  # equal remainders: the earlier model first
        (3, [1, 1, 1], [1, 1, 1]),
        (3, [100, 1, 1], [1, 1, 1]),  # quotas of 0.03 still get one each, from the largest
        (10, [0.1, 0.2, 0.7], [1, 2, 7]),  # exact with float shares (no 0.1 + 0.2 drift)
        (5, [1000, 1], [4, 1]),
        (60, [2, 1], [40, 20]),
    ],
)
def test_budgets_split_by_largest_remainder(
    total: int, shares: list[float], budgets: list[int]
) -> None:
    got = split_budget(total, shares)
    assert got == budgets
    assert sum(got) == total and min(got) >= 1


def test_a_split_needs_one_evaluation_per_model() -> None:
    with pytest.raises(ValueError, match="cannot split"):
        split_budget(2, [1, 1, 1])


MODEL = (
    '[[model]]\nname = "{name}"\n[model.space]\nkind = "nb201"\n[model.strategy]\nname = "random"\n'
)


def _shared(share: str) -> str:
    """One model whose ``share`` is the TOML value ``share``."""
    return MODEL.format(name="m").replace('name = "m"\n', f'name = "m"\nshare = {share}\n')


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (HEAD + BIG + '[space]\nkind = "nb201"\n', r"\[space\] and \[\[model\]\] tables cannot"),
        (HEAD + BIG + "[strategy]\nname = 'random'\n", r"\[strategy\] and \[\[model\]\]"),
        (HEAD + BIG + BIG, r"model\[1\]\.name: 'big' is also the name of model\[0\]"),
        (HEAD + MODEL.format(name="x" * 61), r"model\[0\]\.name: 'grp\.x+' has 65 characters"),
        (HEAD + MODEL.format(name="no/slash"), r"model\[0\]\.name: 'no/slash' must match"),
        (HEAD + MODEL.replace('name = "{name}"\n', ""), r"model\[0\]\.name: required"),
        (HEAD + _shared("0"), r"model\[0\]\.share: must be a number > 0"),
        (HEAD + _shared("true"), r"model\[0\]\.share"),
        (HEAD + _shared("inf"), r"model\[0\]\.share"),
        (HEAD + _shared('"2"'), r"model\[0\]\.share"),
        (
            HEAD + BIG + SMALL.replace('kind = "cnn"', 'kind = "nope"'),
            r"exp\.toml: model\[1\]\.space\.kind: unknown kind 'nope'",
        ),
        (
            HEAD + BIG + SMALL.replace("input_shape = [1, 8, 8]\n", ""),
            r"model\[1\]\.space\.input_shape: required",
        ),
        (HEAD + SMALL.replace('name = "aging-evolution"', 'name = "x"'), r"model\[0\]: "),
        (
            HEAD.replace('trainer = "zero"\n', "") + BIG,
            r"model\[0\]\.task: 'trainer' is a required",
        ),
        (HEAD + BIG.replace("share = 2", "share = 2\nspeed = 3"), r"model\[0\]\.speed: unknown"),
        (HEAD + BIG.replace('[model.space]\nkind = "nb201"\n', ""), r"model\[0\]\.space: required"),
        (HEAD.replace("budget = 7", "budget = 1") + BIG + SMALL, r"experiment\.budget: 1 is less"),
        (HEAD.replace("budget = 7", 'budget = "7"') + BIG, r"experiment\.budget: must be an int"),
        (HEAD.replace("budget = 7\n", "") + BIG, r"experiment\.budget: required"),
        (HEAD.replace("seed = 5", "seed = 1.5") + BIG, r"experiment\.seed: must be an integer"),
        (HEAD.replace("max_attempts = 2", "max_attempts = 0") + BIG, r"experiment\.max_attempts"),
        (HEAD.replace('name = "grp"', 'name = "a b"') + BIG, r"experiment\.name: 'a b' must match"),
        ("model = 3\n" + HEAD, r"model: expected one or more \[\[model\]\] tables"),
        ("model = []\n" + HEAD, r"model: expected one or more \[\[model\]\] tables"),
        (HEAD + BIG + "[extra]\nx = 1\n", r"unknown table extra"),
    ],
)
def test_errors_name_the_file_and_the_key(tmp_path: Path, text: str, message: str) -> None:
    path = _write(tmp_path, text)
    with pytest.raises(ConfigError, match=message) as info:
        load_experiments(path)
    assert str(info.value).startswith(f"{path}: ")


def test_the_group_table_cannot_be_set_by_hand(tmp_path: Path) -> None:
    text = HEAD.replace("seed = 5", 'seed = 5\ngroup = "g"') + BIG
    with pytest.raises(ConfigError, match=r"experiment\.group: set from the \[\[model\]\] tables"):
        load_experiments(_write(tmp_path, text))
