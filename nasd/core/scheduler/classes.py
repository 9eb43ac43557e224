"""Compute classes: agents grouped by the hardware they train on, and how fast each group is.

SHADHO schedules per *compute class* rather than per worker: models are matched to classes, and
within a class any agent may take a job of the class's models. Three ways to form classes:

* ``model`` (default): one class per device model (the profile's ``device_name``, e.g.
  ``NVIDIA H200`` or the CPU's model name), so identical cards share a class;
* ``speed``: agents sorted by measured speed and split wherever the next agent is more than
  :data:`SPEED_GAP` times slower than the previous one (a simple one-dimensional clustering of the
  scores; classes are named ``speed-1`` (fastest), ``speed-2``, ...);
* rules from the daemon config (``[daemon.classes.<name>]`` tables): the first rule an agent
  matches names its class; an agent no rule matches falls back to ``mode``.

An agent's speed is its effective training speed in multiply-accumulates per second, from its
reference-network timing (``samples_per_s``, see :mod:`nasd.core.scheduler.reference`); an
agent that did not report one is rated by its matmul benchmark (``throughput``, GFLOP/s), which
overrates small-kernel training but keeps the order. A class's speed is its agents' median.
"""

from __future__ import annotations

import math
import re
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from nasd.core.scheduler.reference import training_flops_per_s
from nasd.core.values import is_number
from nasd.errors import ConfigError

MODES = ("model", "speed")
SPEED_GAP = 1.5
"""``speed`` mode: a gap in speed larger than this ratio starts a new class."""

_RULE_KEYS = frozenset(
    {"device_name", "device", "compute_capability", "min_memory_gb", "min_samples_per_s"}
)
_CLASS_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
MAX_CLASSES = 64


@dataclass(frozen=True, slots=True)
class ClassRule:
    """``[daemon.classes.<name>]``: every given condition must hold for an agent to match.

    ``device_name``: a regular expression searched (case-insensitively) in the profile's
    ``device_name``; ``device``: ``cpu`` or ``cuda`` (prefix of the profile's device);
    ``compute_capability``: the least CUDA capability (``"8.0"``); ``min_memory_gb`` and
    ``min_samples_per_s``: lower bounds on total memory and on the reference timing.
    """

    name: str
    device_name: str | None = None
    device: str | None = None
    compute_capability: tuple[int, ...] | None = None
    min_memory_gb: float | None = None
    min_samples_per_s: float | None = None

    def matches(self, profile: Mapping[str, Any]) -> bool:
        """True if ``profile`` (an agent's birth profile) meets every condition of the rule."""
        name = str(profile.get("device_name", ""))
        if self.device_name is not None and not re.search(self.device_name, name, re.IGNORECASE):
            return False
        if self.device is not None and not str(profile.get("device", "")).startswith(self.device):
            return False
        if self.compute_capability is not None:
            have = _capability(profile.get("compute_capability"))
            if have is None or have < self.compute_capability:
                return False
        if self.min_memory_gb is not None:
            memory = profile.get("memory_bytes", 0)
            if not is_number(memory) or memory < self.min_memory_gb * 2**30:
                return False
        if self.min_samples_per_s is not None:
            speed = profile.get("samples_per_s", 0)
            if not is_number(speed) or speed < self.min_samples_per_s:
                return False
        return True


def _capability(value: Any) -> tuple[int, ...] | None:
    if not isinstance(value, str) or not re.fullmatch(r"\d{1,3}(\.\d{1,3}){0,2}", value):
        return None
    return tuple(int(part) for part in value.split("."))


def parse_class_rules(table: Any, *, where: str = "daemon.classes") -> tuple[ClassRule, ...]:
    """The rules of a ``[daemon.classes]`` table, in file order; ConfigError names the key."""
    if not isinstance(table, Mapping):
        raise ConfigError(f"{where}: expected a table of class names to match rules")
    if len(table) > MAX_CLASSES:
        raise ConfigError(f"{where}: at most {MAX_CLASSES} classes")
    rules = []
    for name, rule in table.items():
        key = f"{where}.{name}"
        if not _CLASS_NAME.fullmatch(name):
            raise ConfigError(f"{key}: class names are letters, digits, '_', '.', '-'")
        if not isinstance(rule, Mapping) or not rule:
            raise ConfigError(f"{key}: expected a table with at least one of {sorted(_RULE_KEYS)}")
        unknown = sorted(set(rule) - _RULE_KEYS)
        if unknown:
            raise ConfigError(f"{key}: unknown key {unknown[0]!r}; known: {sorted(_RULE_KEYS)}")
        rules.append(_parse_rule(name, rule, key))
    return tuple(rules)


def _parse_rule(name: str, rule: Mapping[str, Any], key: str) -> ClassRule:
    pattern = rule.get("device_name")
    if pattern is not None:
        if not isinstance(pattern, str) or len(pattern) > 256:
            raise ConfigError(f"{key}.device_name: expected a regular expression (a string)")
        try:
            re.compile(pattern)
        except re.error as error:
            raise ConfigError(f"{key}.device_name: not a regular expression: {error}") from None
    device = rule.get("device")
    if device is not None and device not in ("cpu", "cuda"):
        raise ConfigError(f"{key}.device: 'cpu' or 'cuda', not {device!r}")
    capability = None
    if "compute_capability" in rule:
        capability = _capability(rule["compute_capability"])
        if capability is None:
            raise ConfigError(f'{key}.compute_capability: a version such as "8.0"')
    bounds: dict[str, float] = {}
    for bound in ("min_memory_gb", "min_samples_per_s"):
        if bound in rule:
            value = rule[bound]
            if not is_number(value) or not math.isfinite(value) or value < 0:
                raise ConfigError(f"{key}.{bound}: a number >= 0, not {value!r}")
            bounds[bound] = float(value)
    return ClassRule(
        name,
        pattern,
        device,
        capability,
        bounds.get("min_memory_gb"),
        bounds.get("min_samples_per_s"),
    )


def agent_speed(profile: Mapping[str, Any]) -> float:
    """Effective training speed (MAC/s) from a profile: reference timing, else matmul GFLOP/s."""
    samples = profile.get("samples_per_s")
    if is_number(samples) and samples > 0:
        return training_flops_per_s(float(samples))
    throughput = profile.get("throughput")
    if is_number(throughput) and throughput > 0:
        return float(throughput) * 1e9 / 2.0  # GFLOP/s counts a multiply-add as two
    return 0.0


def group_agents(
    profiles: Mapping[str, Mapping[str, Any]],
    rules: Sequence[ClassRule] = (),
    mode: str = "model",
) -> dict[str, str]:
    """Each agent's class name (module docstring); ``profiles`` maps agent name to profile."""
    if mode not in MODES:
        raise ValueError(f"class mode must be one of {MODES}, not {mode!r}")
    out: dict[str, str] = {}
    rest: dict[str, Mapping[str, Any]] = {}
    for agent, profile in profiles.items():
        rule = next((r for r in rules if r.matches(profile)), None)
        if rule is not None:
            out[agent] = rule.name
        else:
            rest[agent] = profile
    if mode == "model":
        for agent, profile in rest.items():
            out[agent] = str(profile.get("device_name") or profile.get("device") or "unknown")[:64]
        return out
    ranked = sorted(rest, key=lambda a: (-agent_speed(rest[a]), a))
    number, previous = 0, 0.0
    for agent in ranked:
        speed = agent_speed(rest[agent])
        if number == 0 or speed * SPEED_GAP < previous:
            number += 1
        previous = speed
        out[agent] = f"speed-{number}"
    return out


def class_speeds(
    classes: Mapping[str, str], profiles: Mapping[str, Mapping[str, Any]]
) -> dict[str, float]:
    """Each class's speed: the median of its agents' :func:`agent_speed`."""
    members: dict[str, list[float]] = {}
    for agent, name in classes.items():
        members.setdefault(name, []).append(agent_speed(profiles.get(agent, {})))
    return {name: statistics.median(speeds) for name, speeds in members.items()}
