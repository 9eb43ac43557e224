"""The dependency arrows of DESIGN.md section 2, checked by walking every module's imports."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

PURE = ("nasd/core",)
FORBIDDEN_IN_PURE = {
    "asyncio",
    "aiomqtt",
    "paho",
    "sqlite3",
    "sqlite_utils",
    "torch",
    "amqtt",
    # The core knows nothing of the layers built on it.
    "nasd.engine",
    "nasd.store",
    "nasd.mqtt",
    "nasd.service",
    "nasd.cli",
}
FORBIDDEN_IN_AGENTS = {"nasd.service", "nasd.store", "nasd.engine", "nasd.cli", "sqlite_utils"}
LAYERS = {
    # layer: what it must not import (the arrows point inward: cli -> service -> engine -> core)
    "nasd/engine": {"nasd.mqtt", "nasd.service", "nasd.cli", "aiomqtt", "asyncio", "torch"},
    "nasd/store": {"nasd.engine", "nasd.mqtt", "nasd.service", "nasd.cli", "aiomqtt", "torch"},
    "nasd/mqtt": {"nasd.engine", "nasd.store", "nasd.service", "nasd.cli", "torch"},
    "nasd/service": {"nasd.cli", "torch"},
}


def _modules(path: str) -> list[Path]:
    target = ROOT / path
    return [target] if target.is_file() else sorted(target.rglob("*.py"))


def _imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def _hits(imported: set[str], forbidden: set[str]) -> set[str]:
    return {n for n in imported for f in forbidden if n == f or n.startswith(f + ".")}


@pytest.mark.parametrize(
    "path", [p for part in PURE for p in _modules(part)], ids=lambda p: str(p.relative_to(ROOT))
)
def test_pure_core_imports_no_io_or_torch(path: Path) -> None:
    assert _hits(_imports(path), FORBIDDEN_IN_PURE) == set()


@pytest.mark.parametrize("path", _modules("agents"), ids=lambda p: str(p.relative_to(ROOT)))
def test_agents_never_import_the_daemon_or_the_store(path: Path) -> None:
    assert _hits(_imports(path), FORBIDDEN_IN_AGENTS) == set()


@pytest.mark.parametrize(
    ("path", "forbidden"),
    [(p, forbidden) for layer, forbidden in LAYERS.items() for p in _modules(layer)],
    ids=lambda v: str(v.relative_to(ROOT)) if isinstance(v, Path) else "",
)
def test_each_layer_imports_only_inward(path: Path, forbidden: set[str]) -> None:
    assert _hits(_imports(path), forbidden) == set()


def test_the_walk_sees_real_imports() -> None:
    assert "sqlite3" in _imports(ROOT / "nasd" / "store" / "connection.py")
