"""Opening SQLite connections with the settings nasd relies on, asserted rather than hoped for."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from sqlite_utils import Database

from nasd.errors import StoreError
from nasd.store.schema import migrations

BUSY_TIMEOUT_MS = 10_000


def _pragma(conn: sqlite3.Connection, name: str) -> object:
    row = conn.execute(f"PRAGMA {name}").fetchone()
    return row[0] if row else None


def open_writer(path: str | Path) -> sqlite3.Connection:
    """Open (creating if needed) the daemon's single writer connection and migrate the schema.

    WAL journal, ``synchronous=FULL`` (every commit that precedes an ack is on disk) and a
    ``busy_timeout`` are set and then read back; a mismatch raises :class:`StoreError`.
    The connection is in autocommit mode: callers bracket work with ``BEGIN IMMEDIATE``/``COMMIT``
    (see :class:`nasd.store.writer.Writer`). ``check_same_thread`` is off because the connection
    is created on one thread and used only by the writer thread afterwards.
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    except (OSError, sqlite3.Error) as exc:
        raise StoreError(f"cannot open database {path}: {exc}") from exc
    conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA synchronous = FULL")
    conn.execute("PRAGMA foreign_keys = ON")
    checks = {
        "journal_mode": "wal",
        "synchronous": 2,
        "busy_timeout": BUSY_TIMEOUT_MS,
    }
    for name, expected in checks.items():
        actual = _pragma(conn, name)
        if actual != expected:
            conn.close()
            raise StoreError(f"{path}: PRAGMA {name} is {actual!r}, nasd needs {expected!r}")
    migrations.apply(Database(conn))
    return conn


def open_memory() -> sqlite3.Connection:
    """A migrated in-memory database in autocommit mode, for unit tests of the engine.

    The same schema and store functions as a real file, without the file: nothing survives the
    connection, so durability settings do not apply.
    """
    conn = sqlite3.connect(":memory:", isolation_level=None)
    conn.execute("PRAGMA foreign_keys = ON")
    migrations.apply(Database(conn))
    return conn


def open_reader(path: str | Path) -> sqlite3.Connection:
    """A read-only connection for the CLI and dashboards; never blocks the writer (WAL)."""
    path = Path(path)
    if not path.exists():
        raise StoreError(f"no database at {path}")
    try:
        conn = sqlite3.connect(f"file:{path.resolve()}?mode=ro", uri=True)
    except sqlite3.Error as exc:
        raise StoreError(f"cannot open database {path}: {exc}") from exc
    conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
    conn.row_factory = sqlite3.Row
    return conn
