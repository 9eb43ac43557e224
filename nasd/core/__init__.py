"""The pure core: events, objectives, search spaces, strategies, scheduling rules and the wire.

Nothing below this package does I/O, reads a clock or imports asyncio, MQTT, SQLite or torch
(``tests/unit/test_imports.py`` enforces it), so all of it is testable as plain functions and the
agents may import it freely.
"""
