"""nasd: an event-driven neural-architecture-search daemon.

The daemon keeps every experiment's history in SQLite, hands "evaluate this architecture" work to
agents over MQTT, and drives pure, replayable search strategies with the results.
"""

__version__ = "0.1.0"
