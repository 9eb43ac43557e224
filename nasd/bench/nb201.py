"""``nasd bench nb201``: nasd's strategies against NAS-Bench-201's published search results.

Every run goes through the real service path (:mod:`nasd.bench.nb201_service`): an embedded MQTT
broker, the real daemon on one SQLite file (in a temporary folder unless ``--db``) and
``--agents`` real agents running the ``nb201`` table trainer, all in this process. Each run is one
experiment (``nb201-<strategy>-<i>``, seed ``i``, ``parallel = 1``) submitted through the control
API; the NB201 protocol (:mod:`nasd.bench.nb201_protocol`) counts its evaluations as they commit
and, once its simulated time is spent, the experiment is cancelled and the run's choice taken.

Strategies run one after another; the runs of one strategy search concurrently (at most
``--concurrent`` at once, one trial in flight each), so 100 runs take about a minute. A progress
line on stderr counts finished runs. Per strategy: mean and standard deviation over runs of the
chosen cell's 200-epoch validation accuracy, runs, mean trials per run (evaluations that fit the
budget) and wall time, as a table, or as JSON with ``--json``.

An unregistered strategy, a missing table or a bad option is refused with one line
(:class:`nasd.errors.ConfigError`; ``nasd`` exits 2). Ctrl-C (or SIGTERM) stops the agents, the
daemon and the broker, removes the temporary folder and exits 130.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from nasd.errors import ConfigError, NasdError

if TYPE_CHECKING:  # the protocol, the strategies and the service load when a bench starts:
    # `nasd --help` stays light
    from nasd.bench.nb201_protocol import RunOutcome
    from nasd.bench.nb201_service import Plan

__all__ = ["add_arguments", "main", "plan_of", "render", "run"]

DATASET_NAMES = ("cifar10", "cifar100", "imagenet16")
"""``--dataset`` choices (:data:`nasd.bench.nb201_protocol.DATASETS` maps them to columns)."""

DEFAULT_DATA = Path("../shared/data/nb201.csv.gz")
DEFAULT_BUDGET_S = 12_000.0
DEFAULT_RUNS = 100
DEFAULT_AGENTS = 8
DEFAULT_CONCURRENT = 100
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130
PROGRESS_EVERY_S = 5.0
"""Off a terminal, a progress line at most this often (and at the end of each strategy)."""

PAPER = {
    "random": (90.93, 0.36),
    "reinforce-factorized": (91.09, 0.37),
    "aging-evolution": (91.19, 0.31),
}
"""Dong & Yang (ICLR 2020), CIFAR-10 at 12,000 s: RS, REINFORCE, REA."""
REPLAY = {
    "random": (90.98, 0.34),
    "aging-evolution": (91.20, 0.37),
}
"""A careful replay of the protocol on the shipped table, CIFAR-10 at 12,000 s (issue 8)."""


# -- options ----------------------------------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The flags of ``nasd bench nb201``."""
    parser.add_argument(
        "--strategy",
        action="append",
        required=True,
        metavar="NAME",
        help="strategy to measure (repeat for a table of several)",
    )
    parser.add_argument(
        "--dataset", choices=DATASET_NAMES, default="cifar10", help="default: cifar10"
    )
    parser.add_argument(
        "--budget-seconds",
        type=float,
        default=DEFAULT_BUDGET_S,
        help="simulated 12-epoch training seconds per run (default: 12000)",
    )
    parser.add_argument(
        "--runs", type=int, default=DEFAULT_RUNS, help="runs per strategy (default: 100)"
    )
    parser.add_argument(
        "--data", type=Path, default=DEFAULT_DATA, help="nb201.csv.gz (../shared/data/...)"
    )
    parser.add_argument(
        "--agents", type=int, default=DEFAULT_AGENTS, help="agents to start (default: 8)"
    )
    parser.add_argument(
        "--concurrent",
        type=int,
        default=None,
        help=f"runs searching at once (default: {DEFAULT_CONCURRENT}, at most 64 per agent)",
    )
    parser.add_argument(
        "--db", type=Path, default=None, help="keep the database here (a new file; default: temp)"
    )
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")


def plan_of(args: argparse.Namespace) -> Plan:
    """Check the options; ConfigError (one line) for anything that cannot run."""
    from nasd.bench.nb201_protocol import DATASETS, protocol_params
    from nasd.bench.nb201_service import MAX_SLOTS, Plan

    strategies = tuple(dict.fromkeys(args.strategy))
    for name in strategies:
        protocol_params(name)  # refuses a strategy that is not registered
    if args.dataset not in DATASETS:
        raise ConfigError(f"--dataset must be one of {', '.join(DATASETS)}, got {args.dataset!r}")
    if not (math.isfinite(args.budget_seconds) and args.budget_seconds > 0):
        raise ConfigError(f"--budget-seconds must be > 0, got {args.budget_seconds}")
    if args.runs < 1:
        raise ConfigError(f"--runs must be >= 1, got {args.runs}")
    if not 1 <= args.agents <= 64:
        raise ConfigError(f"--agents must be between 1 and 64, got {args.agents}")
    most = args.agents * MAX_SLOTS
    concurrent = min(DEFAULT_CONCURRENT, most) if args.concurrent is None else args.concurrent
    if not 1 <= concurrent <= most:
        raise ConfigError(
            f"--concurrent must be between 1 and {most} ({MAX_SLOTS} per agent), got {concurrent}"
        )
    data = Path(args.data).expanduser()
    if not data.is_file():
        raise ConfigError(f"no NB201 table at {data} (pass --data PATH to nb201.csv.gz)")
    if args.db is not None and Path(args.db).exists():
        raise ConfigError(f"--db {args.db} exists: give a new file (each bench starts afresh)")
    return Plan(
        strategies=strategies,
        dataset=args.dataset,
        prefix=DATASETS[args.dataset],
        budget_seconds=float(args.budget_seconds),
        runs=int(args.runs),
        data=data.resolve(),
        agents=int(args.agents),
        concurrent=min(concurrent, int(args.runs)),
        db=None if args.db is None else Path(args.db).resolve(),
    )


# -- progress ---------------------------------------------------------------------------------


class Progress:
    """``nb201 <strategy>: <done>/<total> runs, <trials> trials, mm:ss`` on stderr.

    Redrawn in place on a terminal; elsewhere printed at most every :data:`PROGRESS_EVERY_S`
    seconds, and once when a strategy ends, so logs stay short.
    """

    def __init__(self, out: IO[str]) -> None:
        self.out = out
        self.tty = out.isatty()
        self._shown = 0.0
        self._width = 0

    def show(self, strategy: str, done: int, total: int, trials: int, elapsed: float) -> None:
        """Draw the line if it is due (always on a terminal)."""
        now = time.monotonic()
        if not self.tty and now - self._shown < PROGRESS_EVERY_S and done < total:
            return
        self._shown = now
        minutes, seconds = divmod(int(elapsed), 60)
        line = (
            f"nb201 {strategy}: {done}/{total} runs done, {trials} trials, "
            f"{minutes:02d}:{seconds:02d}"
        )
        if self.tty:
            self.out.write("\r" + line.ljust(self._width))
            self._width = len(line)
        else:
            self.out.write(line + "\n")
        self.out.flush()

    def end(self) -> None:
        """Finish an in-place line (a strategy is done)."""
        if self.tty and self._width:
            self.out.write("\n")
            self.out.flush()
        self._width = 0
        self._shown = 0.0


# -- figures ------------------------------------------------------------------------------------


def figures_of(
    plan: Plan, results: dict[str, tuple[list[RunOutcome], float]], wall_s: float
) -> dict[str, Any]:
    """The JSON-able report: the request, and per strategy its figures
    (:class:`~nasd.bench.nb201_protocol.StrategyFigures`)."""
    from nasd.bench.nb201_protocol import summarise

    strategies = {
        name: summarise(name, outcomes, wall) for name, (outcomes, wall) in results.items()
    }
    return {
        "bench": "nb201",
        "dataset": plan.dataset,
        "budget_seconds": plan.budget_seconds,
        "runs": plan.runs,
        "agents": plan.agents,
        "concurrent": plan.concurrent,
        "wall_s": round(wall_s, 2),
        "metric": "200-epoch validation accuracy (%) of each run's best-fitness cell",
        "strategies": {name: f.to_dict() for name, f in strategies.items()},
    }


def _pm(mean: float | None, std: float | None) -> str:
    if mean is None:
        return "n/a"
    return f"{mean:.2f} ± {std:.2f}" if std is not None else f"{mean:.2f}"


def render(report: dict[str, Any]) -> str:
    """The human-readable table of :func:`figures_of`'s report."""
    lines = [
        f"nasd bench nb201: {report['dataset']}, {report['budget_seconds']:,.0f} simulated s per "
        f"run, {report['runs']} runs per strategy, {report['agents']} agents, "
        f"{report['wall_s']:.1f} s of real time",
        "",
    ]
    table = [["strategy", "val200 % (mean ± std)", "runs", "trials/run", "wall"]]
    for name, f in report["strategies"].items():
        table.append(
            [
                name,
                _pm(f["mean"], f["std"]),
                str(f["runs"]),
                f"{f['mean_trials']:.1f}",
                f"{f['wall_s']:.1f} s",
            ]
        )
    widths = [max(len(row[i]) for row in table) for i in range(len(table[0]))]
    for row in table:
        cells = [row[0].ljust(widths[0])]
        cells += [c.rjust(w) for c, w in zip(row[1:], widths[1:], strict=True)]
        lines.append("  ".join(cells))
    short = [n for n, f in report["strategies"].items() if f["budget_not_reached"]]
    for name in short:
        count = report["strategies"][name]["budget_not_reached"]
        lines.append(f"warning: {count} runs of {name} ended before their simulated time was spent")
    if report["dataset"] == "cifar10" and report["budget_seconds"] == DEFAULT_BUDGET_S:
        lines.append("")
        lines.append("anchors, cifar10 at 12,000 s (mean ± std, %):")
        for name in report["strategies"]:
            paper, replay = PAPER.get(name), REPLAY.get(name)
            if paper or replay:
                parts = [
                    f"paper {_pm(*paper)}" if paper else "",
                    f"replay {_pm(*replay)}" if replay else "",
                ]
                lines.append(f"  {name}: " + ", ".join(p for p in parts if p))
    return "\n".join(lines)


# -- entry points -------------------------------------------------------------------------------


def run(args: argparse.Namespace) -> int:
    """Carry out ``nasd bench nb201`` with parsed ``args``; the exit status.

    A bad option, an unregistered strategy or a missing table raises :class:`ConfigError`
    (``nasd`` prints one line and exits 2). The daemon and agents log warnings and worse to
    ``<db>.log`` with ``--db``, else to ``bench.log`` in the temporary folder; a failed bench
    (:class:`~nasd.bench.nb201_service.BenchError`) prints its tail.
    """
    plan = plan_of(args)
    from nasd.aio import run as run_loop
    from nasd.bench.nb201_service import BenchError, measure_async
    from nasd.logs import configure

    progress = Progress(sys.stderr)
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="nasd-bench-nb201-") as temp:
        workdir = Path(temp)
        log_path = Path(f"{plan.db}.log") if plan.db else workdir / "bench.log"
        with log_path.open("a") as log_file:
            configure("warning", fmt="json", stream=log_file)
            try:
                results, interrupted = run_loop(measure_async(plan, workdir, progress))
            except BenchError as exc:
                log_file.flush()
                raise BenchError(f"{exc}\n{_tail(log_path)}") from None
            finally:
                configure("warning", stream=sys.stderr)
    if interrupted:
        print("nasd bench nb201: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    report = figures_of(plan, results, time.monotonic() - started)
    print(json.dumps(report, indent=2) if args.json else render(report))
    return 0


def _tail(path: Path, lines: int = 20) -> str:
    try:
        text = path.read_text(errors="replace").splitlines()
    except OSError:
        return "(no log)"
    return "--- log tail ---\n" + "\n".join(text[-lines:]) if text else "(empty log)"


def main(argv: Sequence[str] | None = None) -> int:
    """Stand-alone entry point (``python -m nasd.bench.nb201``); returns the exit status."""
    parser = argparse.ArgumentParser(prog="nasd bench nb201", description=__doc__.split("\n")[0])
    add_arguments(parser)
    args = parser.parse_args(argv)
    try:
        return run(args)
    except NasdError as exc:
        print(f"nasd bench nb201: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
