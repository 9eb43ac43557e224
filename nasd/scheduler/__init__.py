"""Pure scheduling logic: which agent gets which pending job, and when leases run out."""

from nasd.scheduler.assign import AgentCapacity, plan_assignments
from nasd.scheduler.leases import LeaseClock

__all__ = ["AgentCapacity", "LeaseClock", "plan_assignments"]
