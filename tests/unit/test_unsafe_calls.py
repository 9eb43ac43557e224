"""Calls that would run foreign code are absent: checked on the syntax tree of every module.

ruff's bandit rules (pyproject.toml) refuse pickle, eval, exec and friends; ``torch.load`` has no
rule there, and it unpickles unless told ``weights_only=True``. Weight inheritance will load
checkpoints written by agents, which the daemon must treat as foreign bytes.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SOURCES = sorted(p for part in ("nasd", "agents") for p in (ROOT / part).rglob("*.py"))


def _unsafe_loads(tree: ast.AST) -> list[int]:
    """Line numbers of ``torch.load(...)``/``load(...)`` calls without ``weights_only=True``."""
    lines = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        func = node.func
        is_torch_load = (
            isinstance(func, ast.Attribute)
            and func.attr == "load"
            and isinstance(func.value, ast.Name)
            and func.value.id == "torch"
        )
        if not is_torch_load:
            continue
        safe = any(
            kw.arg == "weights_only"
            and isinstance(kw.value, ast.Constant)
            and kw.value.value is True
            for kw in node.keywords
        )
        if not safe:
            lines.append(node.lineno)
    return lines


def test_the_check_finds_an_unsafe_load() -> None:
    unsafe = ast.parse("import torch\ntorch.load(f)\ntorch.load(f, weights_only=True)\n")
    assert _unsafe_loads(unsafe) == [2]


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(ROOT)))
def test_torch_load_only_with_weights_only(path: Path) -> None:
    lines = _unsafe_loads(ast.parse(path.read_text(), str(path)))
    assert not lines, f"{path}: torch.load without weights_only=True on lines {lines}"
