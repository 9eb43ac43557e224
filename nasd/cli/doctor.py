"""``nasd doctor``: is this installation healthy, and if not, what to do about it.

Each check is a small function returning :class:`~nasd.cli.doctor_types.Result` lines: the
config (it loads, and so do its experiment files), the database (a nasd database, its pragmas,
``integrity_check``, schema version, free disk space), the agents it knows (online, stale,
draining, quarantined), and through the broker (:mod:`nasd.cli.doctor_broker`) reachability,
credentials, the TLS certificate, a round trip, the daemon's state and the clocks. Each line
says ``ok``, ``warn`` or ``FAIL`` and, for a problem, its fix. The exit status is 0 when nothing
failed, 1 otherwise (2 for a usage error, like every ``nasd`` command).
"""

from __future__ import annotations

import argparse
import os
import shutil
import sqlite3
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

from nasd.cli.doctor_types import Level, Result

if TYPE_CHECKING:
    from nasd.cli.doctor_broker import Observation
    from nasd.config import DaemonSettings

__all__ = [
    "Level",
    "Result",
    "add_arguments",
    "check_agents",
    "check_config",
    "check_database",
    "check_disk",
    "run",
]

WARN_FREE_BYTES = 1024**3
"""Below this much free space on the database's filesystem: warn."""
FAIL_FREE_BYTES = 100 * 1024**2
"""Below this: fail (SQLite needs room for its WAL and checkpoints; a full disk stops nasd)."""

_RESTORE_FIX = "stop the daemon and restore the latest backup: nasd restore FILE --db PATH --force"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The flags of ``nasd doctor``."""
    parser.add_argument("--config", type=Path, default=None, help="daemon settings (nasd.toml)")
    parser.add_argument(
        "--db", type=Path, default=None, help="database (default: from --config or $NASD_DB)"
    )
    parser.add_argument(
        "--broker", default=None, help="broker URL (default: $NASD_BROKER or from --config)"
    )
    parser.add_argument(
        "--window",
        type=float,
        default=1.5,
        help="seconds to listen to the broker's traffic for the clock check (default 1.5)",
    )


def check_config(path: Path) -> tuple[list[Result], DaemonSettings | None]:
    """The daemon settings load, and so does every experiment file they list."""
    from nasd.config import load_daemon_settings, load_experiments
    from nasd.errors import ConfigError

    try:
        settings = load_daemon_settings(path)
    except ConfigError as exc:
        return [Result("config", Level.FAIL, str(exc), f"correct {path}")], None
    results = [Result("config", Level.OK, f"{path} loads")]
    for experiment in settings.experiments:
        try:
            configs = load_experiments(experiment)
        except ConfigError as exc:
            results.append(
                Result("experiment", Level.FAIL, str(exc), f"correct {experiment} or drop it")
            )
        else:
            names = ", ".join(config.name for config in configs)
            results.append(Result("experiment", Level.OK, f"{names} ({experiment}) is valid"))
    return results, settings


def check_disk(
    path: Path, *, warn_bytes: int = WARN_FREE_BYTES, fail_bytes: int = FAIL_FREE_BYTES
) -> Result:
    """Free space on the filesystem that holds ``path`` (its directory if it does not exist)."""
    where = path if path.exists() else path.parent
    try:
        free = shutil.disk_usage(where).free
    except OSError as exc:
        return Result("disk", Level.FAIL, f"cannot measure free space at {where}: {exc}")
    detail = f"{free / 1024**3:.1f} GiB free on the filesystem of {path}"
    fix = f"free space on that filesystem (at least {warn_bytes / 1024**3:.1f} GiB)"
    if free < fail_bytes:
        return Result("disk", Level.FAIL, detail, fix)
    if free < warn_bytes:
        return Result("disk", Level.WARN, detail, fix)
    return Result("disk", Level.OK, detail)


def check_database(path: Path) -> list[Result]:
    """A nasd database, not newer than this nasd, WAL, schema up to date, ``integrity_check`` ok."""
    from nasd.errors import StoreError
    from nasd.store.backup import check_database as checked
    from nasd.store.connection import Kind, open_reader, recognise

    if not path.exists():
        return [
            Result(
                "database",
                Level.FAIL,
                f"no database at {path}",
                "pass the right --db, or start the daemon once to create it",
            )
        ]
    try:
        conn = open_reader(path)
    except StoreError as exc:
        return [Result("database", Level.FAIL, str(exc), "point --db at nasd's database")]
    results: list[Result] = []
    try:
        found = recognise(conn, path)
        results.append(
            Result("database", Level.OK, f"{path}: nasd schema version {found.schema_version}")
        )
        if found.kind is Kind.UNSTAMPED:
            results.append(
                Result(
                    "database stamp",
                    Level.WARN,
                    "made before nasd stamped its databases (application_id 0)",
                    "start the daemon once: it stamps the file",
                )
            )
        if found.pending:
            results.append(
                Result(
                    "schema",
                    Level.WARN,
                    f"{len(found.pending)} migration(s) pending: {', '.join(found.pending)}",
                    "start the daemon: it applies them (take a backup first)",
                )
            )
        mode = conn.execute("PRAGMA journal_mode").fetchone()[0]
        if mode != "wal":
            results.append(
                Result(
                    "journal",
                    Level.WARN,
                    f"journal_mode is {mode}, not wal (a restored backup, not yet served)",
                    "start the daemon on it: it switches to WAL",
                )
            )
        try:
            checked(conn, path)
        except StoreError as exc:
            results.append(Result("integrity", Level.FAIL, str(exc), _RESTORE_FIX))
        else:
            results.append(Result("integrity", Level.OK, "integrity_check ok"))
    except (StoreError, sqlite3.DatabaseError) as exc:
        results.append(Result("database", Level.FAIL, str(exc), _RESTORE_FIX))
    finally:
        conn.close()
    return results


def check_agents(
    path: Path, observation: Observation | None = None, *, now: float | None = None
) -> list[Result]:
    """The agents the database knows: online, stale, draining (never ready), quarantined.

    *Stale*: online in the database while the broker's retained state (when ``observation``
    has one) says it is not: the daemon missed its last will or is not running.
    """
    from nasd.errors import StoreError
    from nasd.store.connection import open_reader

    now = time.time() if now is None else now
    try:
        conn = open_reader(path)
    except StoreError:
        return []  # the database check already said why
    try:
        columns = {row[1] for row in conn.execute("PRAGMA table_info(agents)")}
        until = "quarantined_until" if "quarantined_until" in columns else "0"
        rows = conn.execute(
            f"SELECT name, online, draining, {until} FROM agents ORDER BY name"  # noqa: S608
        ).fetchall()
    except sqlite3.DatabaseError as exc:
        return [Result("agents", Level.FAIL, f"cannot read agents: {exc}", _RESTORE_FIX)]
    finally:
        conn.close()
    retained = {}
    if observation is not None and observation.error is None:
        retained = {
            s.sender: s.body.get("state") for s in observation.seen if s.topic.endswith("/state")
        }
    online = [name for name, on, _, _ in rows if on]
    results: list[Result] = []
    for name, on, draining, quarantined_until in rows:
        if not on:
            continue
        if retained.get(name) == "offline":
            results.append(
                Result(
                    f"agent {name}",
                    Level.WARN,
                    "stale: online in the database, offline on the broker",
                    "check that the daemon is running; it updates the agent when it sees the state",
                )
            )
        if draining:
            results.append(
                Result(
                    f"agent {name}",
                    Level.WARN,
                    "draining: it refused or handed back work and never said ready again",
                    f"look at {name}'s log; restart it (systemctl restart nasd-agent@...)",
                )
            )
        if quarantined_until and float(quarantined_until) > now:
            results.append(
                Result(
                    f"agent {name}",
                    Level.WARN,
                    f"quarantined for {float(quarantined_until) - now:.0f} s more: its leases "
                    "kept expiring",
                    f"look at {name}'s log and its machine (GPU, network)",
                )
            )
    if not online:
        results.append(
            Result(
                "agents",
                Level.WARN,
                f"none online ({len(rows)} known)",
                "start one: nasd-agent --broker URL --name NAME",
            )
        )
    else:
        results.append(Result("agents", Level.OK, f"{len(online)} online of {len(rows)} known"))
    return results


def _settings_or_none(args: argparse.Namespace, results: list[Result]) -> DaemonSettings | None:
    if args.config is None:
        return None
    found, settings = check_config(args.config)
    results.extend(found)
    return settings


def run(args: argparse.Namespace) -> int:
    """Every check that the flags make possible; prints one line each; 0 if nothing failed."""
    from nasd.aio import run as run_async
    from nasd.cli import doctor_broker
    from nasd.mqtt import BrokerUrl

    if args.window < 0 or args.window > 60:
        from nasd.errors import ConfigError

        raise ConfigError(f"--window must be between 0 and 60 seconds, got {args.window}")
    results: list[Result] = []
    settings = _settings_or_none(args, results)
    db = args.db or (Path(settings.db) if settings else None) or os.environ.get("NASD_DB")
    url = args.broker or os.environ.get("NASD_BROKER") or (settings.broker if settings else None)
    observation = None
    if url is not None:
        broker = BrokerUrl.parse(url)  # a malformed URL is a usage error: exit 2
        if broker.tls:
            results.append(doctor_broker.check_tls(broker))
        observation = run_async(doctor_broker.observe(broker, window_s=args.window))
        results.extend(doctor_broker.check_broker(observation))
        if observation.error is None:
            results.append(doctor_broker.check_daemon(observation))
            results.extend(doctor_broker.check_clocks(observation))
    if db is not None:
        db = Path(db)
        results.extend(check_database(db))
        results.append(check_disk(db))
        results.extend(check_agents(db, observation))
    if url is None and db is None:
        results.append(
            Result(
                "doctor",
                Level.FAIL,
                "nothing to check",
                "pass --config nasd.toml (or --db PATH and --broker URL)",
            )
        )
    for result in results:
        print(result.line())
    failed = sum(r.level is Level.FAIL for r in results)
    warned = sum(r.level is Level.WARN for r in results)
    print(f"{len(results)} checks: {failed} failed, {warned} warnings", file=sys.stderr)
    return 1 if failed else 0
