"""The agent's result spool: results stay on local disk until the daemon acknowledges them.

A small SQLite file (WAL, ``synchronous=NORMAL``) keyed by job id holds each encoded
``trial.result`` payload; it is written *before* the result is published and deleted when the
daemon's ``trial.ack`` arrives. After a reconnect, a daemon restart or an agent restart every
spooled result is published again; the daemon acknowledges duplicates, so resending is always safe.

Durability: a killed agent process loses nothing (SQLite's WAL is in the OS page cache). A power cut
may lose the last few unacknowledged results; the daemon then sees the lease expire and has the
trial trained again, so even that loses no evaluation, it only repeats one.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path


class Spool:
    """Pending results keyed by job id, in one SQLite file inside ``directory``."""

    def __init__(self, directory: str | Path) -> None:
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self._conn = sqlite3.connect(self.directory / "spool.db", isolation_level=None)
        self._conn.execute("PRAGMA journal_mode = WAL")
        self._conn.execute("PRAGMA synchronous = NORMAL")
        self._conn.execute(
            "CREATE TABLE IF NOT EXISTS results (job_id TEXT PRIMARY KEY, payload BLOB NOT NULL,"
            " seq INTEGER NOT NULL)"
        )

    def put(self, job_id: str, payload: bytes) -> None:
        """Store (or replace) the encoded result of ``job_id``."""
        self._conn.execute(
            "INSERT OR REPLACE INTO results (job_id, payload, seq) VALUES"
            " (?, ?, (SELECT COALESCE(MAX(seq), 0) + 1 FROM results))",
            (job_id, payload),
        )

    def get(self, job_id: str) -> bytes | None:
        """The spooled payload of ``job_id``, if any."""
        row = self._conn.execute(
            "SELECT payload FROM results WHERE job_id = ?", (job_id,)
        ).fetchone()
        return bytes(row[0]) if row else None

    def remove(self, job_id: str) -> None:
        """Forget ``job_id`` (its result was acknowledged)."""
        self._conn.execute("DELETE FROM results WHERE job_id = ?", (job_id,))

    def items(self) -> Iterator[bytes]:
        """Every spooled payload, oldest first."""
        rows = self._conn.execute("SELECT payload FROM results ORDER BY seq").fetchall()
        for (payload,) in rows:
            yield bytes(payload)

    def __len__(self) -> int:
        return int(self._conn.execute("SELECT COUNT(*) FROM results").fetchone()[0])

    def close(self) -> None:
        """Close the file (the agent does this on exit)."""
        self._conn.close()
