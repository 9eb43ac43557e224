"""The daemon's protocol logic: experiments, trials, leases and agents, applied per transaction."""

from nasd.engine.core import Engine, Inbound
from nasd.engine.rebuild import rebuild
from nasd.engine.records import Outbound

__all__ = ["Engine", "Inbound", "Outbound", "rebuild"]
