"""``nasd.core.values``: the one place that says "an int, but not a bool"."""

from __future__ import annotations

import pytest

from nasd.core.values import is_int, is_number


@pytest.mark.parametrize(
    ("value", "integer", "number"),
    [
        (3, True, True),
        (0, True, True),
        (2.0, False, True),
        (float("nan"), False, True),
        (True, False, False),
        (False, False, False),
        ("3", False, False),
        (None, False, False),
    ],
)
def test_bools_are_neither_ints_nor_numbers(value: object, integer: bool, number: bool) -> None:
    assert (is_int(value), is_number(value)) == (integer, number)
