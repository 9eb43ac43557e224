"""nasd.store.writer.Writer: transactions on its own thread, and a close that is safe to repeat."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from pathlib import Path

import pytest

from nasd.store.writer import Writer


def test_work_runs_in_one_transaction_on_the_writer_thread(tmp_path: Path) -> None:
    writer = Writer(tmp_path / "w.db")
    try:
        writer.run_sync(lambda conn: conn.execute("CREATE TABLE t (x INTEGER)"))
        threads: list[str] = []

        def fail_halfway(conn: sqlite3.Connection) -> None:
            threads.append(threading.current_thread().name)
            conn.execute("INSERT INTO t VALUES (1)")
            raise ValueError("halfway")

        with pytest.raises(ValueError, match="halfway"):
            writer.run_sync(fail_halfway)
        assert threads[0].startswith("nasd-writer")
        count = asyncio.run(writer.run(lambda c: c.execute("SELECT COUNT(*) FROM t").fetchone()))
        assert count == (0,)  # rolled back
    finally:
        writer.close()


def test_close_checkpoints_the_wal_and_may_be_repeated(tmp_path: Path) -> None:
    path = tmp_path / "w.db"
    writer = Writer(path)
    writer.run_sync(lambda conn: conn.execute("CREATE TABLE t (x INTEGER)"))
    writer.run_sync(lambda conn: conn.execute("INSERT INTO t VALUES (7)"))
    writer.close()
    wal = Path(f"{path}-wal")
    assert not wal.exists() or wal.stat().st_size == 0  # everything is in the main file
    writer.close()  # a second close (shutdown paths overlap) is a no-op
    with pytest.raises(RuntimeError):
        writer.run_sync(lambda conn: None)  # no thread is left to run work
    conn = sqlite3.connect(path)
    try:
        assert conn.execute("SELECT x FROM t").fetchall() == [(7,)]
    finally:
        conn.close()
