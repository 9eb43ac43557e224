"""Defect 8: the store opens only nasd's databases (``application_id``/``user_version``).

Every case goes through the real openers on real files, and through the CLI (one line, exit 2).
"""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from sqlite_utils import Database

from nasd.errors import StoreError
from nasd.store import open_reader, open_writer
from nasd.store.connection import APPLICATION_ID, Kind, known_migrations, recognise
from nasd.store.schema import migrations

Opener = Callable[[Path], sqlite3.Connection]
OPENERS: list[Opener] = [open_writer, open_reader]


def _sqlite(path: Path, *statements: str) -> None:
    conn = sqlite3.connect(path, isolation_level=None)
    for statement in statements:
        conn.execute(statement)
    conn.close()


def _pragmas(path: Path) -> tuple[int, int]:
    conn = sqlite3.connect(path)
    try:
        app = conn.execute("PRAGMA application_id").fetchone()[0]
        version = conn.execute("PRAGMA user_version").fetchone()[0]
    finally:
        conn.close()
    return app, version


def _tables(path: Path) -> set[str]:
    conn = sqlite3.connect(path)
    try:
        return {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    finally:
        conn.close()


def test_a_new_file_is_stamped_with_application_id_and_schema_version(tmp_path: Path) -> None:
    db = tmp_path / "new.db"
    open_writer(db).close()
    assert _pragmas(db) == (APPLICATION_ID, len(known_migrations()))
    reader = open_reader(db)
    found = recognise(reader, db)
    reader.close()
    assert (found.kind, found.pending, found.schema_version) == (
        Kind.NASD,
        (),
        len(known_migrations()),
    )


def test_an_empty_file_is_a_new_database_for_the_writer_only(tmp_path: Path) -> None:
    db = tmp_path / "empty.db"
    db.touch()
    with pytest.raises(StoreError, match="no nasd tables yet"):
        open_reader(db)
    open_writer(db).close()
    assert _pragmas(db)[0] == APPLICATION_ID


def test_a_database_made_before_the_stamp_is_recognised_and_stamped(tmp_path: Path) -> None:
    db = tmp_path / "old.db"
    open_writer(db).close()
    _sqlite(db, "PRAGMA application_id = 0", "PRAGMA user_version = 0")  # as nasd made it before
    reader = open_reader(db)  # recognised by its migration rows, and nothing written
    assert recognise(reader, db).kind is Kind.UNSTAMPED
    reader.close()
    assert _pragmas(db) == (0, 0)
    open_writer(db).close()
    assert _pragmas(db) == (APPLICATION_ID, len(known_migrations()))


def test_an_older_schema_is_migrated_and_its_version_raised(tmp_path: Path) -> None:
    db = tmp_path / "older.db"
    last = known_migrations()[-1]
    conn = sqlite3.connect(db, isolation_level=None)
    conn.execute(f"PRAGMA application_id = {APPLICATION_ID}")
    migrations.apply(Database(conn), stop_before=last)  # what the previous nasd left
    conn.execute(f"PRAGMA user_version = {len(known_migrations()) - 1}")
    conn.close()
    reader = open_reader(db)
    assert recognise(reader, db).pending == (last,)
    reader.close()
    open_writer(db).close()
    assert _pragmas(db) == (APPLICATION_ID, len(known_migrations()))


@pytest.mark.parametrize("opener", OPENERS, ids=["writer", "reader"])
def test_a_file_that_is_not_a_database_is_refused(tmp_path: Path, opener: Opener) -> None:
    db = tmp_path / "notes.db"
    db.write_bytes(b"these are my notes, not a database\n" * 200)
    before = db.read_bytes()
    with pytest.raises(StoreError, match="is not a SQLite database"):
        opener(db)
    assert db.read_bytes() == before
    assert not (tmp_path / "notes.db-wal").exists()


@pytest.mark.parametrize("opener", OPENERS, ids=["writer", "reader"])
def test_another_applications_database_is_refused_and_untouched(
    tmp_path: Path, opener: Opener
) -> None:
    db = tmp_path / "other.db"
    _sqlite(db, "CREATE TABLE events (id INTEGER PRIMARY KEY, what TEXT)")
    with pytest.raises(StoreError, match=r"not a nasd database .*events"):
        opener(db)
    assert _tables(db) == {"events"}
    assert _pragmas(db) == (0, 0)
    conn = sqlite3.connect(db)
    assert conn.execute("PRAGMA journal_mode").fetchone() == ("delete",)
    conn.close()


@pytest.mark.parametrize("opener", OPENERS, ids=["writer", "reader"])
def test_another_application_id_is_refused(tmp_path: Path, opener: Opener) -> None:
    db = tmp_path / "stamped.db"
    _sqlite(db, "PRAGMA application_id = 1196444487")  # GeoPackage's "GPKG"
    with pytest.raises(StoreError, match=r"another application's database .*0x47504b47"):
        opener(db)
    assert _tables(db) == set()


@pytest.mark.parametrize("opener", OPENERS, ids=["writer", "reader"])
def test_a_sqlite_utils_database_of_another_app_is_refused(tmp_path: Path, opener: Opener) -> None:
    db = tmp_path / "utils.db"
    _sqlite(
        db,
        "CREATE TABLE _sqlite_migrations (id INTEGER PRIMARY KEY, migration_set TEXT, name TEXT,"
        " applied_at TEXT)",
        "INSERT INTO _sqlite_migrations (migration_set, name, applied_at)"
        " VALUES ('blog', 'm1', '')",
    )
    with pytest.raises(StoreError, match="not a nasd database"):
        opener(db)


@pytest.mark.parametrize("opener", OPENERS, ids=["writer", "reader"])
@pytest.mark.parametrize(
    "change",
    [
        "PRAGMA user_version = 99",
        "INSERT INTO _sqlite_migrations (migration_set, name, applied_at)"
        " VALUES ('nasd', 'm999_from_the_future', '')",
    ],
    ids=["user_version", "migration_name"],
)
def test_a_database_from_a_newer_nasd_is_refused_and_untouched(
    tmp_path: Path, opener: Opener, change: str
) -> None:
    db = tmp_path / "future.db"
    open_writer(db).close()
    _sqlite(db, change)
    before = db.read_bytes()
    with pytest.raises(StoreError, match="written by a newer nasd"):
        opener(db)
    assert db.read_bytes() == before


def test_a_directory_is_refused_by_both(tmp_path: Path) -> None:
    for opener in OPENERS:
        with pytest.raises(StoreError):
            opener(tmp_path)


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda p: p.write_bytes(b"x" * 5000), "is not a SQLite database"),
        (lambda p: _sqlite(p, "CREATE TABLE events (x)"), "not a nasd database"),
        (lambda p: _sqlite(p, "PRAGMA application_id = 7"), "another application's"),
        (lambda p: (open_writer(p).close(), _sqlite(p, "PRAGMA user_version = 42")), "newer nasd"),
    ],
    ids=["garbage", "foreign", "app_id", "newer"],
)
def test_the_cli_says_one_line_and_exits_2(
    tmp_path: Path, make: Callable[[Path], object], message: str
) -> None:
    db = tmp_path / "other.db"
    make(db)
    done = subprocess.run(
        [sys.executable, "-m", "nasd.cli", "status", "--db", str(db)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2, done.stderr
    assert done.stdout == ""
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert message in lines[0]
    assert lines[0].startswith("nasd status: error: ")


def test_a_crash_in_the_middle_of_a_migration_leaves_it_pending(tmp_path: Path) -> None:
    """``migration.middle``: the half-done migration is rolled back and applied on the next open."""
    db = tmp_path / "crash.db"
    done = subprocess.run(
        [sys.executable, "-c", f"from nasd.store import open_writer; open_writer({str(db)!r})"],
        env={**os.environ, "NASD_CRASH_AT": "migration.middle"},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 86, done.stderr
    reader = open_reader(db)
    found = recognise(reader, db)
    reader.close()
    known = known_migrations()
    assert found.pending == known[known.index("m003_security") :]  # the crash point's migration
    assert "meta" not in _tables(db)  # the half-applied part is gone, not left to clash
    conn = open_writer(db)
    assert conn.execute("SELECT COUNT(*) FROM meta").fetchone() == (1,)
    conn.close()
    assert _pragmas(db) == (APPLICATION_ID, len(known_migrations()))


def test_a_foreign_migrations_table_of_another_layout_is_refused(tmp_path: Path) -> None:
    db = tmp_path / "layout.db"
    _sqlite(db, "CREATE TABLE _sqlite_migrations (version INTEGER)")
    for opener in OPENERS:
        with pytest.raises(StoreError, match="not a nasd database"):
            opener(db)
