"""The single writer thread: every write transaction runs here, never on the event loop.

Work is submitted as a function of the connection; the writer wraps it in
``BEGIN IMMEDIATE … COMMIT`` and hands the function's return value back to the awaiting coroutine.
Because the daemon submits one batch at a time, messages that arrive meanwhile pile up and form the
next batch: commits (and their fsyncs) are grouped naturally under load.

A transaction that fails is rolled back, even when the failure was the ``COMMIT`` itself (a full
disk, say); :func:`outage_reason` tells such losses of the store (full, read-only, I/O error,
cannot open) from bugs, and :func:`probe_write` checks whether writing works again. The crash
point ``commit.before`` (:mod:`nasd.faults`) sits just before every ``COMMIT``.
"""

from __future__ import annotations

import asyncio
import secrets
import sqlite3
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar

import structlog

from nasd.faults import crash_point
from nasd.store.connection import open_writer

T = TypeVar("T")

log = structlog.get_logger("nasd.store.writer")

OUTAGE_CODES = {
    sqlite3.SQLITE_FULL: "the disk (or the database's page limit) is full",
    sqlite3.SQLITE_READONLY: "the database is read-only",
    sqlite3.SQLITE_IOERR: "an I/O error on the database file",
    sqlite3.SQLITE_CANTOPEN: "the database file cannot be opened",
}
"""SQLite primary result codes that mean the store is unavailable rather than nasd being wrong."""

PROBE_BYTES = 4096
"""Size of the row :func:`probe_write` writes and deletes: enough to need a new page."""


def outage_reason(exc: BaseException) -> str | None:
    """Why the store is unavailable, if ``exc`` says so (full, read-only, I/O, cannot open).

    None for any other exception: those are bugs or hostile data, not an outage.
    """
    if not isinstance(exc, sqlite3.Error):
        return None
    code = getattr(exc, "sqlite_errorcode", None)
    if isinstance(code, int) and code & 0xFF in OUTAGE_CODES:
        return f"{OUTAGE_CODES[code & 0xFF]} ({exc})"
    return None


def probe_write(conn: sqlite3.Connection) -> None:
    """Write and delete a few KiB (inside the caller's transaction): does writing work again?"""
    conn.execute(
        "INSERT OR REPLACE INTO meta (key, value) VALUES ('write_probe', ?)",
        (secrets.token_hex(PROBE_BYTES // 2),),
    )
    conn.execute("DELETE FROM meta WHERE key = 'write_probe'")


class Writer:
    """Owns the writer connection and the one thread allowed to use it."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="nasd-writer")
        self._closed = False
        self._conn: sqlite3.Connection = self._executor.submit(open_writer, self.path).result()

    def _transaction(self, fn: Callable[[sqlite3.Connection], T], begin: str) -> T:
        conn = self._conn
        conn.execute(begin)
        try:
            result = fn(conn)
            crash_point("commit.before")
            conn.execute("COMMIT")
        except BaseException:
            self._rollback()
            raise
        return result

    def _write(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        return self._transaction(fn, "BEGIN IMMEDIATE")

    def _read(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        return self._transaction(fn, "BEGIN")

    def _rollback(self) -> None:
        """Roll back whatever is open; a failing ROLLBACK (the file is gone) is only logged."""
        if not self._conn.in_transaction:
            return
        try:
            self._conn.execute("ROLLBACK")
        except sqlite3.Error as exc:
            log.error("store.rollback_failed", error=str(exc)[:300])

    def run_sync(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``fn`` in one transaction on the writer thread and wait for it (blocking)."""
        return self._executor.submit(self._write, fn).result()

    async def run(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``fn`` in one write transaction on the writer thread; await its result."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, self._write, fn)

    async def read(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``fn`` in a read (deferred) transaction on the writer thread.

        For work that only reads, such as rebuilding the engine: it works on a database that can
        no longer be written (read-only, full disk), where ``BEGIN IMMEDIATE`` may not.
        """
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, self._read, fn)

    async def call(self, fn: Callable[[], T]) -> T:
        """Run ``fn`` on the writer thread without a transaction (it touches no database).

        For reading state that only the writer thread may touch (the engine's memory).
        """
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, fn)

    def close(self) -> None:
        """Checkpoint the WAL and close the connection (idempotent)."""

        def _close() -> None:
            try:
                self._conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            except sqlite3.Error as exc:  # a full or read-only disk must not hide the close
                log.warning("store.checkpoint_failed", error=str(exc)[:300])
            finally:
                self._conn.close()

        # Marked before the work: a failing checkpoint still closes the connection, and a second
        # call must not submit to an executor that is shut down.
        if self._closed:
            return
        self._closed = True
        try:
            self._executor.submit(_close).result()
        finally:
            self._executor.shutdown(wait=True)
