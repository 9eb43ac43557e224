"""Pure scheduling logic: which agent gets which pending job, and when leases run out."""

from nasd.core.scheduler.assign import AgentCapacity, plan_assignments
from nasd.core.scheduler.leases import LeaseClock

__all__ = ["AgentCapacity", "LeaseClock", "plan_assignments"]
