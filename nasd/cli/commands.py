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

from nasd.cli import ops, results
from nasd.cli.options import add_db as _add_db
from nasd.cli.options import broker_url as _broker
from nasd.cli.options import db_path as _db_path
from nasd.errors import ConfigError, NasdError

if TYPE_CHECKING:  # imported lazily at run time: `nasd --help` must not load the whole daemon
    import sqlite3


EXIT_USAGE = 2
EXIT_BROKEN_PIPE = 141
"""``nasd export | head``: the reader closed the pipe early (128 + SIGPIPE, like other tools)."""


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
    run.add_argument(
        "--fresh",
        action="store_true",
        help="move the previous run (database, logs, checkpoints) aside to "
        "<db dir>/<name>.old-<time>/ and start over",
    )
    run.add_argument("--budget", type=int, default=None, help="override the number of evaluations")
    run.add_argument("--agents", type=int, default=2, help="local agents to start (default: 2)")

    serve = sub.add_parser("serve", help="run the daemon against a broker")
    serve.add_argument("--config", type=Path, required=True, help="daemon settings (nasd.toml)")
    serve.add_argument("--broker", default=None, help="override [daemon].broker")
    serve.add_argument("--db", type=Path, default=None, help="override [daemon].db")

    submit = sub.add_parser("submit", help="add an experiment (every model of it) to a daemon")
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

    best = sub.add_parser("best", help="the best evaluation of an experiment (or of each model)")
    best.add_argument("name", help="experiment name, or a multi-model file's (each model's best)")
    _add_db(best)
    best.add_argument("--json", action="store_true", help="machine-readable output")

    export = sub.add_parser("export", help="one row per evaluation, as CSV or JSON lines")
    export.add_argument(
        "name", help="experiment name, or a multi-model file's (every model, with a model column)"
    )
    _add_db(export)
    export.add_argument("--format", choices=["csv", "jsonl"], default="csv")
    export.add_argument("-o", "--output", type=Path, default=None, help="file (default: stdout)")

    broker = sub.add_parser("broker", help="run the embedded MQTT broker alone")
    broker.add_argument(
        "--host", default="127.0.0.1", help="address to listen on (0.0.0.0 for other machines)"
    )
    broker.add_argument("--port", type=int, default=1883)

    ops.add_parsers(sub)
    doctor = sub.add_parser("doctor", help="check config, database, broker, daemon, clocks, agents")
    _add_doctor_arguments(doctor)
    credentials = sub.add_parser(
        "agent-credentials", help="create and manage agents' broker users (Mosquitto)"
    )
    _add_credentials_arguments(credentials)
    bench = sub.add_parser("bench", help="measurements of nasd's claims")
    benches = bench.add_subparsers(dest="bench", required=True, metavar="BENCH")
    _add_bench_scheduling_arguments(
        benches.add_parser("scheduling", help="SHADHO vs spread vs first-free on a simulated pool")
    )
    _add_bench_nb201_arguments(
        benches.add_parser("nb201", help="strategies against NAS-Bench-201 via the real daemon")
    )
    return parser


def _add_bench_scheduling_arguments(parser: argparse.ArgumentParser) -> None:
    from nasd.bench import scheduling

    scheduling.add_arguments(parser)


def _add_bench_nb201_arguments(parser: argparse.ArgumentParser) -> None:
    from nasd.bench import nb201

    nb201.add_arguments(parser)


def _cmd_bench(args: argparse.Namespace) -> int:
    if args.bench == "nb201":
        from nasd.bench import nb201

        return nb201.run(args)
    from nasd.bench import scheduling

    return scheduling.run(args)


def _add_doctor_arguments(parser: argparse.ArgumentParser) -> None:
    from nasd.cli import doctor

    doctor.add_arguments(parser)


def _add_credentials_arguments(parser: argparse.ArgumentParser) -> None:
    """Delegated to :mod:`nasd.cli.credentials`; without it the command says it is missing."""
    credentials = _credentials_module()
    if credentials is None:
        parser.set_defaults(credentials_missing=True)
        return
    credentials.add_arguments(parser)


def _credentials_module() -> Any:
    """:mod:`nasd.cli.credentials`, or None where it is not installed (imported by name)."""
    import importlib

    try:
        return importlib.import_module("nasd.cli.credentials")
    except ModuleNotFoundError as exc:
        if exc.name != "nasd.cli.credentials":
            raise
        return None


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the exit status.

    A reader that closes stdout early (``nasd export ... | head``) ends the command quietly with
    :data:`EXIT_BROKEN_PIPE`, as ``SIGPIPE`` ends other Unix tools: no traceback, and nothing
    more is written to the closed pipe (stdout is pointed at ``/dev/null`` so that the flush at
    interpreter exit cannot fail again).
    """
    args = build_parser().parse_args(argv)
    from nasd.logs import configure

    try:
        if args.command == "run":
            status = _cmd_run(args)
        else:
            configure(args.log_level)
            handler = _HANDLERS[args.command]
            status = handler(args)
        sys.stdout.flush()  # a closed pipe shows up here, not at interpreter exit
        return status
    except NasdError as exc:
        print(f"nasd {args.command}: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        _silence_stdout()
        return EXIT_BROKEN_PIPE


def _silence_stdout() -> None:
    """Point stdout at ``/dev/null`` after its reader went away (see :func:`main`)."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError):  # no real file descriptor (a test's StringIO): nothing to do
        pass


# -- helpers ------------------------------------------------------------------------------------


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
    from nasd.cli.runner import RunOptions, default_db, run_local, start_fresh
    from nasd.config import load_experiments
    from nasd.logs import configure

    if args.budget is not None and args.budget < 1:
        raise ConfigError(f"--budget must be >= 1, got {args.budget}")
    configs = load_experiments(args.experiment, budget=args.budget)
    if not 1 <= args.agents <= 64:
        raise ConfigError(f"--agents must be between 1 and 64, got {args.agents}")
    options = start_fresh(  # before the log opens: a fresh start moves the old folder aside
        RunOptions(tuple(configs), args.db or default_db(configs), args.agents, args.fresh)
    )
    run_dir = options.db.parent / options.name
    run_dir.mkdir(parents=True, exist_ok=True)
    log_file = (run_dir / "daemon.log").open("a")
    try:
        configure(args.log_level, fmt="json", stream=log_file)
        outcome = run(run_local(options))
    finally:
        log_file.close()
    if outcome.interrupted:
        return 130
    return 0 if outcome.found else 1


def _cmd_serve(args: argparse.Namespace) -> int:
    from nasd.aio import run
    from nasd.config import load_daemon_settings, load_experiments
    from nasd.mqtt import BrokerUrl
    from nasd.service.daemon import Daemon, DaemonOptions

    settings = load_daemon_settings(args.config)
    experiments = [config for path in settings.experiments for config in load_experiments(path)]
    options = DaemonOptions(
        broker=BrokerUrl.parse(args.broker or settings.broker),
        db=Path(args.db or settings.db),
        client_id=settings.client_id,
        settings=args.config,  # SIGHUP re-reads it
        log_level=settings.log_level,
    )
    run(Daemon(options, experiments).run())
    return 0


def _cmd_submit(args: argparse.Namespace) -> int:
    """Submit every experiment of the file (one per model), each answered on its own line,
    saying what a resubmission changed (``exp: budget 40 -> 60: reopened (running)``)."""
    from nasd.cli import report
    from nasd.config import load_experiments

    for config in load_experiments(args.experiment):
        result = _control(args, "submit", {"config": config.to_dict()})
        print(report.submit_line(result), flush=True)
    return 0


def _cmd_lifecycle(args: argparse.Namespace) -> int:
    result = _control(args, args.command, {"experiment": args.name})
    print(f"{result['experiment']}: {result['status']}")
    return 0


def _cmd_status(args: argparse.Namespace) -> int:
    from nasd.cli import report
    from nasd.store import queries

    if args.broker is not None and args.db is None:
        from nasd.aio import run
        from nasd.cli.client import fetch_status

        # Every page of the daemon's reply (it pages agents and experiments so that each reply
        # fits in a message), merged into the same shape as the database's answer.
        data = run(fetch_status(_broker(args)))
    else:
        conn = _reader(args)
        try:
            data = queries.status(conn)
        finally:
            conn.close()
    if args.json:
        print(json.dumps(data, indent=2, sort_keys=True))
    else:
        print(report.status_table(data, broker=args.broker))
    return 0


def _cmd_broker(args: argparse.Namespace) -> int:
    from nasd.mqtt.broker import run_broker

    if not 0 < args.port < 65536:
        raise ConfigError(f"--port must be 1-65535, got {args.port}")
    run_broker(args.host, args.port)
    return 0


def _cmd_doctor(args: argparse.Namespace) -> int:
    from nasd.cli import doctor

    return doctor.run(args)


def _cmd_agent_credentials(args: argparse.Namespace) -> int:
    credentials = _credentials_module()
    if credentials is None or getattr(args, "credentials_missing", False):
        raise ConfigError("agent-credentials is not available in this installation")
    return int(credentials.run(args))


_HANDLERS = {
    "bench": _cmd_bench,
    "serve": _cmd_serve,
    "submit": _cmd_submit,
    "pause": _cmd_lifecycle,
    "resume": _cmd_lifecycle,
    "cancel": _cmd_lifecycle,
    "status": _cmd_status,
    "best": results.cmd_best,
    "export": results.cmd_export,
    "broker": _cmd_broker,
    "backup": ops.cmd_backup,
    "restore": ops.cmd_restore,
    "example": ops.cmd_example,
    "doctor": _cmd_doctor,
    "agent-credentials": _cmd_agent_credentials,
}
