"""The dependency arrows of DESIGN.md section 2, checked by walking every module's imports."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

PURE = ("nasd/events.py", "nasd/space", "nasd/strategy", "nasd/scheduler", "nasd/wire")
FORBIDDEN_IN_PURE = {"asyncio", "aiomqtt", "paho", "sqlite3", "sqlite_utils", "torch", "amqtt"}
FORBIDDEN_IN_AGENTS = {"nasd.daemon", "nasd.store", "nasd.engine", "sqlite_utils"}


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


def test_the_walk_sees_real_imports() -> None:
    assert "sqlite3" in _imports(ROOT / "nasd" / "store" / "connection.py")
