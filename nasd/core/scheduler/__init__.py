"""Pure scheduling logic: SHADHO's compute classes and heuristics, placement, lease expiry."""

from nasd.core.scheduler.assign import AgentCapacity, spread_assignments
from nasd.core.scheduler.leases import LeaseClock
from nasd.core.scheduler.shadho import (
    AgentTiming,
    JobDemand,
    ModelView,
    Plan,
    assign_models,
    fits_anywhere,
    keep_off_stragglers,
    plan_assignments,
    rank_models,
    share_credits,
)

__all__ = [
    "AgentCapacity",
    "AgentTiming",
    "JobDemand",
    "LeaseClock",
    "ModelView",
    "Plan",
    "assign_models",
    "fits_anywhere",
    "keep_off_stragglers",
    "plan_assignments",
    "rank_models",
    "share_credits",
    "spread_assignments",
]
