"""The ``control.request`` schema fixes the args of each command (defect 6 of issue 6)."""

from __future__ import annotations

from typing import Any

import pytest

from nasd.core.wire import validate
from nasd.errors import WireError


def _request(command: str, args: Any) -> dict[str, Any]:
    return {"client": "cli", "correlation_id": "c", "command": command, "args": args}


@pytest.mark.parametrize(
    ("command", "args"),
    [
        ("status", {}),
        ("status", {"agents_offset": 400, "agents_limit": 200}),
        ("status", {"experiments_offset": 0, "experiments_limit": 1000}),
        ("pause", {"experiment": "mnist1d-cnn"}),
        ("resume", {"experiment": "x" * 64}),
        ("cancel", {"experiment": "a b"}),  # not a name, but the handler says so in words
        ("submit", {"config": {"experiment": {"name": "x"}, "space": {}}}),
    ],
)
def test_each_command_takes_its_own_args(command: str, args: dict[str, Any]) -> None:
    validate("control.request", _request(command, args))


@pytest.mark.parametrize(
    ("command", "args", "match"),
    [
        ("status", {"experiment": "x"}, "propertyName"),
        ("status", {"agents_offset": 3.0}, "must be integer"),
        ("status", {"agents_limit": 0}, "agents_limit"),
        ("status", {"ints": list(range(1000))}, "args"),
        ("pause", {}, r"must contain \['experiment'\]"),
        ("pause", {"experiment": "x" * 65}, "shorter than or equal to 64"),
        ("cancel", {"experiment": "x", "config": {}}, "propertyName"),
        ("resume", {"experiment": 7}, "must be string"),
        ("submit", {}, r"must contain \['config'\]"),
        ("submit", {"config": [1, 2, 3]}, "must be object"),
        ("submit", {"config": {f"k{i}": 1 for i in range(9)}}, "config"),
    ],
)
def test_anything_else_is_refused(command: str, args: Any, match: str) -> None:
    with pytest.raises(WireError, match=match):
        validate("control.request", _request(command, args))


def test_a_missing_command_is_named_as_such() -> None:
    body = _request("pause", {})
    del body["command"]
    with pytest.raises(WireError, match=r"must contain \['command'\]"):
        validate("control.request", body)
