"""Online backups and restores of a nasd database (``nasd backup``, ``nasd restore``).

A backup is taken while the daemon runs: SQLite's backup API copies the database through a
read-only connection that holds one read transaction for the whole copy. In WAL mode a reader
never blocks the writer, and the open read transaction pins one snapshot, so the copy is the
database as of one commit even if the daemon commits during it (without the pinned snapshot,
SQLite would restart a stepwise backup on every foreign commit). The copy is checked
(``integrity_check`` and :func:`nasd.store.connection.recognise`), made self-contained
(``journal_mode = DELETE``), fsynced and renamed into place atomically: ``--out`` is either the
old file or a whole, checked copy, never half a file.

A restore refuses a file that is not a checked nasd database, and refuses to replace a database
that another process has open. That is detected with a lock attempt: a connection in
``locking_mode = EXCLUSIVE`` runs ``BEGIN EXCLUSIVE`` with a short timeout, which fails while any
other connection (the daemon's writer, even idle, or a reader) has the database open in WAL mode.
The restored copy is written beside the target, checked, fsynced, the target's stale ``-wal`` and
``-shm`` files are removed (a left-over WAL would otherwise be replayed into the restored file),
and the copy is renamed over the target.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from nasd.errors import StoreError
from nasd.store.connection import Recognition, open_reader, recognise

__all__ = ["Copied", "Progress", "backup", "check_database", "in_use", "restore"]

STEP_PAGES = 1024
"""Pages copied per backup step (4 MiB at the default page size), between progress reports."""

LOCK_TIMEOUT_S = 0.5

Progress = Callable[[int, int], None]
"""Called after each backup step with ``(pages copied, total pages)``."""


@dataclass(frozen=True, slots=True)
class Copied:
    """What :func:`backup` or :func:`restore` wrote: where, how big, how long it took."""

    path: Path
    pages: int
    bytes: int
    seconds: float
    schema_version: int


def check_database(conn: sqlite3.Connection, path: Path) -> Recognition:
    """Recognise ``conn``'s database as a nasd one and run ``PRAGMA integrity_check`` on it.

    Raises :class:`StoreError` naming the first problem ``integrity_check`` reports.
    """
    found = recognise(conn, path)
    try:
        rows = [row[0] for row in conn.execute("PRAGMA integrity_check(20)")]
    except sqlite3.DatabaseError as exc:
        raise StoreError(f"{path}: integrity_check failed: {exc}") from exc
    if rows != ["ok"]:
        raise StoreError(
            f"{path} is damaged: integrity_check says {rows[0]!r} ({len(rows)} issues)"
        )
    return found


def in_use(path: Path) -> bool:
    """Whether another connection (a running daemon, a reader) has the database at ``path`` open.

    A lock attempt, not a guess from files: ``locking_mode = EXCLUSIVE`` plus ``BEGIN EXCLUSIVE``
    fails while any other connection holds the database open in WAL mode. A file that is not a
    database cannot be in use by nasd and gives ``False``.
    """
    if not path.exists():
        return False
    try:
        conn = sqlite3.connect(path, isolation_level=None, timeout=LOCK_TIMEOUT_S)
    except sqlite3.Error:
        return False
    try:
        conn.execute("PRAGMA locking_mode = EXCLUSIVE")
        conn.execute("BEGIN EXCLUSIVE")
        conn.execute("ROLLBACK")
    except sqlite3.OperationalError as exc:
        text = str(exc).lower()
        return "locked" in text or "busy" in text
    except sqlite3.DatabaseError:
        return False
    finally:
        conn.close()
    return False


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _copy(
    source: sqlite3.Connection, source_path: Path, target: Path, progress: Progress | None
) -> Copied:
    """Copy ``source`` (already recognised, read transaction held) into ``target`` atomically."""
    started = time.monotonic()
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    tmp.unlink(missing_ok=True)

    def step(_status: int, remaining: int, total: int) -> None:
        if progress is not None:
            progress(total - remaining, total)

    try:
        dest = sqlite3.connect(tmp, isolation_level=None)
        try:
            source.backup(dest, pages=STEP_PAGES, progress=step)
            dest.execute("PRAGMA journal_mode = DELETE")  # one self-contained file
            found = check_database(dest, source_path)
            (pages,) = dest.execute("PRAGMA page_count").fetchone()
        finally:
            dest.close()
        _fsync(tmp)
        os.replace(tmp, target)
        _fsync(target.parent)
    except sqlite3.Error as exc:
        raise StoreError(f"cannot copy {source_path} to {target}: {exc}") from exc
    except OSError as exc:
        raise StoreError(f"cannot write {target}: {exc}") from exc
    finally:
        tmp.unlink(missing_ok=True)
    return Copied(
        target, pages, target.stat().st_size, time.monotonic() - started, found.schema_version
    )


def _snapshot_reader(path: Path) -> sqlite3.Connection:
    """A recognised read-only connection holding one read transaction (a fixed snapshot)."""
    conn = open_reader(path)
    conn.isolation_level = None
    conn.execute("BEGIN")
    conn.execute("SELECT COUNT(*) FROM sqlite_master").fetchone()  # the snapshot starts here
    return conn


def _refuse_overwrite(target: Path, force: bool, what: str) -> None:
    if target.exists() and not force:
        raise StoreError(f"{target} exists; pass --force to replace it with the {what}")
    if target.is_dir():
        raise StoreError(f"{target} is a directory")


def backup(
    source: Path, out: Path, *, force: bool = False, progress: Progress | None = None
) -> Copied:
    """Copy the nasd database at ``source`` to ``out`` online (the daemon may keep running).

    Refuses (``StoreError``) a source that is not a nasd database, an ``out`` that exists unless
    ``force``, and ``out`` being the source itself. See the module docstring for the guarantees.
    """
    source, out = Path(source), Path(out)
    if out.exists() and out.resolve() == source.resolve():
        raise StoreError(f"--out {out} is the database itself; back up to another file")
    _refuse_overwrite(out, force, "backup")
    conn = _snapshot_reader(source)
    try:
        return _copy(conn, source, out, progress)
    finally:
        conn.close()


def _refuse_in_use(target: Path) -> None:
    if in_use(target):
        raise StoreError(
            f"{target} is open in another process (a running daemon?); stop it, then restore"
        )


def restore(backup_file: Path, target: Path, *, force: bool = False) -> Copied:
    """Replace (or create) the database at ``target`` with a checked copy of ``backup_file``.

    Refuses a ``backup_file`` that is not a nasd database or fails ``integrity_check``, a
    ``target`` that exists unless ``force``, and a ``target`` another process has open.
    """
    backup_file, target = Path(backup_file), Path(target)
    if target.exists() and target.resolve() == backup_file.resolve():
        raise StoreError(f"{backup_file} and --db {target} are the same file")
    _refuse_overwrite(target, force, "backup")
    conn = _snapshot_reader(backup_file)
    try:
        check_database(conn, backup_file)
        _refuse_in_use(target)
        tmp_target = target.with_name(f".{target.name}.restore")
        copied = _copy(conn, backup_file, tmp_target, None)
    finally:
        conn.close()
    try:
        _refuse_in_use(target)  # again: the copy may have taken a while
        for suffix in ("-wal", "-shm", "-journal"):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(f"{target}{suffix}")
        os.replace(tmp_target, target)
        _fsync(target.parent)
    except OSError as exc:
        raise StoreError(f"cannot restore into {target}: {exc}") from exc
    finally:
        tmp_target.unlink(missing_ok=True)  # left only when a check above refused
    return Copied(target, copied.pages, copied.bytes, copied.seconds, copied.schema_version)
