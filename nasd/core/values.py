"""Type tests for values read from TOML, JSON or msgpack.

``bool`` is a subclass of ``int`` in Python, so ``isinstance(True, int)`` holds; a config or
genotype that says ``layers = true`` must still be refused. These two tests say it once. Pure.
"""

from __future__ import annotations

from typing import TypeGuard


def is_int(value: object) -> TypeGuard[int]:
    """True for an ``int`` that is not a ``bool``."""
    return isinstance(value, int) and not isinstance(value, bool)


def is_number(value: object) -> TypeGuard[int | float]:
    """True for an ``int`` or ``float`` that is not a ``bool``."""
    return isinstance(value, int | float) and not isinstance(value, bool)
