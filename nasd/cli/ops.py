"""``nasd backup`` and ``nasd restore``: the operator's copies of the database.

The work is in :mod:`nasd.store.backup`; this module parses the flags and reports, one line per
outcome (plus progress on stderr for large databases).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from nasd.cli.options import add_db, db_path

__all__ = ["PROGRESS_MIN_BYTES", "add_parsers", "cmd_backup", "cmd_restore"]

PROGRESS_MIN_BYTES = 64 * 1024 * 1024
"""Databases at least this big get a progress line on stderr while they are copied."""


def add_parsers(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register ``backup`` and ``restore`` on ``nasd``'s sub-command parser."""
    backup = sub.add_parser(
        "backup", help="copy the database while the daemon runs (consistent, checked, atomic)"
    )
    add_db(backup)
    backup.add_argument("--out", type=Path, required=True, help="the backup file to write")
    backup.add_argument("--force", action="store_true", help="replace --out if it exists")

    restore = sub.add_parser(
        "restore", help="put a backup in place of a database (the daemon must be stopped)"
    )
    restore.add_argument("file", type=Path, help="a backup written by `nasd backup`")
    add_db(restore)
    restore.add_argument("--force", action="store_true", help="replace the database if it exists")


def _mib(n: int) -> str:
    return f"{n / 2**20:.1f} MiB"


class _ProgressLine:
    """Prints ``nasd backup: 40% of 812.0 MiB`` on stderr at every further tenth."""

    def __init__(self, total_bytes: int) -> None:
        self.total_bytes = total_bytes
        self.shown = -1

    def __call__(self, done: int, total: int) -> None:
        tenth = done * 10 // max(total, 1)
        if tenth > self.shown:
            self.shown = tenth
            print(f"nasd backup: {tenth * 10}% of {_mib(self.total_bytes)}", file=sys.stderr)


def cmd_backup(args: argparse.Namespace) -> int:
    """``nasd backup --out FILE``: an online, consistent, checked copy."""
    from nasd.errors import StoreError
    from nasd.store.backup import backup

    source = db_path(args)
    if not source.exists():
        raise StoreError(f"no database at {source}")
    size = source.stat().st_size
    progress = _ProgressLine(size) if size >= PROGRESS_MIN_BYTES else None
    copied = backup(source, args.out, force=args.force, progress=progress)
    print(
        f"backed up {source} to {copied.path}: {_mib(copied.bytes)}, schema version "
        f"{copied.schema_version}, integrity ok, {copied.seconds:.1f} s"
    )
    return 0


def cmd_restore(args: argparse.Namespace) -> int:
    """``nasd restore FILE --db PATH``: a checked backup put in place of a stopped database."""
    from nasd.store.backup import restore

    target = db_path(args)
    copied = restore(args.file, target, force=args.force)
    print(
        f"restored {args.file} to {copied.path}: {_mib(copied.bytes)}, schema version "
        f"{copied.schema_version}, integrity ok; start the daemon on it to resume"
    )
    return 0
