"""The agent's result spool: results stay on local disk until the daemon acknowledges them.

A small SQLite file (WAL, ``synchronous=NORMAL``) keyed by ``(job_id, epoch)`` holds each encoded
``trial.result`` payload with its lease token; it is written *before* the result is published and
deleted when a ``trial.ack`` for the same job, epoch *and* token arrives (an ack for epoch 1 never
deletes an epoch-2 result, and a forged ack, lacking the token, deletes nothing). After a
reconnect, a daemon restart or an agent restart every spooled result is published again; the
daemon acknowledges duplicates, so resending is always safe.

Durability: a killed agent process loses nothing (SQLite's WAL is in the OS page cache). A power cut
may lose the last few unacknowledged results; the daemon then sees the lease expire and has the
trial trained again, so even that loses no evaluation, it only repeats one.

Layouts: ``PRAGMA user_version`` 2 is this one. A file from an older nasd-agent (version 0: results
keyed by job id alone, without epoch or token) is *migrated* when it holds no result, and *refused*
with :class:`SpoolError` when it does: those results carry no lease token, so no current daemon can
accept or acknowledge them, and they would be re-sent forever. Their jobs are not lost (their leases
expire and the daemon has them trained again); the error says to move the file away.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path

from nasd.errors import ConfigError

__all__ = ["LAYOUT_VERSION", "Spool", "SpoolError"]

LAYOUT_VERSION = 2
"""``PRAGMA user_version`` of the current layout (0: the pre-token layout keyed by job id)."""

_CREATE = (
    "CREATE TABLE IF NOT EXISTS results (job_id TEXT NOT NULL, epoch INTEGER NOT NULL,"
    " token TEXT NOT NULL, payload BLOB NOT NULL, seq INTEGER NOT NULL,"
    " PRIMARY KEY (job_id, epoch))"
)


class SpoolError(ConfigError):
    """The spool file cannot be used as it is (another program's file, or an older layout)."""


class Spool:
    """Pending results keyed by ``(job_id, epoch)``, in one SQLite file inside ``directory``."""

    def __init__(self, directory: str | Path) -> None:
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.path = self.directory / "spool.db"
        self._conn = sqlite3.connect(self.path, isolation_level=None)
        try:
            self._conn.execute("PRAGMA journal_mode = WAL")
            self._conn.execute("PRAGMA synchronous = NORMAL")
            self._open_layout()
        except sqlite3.DatabaseError as exc:
            self._conn.close()
            raise SpoolError(f"spool {self.path}: not a usable spool file ({exc})") from None
        except SpoolError:
            self._conn.close()
            raise

    def _open_layout(self) -> None:
        """Create, migrate or refuse the file's layout (module doc), in one transaction."""
        conn = self._conn
        conn.execute("BEGIN IMMEDIATE")
        try:
            version = int(conn.execute("PRAGMA user_version").fetchone()[0])
            columns = {row[1] for row in conn.execute("PRAGMA table_info(results)")}
            if version > LAYOUT_VERSION:
                raise SpoolError(
                    f"spool {self.path}: written by a newer nasd-agent (layout {version}, this"
                    f" one reads {LAYOUT_VERSION}); upgrade this agent or use another --spool"
                )
            if version < LAYOUT_VERSION and columns:
                self._migrate_v0(columns)
            conn.execute(_CREATE)
            conn.execute(f"PRAGMA user_version = {LAYOUT_VERSION}")
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise

    def _migrate_v0(self, columns: set[str]) -> None:
        """Replace an empty pre-token table; refuse one that still holds results."""
        if columns != {"job_id", "payload", "seq"}:
            raise SpoolError(
                f"spool {self.path}: its 'results' table is not a nasd-agent spool"
                f" (columns {sorted(columns)}); use another --spool directory"
            )
        (count,) = self._conn.execute("SELECT COUNT(*) FROM results").fetchone()
        if count:
            raise SpoolError(
                f"spool {self.path}: holds {count} unacknowledged result(s) from an older"
                " nasd-agent without lease tokens, which no current daemon accepts; their jobs"
                " are retrained when their leases expire. Move the file away (or delete it)"
                " and start the agent again"
            )
        self._conn.execute("DROP TABLE results")

    def put(self, job_id: str, epoch: int, token: str, payload: bytes) -> None:
        """Store (or replace) the encoded result of lease ``(job_id, epoch)`` and its token."""
        self._conn.execute(
            "INSERT OR REPLACE INTO results (job_id, epoch, token, payload, seq) VALUES"
            " (?, ?, ?, ?, (SELECT COALESCE(MAX(seq), 0) + 1 FROM results))",
            (job_id, epoch, token, payload),
        )

    def get(self, job_id: str, epoch: int) -> bytes | None:
        """The spooled payload of lease ``(job_id, epoch)``, if any."""
        row = self._conn.execute(
            "SELECT payload FROM results WHERE job_id = ? AND epoch = ?", (job_id, epoch)
        ).fetchone()
        return bytes(row[0]) if row else None

    def token(self, job_id: str, epoch: int) -> str | None:
        """The lease token stored with ``(job_id, epoch)``'s result, if one is spooled."""
        row = self._conn.execute(
            "SELECT token FROM results WHERE job_id = ? AND epoch = ?", (job_id, epoch)
        ).fetchone()
        return str(row[0]) if row else None

    def epochs(self, job_id: str) -> list[int]:
        """The epochs of ``job_id`` with a spooled result, ascending."""
        rows = self._conn.execute(
            "SELECT epoch FROM results WHERE job_id = ? ORDER BY epoch", (job_id,)
        ).fetchall()
        return [int(epoch) for (epoch,) in rows]

    def remove(self, job_id: str, epoch: int, token: str) -> bool:
        """Forget ``(job_id, epoch)``'s result if ``token`` is its token; True if it was removed.

        An ack for another epoch, or one with another token, removes nothing.
        """
        cursor = self._conn.execute(
            "DELETE FROM results WHERE job_id = ? AND epoch = ? AND token = ?",
            (job_id, epoch, token),
        )
        return cursor.rowcount > 0

    def items(self) -> Iterator[bytes]:
        """Every spooled payload (every epoch of every job), oldest first."""
        rows = self._conn.execute("SELECT payload FROM results ORDER BY seq").fetchall()
        for (payload,) in rows:
            yield bytes(payload)

    def __len__(self) -> int:
        return int(self._conn.execute("SELECT COUNT(*) FROM results").fetchone()[0])

    def close(self) -> None:
        """Close the file (the agent does this on exit)."""
        self._conn.close()
