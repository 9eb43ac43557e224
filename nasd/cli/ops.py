"""``nasd backup``, ``nasd restore`` and ``nasd example``: the operator's small commands.

Backup and restore are the operator's copies of the database: the work is in
:mod:`nasd.store.backup`; this module parses the flags and reports, one line per outcome (plus
progress on stderr for large databases). ``nasd example`` lists and prints the shipped example
experiments, so that an installed package (no checkout) can still start from them.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

from nasd.cli.options import add_db, db_path
from nasd.errors import ConfigError

__all__ = [
    "PROGRESS_MIN_BYTES",
    "SUMMARY_MAX_CHARS",
    "add_parsers",
    "cmd_backup",
    "cmd_example",
    "cmd_restore",
    "example_text",
    "examples",
    "examples_dir",
]

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

    example = sub.add_parser(
        "example",
        help="list the shipped example experiments, or print one (nasd example digits > d.toml)",
    )
    example.add_argument("name", nargs="?", default=None, help="the example to print")


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


# -- nasd example -------------------------------------------------------------------------------


def examples_dir() -> Path:
    """The directory holding the example experiment files (``*.toml``).

    There is one copy, ``examples/`` at the top of the source tree. A checkout or an editable
    install reads it there; a wheel installs it as data files under
    ``<sys.prefix>/share/nasd/examples`` (``[tool.setuptools.data-files]`` in pyproject.toml),
    as it does the message schemas. Raises :class:`ConfigError` naming both places when neither
    exists.
    """
    candidates = (
        Path(__file__).resolve().parents[2] / "examples",  # a checkout: nasd/cli/ops.py
        Path(sys.prefix) / "share" / "nasd" / "examples",
    )
    for path in candidates:
        if path.is_dir() and any(path.glob("*.toml")):
            return path
    tried = ", ".join(str(p) for p in candidates)
    raise ConfigError(f"nasd's example experiments not found; tried {tried}")


SUMMARY_MAX_CHARS = 100
"""A listed example's summary is cut (at a word, with "...") beyond this many characters."""


def _summary(text: str) -> str:
    """The first sentence of the comment block an example file opens with, at most one line.

    Each example starts with comments saying what it searches; the sentence may run over several
    comment lines, so they are joined first.
    """
    words: list[str] = []
    for line in text.splitlines():
        if not line.startswith("#"):
            break
        words.extend(line.lstrip("#").split())
    sentence = " ".join(words)
    end = re.search(r"\.(\s|$)", sentence)
    if end:
        sentence = sentence[: end.start() + 1]
    if len(sentence) > SUMMARY_MAX_CHARS:
        sentence = sentence[: SUMMARY_MAX_CHARS - 3].rsplit(" ", 1)[0] + "..."
    return sentence


def examples() -> dict[str, str]:
    """Every shipped example's name (its file name without ``.toml``) and a one-line summary.

    The summary is the first sentence of the file's opening comments; sorted by name.
    """
    return {
        path.stem: _summary(path.read_text(encoding="utf-8"))
        for path in sorted(examples_dir().glob("*.toml"))
    }


def example_text(name: str) -> str:
    """The text of the example called ``name`` (``digits`` or ``digits.toml``).

    An unknown name is a :class:`ConfigError` (one line, exit 2) that lists the known ones; a
    name that is a path (``../x``) is unknown, so nothing outside the examples can be read.
    """
    stem = name.removesuffix(".toml")
    directory = examples_dir()
    known = sorted(path.stem for path in directory.glob("*.toml"))
    if stem not in known:
        raise ConfigError(f"no example named {name!r}; the examples are: {', '.join(known)}")
    return (directory / f"{stem}.toml").read_text(encoding="utf-8")


def cmd_example(args: argparse.Namespace) -> int:
    """``nasd example``: one line per example; ``nasd example NAME``: that file on stdout.

    The printed file is exactly the shipped one, so ``nasd example digits > digits.toml`` gives
    a file that ``nasd run``, ``nasd submit`` and ``[daemon] experiments`` take as it is.
    """
    if args.name is None:
        listed = examples()
        width = max(len(name) for name in listed)
        for name, summary in listed.items():
            print(f"{name:<{width}}  {summary}".rstrip())
        return 0
    sys.stdout.write(example_text(args.name))
    return 0
