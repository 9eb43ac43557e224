"""SQLite persistence: the event log, its projections, and the single writer thread.

The daemon owns the only writer connection (:class:`nasd.store.writer.Writer`); the CLI and
dashboards open read-only connections (:func:`nasd.store.connection.open_reader`).
"""

from nasd.store.connection import open_memory, open_reader, open_writer
from nasd.store.writer import Writer

__all__ = ["Writer", "open_memory", "open_reader", "open_writer"]
