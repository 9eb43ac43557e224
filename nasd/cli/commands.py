"""``nasd``: run a search, serve, submit experiments, inspect and export results.

User mistakes (bad config, missing file, no daemon, no broker) print one clear line to stderr and
exit with status 2; nothing here prints a traceback for them.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from nasd.errors import ConfigError, NasdError

if TYPE_CHECKING:  # imported lazily at run time: `nasd --help` must not load the whole daemon
    import sqlite3

    from nasd.config import DaemonSettings
    from nasd.mqtt import BrokerUrl

EXIT_USAGE = 2


def _add_db(parser: argparse.ArgumentParser) -> None:
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


def build_parser() -> argparse.ArgumentParser:
    """Every sub-command and option (the README's CLI reference mirrors this)."""
    parser = argparse.ArgumentParser(prog="nasd", description=__doc__.splitlines()[0])
    parser.add_argument("--log-level", default="info", choices=["debug", "info", "warning"])
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = sub.add_parser("run", help="run an experiment locally: embedded broker, daemon, agents")
    run.add_argument("experiment", type=Path, help="experiment file, e.g. examples/mnist1d.toml")
    run.add_argument(
        "--db", type=Path, default=None, help="database (default: runs/<experiment name>.db)"
    )
    run.add_argument("--fresh", action="store_true", help="delete the database and start over")
    run.add_argument("--budget", type=int, default=None, help="override the number of evaluations")
    run.add_argument("--agents", type=int, default=2, help="local agents to start (default: 2)")

    serve = sub.add_parser("serve", help="run the daemon against a broker")
    serve.add_argument("--config", type=Path, required=True, help="daemon settings (nasd.toml)")
    serve.add_argument("--broker", default=None, help="override [daemon].broker")
    serve.add_argument("--db", type=Path, default=None, help="override [daemon].db")

    submit = sub.add_parser("submit", help="add an experiment to a running daemon")
    submit.add_argument("experiment", type=Path, help="experiment file")
    submit.add_argument("--broker", default=None, help="broker URL (default: from --config)")
    submit.add_argument("--config", type=Path, default=None, help="daemon settings (nasd.toml)")

    for command, text in (
        ("pause", "stop proposing new trials"),
        ("resume", "continue a paused experiment"),
        ("cancel", "stop an experiment for good"),
    ):
        cmd = sub.add_parser(command, help=text)
        cmd.add_argument("name", help="experiment name")
        cmd.add_argument("--broker", default=None, help="broker URL (default: from --config)")
        cmd.add_argument("--config", type=Path, default=None, help="daemon settings (nasd.toml)")

    status = sub.add_parser("status", help="experiments and agents")
    _add_db(status)
    status.add_argument(
        "--broker",
        default=None,
        help="ask the running daemon through this broker instead of a database",
    )
    status.add_argument("--json", action="store_true", help="machine-readable output")

    best = sub.add_parser("best", help="the best evaluation of an experiment")
    best.add_argument("name", help="experiment name")
    _add_db(best)
    best.add_argument("--json", action="store_true", help="machine-readable output")

    export = sub.add_parser("export", help="one row per evaluation, as CSV or JSON lines")
    export.add_argument("name", help="experiment name")
    _add_db(export)
    export.add_argument("--format", choices=["csv", "jsonl"], default="csv")
    export.add_argument("-o", "--output", type=Path, default=None, help="file (default: stdout)")

    broker = sub.add_parser("broker", help="run the embedded MQTT broker alone")
    broker.add_argument(
        "--host", default="127.0.0.1", help="address to listen on (0.0.0.0 for other machines)"
    )
    broker.add_argument("--port", type=int, default=1883)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the exit status."""
    args = build_parser().parse_args(argv)
    from nasd.logs import configure

    try:
        if args.command == "run":
            return _cmd_run(args)
        configure(args.log_level)
        handler = _HANDLERS[args.command]
        return handler(args)
    except NasdError as exc:
        print(f"nasd {args.command}: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        return 130


# -- helpers ------------------------------------------------------------------------------------


def _settings(path: Path | None) -> DaemonSettings | None:
    from nasd.config import load_daemon_settings

    return load_daemon_settings(path) if path is not None else None


def _db_path(args: argparse.Namespace) -> Path:
    if args.db is not None:
        return Path(args.db)
    settings = _settings(args.config)
    if settings is not None:
        return Path(settings.db)
    if os.environ.get("NASD_DB"):
        return Path(os.environ["NASD_DB"])
    raise ConfigError("which database? pass --db PATH (or --config nasd.toml, or set NASD_DB)")


def _broker(args: argparse.Namespace) -> BrokerUrl:
    from nasd.mqtt import BrokerUrl

    url = args.broker or os.environ.get("NASD_BROKER")
    if url is None:
        settings = _settings(args.config)
        url = settings.broker if settings is not None else None
    if url is None:
        raise ConfigError("which broker? pass --broker mqtt://HOST:1883 (or --config nasd.toml)")
    return BrokerUrl.parse(url)


def _reader(args: argparse.Namespace) -> sqlite3.Connection:
    from nasd.store import open_reader

    return open_reader(_db_path(args))


def _control(args: argparse.Namespace, command: str, payload: dict[str, Any]) -> dict[str, Any]:
    """Send a control request to the running daemon; its result (a mapping for every command)."""
    from nasd.aio import run
    from nasd.cli.client import DaemonError, request

    result = run(request(_broker(args), command, payload))
    if not isinstance(result, dict):
        raise DaemonError(f"the daemon answered {command} with {type(result).__name__}, not a map")
    return result


# -- commands -----------------------------------------------------------------------------------


def _cmd_run(args: argparse.Namespace) -> int:
    from nasd.aio import run
    from nasd.cli.runner import RunOptions, default_db, run_local
    from nasd.config import load_experiment
    from nasd.logs import configure

    config = load_experiment(args.experiment)
    if args.budget is not None:
        if args.budget < 1:
            raise ConfigError(f"--budget must be >= 1, got {args.budget}")
        config = config.with_budget(args.budget)
    if not 1 <= args.agents <= 64:
        raise ConfigError(f"--agents must be between 1 and 64, got {args.agents}")
    db = args.db or default_db(config)
    run_dir = db.parent / config.name
    run_dir.mkdir(parents=True, exist_ok=True)
    log_file = (run_dir / "daemon.log").open("a")
    try:
        configure(args.log_level, fmt="json", stream=log_file)
        outcome = run(run_local(RunOptions(config, db, args.agents, args.fresh)))
    finally:
        log_file.close()
    if outcome.interrupted:
        return 130
    return 0 if outcome.best is not None else 1


def _cmd_serve(args: argparse.Namespace) -> int:
    from nasd.aio import run
    from nasd.config import load_daemon_settings, load_experiment
    from nasd.mqtt import BrokerUrl
    from nasd.service.daemon import Daemon, DaemonOptions

    settings = load_daemon_settings(args.config)
    experiments = [load_experiment(path) for path in settings.experiments]
    options = DaemonOptions(
        broker=BrokerUrl.parse(args.broker or settings.broker),
        db=Path(args.db or settings.db),
        client_id=settings.client_id,
    )
    run(Daemon(options, experiments).run())
    return 0


def _cmd_submit(args: argparse.Namespace) -> int:
    from nasd.config import load_experiment

    config = load_experiment(args.experiment)
    result = _control(args, "submit", {"config": config.to_dict()})
    verb = "submitted" if result["created"] else "already present"
    print(f"{result['experiment']}: {verb} ({result['status']})")
    return 0


def _cmd_lifecycle(args: argparse.Namespace) -> int:
    result = _control(args, args.command, {"experiment": args.name})
    print(f"{result['experiment']}: {result['status']}")
    return 0


def _cmd_status(args: argparse.Namespace) -> int:
    from nasd.cli import report
    from nasd.store import queries

    if args.broker is not None and args.db is None:
        data = _control(args, "status", {})
    else:
        conn = _reader(args)
        try:
            data = queries.status(conn)
        finally:
            conn.close()
    if args.json:
        print(json.dumps(data, indent=2, sort_keys=True))
    else:
        print(report.status_table(data))
    return 0


def _cmd_best(args: argparse.Namespace) -> int:
    from nasd.cli import report
    from nasd.store import queries

    conn = _reader(args)
    try:
        if args.name not in queries.experiment_names(conn):
            raise ConfigError(f"no experiment named {args.name!r} in {_db_path(args)}")
        best = queries.best_trial(conn, args.name)
    finally:
        conn.close()
    if best is None:
        raise ConfigError(f"experiment {args.name!r} has no finished evaluation yet")
    if args.json:
        print(json.dumps(best, indent=2, sort_keys=True))
    else:
        print(report.best_summary(args.name, best))
    return 0


def _cmd_export(args: argparse.Namespace) -> int:
    from nasd.cli import report
    from nasd.store import queries

    conn = _reader(args)
    try:
        if args.name not in queries.experiment_names(conn):
            raise ConfigError(f"no experiment named {args.name!r} in {_db_path(args)}")
        rows = list(queries.export_rows(conn, args.name))
    finally:
        conn.close()
    out = args.output.open("w", newline="") if args.output else sys.stdout
    try:
        report.write_export(rows, out, args.format)
    finally:
        if args.output:
            out.close()
    return 0


def _cmd_broker(args: argparse.Namespace) -> int:
    from nasd.mqtt.broker import run_broker

    if not 0 < args.port < 65536:
        raise ConfigError(f"--port must be 1-65535, got {args.port}")
    run_broker(args.host, args.port)
    return 0


_HANDLERS = {
    "serve": _cmd_serve,
    "submit": _cmd_submit,
    "pause": _cmd_lifecycle,
    "resume": _cmd_lifecycle,
    "cancel": _cmd_lifecycle,
    "status": _cmd_status,
    "best": _cmd_best,
    "export": _cmd_export,
    "broker": _cmd_broker,
}
