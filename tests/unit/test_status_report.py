"""``nasd status`` and ``nasd best`` with the hardware-aware scheduler's view of the models.

The status mapping may carry ``scheduling`` (compute classes; per experiment its complexity,
priority and classes); older databases and daemons send none and the layout stays as it was.
"""

from __future__ import annotations

from typing import Any

from nasd.cli.client import _merge_scheduling
from nasd.cli.report import group_best_summary, scheduling_lines, status_table


def _experiment(name: str) -> dict[str, Any]:
    return {
        "name": name,
        "status": "running",
        "done": 1,
        "budget": 4,
        "running": 1,
        "pending": 2,
        "failed": 0,
        "cancelled": 0,
        "best": {"metric": "val_acc", "value": 0.5, "trial_id": 0},
    }


STATUS: dict[str, Any] = {
    "experiments": [_experiment("grp.unet"), _experiment("grp.cnn")],
    "agents": [
        {"name": "gpu-0", "online": True, "busy": True, "slots": 2, "device": "cuda:0", "jobs": []},
        {"name": "cpu-0", "online": True, "busy": False, "slots": 1, "device": "cpu", "jobs": []},
    ],
    "security": {
        "oversized": {"count": 1, "last_source": "x", "last_detail": "too big"},
    },
}

SCHEDULING: dict[str, Any] = {
    "classes": [
        {"name": "h200", "speed": 12345.678, "agents": ["gpu-0"], "free": 1},
        {"name": "cpu", "speed": 12.3456, "agents": ["cpu-0"], "free": 0},
    ],
    "models": {
        "grp.cnn": {
            "complexity": 7.5,
            "priority": None,
            "classes": ["cpu"],
            "group": "grp",
            "model": "cnn",
        },
        "grp.unet": {
            "complexity": 123456.0,
            "priority": 0.0421337,
            "classes": ["h200", "cpu"],
            "group": "grp",
            "model": "unet",
        },
    },
}


def test_without_scheduling_the_status_is_as_before() -> None:
    text = status_table(STATUS, now=0.0)
    assert "COMPUTE CLASS" not in text and "COMPLEXITY" not in text
    assert scheduling_lines(None) == []
    assert status_table({**STATUS, "scheduling": None}, now=0.0) == text


def test_scheduling_adds_the_classes_and_each_models_complexity_priority_and_classes() -> None:
    lines = status_table({**STATUS, "scheduling": SCHEDULING}, now=0.0).splitlines()
    start = lines.index("COMPUTE CLASS         SAMPLES/S   FREE  AGENTS")
    assert lines[start - 1] == "" and lines[start - 2].startswith("cpu-0")  # after the agents
    assert lines[start + 1].split() == ["h200", "12,346", "1", "gpu-0"]
    assert lines[start + 2].split() == ["cpu", "12.3", "0", "cpu-0"]
    models = lines.index("MODEL                 COMPLEXITY  PRIORITY  CLASSES")
    # In the experiments table's order, three significant digits, "-" for no priority yet.
    assert lines[models + 1].split() == ["grp.unet", "1.23e+05", "0.0421", "h200,", "cpu"]
    assert lines[models + 2].split() == ["grp.cnn", "7.5", "-", "cpu"]
    assert lines[-1].startswith("oversized")  # the refused inputs stay last


def test_models_without_an_experiment_row_and_odd_values_still_print() -> None:
    odd = {
        "classes": [{"name": "x", "speed": None, "agents": [], "free": 0}],
        "models": {"late": {"complexity": "?", "priority": float("nan"), "classes": []}},
    }
    lines = scheduling_lines(odd, ["grp.unet"])
    assert lines[2].split() == ["x", "-", "0", "-"]
    assert lines[-1].split() == ["late", "-", "-", "-"]


def test_best_of_a_group_shows_each_models_scheduling() -> None:
    best = {
        "trial_id": 3,
        "metric": "val_acc",
        "value": 0.875,
        "metrics": {"val_acc": 0.875},
        "genotype": {"a": 1},
        "checkpoint": None,
    }
    text = group_best_summary(
        "grp", {"grp.unet": best, "grp.cnn": None}, SCHEDULING["models"]
    ).split("\n\n")
    assert text[0] == "grp: 2 models"
    assert text[1].splitlines()[:2] == [
        "grp.unet: complexity 1.23e+05, priority 0.0421, classes h200, cpu",
        "grp.unet: best is trial 3, val_acc = 0.8750",
    ]
    assert text[2].splitlines() == [
        "grp.cnn: complexity 7.5, priority -, classes cpu",
        "grp.cnn: no finished evaluation yet",
    ]
    plain = group_best_summary("grp", {"grp.unet": best})
    assert "complexity" not in plain


def test_status_pages_merge_their_models() -> None:
    merged: dict[str, Any] = {"scheduling": {"classes": [1], "models": {"a": {"complexity": 1}}}}
    _merge_scheduling(merged, {"scheduling": {"classes": [2], "models": {"b": {}}}})
    assert merged["scheduling"] == {"classes": [1], "models": {"a": {"complexity": 1}, "b": {}}}
    _merge_scheduling(merged, {})  # a page without the section changes nothing
    assert set(merged["scheduling"]["models"]) == {"a", "b"}
    bare: dict[str, Any] = {}
    _merge_scheduling(bare, {"scheduling": {"models": {"c": {}}}})
    assert bare == {"scheduling": {"models": {"c": {}}}}
