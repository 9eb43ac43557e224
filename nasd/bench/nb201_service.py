"""The service side of ``nasd bench nb201``: broker, daemon and agents in one process, and the runs.

:func:`measure_async` starts an embedded broker (:class:`nasd.mqtt.broker.EmbeddedBroker`, as
``nasd run`` does), the real daemon (:class:`nasd.service.daemon.Daemon`) on one SQLite file and
``agents`` real :class:`agents.worker.Agent` objects that run the ``nb201`` table trainer (each with
its own MQTT connection, spool and credits, sharing this interpreter as
``benchmarks/bench_agents.py`` does; the table trainer needs no torch). Then, strategy after
strategy, :func:`run_strategy` submits the runs through the daemon's control API (``submit``),
reads every committed evaluation back from the database in commit order, feeds it to its run's
:class:`~nasd.bench.nb201_protocol.RunTally`, and cancels (``cancel``) each run's experiment as
soon as its simulated time is spent. However it ends (done, an error, Ctrl-C), the agents stop
first (they hand back running jobs), then the daemon (it commits and snapshots), then the broker.

Control requests go through one :class:`Control` task, paced below the daemon's per-client rate
limit (:data:`nasd.service.intake.CLIENT_RATE`): the daemon drops a request over the limit
without an answer. Reading results never waits for the control channel, so a run's choice never
depends on how fast its cancel goes out; a late cancel only costs evaluations nobody counts.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.metadata
import json
import math
import os
import signal
import socket
import sqlite3
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import structlog

from nasd.bench.nb201_protocol import SEARCH_EPOCHS, RunOutcome, RunTally, run_config, trial_budget
from nasd.errors import NasdError

if TYPE_CHECKING:  # loaded when a bench starts: `nasd --help` stays light
    from agents.worker import Agent
    from nasd.cli.client import DaemonSession
    from nasd.config import ExperimentConfig
    from nasd.service.daemon import Daemon

__all__ = ["MAX_SLOTS", "BenchError", "Plan", "Reporter", "measure_async"]

log = structlog.get_logger("nasd.bench.nb201")

MAX_SLOTS = 64
"""An agent's most credits (``schemas/v1/agent.state.json``)."""
POLL_S = 0.2
"""How often the database is read for new evaluations."""
STALL_S = 120.0
"""No new evaluation for this long while runs are open: something is broken; stop with an error."""
START_TIMEOUT_S = 60.0
CONTROL_TIMEOUT_S = 30.0
CONTROL_TRIES = 3
"""A control request whose answer is lost is sent again (submit and cancel are idempotent)."""
RATE_SHARE = 0.8
"""The share of the daemon's per-client control rate (and burst) this bench uses: a margin for
the jitter between when a request leaves and when the daemon counts it."""


class BenchError(NasdError):
    """The measurement could not be completed (a stalled run, a daemon that stopped)."""


@dataclass(frozen=True, slots=True)
class Plan:
    """A checked ``nasd bench nb201`` request (see :func:`nasd.bench.nb201.plan_of`)."""

    strategies: tuple[str, ...]
    dataset: str
    prefix: str
    """The table's column prefix for ``dataset`` (``c10``, ``c100``, ``in16``)."""
    budget_seconds: float
    runs: int
    data: Path
    agents: int
    concurrent: int
    db: Path | None


class Reporter(Protocol):
    """Where progress goes (:class:`nasd.bench.nb201.Progress`)."""

    def show(self, strategy: str, done: int, total: int, trials: int, elapsed: float) -> None:
        """Report ``done`` of ``total`` runs finished, ``trials`` evaluations seen."""

    def end(self) -> None:
        """A strategy's runs are all finished."""


# -- agents -------------------------------------------------------------------------------------


def _torch_version() -> str:
    try:
        return importlib.metadata.version("torch")[:64]
    except importlib.metadata.PackageNotFoundError:
        return "none"


def agent_profile(slots: int) -> dict[str, Any]:
    """A CPU hardware profile with every field the schema requires (no probe: a table lookup)."""
    from nasd import __version__

    try:
        memory = int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
    except (ValueError, OSError, AttributeError):
        memory = 0
    return {
        "host": socket.gethostname()[:255],
        "device": "cpu",
        "device_name": "nb201 table lookup",
        "memory_bytes": memory,
        "cpu_count": os.cpu_count() or 1,
        "gpu_count": 0,
        "torch_version": _torch_version(),
        "throughput": 1.0,
        "slots": slots,
        "nasd_version": __version__,
    }


def build_agents(url: str, count: int, slots: int, spool_root: Path) -> list[Agent]:
    """``count`` agents ``nb201-<i>`` that run the ``nb201`` trainer, ``slots`` credits each."""
    from agents.trainers.nb201 import train
    from agents.worker import Agent, AgentOptions
    from nasd.mqtt import BrokerUrl

    broker = BrokerUrl.parse(url)
    profile = agent_profile(slots)
    return [
        Agent(
            AgentOptions(
                broker=broker,
                name=f"nb201-{i}",
                profile=profile,
                spool_dir=spool_root / f"nb201-{i}",
                device="cpu",
                slots=slots,
                checkpoint_dir=None,
            ),
            load_trainer=lambda _name: train,
        )
        for i in range(count)
    ]


# -- reading the daemon's database --------------------------------------------------------------


@dataclass(slots=True)
class Watcher:
    """Reads committed evaluations from the daemon's database, in commit order."""

    db: Path
    last_rowid: int = 0
    _conn: sqlite3.Connection | None = None

    def connection(self) -> sqlite3.Connection:
        """A read-only connection (opened on first use: the daemon creates the file)."""
        if self._conn is None:
            from nasd.store import open_reader

            self._conn = open_reader(self.db)
        return self._conn

    def new_results(self) -> list[tuple[str, int, dict[str, Any]]]:
        """``(experiment, trial_id, metrics)`` of every result committed since the last call."""
        rows = (
            self.connection()
            .execute(
                "SELECT rowid, experiment, trial_id, metrics FROM results WHERE rowid > ?"
                " ORDER BY rowid",
                (self.last_rowid,),
            )
            .fetchall()
        )
        if rows:
            self.last_rowid = rows[-1][0]
        return [(name, int(trial), json.loads(metrics)) for _, name, trial, metrics in rows]

    def statuses(self, names: Sequence[str]) -> dict[str, str]:
        """The lifecycle status of each named experiment the database holds."""
        marks = ",".join("?" * len(names))
        query = f"SELECT name, status FROM experiments WHERE name IN ({marks})"  # noqa: S608
        return dict(self.connection().execute(query, tuple(names)).fetchall())

    def agents_online(self) -> int:
        """How many agents the daemon has recorded online."""
        (online,) = (
            self.connection().execute("SELECT COUNT(*) FROM agents WHERE online = 1").fetchone()
        )
        return int(online)

    def close(self) -> None:
        """Close the connection."""
        if self._conn is not None:
            self._conn.close()
            self._conn = None


# -- the control channel ------------------------------------------------------------------------


class Control:
    """Submits and cancels experiments through one control session, one request at a time.

    Requests wait in two queues, cancels first (each one stops evaluations nobody counts), and
    leave no faster than :data:`RATE_SHARE` of the daemon's per-client limit. :meth:`serve` runs
    until cancelled and raises if a request fails for good.
    """

    def __init__(self, session: DaemonSession) -> None:
        from nasd.service.intake import CLIENT_BURST, CLIENT_RATE

        self.session = session
        self.rate = CLIENT_RATE * RATE_SHARE
        self.burst = max(1.0, math.floor(CLIENT_BURST * RATE_SHARE))
        self._tokens = self.burst
        self._updated = time.monotonic()
        self._cancels: deque[str] = deque()
        self._submits: deque[ExperimentConfig] = deque()
        self._wake = asyncio.Event()
        self._busy = False
        self.sent = 0

    def submit(self, config: ExperimentConfig) -> None:
        """Queue the creation of ``config``'s experiment."""
        self._submits.append(config)
        self._wake.set()

    def cancel(self, name: str) -> None:
        """Queue the cancellation of experiment ``name``."""
        self._cancels.append(name)
        self._wake.set()

    @property
    def idle(self) -> bool:
        """Nothing queued and nothing in flight."""
        return not (self._cancels or self._submits or self._busy)

    async def serve(self) -> None:
        """Send queued requests forever (until cancelled)."""
        while True:
            if not (self._cancels or self._submits):
                self._wake.clear()
                await self._wake.wait()
                continue
            await self._token()
            self._busy = True
            try:
                if self._cancels:
                    await self._send_cancel(self._cancels.popleft())
                else:
                    await self._send_submit(self._submits.popleft())
            finally:
                self._busy = False

    async def wait_idle(self, alive: Callable[[], None]) -> None:
        """Return once every queued request is answered (``alive`` raises if a part died)."""
        while not self.idle:
            alive()
            await asyncio.sleep(0.05)

    async def _token(self) -> None:
        """Wait for the client-side token bucket to hold a token, and take it."""
        while True:
            now = time.monotonic()
            self._tokens = min(self.burst, self._tokens + (now - self._updated) * self.rate)
            self._updated = now
            if self._tokens >= 1.0:
                self._tokens -= 1.0
                return
            await asyncio.sleep((1.0 - self._tokens) / self.rate)

    async def _request(self, command: str, args: dict[str, Any]) -> Any:
        from nasd.cli.client import DaemonError

        for attempt in range(1, CONTROL_TRIES + 1):
            try:
                self.sent += 1
                return await self.session.request(command, args, timeout=CONTROL_TIMEOUT_S)
            except DaemonError as exc:
                if "did not answer" not in str(exc) or attempt == CONTROL_TRIES:
                    raise
                log.warning("bench.control_retry", command=command, attempt=attempt)
                await self._token()
        raise AssertionError("unreachable")  # pragma: no cover

    async def _send_submit(self, config: ExperimentConfig) -> None:
        result = await self._request("submit", {"config": config.to_dict()})
        # "created": False only answers a retry whose first try did create it (the db is new).
        if not isinstance(result, dict) or result.get("experiment") != config.name:
            raise BenchError(f"the daemon answered the submit of {config.name} with {result!r}")

    async def _send_cancel(self, name: str) -> None:
        from nasd.cli.client import DaemonError

        try:
            await self._request("cancel", {"experiment": name})
        except DaemonError as exc:
            if "already" not in str(exc):  # it ended on its own (its trial budget): fine
                raise
            log.info("bench.cancel_skipped", experiment=name, reason=str(exc))


# -- one strategy's runs ------------------------------------------------------------------------


@dataclass(slots=True)
class OpenRun:
    """A submitted run whose simulated time is not spent yet."""

    strategy: str
    index: int
    tally: RunTally


@dataclass(slots=True)
class StrategyRuns:
    """One strategy's runs: waiting to be submitted, open (searching) and finished."""

    strategy: str
    waiting: deque[ExperimentConfig]
    total: int
    open: dict[str, OpenRun] = field(default_factory=dict)
    finished: list[RunOutcome] = field(default_factory=list)
    trials: int = 0
    """Evaluations of open runs seen so far (the progress line's count)."""


def _configs(plan: Plan, strategy: str) -> deque[ExperimentConfig]:
    """Every run's experiment config, run 0 first."""
    from agents.trainers.nb201 import load_table

    table = load_table(plan.data)
    costs = (row[f"{plan.prefix}_train_time200_s"] for row in table.rows.values())
    cheapest = min(costs) * SEARCH_EPOCHS / 200
    trials = trial_budget(plan.budget_seconds, cheapest)
    return deque(
        run_config(strategy, i, data=str(plan.data), dataset=plan.prefix, trials=trials)
        for i in range(plan.runs)
    )


async def run_strategy(
    plan: Plan,
    strategy: str,
    control: Control,
    watcher: Watcher,
    reporter: Reporter,
    interrupted: asyncio.Event,
    alive: Callable[[], None],
) -> tuple[list[RunOutcome], float]:
    """Every run of ``strategy``, at most ``plan.concurrent`` open at once.

    Returns the outcomes in run order and the wall time, once every run is finished and its
    cancel answered. ``alive`` raises if the daemon, an agent or the control task has stopped.
    Interrupted (Ctrl-C): the outcomes so far.
    """
    runs = StrategyRuns(strategy, _configs(plan, strategy), plan.runs)
    started = last_news = time.monotonic()
    while not interrupted.is_set():
        alive()
        while runs.waiting and len(runs.open) < plan.concurrent:
            config = runs.waiting.popleft()
            control.submit(config)
            runs.open[config.name] = OpenRun(strategy, config.seed, RunTally(plan.budget_seconds))
        seen = (runs.trials, len(runs.finished))
        gone = _ended_experiments(runs, watcher)
        for name in _take_results(runs, watcher):
            control.cancel(name)
        _close_early(runs, gone)
        if (runs.trials, len(runs.finished)) != seen:
            last_news = time.monotonic()
        elapsed = time.monotonic() - started
        reporter.show(strategy, len(runs.finished), runs.total, runs.trials, elapsed)
        if not runs.open and not runs.waiting:
            await control.wait_idle(alive)
            break
        if time.monotonic() - last_news > STALL_S:
            raise BenchError(f"{strategy}: no evaluation committed for {STALL_S:.0f} s")
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(interrupted.wait(), timeout=POLL_S)
    reporter.end()
    return sorted(runs.finished, key=lambda o: o.index), time.monotonic() - started


def _take_results(runs: StrategyRuns, watcher: Watcher) -> list[str]:
    """Feed new evaluations to their runs' tallies; the names of the runs that just ended."""
    ended = []
    for name, trial_id, metrics in watcher.new_results():
        run = runs.open.get(name)
        if run is None:
            continue  # a run already over (its trial in flight), or an earlier strategy's
        runs.trials += 1
        if run.tally.add(trial_id, metrics):
            ended.append(name)
            runs.finished.append(RunOutcome.of(run.strategy, run.index, run.tally))
            del runs.open[name]
    return ended


def _ended_experiments(runs: StrategyRuns, watcher: Watcher) -> list[str]:
    """Open runs whose experiment has ended on its own (its trial budget spent, say).

    Read before the results of the same round, so that every evaluation committed before the
    experiment ended is counted before the run is closed (:func:`_close_early`).
    """
    if not runs.open:
        return []
    statuses = watcher.statuses(list(runs.open))
    return [name for name, status in statuses.items() if status in ("done", "cancelled")]


def _close_early(runs: StrategyRuns, names: Sequence[str]) -> None:
    """Close runs that ended before their simulated time did (nothing to cancel)."""
    for name in names:
        run = runs.open.pop(name, None)
        if run is not None:
            log.warning("bench.run_ended_early", experiment=name, sim_s=run.tally.sim_seconds)
            runs.finished.append(RunOutcome.of(run.strategy, run.index, run.tally))


# -- the whole service --------------------------------------------------------------------------


async def measure_async(
    plan: Plan, workdir: Path, reporter: Reporter
) -> tuple[dict[str, tuple[list[RunOutcome], float]], bool]:
    """Start broker, daemon and agents; run every strategy; stop them all.

    Returns each strategy's outcomes and wall time, and whether SIGINT/SIGTERM ended the bench
    early (the strategies not reached are missing then).
    """
    from nasd.cli.client import DaemonSession
    from nasd.mqtt import BrokerUrl
    from nasd.mqtt.broker import EmbeddedBroker
    from nasd.service.daemon import Daemon, DaemonOptions

    db = plan.db or workdir / "nb201.db"
    interrupted = asyncio.Event()
    loop = asyncio.get_running_loop()
    handled = []
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            loop.add_signal_handler(sig, interrupted.set)
            handled.append(sig)
    results: dict[str, tuple[list[RunOutcome], float]] = {}
    broker = EmbeddedBroker()
    watcher = Watcher(db)
    try:
        await broker.start()
        url = BrokerUrl.parse(broker.url)
        daemon = Daemon(DaemonOptions(url, db, connect_timeout_s=15.0))
        slots = min(MAX_SLOTS, math.ceil(plan.concurrent / plan.agents))
        agents = build_agents(broker.url, plan.agents, slots, workdir / "spool")
        async with asyncio.TaskGroup() as group:
            daemon_task = group.create_task(daemon.run(install_signals=False), name="daemon")
            tasks: list[asyncio.Task[None]] = []
            try:
                await _daemon_ready(daemon, daemon_task)
                tasks = [group.create_task(a.run(), name=f"agent {a.options.name}") for a in agents]
                alive = _checker([daemon_task, *tasks])
                await _wait_online(watcher, plan.agents, alive)
                async with DaemonSession(url, timeout=CONTROL_TIMEOUT_S) as session:
                    await session.require_online()
                    control = Control(session)
                    control_task = group.create_task(control.serve(), name="control")
                    alive = _checker([daemon_task, *tasks, control_task])
                    try:
                        for strategy in plan.strategies:
                            if interrupted.is_set():
                                break
                            results[strategy] = await run_strategy(
                                plan, strategy, control, watcher, reporter, interrupted, alive
                            )
                    finally:
                        control_task.cancel()
                        await asyncio.wait([control_task])
            finally:
                await _stop_service(daemon, daemon_task, agents, tasks)
    except BaseExceptionGroup as failed:
        raise _sole_error(failed) from None
    finally:
        watcher.close()
        await broker.stop()
        for sig in handled:
            loop.remove_signal_handler(sig)
    return results, interrupted.is_set()


async def _daemon_ready(daemon: Daemon, daemon_task: asyncio.Task[None]) -> None:
    """Wait until the daemon serves; BenchError if it ended or stalled first."""
    ready = asyncio.create_task(daemon.ready.wait(), name="daemon-ready")
    try:
        await asyncio.wait(
            [ready, daemon_task], timeout=START_TIMEOUT_S, return_when=asyncio.FIRST_COMPLETED
        )
    finally:
        ready.cancel()
    if not daemon.ready.is_set():
        raise BenchError("the daemon did not start serving")


async def _wait_online(watcher: Watcher, count: int, alive: Callable[[], None]) -> None:
    """Wait until ``count`` agents are recorded online (a submit checks that one offers nb201)."""
    from nasd.errors import StoreError

    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        alive()
        with contextlib.suppress(StoreError, sqlite3.Error):
            if watcher.agents_online() >= count:
                return
        await asyncio.sleep(0.1)
    raise BenchError(f"the {count} agents did not come online within {START_TIMEOUT_S:.0f} s")


def _checker(tasks: Sequence[asyncio.Task[None]]) -> Callable[[], None]:
    """A function that raises BenchError (or the task's own error) if one of ``tasks`` ended."""

    def alive() -> None:
        for task in tasks:
            if task.done():
                error = None if task.cancelled() else task.exception()
                if isinstance(error, NasdError):
                    raise error
                raise BenchError(f"{task.get_name()} stopped during the bench: {error!r}")

    return alive


async def _stop_service(
    daemon: Daemon,
    daemon_task: asyncio.Task[None],
    agents: Sequence[Agent],
    agent_tasks: Sequence[asyncio.Task[None]],
) -> None:
    """Stop the agents (they hand back running jobs), then the daemon; wait for all of them."""
    for agent in agents:
        agent.stop()
    if agent_tasks:
        await asyncio.wait(agent_tasks)
    daemon.stop()
    await asyncio.wait([daemon_task])


def _sole_error(failed: BaseExceptionGroup[BaseException]) -> BaseException:
    """The one error inside nested task groups, or the group itself when there are several."""
    error: BaseException = failed
    while isinstance(error, BaseExceptionGroup) and len(error.exceptions) == 1:
        error = error.exceptions[0]
    return error
