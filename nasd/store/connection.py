"""Opening SQLite connections with the settings nasd relies on, asserted rather than hoped for.

Only nasd's own databases are opened. A nasd database carries ``PRAGMA application_id`` =
:data:`APPLICATION_ID` ("nasd") and ``PRAGMA user_version`` = the number of schema migrations
applied. :func:`recognise` reads both (and the ``_sqlite_migrations`` rows) before anything is
written, and refuses with a one-line :class:`StoreError`:

- a file that is not a SQLite database;
- another application's database (another ``application_id``, or tables without nasd's
  migrations), which nasd must never add its tables to;
- a database written by a newer nasd (a ``user_version`` or migration names this code does not
  know), which this code would misread or corrupt.

A database made before the stamp existed (``application_id`` 0, nasd's migrations recorded) is
recognised by its migration rows and stamped by the writer.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

from sqlite_utils import Database

from nasd.errors import StoreError
from nasd.store.schema import migrations

__all__ = [
    "APPLICATION_ID",
    "BUSY_TIMEOUT_MS",
    "Kind",
    "Recognition",
    "known_migrations",
    "open_memory",
    "open_reader",
    "open_writer",
    "recognise",
]

BUSY_TIMEOUT_MS = 10_000
APPLICATION_ID = 0x6E617364
"""``PRAGMA application_id`` of every nasd database: the bytes of "nasd"."""

_MIGRATIONS_TABLE = "_sqlite_migrations"


class Kind(StrEnum):
    """What :func:`recognise` found in a file nasd may open."""

    NEW = "new"  # no tables yet (a new or empty file): the writer creates the schema
    NASD = "nasd"  # stamped with nasd's application_id
    UNSTAMPED = "unstamped"  # nasd's migrations, application_id 0: made before the stamp existed


@dataclass(frozen=True, slots=True)
class Recognition:
    """A recognised nasd database: its kind, stamps and migrations (applied and still pending)."""

    kind: Kind
    application_id: int
    user_version: int
    applied: tuple[str, ...]
    pending: tuple[str, ...]

    @property
    def schema_version(self) -> int:
        """The number of migrations applied: what ``user_version`` must say."""
        return len(self.applied)


def known_migrations() -> tuple[str, ...]:
    """The names of the migrations this code knows, in order; ``user_version`` counts them."""
    # sqlite-utils has no public accessor for the registered migrations
    return tuple(m.name for m in migrations._migrations)


def _pragma(conn: sqlite3.Connection, name: str) -> object:
    row = conn.execute(f"PRAGMA {name}").fetchone()
    return row[0] if row else None


def recognise(conn: sqlite3.Connection, path: str | Path) -> Recognition:
    """Decide whether ``conn``'s database is nasd's, reading only; raises :class:`StoreError`.

    ``path`` only names the file in messages. See the module docstring for what is refused.
    """
    try:
        app_id = int(_pragma(conn, "application_id") or 0)  # type: ignore[call-overload]
        user_version = int(_pragma(conn, "user_version") or 0)  # type: ignore[call-overload]
        tables = {
            row[0]
            for row in conn.execute(
                "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'"
            )
        }
    except sqlite3.DatabaseError as exc:
        raise StoreError(f"{path} is not a SQLite database ({exc})") from exc
    rows: list[tuple[str, str]] = []
    if _MIGRATIONS_TABLE in tables:
        try:
            rows = conn.execute(
                f"SELECT migration_set, name FROM {_MIGRATIONS_TABLE} ORDER BY rowid"  # noqa: S608
            ).fetchall()
        except sqlite3.DatabaseError:  # someone else's table of that name, another layout
            rows = [("", "")]
    applied = tuple(name for migration_set, name in rows if migration_set == migrations.name)
    if app_id not in (0, APPLICATION_ID):
        raise StoreError(
            f"{path} is another application's database (application_id {app_id:#010x}, "
            f"nasd's is {APPLICATION_ID:#010x}); refusing to touch it"
        )
    if app_id == 0:
        if applied:
            kind = Kind.UNSTAMPED
        elif tables - {_MIGRATIONS_TABLE} or rows:
            shown = ", ".join(sorted(tables)[:5]) + (", ..." if len(tables) > 5 else "")
            raise StoreError(
                f"{path} is not a nasd database (it has tables {shown} but no nasd migrations); "
                "refusing to touch it"
            )
        else:
            kind = Kind.NEW
    else:
        kind = Kind.NASD if applied else Kind.NEW
    known = known_migrations()
    unknown = [name for name in applied if name not in known]
    if unknown or user_version > len(known):
        newest = unknown[-1] if unknown else f"schema version {user_version}"
        raise StoreError(
            f"{path} was written by a newer nasd ({newest}; this nasd knows schema version "
            f"{len(known)}): upgrade nasd to open it"
        )
    pending = tuple(name for name in known if name not in applied)
    return Recognition(kind, app_id, user_version, applied, pending)


def _stamp(conn: sqlite3.Connection) -> None:
    """Mark the database as nasd's, at the schema version its migrations reached."""
    (count,) = conn.execute(
        f"SELECT COUNT(*) FROM {_MIGRATIONS_TABLE} WHERE migration_set = ?",  # noqa: S608
        (migrations.name,),
    ).fetchone()
    conn.execute(f"PRAGMA application_id = {APPLICATION_ID}")
    conn.execute(f"PRAGMA user_version = {int(count)}")


def open_writer(path: str | Path) -> sqlite3.Connection:
    """Open (creating if needed) the daemon's single writer connection and migrate the schema.

    The file is first recognised (:func:`recognise`, nothing written); then the WAL journal,
    ``synchronous=FULL`` (every commit that precedes an ack is on disk) and a ``busy_timeout``
    are set and read back; a mismatch raises :class:`StoreError`. Pending migrations are applied
    (each in its own transaction) and the file is stamped with nasd's ``application_id`` and
    ``user_version``. The connection is in autocommit mode: callers bracket work with
    ``BEGIN IMMEDIATE``/``COMMIT`` (see :class:`nasd.store.writer.Writer`). ``check_same_thread``
    is off because the connection is created on one thread and used only by the writer thread.
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    except (OSError, sqlite3.Error) as exc:
        raise StoreError(f"cannot open database {path}: {exc}") from exc
    try:
        conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        recognise(conn, path)
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute("PRAGMA synchronous = FULL")
        conn.execute("PRAGMA foreign_keys = ON")
        checks = {"journal_mode": "wal", "synchronous": 2, "busy_timeout": BUSY_TIMEOUT_MS}
        for name, expected in checks.items():
            actual = _pragma(conn, name)
            if actual != expected:
                raise StoreError(f"{path}: PRAGMA {name} is {actual!r}, nasd needs {expected!r}")
        conn.execute(f"PRAGMA application_id = {APPLICATION_ID}")  # before the first table
        migrations.apply(Database(conn))
        _stamp(conn)
    except StoreError:
        conn.close()
        raise
    except sqlite3.Error as exc:
        conn.close()
        raise StoreError(f"cannot open database {path}: {exc}") from exc
    return conn


def open_memory() -> sqlite3.Connection:
    """A migrated in-memory database in autocommit mode, for unit tests of the engine.

    The same schema, stamps and store functions as a real file, without the file: nothing
    survives the connection, so durability settings do not apply.
    """
    conn = sqlite3.connect(":memory:", isolation_level=None)
    conn.execute("PRAGMA foreign_keys = ON")
    migrations.apply(Database(conn))
    _stamp(conn)
    return conn


def open_reader(path: str | Path) -> sqlite3.Connection:
    """A read-only connection for the CLI and dashboards; never blocks the writer (WAL).

    The database is recognised as the writer does (:func:`recognise`) without writing anything;
    a file with no tables yet is refused too (there is nothing to read).
    """
    path = Path(path)
    if not path.exists():
        raise StoreError(f"no database at {path}")
    if path.is_dir():
        raise StoreError(f"{path} is a directory, not a database")
    try:
        conn = sqlite3.connect(f"file:{path.resolve()}?mode=ro", uri=True)
        conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
    except sqlite3.Error as exc:
        raise StoreError(f"cannot open database {path}: {exc}") from exc
    try:
        found = recognise(conn, path)
    except StoreError:
        conn.close()
        raise
    if found.kind is Kind.NEW:
        conn.close()
        raise StoreError(f"{path} has no nasd tables yet (is the daemon still creating it?)")
    conn.row_factory = sqlite3.Row
    return conn
