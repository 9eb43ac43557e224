"""Domain events that search strategies consume.

These are the only inputs a strategy ever sees. The daemon persists each one in the experiment's
event log *before* handing it to the strategy, so replaying the log rebuilds the strategy exactly.
Pure data: no I/O, no clocks.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

Genotype = dict[str, Any]
"""A JSON-compatible mapping that describes one architecture (see ``nasd.core.space``)."""


@dataclass(frozen=True, slots=True)
class SlotsOpen:
    """The daemon can take this many new trials now; the strategy may fill a prefix of the ids."""

    trial_ids: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class TrialSucceeded:
    """A trial finished and reported finite metrics (``val_acc``, ``params``, ...)."""

    trial_id: int
    genotype: Genotype
    metrics: Mapping[str, float]


@dataclass(frozen=True, slots=True)
class TrialFailed:
    """A trial failed permanently (its attempts are used up); it will never report metrics."""

    trial_id: int
    genotype: Genotype
    reason: str = field(default="")


StrategyEvent = SlotsOpen | TrialSucceeded | TrialFailed

_KINDS: dict[str, type[SlotsOpen] | type[TrialSucceeded] | type[TrialFailed]] = {
    "slots_open": SlotsOpen,
    "trial_succeeded": TrialSucceeded,
    "trial_failed": TrialFailed,
}


def event_kind(event: StrategyEvent) -> str:
    """The log name of ``event``'s type (``slots_open``, ``trial_succeeded``, ``trial_failed``)."""
    if isinstance(event, SlotsOpen):
        return "slots_open"
    if isinstance(event, TrialSucceeded):
        return "trial_succeeded"
    return "trial_failed"


def event_to_dict(event: StrategyEvent) -> dict[str, Any]:
    """A msgpack/JSON-able form of ``event`` for the event log."""
    if isinstance(event, SlotsOpen):
        return {"trial_ids": list(event.trial_ids)}
    if isinstance(event, TrialSucceeded):
        return {
            "trial_id": event.trial_id,
            "genotype": event.genotype,
            "metrics": dict(event.metrics),
        }
    return {"trial_id": event.trial_id, "genotype": event.genotype, "reason": event.reason}


def event_from_dict(kind: str, data: Mapping[str, Any]) -> StrategyEvent:
    """Inverse of :func:`event_to_dict`; ``kind`` is the value of :func:`event_kind`."""
    if kind == "slots_open":
        return SlotsOpen(tuple(int(i) for i in data["trial_ids"]))
    if kind == "trial_succeeded":
        return TrialSucceeded(
            int(data["trial_id"]),
            dict(data["genotype"]),
            {str(k): float(v) for k, v in data["metrics"].items()},
        )
    if kind == "trial_failed":
        return TrialFailed(int(data["trial_id"]), dict(data["genotype"]), str(data["reason"]))
    raise ValueError(f"unknown strategy event kind {kind!r}")


STRATEGY_EVENT_KINDS = frozenset(_KINDS)
