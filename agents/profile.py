"""Overrides of the agent's hardware profile, for tests only: one machine posing as several.

Tests of hardware-aware scheduling need agents that *declare* different hardware (a strong GPU
and a weak one, an agent with only 2 GiB free) while all running on the same test machine. Two
sources, applied on top of the probed profile in this order (the later wins per key):

1. ``$NASD_AGENT_PROFILE_OVERRIDE``: a JSON object, e.g.
   ``{"device_name": "Fake A100", "free_memory_bytes": 2147483648, "samples_per_s": 5000}``;
2. ``nasd-agent --profile-override KEY=VALUE`` (repeatable): a number for a numeric key
   (``2147483648``, ``2e9``, ``12.5``), the text itself for a string key.

Allowed keys (:data:`OVERRIDABLE`): ``device_name`` and ``compute_capability`` (non-empty strings
of at most 255 and 32 characters), ``memory_bytes`` and ``free_memory_bytes`` (integers >= 0),
``samples_per_s`` and ``throughput`` (finite numbers >= 0). When ``free_memory_bytes`` is
overridden every ``ready`` reports that value too, instead of measuring (:func:`ready_free_memory`).
Anything else (an unknown key, a value of the wrong type, a free memory above the total) is a
:class:`nasd.errors.ConfigError` with one line naming the source, which ``nasd-agent`` prints and
exits 2 on. Never use this in production: the daemon places work by these numbers.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import structlog

from nasd.errors import ConfigError

__all__ = [
    "OVERRIDABLE",
    "OVERRIDE_ENV",
    "apply_overrides",
    "parse_override_items",
    "parse_override_json",
    "profile_overrides",
    "ready_free_memory",
]

log = structlog.get_logger("nasd.agent")

OVERRIDE_ENV = "NASD_AGENT_PROFILE_OVERRIDE"
"""The environment variable holding a JSON object of profile overrides."""

_STRING_KEYS: Mapping[str, int] = {"device_name": 255, "compute_capability": 32}
"""String keys and their maximum lengths (those of ``schemas/v1/agent.state.json``)."""
_INTEGER_KEYS = frozenset({"memory_bytes", "free_memory_bytes"})
_NUMBER_KEYS = frozenset({"samples_per_s", "throughput"})
_MAX_INTEGER = 2**63 - 1  # the schema's maximum (a signed 64-bit integer on the wire)

OVERRIDABLE: tuple[str, ...] = tuple(sorted({*_STRING_KEYS, *_INTEGER_KEYS, *_NUMBER_KEYS}))
"""The profile fields a test may override."""


def _checked(key: str, value: object) -> str | int | float:
    """``value`` as the type of profile field ``key``; ValueError saying what is wrong."""
    if key not in OVERRIDABLE:
        raise ValueError(f"unknown key {key!r:.80}; allowed: {', '.join(OVERRIDABLE)}")
    if key in _STRING_KEYS:
        if not isinstance(value, str) or not 1 <= len(value) <= _STRING_KEYS[key]:
            raise ValueError(f"{key} must be a string of 1 to {_STRING_KEYS[key]} characters")
        return value
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ValueError(f"{key} must be a finite number, got {value!r:.80}")
    if value < 0:
        raise ValueError(f"{key} must be >= 0, got {value!r:.80}")
    if key in _NUMBER_KEYS:
        return float(value)
    if value != int(value) or value > _MAX_INTEGER:
        raise ValueError(f"{key} must be an integer of at most {_MAX_INTEGER}, got {value!r:.80}")
    return int(value)


def _number(text: str) -> int | float:
    """``text`` as an int when it is one, else as a float; ValueError for anything else."""
    try:
        return int(text)
    except ValueError:
        return float(text)  # "2e9", "12.5"; "inf" and "nan" are refused by _checked


def parse_override_items(items: Iterable[str]) -> dict[str, Any]:
    """The overrides of ``--profile-override KEY=VALUE`` arguments (the last one per key wins)."""
    overrides: dict[str, Any] = {}
    for item in items:
        key, separator, text = item.partition("=")
        key = key.strip()
        try:
            if not separator or not key:
                raise ValueError("expected KEY=VALUE")
            if key in _STRING_KEYS or key not in OVERRIDABLE:
                overrides[key] = _checked(key, text)
            else:
                try:
                    number = _number(text.strip())
                except ValueError:
                    raise ValueError(f"{key} must be a number, got {text!r:.80}") from None
                overrides[key] = _checked(key, number)
        except ValueError as exc:
            raise ConfigError(f"--profile-override {item!r:.80}: {exc}") from None
    return overrides


def _refuse_constant(name: str) -> float:
    raise ValueError(f"{name} is not a number JSON allows")


def parse_override_json(text: str) -> dict[str, Any]:
    """The overrides in ``$NASD_AGENT_PROFILE_OVERRIDE`` (a JSON object; blank: none)."""
    if not text.strip():
        return {}
    try:
        value = json.loads(text, parse_constant=_refuse_constant)
        if not isinstance(value, dict):
            raise ValueError('expected a JSON object such as {"free_memory_bytes": 2147483648}')
        return {key: _checked(key, item) for key, item in value.items()}
    except ValueError as exc:  # json.JSONDecodeError is a ValueError
        message = " ".join(str(exc).split())  # one line, whatever the JSON error said
        raise ConfigError(f"${OVERRIDE_ENV}: {message}") from None


def profile_overrides(items: Iterable[str], environ: Mapping[str, str]) -> dict[str, Any]:
    """Every override: ``$NASD_AGENT_PROFILE_OVERRIDE`` first, then ``--profile-override``."""
    return {**parse_override_json(environ.get(OVERRIDE_ENV, "")), **parse_override_items(items)}


def apply_overrides(profile: Mapping[str, Any], overrides: Mapping[str, Any]) -> dict[str, Any]:
    """``profile`` with ``overrides`` on top (checked again); ConfigError if free > total memory."""
    try:
        checked = {key: _checked(key, value) for key, value in overrides.items()}
    except ValueError as exc:
        raise ConfigError(f"profile override: {exc}") from None
    result = {**profile, **checked}
    free, total = result.get("free_memory_bytes"), result.get("memory_bytes")
    if isinstance(free, int) and isinstance(total, int) and free > total:
        raise ConfigError(
            f"profile override: free_memory_bytes ({free}) exceeds memory_bytes ({total});"
            " override memory_bytes too"
        )
    if checked:
        log.warning("agent.profile_overridden", overrides=checked)
    return result


def ready_free_memory(device: str, overrides: Mapping[str, Any]) -> Callable[[], int | None]:
    """What each ``ready`` reports as ``free_memory_bytes``: the override, else a fresh reading."""
    if "free_memory_bytes" in overrides:
        fixed = int(overrides["free_memory_bytes"])
        return lambda: fixed
    from agents.probe import free_memory_bytes

    return lambda: free_memory_bytes(device)
