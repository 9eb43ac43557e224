"""Throughput: durable evaluations per second through nasd's full path, next to Optuna's ask/tell.

The nasd figure is end to end, every part real and in its own process:

* a Mosquitto broker on a free loopback port (generated config: ``set_tcp_nodelay``, unlimited
  in-flight QoS-1 messages, no persistence);
* the daemon, ``python -m nasd.cli serve``, whose SQLite writer runs WAL with
  ``synchronous=FULL`` (asserted by ``nasd.store.connection.open_writer``), so every result is on
  disk before its ack is published;
* 8 agents with a zero-cost trainer, run as 2 processes of 4 (``benchmarks/bench_agents.py``),
  each agent with ``--slots`` credits.

The rate is read from the database the daemon writes (``results.received_at``): the steady state
between 10 % and 90 % of the budget, and the overall rate from the first to the last result. At
the end the database must hold exactly ``budget`` results with as many distinct trial ids, and pass
``PRAGMA integrity_check``; anything else is an error (exit status 1).

In the same run Optuna's ask/tell loop is timed on an equivalent search space (the NB201 cell: 6
categorical parameters with 5 choices, a zero-cost objective, ``RandomSampler(seed=0)``) with its
SQLite ``RDBStorage`` and its ``JournalStorage`` file backend (both fsync each write), plus the
in-memory storage as a reference. Optuna runs after nasd has stopped, so neither competes with the
other for the CPU.

It is a measurement, not a test: missing the 1,000 evaluations/s target still exits 0.
Run it with ``make bench`` or ``.venv/bin/python benchmarks/throughput.py --help``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import logging
import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import IO, Any

REPO_ROOT = Path(__file__).resolve().parent.parent
MOSQUITTO = "/usr/sbin/mosquitto"
EXPERIMENT = "bench"
TARGET_RATE = 1000.0
"""The issue's target: durable evaluations per second through the full path."""

NB201_OPS = ("none", "skip_connect", "nor_conv_1x1", "nor_conv_3x3", "avg_pool_3x3")
NB201_EDGES = 6


class BenchmarkError(RuntimeError):
    """Something went wrong that makes the measurement invalid (lost results, a crash...)."""


def say(text: str) -> None:
    """A progress line on stdout (flushed: the benchmark runs for a while)."""
    print(text, flush=True)


# -- processes ----------------------------------------------------------------------------------


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def wait_for_port(port: int, proc: subprocess.Popen[bytes], timeout_s: float) -> None:
    """Wait until 127.0.0.1:``port`` accepts connections; error if ``proc`` dies first."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise BenchmarkError(f"mosquitto exited with status {proc.returncode}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            return
        time.sleep(0.05)
    raise BenchmarkError(f"nothing accepts connections on 127.0.0.1:{port} after {timeout_s} s")


class Processes:
    """The child processes this benchmark started, stopped by pid (SIGTERM, then SIGKILL)."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.children: dict[str, subprocess.Popen[bytes]] = {}
        self._logs: list[IO[bytes]] = []

    def start(self, name: str, argv: Sequence[str], env: dict[str, str] | None = None) -> Path:
        """Start ``argv`` with stdout and stderr to ``<workdir>/<name>.log``; return the log."""
        log_path = self.workdir / f"{name}.log"
        log_file = log_path.open("wb")
        self._logs.append(log_file)
        self.children[name] = subprocess.Popen(
            list(argv),
            stdout=log_file,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            cwd=REPO_ROOT,
            env=env,
            start_new_session=True,
        )
        return log_path

    def stop(self, name: str, *, timeout_s: float = 20.0, sig: int = signal.SIGTERM) -> int:
        """Signal one child and wait for it; SIGKILL after ``timeout_s``. Returns its status."""
        proc = self.children[name]
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(sig)
            try:
                proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                say(f"  {name} did not stop within {timeout_s:.0f} s: killing it")
                proc.kill()
                proc.wait()
        return proc.returncode

    def stop_all(self) -> None:
        """Stop every child still running (newest first), then close the log files."""
        for name in reversed(list(self.children)):
            self.stop(name, timeout_s=10.0)
        for log_file in self._logs:
            log_file.close()

    def cpu_seconds(self) -> dict[str, float]:
        """User + system CPU time used so far by each running child (Linux ``/proc``)."""
        ticks = os.sysconf("SC_CLK_TCK")
        used = {}
        for name, proc in self.children.items():
            try:
                stat = Path(f"/proc/{proc.pid}/stat").read_text()
            except OSError:
                continue
            fields = stat[stat.rindex(")") + 2 :].split()
            used[name] = (int(fields[11]) + int(fields[12])) / ticks  # utime, stime
        return used

    def check_alive(self) -> None:
        """Error if any child has exited."""
        for name, proc in self.children.items():
            if proc.poll() is not None:
                tail = log_tail(self.workdir / f"{name}.log")
                raise BenchmarkError(f"{name} exited early (status {proc.returncode}):\n{tail}")


def log_tail(path: Path, lines: int = 15) -> str:
    """The last lines of a log file, indented, for error messages."""
    try:
        text = path.read_text(errors="replace").splitlines()
    except OSError:
        return "  (no log)"
    return "\n".join(f"  | {line[:300]}" for line in text[-lines:])


# -- configuration files ------------------------------------------------------------------------


def write_mosquitto_conf(workdir: Path, port: int) -> Path:
    """A loopback-only broker tuned for many small QoS-1 messages."""
    path = workdir / "mosquitto.conf"
    path.write_text(
        "\n".join(
            [
                f"listener {port} 127.0.0.1",
                "allow_anonymous true",
                "persistence false",
                # Without it every small QoS-1 exchange can wait ~40 ms (Nagle + delayed ACK).
                "set_tcp_nodelay true",
                "max_queued_messages 100000",
                "max_inflight_messages 0",
                "log_type error",
                "log_type warning",
                "",
            ]
        )
    )
    return path


def write_nasd_configs(workdir: Path, port: int, budget: int) -> Path:
    """``nasd.toml`` (daemon settings) and ``bench.toml`` (the experiment); returns the former."""
    (workdir / "bench.toml").write_text(
        f"""[experiment]
name = "{EXPERIMENT}"
budget = {budget}
seed = 0
lease_ttl_s = 60

[space]
kind = "nb201"

[strategy]
name = "random"

[task]
trainer = "zero"
"""
    )
    nasd_toml = workdir / "nasd.toml"
    nasd_toml.write_text(
        f"""[daemon]
broker = "mqtt://127.0.0.1:{port}"
db = "bench.db"
client_id = "nasd-bench-daemon"
experiments = ["bench.toml"]
"""
    )
    return nasd_toml


# -- reading the daemon's database --------------------------------------------------------------


def open_ro(db: Path) -> sqlite3.Connection:
    """A read-only connection (WAL readers never block the daemon's writer)."""
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10)
    conn.execute("PRAGMA busy_timeout = 10000")
    return conn


def count_results(conn: sqlite3.Connection) -> int:
    """Results the daemon has committed for the benchmark experiment."""
    row = conn.execute("SELECT COUNT(*) FROM results WHERE experiment = ?", (EXPERIMENT,))
    return int(row.fetchone()[0])


def wait_for_daemon(procs: Processes, port: int, db: Path, timeout_s: float) -> None:
    """Wait for the daemon's retained ``daemon/state`` "online" and its experiment row."""
    asyncio.run(_daemon_online(procs, port, timeout_s))
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        procs.check_alive()
        with contextlib.closing(open_ro(db)) as conn:
            row = conn.execute(
                "SELECT COUNT(*) FROM experiments WHERE name = ?", (EXPERIMENT,)
            ).fetchone()
        if row[0] == 1:
            return
        time.sleep(0.1)
    raise BenchmarkError(f"the daemon has no experiment {EXPERIMENT!r} after {timeout_s} s")


async def _daemon_online(procs: Processes, port: int, timeout_s: float) -> None:
    import aiomqtt

    from nasd.errors import WireError
    from nasd.wire import daemon_state_topic, decode

    deadline = time.monotonic() + timeout_s
    async with aiomqtt.Client("127.0.0.1", port, identifier="nasd-bench-watch") as client:
        await client.subscribe(daemon_state_topic(), qos=1)
        messages = aiomqtt_messages(client)
        while time.monotonic() < deadline:
            procs.check_alive()
            try:
                message = await asyncio.wait_for(anext(messages), 0.25)
            except TimeoutError:
                continue
            payload = message.payload
            if not isinstance(payload, bytes | bytearray):
                continue
            with contextlib.suppress(WireError):
                if decode(bytes(payload), expect="daemon.state").body["state"] == "online":
                    return
    raise BenchmarkError(f"the daemon did not publish 'online' within {timeout_s} s")


def aiomqtt_messages(client: Any) -> AsyncIterator[Any]:
    """The client's message iterator (one instance, so no message is skipped between waits)."""
    iterator: AsyncIterator[Any] = aiter(client.messages)
    return iterator


@dataclass(slots=True)
class Verification:
    """What the database holds once the daemon has stopped."""

    results: int
    distinct_trials: int
    min_trial: int | None
    max_trial: int | None
    integrity: str
    journal_mode: str
    experiment_status: str | None
    trial_statuses: dict[str, int]
    lease_statuses: dict[str, int]


def verify(db: Path) -> Verification:
    """Read the final state of the benchmark experiment from the database."""
    with contextlib.closing(open_ro(db)) as conn:
        results, distinct, low, high = conn.execute(
            "SELECT COUNT(*), COUNT(DISTINCT trial_id), MIN(trial_id), MAX(trial_id)"
            " FROM results WHERE experiment = ?",
            (EXPERIMENT,),
        ).fetchone()
        integrity = "; ".join(str(r[0]) for r in conn.execute("PRAGMA integrity_check"))
        journal_mode = str(conn.execute("PRAGMA journal_mode").fetchone()[0])
        status_row = conn.execute(
            "SELECT status FROM experiments WHERE name = ?", (EXPERIMENT,)
        ).fetchone()
        trials = dict(
            conn.execute(
                "SELECT status, COUNT(*) FROM trials WHERE experiment = ? GROUP BY status",
                (EXPERIMENT,),
            ).fetchall()
        )
        leases = dict(conn.execute("SELECT status, COUNT(*) FROM leases GROUP BY status"))
    return Verification(
        int(results),
        int(distinct),
        low,
        high,
        integrity,
        journal_mode,
        status_row[0] if status_row else None,
        trials,
        leases,
    )


def received_times(db: Path) -> list[float]:
    """Every result's commit-batch time (the daemon's ``received_at``), in order."""
    with contextlib.closing(open_ro(db)) as conn:
        rows = conn.execute(
            "SELECT received_at FROM results WHERE experiment = ? ORDER BY received_at",
            (EXPERIMENT,),
        ).fetchall()
    return [float(r[0]) for r in rows]


@dataclass(slots=True)
class Latencies:
    """Where a job's time goes, from the timestamps in the database (steady-state jobs only).

    ``assigned_at`` and ``received_at`` are the daemon's batch times (taken when the batch that
    assigned the job, or that received its result, began); ``started_at``/``finished_at`` are
    the agent's. All are ``time.time()`` on this one machine, so they are comparable.
    """

    assign_to_start_ms: tuple[float, float]
    start_to_finish_ms: tuple[float, float]
    finish_to_commit_ms: tuple[float, float]
    round_trip_ms: tuple[float, float]
    batches: int
    results_per_batch: float
    batch_gap_ms: tuple[float, float]


def _median_p90(values: Sequence[float]) -> tuple[float, float]:
    ordered = sorted(values)
    if not ordered:
        return (0.0, 0.0)
    return (
        round(ordered[len(ordered) // 2] * 1000, 1),
        round(ordered[min(len(ordered) - 1, int(len(ordered) * 0.9))] * 1000, 1),
    )


def latencies(db: Path) -> Latencies | None:
    """Median and 90th percentile of each leg of a job, for the 10-90 % window of results."""
    with contextlib.closing(open_ro(db)) as conn:
        rows = conn.execute(
            "SELECT l.assigned_at, r.started_at, r.finished_at, r.received_at FROM results r"
            " JOIN leases l ON l.job_id = r.job_id AND l.epoch = r.epoch"
            " WHERE r.experiment = ? ORDER BY r.received_at",
            (EXPERIMENT,),
        ).fetchall()
    rows = rows[len(rows) // 10 : len(rows) * 9 // 10]
    if len(rows) < 10 or any(v is None for row in rows for v in row):
        return None
    batch_times = sorted({row[3] for row in rows})
    return Latencies(
        assign_to_start_ms=_median_p90([s - a for a, s, _, _ in rows]),
        start_to_finish_ms=_median_p90([f - s for _, s, f, _ in rows]),
        finish_to_commit_ms=_median_p90([r - f for _, _, f, r in rows]),
        round_trip_ms=_median_p90([r - a for a, _, _, r in rows]),
        batches=len(batch_times),
        results_per_batch=round(len(rows) / len(batch_times), 1),
        batch_gap_ms=_median_p90([b - a for a, b in itertools.pairwise(batch_times)]),
    )


def windowed_rate(times: Sequence[float], low: float, high: float) -> float:
    """Results per second between the ``low`` and ``high`` fractions of ``times`` (sorted)."""
    n = len(times)
    first, last = int(n * low), min(n - 1, int(n * high))
    span = times[last] - times[first]
    return (last - first) / span if span > 0 else float("inf")


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
    cpu_seconds: dict[str, float] = field(default_factory=dict)
    latencies: Latencies | None = None
    cores: int = 1
    measured_s: float = 0.0
    other_cores: float = 0.0
    steal_cores: float = 0.0
    daemon_exit_status: int | None = None
    verification: Verification | None = None
    problems: list[str] = field(default_factory=list)


def agent_names(agents: int, procs: int) -> list[list[str]]:
    """``bench-0`` .. ``bench-<agents-1>`` split into ``procs`` contiguous, near-equal groups."""
    names = [f"bench-{i}" for i in range(agents)]
    size, extra = divmod(agents, procs)
    groups, start = [], 0
    for p in range(procs):
        end = start + size + (1 if p < extra else 0)
        groups.append(names[start:end])
        start = end
    return [g for g in groups if g]


def run_nasd(args: argparse.Namespace, workdir: Path) -> NasdFigures:
    """Broker, daemon and agents; wait for the whole budget; stop everything; verify."""
    figures = NasdFigures(
        args.budget, args.agents, args.agent_procs, args.slots, args.daemon_log_level
    )
    port = free_port()
    db = workdir / "bench.db"
    procs = Processes(workdir)
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    try:
        procs.start("mosquitto", [MOSQUITTO, "-c", str(write_mosquitto_conf(workdir, port))])
        wait_for_port(port, procs.children["mosquitto"], 10.0)
        say(f"mosquitto listening on 127.0.0.1:{port}")

        nasd_toml = write_nasd_configs(workdir, port, args.budget)
        daemon_log = procs.start("daemon", daemon_command(args, nasd_toml), env)
        wait_for_daemon(procs, port, db, 60.0)
        say(f"daemon online (pid {procs.children['daemon'].pid}), database {db}")

        launched = time.time()
        for index, names in enumerate(agent_names(args.agents, args.agent_procs)):
            procs.start(f"agents-{index}", agents_command(args, index, names, port, workdir), env)
        say(f"{args.agents} agents in {args.agent_procs} processes, {args.slots} slots each")

        cpu_before, system_before = procs.cpu_seconds(), system_cpu_seconds()
        measure_start = time.monotonic()
        wait_for_budget(procs, db, args.budget, args.stall_s)
        wall_s = time.monotonic() - measure_start
        account_cpu(
            figures, cpu_before, procs.cpu_seconds(), system_before, system_cpu_seconds(), wall_s
        )
        say(
            f"all {args.budget} results committed {time.time() - launched:.1f} s after the "
            "agents were launched"
        )

        for name in list(procs.children):
            if name.startswith("agents-"):
                procs.stop(name)
        figures.daemon_exit_status = procs.stop("daemon", timeout_s=60.0)
        if figures.daemon_exit_status != 0:
            figures.problems.append(
                f"the daemon exited with status {figures.daemon_exit_status}:\n"
                f"{log_tail(daemon_log)}"
            )
        measure_rates(figures, db, launched)
        figures.verification = check(verify(db), args.budget, figures.problems)
    finally:
        procs.stop_all()
    return figures


def daemon_command(args: argparse.Namespace, nasd_toml: Path) -> list[str]:
    """``nasd serve`` for this run, under the all-threads profiler with ``--profile-daemon``."""
    nasd_argv = ["--log-level", args.daemon_log_level, "serve", "--config", str(nasd_toml)]
    if args.profile_daemon:
        me = str(Path(__file__).resolve())
        return [
            sys.executable,
            me,
            PROFILED_CHILD,
            str(args.profile_daemon),
            "nasd.cli",
            *nasd_argv,
        ]
    return [sys.executable, "-m", "nasd.cli", *nasd_argv]


def agents_command(
    args: argparse.Namespace, index: int, names: list[str], port: int, workdir: Path
) -> list[str]:
    """One ``bench_agents`` process; the first is profiled with ``--profile-agents``."""
    runner = [sys.executable, "-m", "benchmarks.bench_agents"]
    if args.profile_agents and index == 0:
        me = str(Path(__file__).resolve())
        runner = [
            sys.executable,
            me,
            PROFILED_CHILD,
            str(args.profile_agents),
            "benchmarks.bench_agents",
        ]
    return [
        *runner,
        "--broker",
        f"mqtt://127.0.0.1:{port}",
        "--names",
        ",".join(names),
        "--slots",
        str(args.slots),
        "--spool-root",
        str(workdir / "spool"),
    ]


def measure_rates(figures: NasdFigures, db: Path, launched: float) -> None:
    """Steady-state and overall rates and latencies, from the timestamps in the database."""
    times = received_times(db)
    if len(times) >= 2:
        figures.steady_rate = windowed_rate(times, 0.1, 0.9)
        figures.first_to_last_s = times[-1] - times[0]
        figures.overall_rate = (len(times) - 1) / max(figures.first_to_last_s, 1e-9)
        figures.launch_to_last_s = times[-1] - launched
    figures.latencies = latencies(db)


def system_cpu_seconds() -> tuple[float, float, float]:
    """Busy, steal and own CPU seconds so far: the whole machine (``/proc/stat``) and this process.

    Busy counts user, nice, system, irq and softirq time of every process on every core; steal is
    time the hypervisor gave this VM's cores to someone else.
    """
    ticks = os.sysconf("SC_CLK_TCK")
    with open("/proc/stat") as stat:
        fields = [int(x) for x in stat.readline().split()[1:9]]
    user, nice, system, _idle, _iowait, irq, softirq, steal = fields
    own = os.times()
    return ((user + nice + system + irq + softirq) / ticks, steal / ticks, own.user + own.system)


def account_cpu(
    figures: NasdFigures,
    before: dict[str, float],
    after: dict[str, float],
    system_before: tuple[float, float, float],
    system_after: tuple[float, float, float],
    wall_s: float,
) -> None:
    """Fill in the CPU time of each child, and how much CPU everything else on the machine used."""
    figures.cpu_seconds = {name: round(after[name] - before.get(name, 0.0), 2) for name in after}
    busy = system_after[0] - system_before[0]
    ours = sum(figures.cpu_seconds.values()) + system_after[2] - system_before[2]
    figures.cores = os.cpu_count() or 1
    figures.measured_s = round(wall_s, 2)
    figures.other_cores = round(max(0.0, busy - ours) / max(wall_s, 1e-9), 2)
    figures.steal_cores = round((system_after[1] - system_before[1]) / max(wall_s, 1e-9), 2)


def wait_for_budget(procs: Processes, db: Path, budget: int, stall_s: float) -> None:
    """Poll the result count every 0.25 s, printing progress, until it reaches ``budget``."""
    conn = open_ro(db)
    try:
        last_count, last_change = 0, time.monotonic()
        last_print, printed_count = time.monotonic(), 0
        while True:
            time.sleep(0.25)
            procs.check_alive()
            count = count_results(conn)
            now = time.monotonic()
            if count != last_count:
                last_count, last_change = count, now
            elif now - last_change > stall_s:
                raise BenchmarkError(f"no new result for {stall_s:.0f} s ({count}/{budget})")
            if now - last_print >= 2.0 or count >= budget:
                rate = (count - printed_count) / (now - last_print)
                say(
                    f"  nasd: {count:>7}/{budget} results  ({rate:,.0f}/s over the last "
                    f"{now - last_print:.1f} s)"
                )
                last_print, printed_count = now, count
            if count >= budget:
                return
    finally:
        conn.close()


def check(found: Verification, budget: int, problems: list[str]) -> Verification:
    """Add a line to ``problems`` for every way the database differs from a clean run."""
    if found.results != budget:
        problems.append(f"{found.results} results, expected exactly {budget}")
    if found.distinct_trials != found.results:
        problems.append(f"{found.results} results but {found.distinct_trials} distinct trial ids")
    if found.integrity != "ok":
        problems.append(f"PRAGMA integrity_check: {found.integrity}")
    if found.journal_mode != "wal":
        problems.append(f"journal_mode is {found.journal_mode}, expected wal")
    if found.experiment_status != "done":
        problems.append(f"experiment status is {found.experiment_status}, expected done")
    return found


# -- Optuna -------------------------------------------------------------------------------------


@dataclass(slots=True)
class OptunaFigures:
    """One Optuna storage's ask/tell loop."""

    storage: str
    trials: int
    seconds: float

    @property
    def rate(self) -> float:
        """Trials per second."""
        return self.trials / self.seconds if self.seconds > 0 else 0.0


def optuna_storages(workdir: Path) -> list[tuple[str, Callable[[], Any]]]:
    """(label, factory) for each storage to time; the journal API differs across versions."""
    import optuna

    def rdb() -> Any:
        return optuna.storages.RDBStorage(f"sqlite:///{workdir / 'optuna.db'}")

    def journal() -> Any:
        path = str(workdir / "optuna-journal.log")
        journal_module = getattr(optuna.storages, "journal", None)
        backend_cls = getattr(journal_module, "JournalFileBackend", None)
        if backend_cls is None:  # Optuna < 4
            backend_cls = getattr(optuna.storages, "JournalFileStorage")  # noqa: B009
        return optuna.storages.JournalStorage(backend_cls(path))

    def memory() -> Any:
        return optuna.storages.InMemoryStorage()

    return [
        ("optuna RDBStorage (SQLite file)", rdb),
        ("optuna JournalStorage (file)", journal),
        ("optuna InMemoryStorage (reference, not durable)", memory),
    ]


def run_optuna(label: str, make_storage: Callable[[], Any], seconds: float) -> OptunaFigures:
    """Ask/tell with a random sampler on the NB201 cell for ``seconds``; count the trials."""
    import optuna

    study = optuna.create_study(
        storage=make_storage(),
        study_name="bench",
        sampler=optuna.samplers.RandomSampler(seed=0),
        direction="maximize",
    )
    trials = 0
    started = time.perf_counter()
    deadline = started + seconds
    while time.perf_counter() < deadline:
        trial = study.ask()
        ops = [trial.suggest_categorical(f"edge{i}", NB201_OPS) for i in range(NB201_EDGES)]
        study.tell(trial, ops.count("nor_conv_3x3") / NB201_EDGES)
        trials += 1
    elapsed = time.perf_counter() - started
    stored = len(study.get_trials(deepcopy=False))
    if stored != trials:
        raise BenchmarkError(f"{label}: {trials} trials told, {stored} stored")
    return OptunaFigures(label, trials, elapsed)


def run_all_optuna(workdir: Path, seconds: float) -> list[OptunaFigures]:
    """Every storage of :func:`optuna_storages`, one after the other."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    logging.getLogger("sqlalchemy").setLevel(logging.WARNING)
    figures = []
    for label, factory in optuna_storages(workdir):
        say(f"  {label}: {seconds:g} s of ask/tell ...")
        result = run_optuna(label, factory, seconds)
        say(f"  {label}: {result.trials} trials, {result.rate:,.1f}/s")
        figures.append(result)
    return figures


# -- profiling the daemon ----------------------------------------------------------------------

PROFILED_CHILD = "--profiled-child"
"""First argument that makes this script run a module's ``main`` under cProfile."""


def profiled_main(out: Path, module_name: str, argv: list[str]) -> int:
    """Run ``<module_name>.main(argv)`` in this process with every thread under cProfile.

    ``python -m cProfile`` sees only the main thread, but the daemon's engine runs on its SQLite
    writer thread (and the agents' trainers on worker threads). Here each thread started after
    this point gets its own profiler (installed on its first profile event); at exit all of them
    are merged into ``out`` and each thread's own profile is written to ``out.<thread name>``
    (the main thread's to ``out.main``). Stop the process with SIGTERM: the daemon and the
    agents shut down gracefully and the profiles are written.
    """
    import cProfile
    import pstats
    import threading

    thread_profiles: list[tuple[str, cProfile.Profile]] = []
    lock = threading.Lock()

    def first_event(frame: Any, event: str, arg: Any) -> None:
        profile = cProfile.Profile()
        with lock:
            thread_profiles.append((threading.current_thread().name, profile))
        profile.enable()  # replaces this hook for the rest of the thread's life

    threading.setprofile(first_event)
    main_profile = cProfile.Profile()
    import importlib

    module_main = importlib.import_module(module_name).main
    main_profile.enable()
    try:
        status: int = module_main(argv)
    finally:
        main_profile.disable()
        threading.setprofile(None)
        merged = pstats.Stats(main_profile)
        main_profile.dump_stats(f"{out}.main")
        with lock:
            profiles = list(thread_profiles)
        for name, profile in profiles:
            profile.create_stats()
            merged.add(profile)
            safe = "".join(c if c.isalnum() or c in "-_" else "_" for c in name)
            profile.dump_stats(f"{out}.{safe}")
        merged.dump_stats(str(out))
    return status


# -- report -------------------------------------------------------------------------------------


def ratio(value: float, base: float | None) -> str:
    """``value / base`` as ``12.3x``, or ``-`` when there is no base."""
    return f"{value / base:,.1f}x" if base else "-"


def report(nasd_figures: NasdFigures, optuna_figures: list[OptunaFigures]) -> None:
    """Print the table, where the time went, the checks and the verdict."""
    report_table(nasd_figures, optuna_figures)
    report_costs(nasd_figures)
    n = nasd_figures
    v = n.verification
    if v is not None:
        say(
            f"database check: {v.results} results, {v.distinct_trials} distinct trial ids "
            f"({v.min_trial}..{v.max_trial}), integrity_check {v.integrity}, journal_mode "
            f"{v.journal_mode}, experiment {v.experiment_status}; trials {v.trial_statuses}, "
            f"leases {v.lease_statuses}"
        )
    say(
        "durability: the daemon commits every result batch with synchronous=FULL in WAL mode "
        "before acking it; Optuna's RDBStorage (SQLite, default synchronous=FULL) and its journal "
        "file backend (fsync per append) are durable as well."
    )
    verdict = "MET" if n.steady_rate >= TARGET_RATE else "MISSED"
    say(
        f"target >= {TARGET_RATE:,.0f} durable evaluations/s (steady state): {verdict} "
        f"({n.steady_rate:,.0f}/s)"
    )


def report_table(n: NasdFigures, optuna_figures: list[OptunaFigures]) -> None:
    """The rates of every system and their ratios to Optuna's durable storages."""
    rates = {f.storage: f.rate for f in optuna_figures}
    sqlite_rate = next((r for s, r in rates.items() if "RDB" in s), None)
    journal_rate = next((r for s, r in rates.items() if "Journal" in s), None)
    durable = "SQLite WAL, synchronous=FULL"
    setup = (
        f"{n.agents} agents x {n.slots} slots in {n.agent_procs} procs, "
        f"zero-cost trainer, Mosquitto, {durable}"
    )
    rows: list[tuple[str, float]] = [
        ("nasd, steady state (10-90 % of budget)", n.steady_rate),
        ("nasd, overall (first to last result)", n.overall_rate),
        *((f.storage, f.rate) for f in optuna_figures),
    ]
    width = max(len(label) for label, _ in rows) + 2
    say("")
    say(f"nasd: budget {n.budget}, {setup}; daemon log level {n.daemon_log_level}")
    say(f"{'system':<{width}}{'evals/s':>10}  {'vs optuna sqlite':>16}  {'vs optuna journal':>17}")
    say("-" * (width + 47))
    for label, rate in rows:
        say(
            f"{label:<{width}}{rate:>10,.1f}  {ratio(rate, sqlite_rate):>16}  "
            f"{ratio(rate, journal_rate):>17}"
        )
    say("")


def report_costs(n: NasdFigures) -> None:
    """Time to complete, CPU per process and per evaluation, other load, per-job latencies."""
    say(
        f"nasd time to complete: {n.first_to_last_s:.2f} s first to last result, "
        f"{n.launch_to_last_s:.2f} s from launching the agents"
    )
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
        say(
            f"other work on this machine meanwhile: {n.other_cores:.2f} cores busy, "
            f"{n.steal_cores:.2f} cores stolen by the hypervisor"
        )
        if n.other_cores + n.steal_cores > 0.2:
            say("  note: other work competed for the CPU during the run; the nasd figure is low")
    lat = n.latencies
    if lat is not None:
        say(
            f"per job (median / p90, ms): daemon assign -> agent start {lat.assign_to_start_ms}, "
            f"train {lat.start_to_finish_ms}, agent finish -> daemon batch "
            f"{lat.finish_to_commit_ms}, whole round trip {lat.round_trip_ms}"
        )
        say(
            f"daemon batches in the 10-90 % window: {lat.batches}, {lat.results_per_batch} "
            f"results each, one every {lat.batch_gap_ms} ms (median / p90)"
        )


def build_parser() -> argparse.ArgumentParser:
    """Command-line options."""
    parser = argparse.ArgumentParser(
        description="nasd end-to-end throughput versus Optuna's ask/tell loop."
    )
    parser.add_argument(
        "--budget", type=int, default=20_000, help="evaluations in the nasd run (default: 20000)"
    )
    parser.add_argument(
        "--slots", type=int, default=16, help="credits (concurrent jobs) per agent (default: 16)"
    )
    parser.add_argument("--agents", type=int, default=8, help="agents (default: 8)")
    parser.add_argument(
        "--agent-procs",
        type=int,
        default=2,
        help="processes the agents are spread over (default: 2)",
    )
    parser.add_argument(
        "--optuna-seconds",
        type=float,
        default=5.0,
        help="seconds of ask/tell per Optuna storage; 0 skips Optuna (default: 5)",
    )
    parser.add_argument(
        "--daemon-log-level",
        default="info",
        choices=["debug", "info", "warning"],
        help="the daemon's --log-level (default: info, as deployed)",
    )
    parser.add_argument(
        "--stall-s",
        type=float,
        default=60.0,
        help="give up when no result arrives for this long (default: 60)",
    )
    parser.add_argument(
        "--profile-daemon",
        type=Path,
        default=None,
        metavar="FILE",
        help="run the daemon under cProfile (all threads) and write the merged "
        "profile to FILE, per thread to FILE.<thread>; slows the daemon",
    )
    parser.add_argument(
        "--profile-agents",
        type=Path,
        default=None,
        metavar="FILE",
        help="the same for the first agent process",
    )
    parser.add_argument(
        "--json",
        type=Path,
        default=None,
        metavar="FILE",
        help="also write the figures as JSON to FILE",
    )
    parser.add_argument(
        "--keep", action="store_true", help="keep the temporary directory (logs, databases)"
    )
    return parser


def validate(args: argparse.Namespace) -> None:
    """Refuse options that cannot make a valid run."""
    if not 1 <= args.budget <= 1_000_000:
        raise SystemExit("--budget must be between 1 and 1000000")
    if not 1 <= args.slots <= 64:
        raise SystemExit("--slots must be between 1 and 64")
    if args.agents < 1 or not 1 <= args.agent_procs <= args.agents:
        raise SystemExit("--agents must be >= 1 and --agent-procs between 1 and --agents")
    if args.optuna_seconds < 0:
        raise SystemExit("--optuna-seconds must be >= 0")
    if not Path(MOSQUITTO).exists():
        raise SystemExit(f"{MOSQUITTO} not found: install mosquitto")
    if args.profile_daemon is not None:
        args.profile_daemon = args.profile_daemon.resolve()
    if args.profile_agents is not None:
        args.profile_agents = args.profile_agents.resolve()


@contextlib.contextmanager
def workspace(keep: bool) -> Iterator[Path]:
    """A temporary directory, removed afterwards unless ``keep``."""
    path = Path(tempfile.mkdtemp(prefix="nasd-bench-"))
    try:
        yield path
    finally:
        if keep:
            say(f"kept {path}")
        else:
            shutil.rmtree(path, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    """Entry point: 0 after a valid measurement (target met or not), 1 on errors."""
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == [PROFILED_CHILD]:
        return profiled_main(Path(argv[1]), argv[2], argv[3:])
    args = build_parser().parse_args(argv)
    validate(args)
    with workspace(args.keep) as workdir:
        try:
            say(f"nasd throughput benchmark in {workdir}")
            nasd_figures = run_nasd(args, workdir)
            optuna_figures: list[OptunaFigures] = []
            if args.optuna_seconds > 0:
                say("Optuna ask/tell on the NB201 cell (6 categorical x 5), RandomSampler(seed=0)")
                optuna_figures = run_all_optuna(workdir, args.optuna_seconds)
        except BenchmarkError as exc:
            print(f"throughput: error: {exc}", file=sys.stderr)
            return 1
        except KeyboardInterrupt:
            print("throughput: interrupted", file=sys.stderr)
            return 130
        report(nasd_figures, optuna_figures)
        if args.json is not None:
            data = {
                "nasd": asdict(nasd_figures),
                "optuna": [{**asdict(f), "rate": f.rate} for f in optuna_figures],
            }
            args.json.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
        if nasd_figures.problems:
            for problem in nasd_figures.problems:
                print(f"throughput: error: {problem}", file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
