"""The single writer thread: every write transaction runs here, never on the event loop.

Work is submitted as a function of the connection; the writer wraps it in
``BEGIN IMMEDIATE … COMMIT`` and hands the function's return value back to the awaiting coroutine.
Because the daemon submits one batch at a time, messages that arrive meanwhile pile up and form the
next batch: commits (and their fsyncs) are grouped naturally under load.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar

from nasd.store.connection import open_writer

T = TypeVar("T")


class Writer:
    """Owns the writer connection and the one thread allowed to use it."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="nasd-writer")
        self._closed = False
        self._conn: sqlite3.Connection = self._executor.submit(open_writer, self.path).result()

    def _transaction(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        conn = self._conn
        conn.execute("BEGIN IMMEDIATE")
        try:
            result = fn(conn)
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")
        return result

    def run_sync(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``fn`` in one transaction on the writer thread and wait for it (blocking)."""
        return self._executor.submit(self._transaction, fn).result()

    async def run(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``fn`` in one transaction on the writer thread; await its result."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, self._transaction, fn)

    def close(self) -> None:
        """Checkpoint the WAL and close the connection (idempotent)."""

        def _close() -> None:
            try:
                self._conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
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
