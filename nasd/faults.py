"""Crash points: named places where a test can make the process die, as a power cut would.

The fault suite (``tests/faults/``) proves that nasd loses nothing and counts nothing twice when
it dies at *every* commit boundary, not only at the random moments a ``SIGKILL`` happens to hit.
Production code marks each boundary with :func:`crash_point`; a test process sets

    NASD_CRASH_AT=<point>[:<n>]

and the process ends with ``os._exit(CRASH_EXIT_CODE)`` (no cleanup, no flush, no ``finally``) the
``n``-th time (default: the first) it reaches ``<point>``. Without the variable a crash point costs
one dictionary lookup. Only the names in :data:`POINTS` are accepted, so a typo in a test fails
loudly instead of never crashing.
"""

from __future__ import annotations

import os
import sys

__all__ = ["CRASH_EXIT_CODE", "ENV", "POINTS", "crash_point"]

ENV = "NASD_CRASH_AT"
CRASH_EXIT_CODE = 86
"""The exit status of a deliberate crash (tests tell it from a real failure)."""

POINTS = frozenset(
    {
        "result.before_insert",  # engine: a result was accepted, nothing written yet
        "commit.before",  # writer: a batch was applied, COMMIT not yet run
        "commit.after_before_publish",  # daemon: committed, acks and assigns not yet published
        "publish.after_first",  # daemon: the first message of a committed batch went out
        "snapshot.middle",  # engine: some strategies' snapshots written, not all
        "migration.middle",  # store: inside a schema migration's transaction
    }
)
"""Every crash point that production code marks (grep for the name to find it)."""


def _parse(value: str | None) -> tuple[str, int] | None:
    if not value:
        return None
    name, _, count = value.partition(":")
    if name not in POINTS:
        raise SystemExit(f"{ENV}={value!r}: unknown crash point (known: {sorted(POINTS)})")
    try:
        n = int(count) if count else 1
    except ValueError:
        raise SystemExit(f"{ENV}={value!r}: the count after ':' must be an integer") from None
    return name, max(1, n)


_TARGET = _parse(os.environ.get(ENV))
_hits = 0


def crash_point(name: str) -> None:
    """Die here if the test environment asks for it (see the module docstring)."""
    global _hits
    if _TARGET is None or _TARGET[0] != name:
        return
    _hits += 1
    if _hits >= _TARGET[1]:
        sys.stderr.write(f"nasd: crash point {name} reached ({ENV}), exiting\n")
        sys.stderr.flush()
        os._exit(CRASH_EXIT_CODE)
