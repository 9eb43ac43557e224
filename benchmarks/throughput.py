"""Throughput: durable evaluations per second through nasd's full path, next to Optuna's ask/tell.

Every part of the nasd figure is real and in its own process: Mosquitto on a free loopback port,
the daemon (``nasd serve``: SQLite in WAL mode with ``synchronous=FULL``, every result on disk
before its ack goes out) and agents with the zero-cost trainer (``bench_agents.py``), all started
by ``tests.harness`` as the integration tests start them. Rates come from the daemon's database;
the run is invalid (exit status 1) unless it ends with exactly ``budget`` results, as many distinct
trial ids, a passing ``PRAGMA integrity_check``, the experiment done and the daemon exiting 0.
Optuna's ask/tell loop is then timed on the same search space (the NB201 cell) with its durable
storages, once nasd has stopped. Missing the target still exits 0: a measurement, not a test.
See ``benchmarks/README.md``; ``make bench`` runs it.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import psutil

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))  # `tests.harness` when run as `python benchmarks/throughput.py`

from tests import harness  # noqa: E402

EXPERIMENT = "bench"
TARGET_RATE = 1000.0
"""The issue's target: durable evaluations per second through the full path."""
NB201_OPS = ("none", "skip_connect", "nor_conv_1x1", "nor_conv_3x3", "avg_pool_3x3")
NB201_EDGES = 6


class BenchmarkError(RuntimeError):
    """Something that makes the measurement invalid (a crashed process, a stall...)."""


def say(text: str) -> None:
    """A progress line on stdout, flushed at once: the benchmark runs for a while."""
    print(text, flush=True)


# -- reading the daemon's database --------------------------------------------------------------


def verify(db: Path, budget: int) -> tuple[dict[str, Any], list[str]]:
    """What the database holds once the daemon has stopped, and every way it is not a clean run.

    A plain read-only connection, not ``query``: a damaged database must raise, not read as empty.
    """
    with contextlib.closing(harness.open_ro(db)) as conn:
        results, distinct, low, high = conn.execute(
            "SELECT COUNT(*), COUNT(DISTINCT trial_id), MIN(trial_id), MAX(trial_id) FROM results"
        ).fetchone()
        experiments = dict(conn.execute("SELECT name, status FROM experiments"))
        found = {
            "results": results,
            "distinct_trials": distinct,
            "trial_ids": f"{low}..{high}",
            "integrity_check": "; ".join(r[0] for r in conn.execute("PRAGMA integrity_check")),
            "journal_mode": conn.execute("PRAGMA journal_mode").fetchone()[0],
            "experiment": experiments.get(EXPERIMENT),
            "trials": dict(conn.execute("SELECT status, COUNT(*) FROM trials GROUP BY status")),
            "leases": dict(conn.execute("SELECT status, COUNT(*) FROM leases GROUP BY status")),
        }
    expected = {"results": budget, "distinct_trials": budget, "integrity_check": "ok"}
    expected |= {"journal_mode": "wal", "experiment": "done"}
    problems = [f"{k} is {found[k]}, expected {v}" for k, v in expected.items() if found[k] != v]
    return found, problems


def median_p90_ms(values: Sequence[float]) -> tuple[float, float]:
    """The median and 90th percentile of ``values`` (seconds), in milliseconds."""
    ordered = sorted(values) or [0.0]
    p90 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.9))]
    return (round(ordered[len(ordered) // 2] * 1000, 1), round(p90 * 1000, 1))


# -- the nasd run -------------------------------------------------------------------------------


@dataclass(slots=True)
class NasdFigures:
    """The measured nasd run."""

    budget: int
    agents: int
    agent_procs: int
    slots: int
    daemon_log_level: str
    steady_rate: float = 0.0
    overall_rate: float = 0.0
    first_to_last_s: float = 0.0
    launch_to_last_s: float = 0.0
    measured_s: float = 0.0
    cores: int = field(default_factory=lambda: os.cpu_count() or 1)
    cpu_seconds: dict[str, float] = field(default_factory=dict)
    load_average: tuple[float, float] = (0.0, 0.0)
    latencies: dict[str, Any] = field(default_factory=dict)
    verification: dict[str, Any] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)


def agent_groups(agents: int, procs: int) -> list[list[str]]:
    """``bench-0`` .. ``bench-<agents-1>`` dealt round-robin into ``procs`` near-equal groups."""
    names = [f"bench-{i}" for i in range(agents)]
    return [names[p::procs] for p in range(procs)]


def cpu_seconds(pids: dict[str, int]) -> dict[str, float]:
    """User + system CPU seconds each process has used so far; exited ones are left out."""
    used = {}
    for name, pid in pids.items():
        with contextlib.suppress(psutil.Error):
            times = psutil.Process(pid).cpu_times()
            used[name] = times.user + times.system
    return used


def run_nasd(args: argparse.Namespace, workdir: Path) -> NasdFigures:
    """Broker, daemon and agents; wait for the whole budget; stop everything; verify."""
    from nasd.core.wire import daemon_state_topic

    figures = NasdFigures(
        args.budget, args.agents, args.agent_procs, args.slots, args.daemon_log_level
    )
    db, daemon_log = workdir / "nasd.db", workdir / "daemon.log"
    quiet = ("error", "warning")
    broker = harness.MosquittoProcess(
        workdir, max_inflight_messages=0, max_queued_messages=100_000, log_types=quiet
    )
    children: dict[str, subprocess.Popen[bytes]] = {}
    try:
        broker.start()
        say(f"mosquitto listening on {broker.url}")
        experiment = harness.write_experiment(
            workdir / "bench.toml", EXPERIMENT, args.budget, trainer="zero", lease_ttl_s=60
        )
        settings = harness.write_settings(workdir, broker.url, experiment)
        daemon = children["daemon"] = harness.start_daemon(
            settings, daemon_log, log_level=args.daemon_log_level
        )
        harness.wait_until(
            lambda: (
                bool(harness.query(db, "SELECT 1 FROM experiments WHERE name = ?", EXPERIMENT))
                and harness.retained_state(broker.url, daemon_state_topic(), 0.5) == "online"
            ),
            60,
            "the daemon to come online with its experiment",
            [daemon],
            [daemon_log],
        )
        say(f"daemon online (pid {daemon.pid}), database {db}")

        load_before, launched = os.getloadavg()[0], time.time()
        for index, names in enumerate(agent_groups(args.agents, args.agent_procs)):
            argv = [sys.executable, "-m", "benchmarks.bench_agents", "--broker", broker.url]
            argv += ["--names", ",".join(names), "--slots", str(args.slots)]
            argv += ["--spool-root", str(workdir / "spool")]
            log = workdir / f"agents-{index}.log"
            children[f"agents-{index}"] = harness.spawn(argv, log, env=harness.python_env())
        say(f"{args.agents} agents in {args.agent_procs} processes, {args.slots} slots each")

        pids = {"mosquitto": broker.pid} if broker.pid else {}
        pids |= {name: process.pid for name, process in children.items()}
        cpu_before, started = cpu_seconds(pids), time.monotonic()
        wait_for_budget(broker, children, workdir, args.budget, args.stall_s)
        figures.measured_s = round(time.monotonic() - started, 2)
        figures.cpu_seconds = {
            name: round(secs - cpu_before.get(name, 0.0), 2)
            for name, secs in cpu_seconds(pids).items()
        }
        figures.load_average = (load_before, os.getloadavg()[0])
        say(f"all {args.budget} results committed {time.time() - launched:.1f} s after launch")

        for name, process in children.items():
            if name.startswith("agents-"):
                harness.stop(process)
        if (status := harness.stop(daemon, 60)) != 0:
            figures.problems.append(
                f"the daemon exited {status}:\n{harness.log_tail(daemon_log, 15)}"
            )
        measure(figures, db, launched)
        figures.verification, problems = verify(db, args.budget)
        figures.problems += problems
    finally:
        for process in reversed(children.values()):
            harness.stop(process, 10)
        broker.stop()
    return figures


def wait_for_budget(
    broker: harness.MosquittoProcess,
    children: dict[str, subprocess.Popen[bytes]],
    workdir: Path,
    budget: int,
    stall_s: float,
) -> None:
    """Poll the result count every 0.25 s, printing progress every 2 s, until it is ``budget``.

    Errors as soon as a process dies or no result arrives for ``stall_s``: waiting on would only
    hide why the run is invalid.
    """
    db = workdir / "nasd.db"
    last_count, last_change = 0, time.monotonic()
    last_print, printed = last_change, 0
    while True:
        time.sleep(0.25)
        if not broker.running:
            raise BenchmarkError(f"mosquitto exited early:\n{broker.log_tail()}")
        for name, process in children.items():
            if process.poll() is not None:
                tail = harness.log_tail(workdir / f"{name}.log", 15)
                raise BenchmarkError(f"{name} exited early ({process.returncode}):\n{tail}")
        count, now = harness.count_results(db, EXPERIMENT), time.monotonic()
        if count != last_count:
            last_count, last_change = count, now
        elif now - last_change > stall_s:
            raise BenchmarkError(f"no new result for {stall_s:.0f} s ({count}/{budget})")
        if now - last_print >= 2.0 or count >= budget:
            rate = (count - printed) / (now - last_print)
            say(f"  nasd: {count:>7}/{budget} results, {rate:,.0f}/s over {now - last_print:.1f} s")
            last_print, printed = now, count
        if count >= budget:
            return


def measure(figures: NasdFigures, db: Path, launched: float) -> None:
    """Rates, time to complete, per-job latencies and batching, from the database's timestamps.

    ``received_at`` is the time of the daemon batch that stored a result and ``assigned_at`` that
    of the batch that assigned its job; ``started_at``/``finished_at`` are the agent's. All are
    ``time.time()`` on this one machine, so they compare. The steady state, the latencies and the
    batches all cover the results between 10 % and 90 % of the budget.
    """
    with contextlib.closing(harness.open_ro(db)) as conn:
        rows = conn.execute(
            "SELECT l.assigned_at, r.started_at, r.finished_at, r.received_at FROM results r"
            " LEFT JOIN leases l ON l.job_id = r.job_id AND l.epoch = r.epoch"
            " ORDER BY r.received_at"
        ).fetchall()
    times = [float(row[3]) for row in rows]
    if len(times) < 2:
        return
    first, last = len(times) // 10, min(len(times) - 1, len(times) * 9 // 10)
    span = times[last] - times[first]
    figures.steady_rate = (last - first) / span if span > 0 else float("inf")
    figures.first_to_last_s = times[-1] - times[0]
    figures.overall_rate = (len(times) - 1) / max(figures.first_to_last_s, 1e-9)
    figures.launch_to_last_s = times[-1] - launched
    window = rows[first:last]
    if len(window) < 10 or any(v is None for row in window for v in row):
        return
    batch_times = sorted({row[3] for row in window})
    figures.latencies = {
        "assign_to_start_ms": median_p90_ms([s - a for a, s, _, _ in window]),
        "train_ms": median_p90_ms([f - s for _, s, f, _ in window]),
        "finish_to_batch_ms": median_p90_ms([r - f for _, _, f, r in window]),
        "round_trip_ms": median_p90_ms([r - a for a, _, _, r in window]),
        "batches": len(batch_times),
        "results_per_batch": round(len(window) / len(batch_times), 1),
        "batch_gap_ms": median_p90_ms([b - a for a, b in itertools.pairwise(batch_times)]),
    }


# -- Optuna -------------------------------------------------------------------------------------


def run_optuna(workdir: Path, seconds: float) -> list[dict[str, Any]]:
    """Ask/tell on the NB201 cell for ``seconds`` per storage: trials and rate of each.

    A random sampler and a zero-cost objective (the share of ``nor_conv_3x3``), one process, one
    worker: Optuna's best case for these storages. The journal API differs across versions.
    """
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    logging.getLogger("sqlalchemy").setLevel(logging.WARNING)
    backend = getattr(getattr(optuna.storages, "journal", None), "JournalFileBackend", None)
    backend = backend or getattr(optuna.storages, "JournalFileStorage")  # noqa: B009 (Optuna < 4)
    storages: list[tuple[str, Callable[[], Any]]] = [
        ("optuna RDBStorage (SQLite file)", lambda: f"sqlite:///{workdir / 'optuna.db'}"),
        (
            "optuna JournalStorage (file)",
            lambda: optuna.storages.JournalStorage(backend(str(workdir / "journal.log"))),
        ),
        ("optuna InMemoryStorage (reference, not durable)", optuna.storages.InMemoryStorage),
    ]
    say("Optuna ask/tell on the NB201 cell (6 categorical x 5), RandomSampler(seed=0)")
    figures = []
    for label, make_storage in storages:
        sampler = optuna.samplers.RandomSampler(seed=0)
        study = optuna.create_study(storage=make_storage(), study_name="bench", sampler=sampler)
        trials, started = 0, time.perf_counter()
        while time.perf_counter() < started + seconds:
            trial = study.ask()
            ops = [trial.suggest_categorical(f"edge{i}", NB201_OPS) for i in range(NB201_EDGES)]
            study.tell(trial, ops.count("nor_conv_3x3") / NB201_EDGES)
            trials += 1
        elapsed = time.perf_counter() - started
        if (stored := len(study.get_trials(deepcopy=False))) != trials:
            raise BenchmarkError(f"{label}: {trials} trials told, {stored} stored")
        figures.append({"storage": label, "trials": trials, "rate": trials / elapsed})
        say(f"  {label}: {trials} trials, {trials / elapsed:,.1f}/s")
    return figures


# -- report -------------------------------------------------------------------------------------


def ratio(value: float, base: float | None) -> str:
    """``value / base`` as ``12.3x``, or ``-`` when there is no base."""
    return f"{value / base:,.1f}x" if base else "-"


def report(n: NasdFigures, optuna_figures: list[dict[str, Any]]) -> None:
    """Print the rates and their ratios, where the time went, the checks and the verdict."""
    rates = {f["storage"]: f["rate"] for f in optuna_figures}
    sqlite_rate = next((r for name, r in rates.items() if "RDB" in name), None)
    journal_rate = next((r for name, r in rates.items() if "Journal" in name), None)
    rows = [
        ("nasd, steady state (10-90 % of budget)", n.steady_rate),
        ("nasd, overall (first to last result)", n.overall_rate),
        *rates.items(),
    ]
    width = max(len(label) for label, _ in rows) + 2
    say(
        f"\nnasd: budget {n.budget}, {n.agents} agents x {n.slots} slots in {n.agent_procs} "
        "procs, zero-cost trainer, Mosquitto, SQLite WAL, synchronous=FULL; daemon log level "
        f"{n.daemon_log_level}"
    )
    say(f"{'system':<{width}}{'evals/s':>10}  {'vs optuna sqlite':>16}  {'vs optuna journal':>17}")
    say("-" * (width + 47))
    for label, rate in rows:
        say(
            f"{label:<{width}}{rate:>10,.1f}  {ratio(rate, sqlite_rate):>16}  "
            f"{ratio(rate, journal_rate):>17}"
        )
    say(
        f"\nnasd time to complete: {n.first_to_last_s:.2f} s first to last result, "
        f"{n.launch_to_last_s:.2f} s from launching the agents; 1-minute load average "
        f"{n.load_average[0]:.2f} before launching them, {n.load_average[1]:.2f} at the end"
    )
    if n.load_average[0] > 0.5:
        say("  note: the machine was busy before the run; other work lowers the nasd figure")
    if n.cpu_seconds:
        used = ", ".join(
            f"{name} {secs:.1f} s ({1000 * secs / n.budget:.2f} ms/eval)"
            for name, secs in n.cpu_seconds.items()
        )
        total = sum(n.cpu_seconds.values())
        say(
            f"CPU time over {n.measured_s:.1f} s on {n.cores} cores: {used}; total "
            f"{1000 * total / n.budget:.2f} ms/eval = {total / max(n.measured_s, 1e-9):.2f} cores"
        )
    if lat := n.latencies:
        say(
            f"per job (median / p90, ms): daemon assign -> agent start "
            f"{lat['assign_to_start_ms']}, train {lat['train_ms']}, agent finish -> daemon batch "
            f"{lat['finish_to_batch_ms']}, whole round trip {lat['round_trip_ms']}"
        )
        say(
            f"daemon batches in the 10-90 % window: {lat['batches']}, {lat['results_per_batch']} "
            f"results each, one every {lat['batch_gap_ms']} ms (median / p90)"
        )
    if n.verification:
        say("database check: " + ", ".join(f"{k} {v}" for k, v in n.verification.items()))
    say(
        "durability: nasd commits each result batch (WAL, synchronous=FULL) before acking it; "
        "Optuna's RDBStorage (SQLite) and journal file (fsync per append) are durable too"
    )
    verdict = "MET" if n.steady_rate >= TARGET_RATE else "MISSED"
    say(
        f"target >= {TARGET_RATE:,.0f} durable evaluations/s (steady state): {verdict} "
        f"({n.steady_rate:,.0f}/s)"
    )


# -- command line -------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """Command-line options, refusing values that cannot make a valid run."""
    parser = argparse.ArgumentParser(description="nasd end-to-end throughput versus Optuna.")
    add = parser.add_argument
    add("--budget", type=int, default=20_000, help="evaluations in the nasd run (default: 20000)")
    add("--slots", type=int, default=16, help="credits (concurrent jobs) per agent (default: 16)")
    add("--agents", type=int, default=8, help="agents (default: 8)")
    add("--agent-procs", type=int, default=2, help="processes the agents share (default: 2)")
    add("--optuna-seconds", type=float, default=5.0, help="per storage (default: 5; 0 skips)")
    levels = ["debug", "info", "warning"]
    add("--daemon-log-level", default="info", choices=levels, help="(default: info, as deployed)")
    add("--stall-s", type=float, default=60.0, help="give up when results stop (default: 60)")
    add("--json", type=Path, default=None, metavar="FILE", help="also write the figures to FILE")
    add("--keep", action="store_true", help="keep the temporary directory (logs, databases)")
    args = parser.parse_args(argv)
    if not (1 <= args.budget <= 1_000_000 and 1 <= args.slots <= 64 and args.optuna_seconds >= 0):
        parser.error("need --budget in 1..1000000, --slots in 1..64, --optuna-seconds >= 0")
    if not 1 <= args.agent_procs <= args.agents:
        parser.error("need 1 <= --agent-procs <= --agents")
    return args


def main(argv: list[str] | None = None) -> int:
    """Entry point: 0 after a valid measurement (target met or not), 1 when invalid."""
    args = parse_args(argv)
    workdir = Path(tempfile.mkdtemp(prefix="nasd-bench-"))
    try:
        say(f"nasd throughput benchmark in {workdir}")
        nasd_figures = run_nasd(args, workdir)
        optuna_figures = run_optuna(workdir, args.optuna_seconds) if args.optuna_seconds > 0 else []
    except (BenchmarkError, harness.MosquittoNotFound, AssertionError, TimeoutError) as exc:
        print(f"throughput: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("throughput: interrupted", file=sys.stderr)
        return 130
    finally:
        if args.keep:
            say(f"kept {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    report(nasd_figures, optuna_figures)
    if args.json is not None:
        data = {"nasd": asdict(nasd_figures), "optuna": optuna_figures}
        args.json.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
    for problem in nasd_figures.problems:
        print(f"throughput: error: {problem}", file=sys.stderr)
    return 1 if nasd_figures.problems else 0


if __name__ == "__main__":
    sys.exit(main())
