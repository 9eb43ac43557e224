"""Where a command's database and broker come from: ``--db``/``--broker``, ``--config``, env.

Shared by every sub-command module (``commands``, ``ops``, ``doctor``) so that they resolve the
same flags the same way: the explicit flag, then ``[daemon]`` of ``--config``, then ``$NASD_DB`` /
``$NASD_BROKER``; nothing found is a :class:`ConfigError` (one line, exit 2).
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import TYPE_CHECKING

from nasd.errors import ConfigError

if TYPE_CHECKING:  # imported lazily at run time: `nasd --help` must not load the whole daemon
    from nasd.config import DaemonSettings
    from nasd.mqtt import BrokerUrl

__all__ = ["add_db", "broker_url", "db_path", "settings"]


def add_db(parser: argparse.ArgumentParser) -> None:
    """``--db PATH`` and ``--config nasd.toml``, as ``status``, ``best``, ``export`` take them."""
    parser.add_argument(
        "--db",
        type=Path,
        default=None,
        help="SQLite database (default: [daemon].db of --config, or $NASD_DB)",
    )
    parser.add_argument(
        "--config",
        type=Path,
        default=None,
        help="daemon settings file (nasd.toml) to take the database from",
    )


def settings(path: Path | None) -> DaemonSettings | None:
    """The daemon settings at ``path``, or None without a path."""
    from nasd.config import load_daemon_settings

    return load_daemon_settings(path) if path is not None else None


def db_path(args: argparse.Namespace) -> Path:
    """The database a command works on (``args.db``, ``args.config``, ``$NASD_DB``)."""
    if args.db is not None:
        return Path(args.db)
    found = settings(args.config)
    if found is not None:
        return Path(found.db)
    if os.environ.get("NASD_DB"):
        return Path(os.environ["NASD_DB"])
    raise ConfigError("which database? pass --db PATH (or --config nasd.toml, or set NASD_DB)")


def broker_url(args: argparse.Namespace) -> BrokerUrl:
    """The broker a command talks to (``args.broker``, ``$NASD_BROKER``, ``args.config``)."""
    from nasd.mqtt import BrokerUrl

    url = args.broker or os.environ.get("NASD_BROKER")
    if url is None:
        found = settings(args.config)
        url = found.broker if found is not None else None
    if url is None:
        raise ConfigError("which broker? pass --broker mqtt://HOST:1883 (or --config nasd.toml)")
    return BrokerUrl.parse(url)
