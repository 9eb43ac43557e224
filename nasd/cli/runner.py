"""``nasd run``: the whole service in one command — embedded broker, daemon, local agents.

Everything a run writes lives beside its database: ``<db dir>/<experiment>/`` holds the daemon and
agent logs, the agents' spools and the checkpoints. Running the same command again resumes the
experiment from its database, and running it once the search is complete shows its best result
and the next steps again. ``--fresh`` moves the previous run aside first: its database, logs,
spools and checkpoints go to ``<db dir>/<experiment>.old-<timestamp>/``. A multi-model file runs
every model (one experiment each) in the same daemon and ends when all of them are complete;
``<experiment>`` is then the file's own experiment name (the models' group).
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import os
import sqlite3
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import IO, Any

from nasd.cli.progress import ProgressView
from nasd.config import ExperimentConfig
from nasd.errors import ConfigError, NasdError
from nasd.mqtt import BrokerUrl
from nasd.mqtt.broker import EmbeddedBroker
from nasd.service.daemon import Daemon, DaemonOptions
from nasd.store import open_reader, queries


@dataclass(frozen=True, slots=True)
class RunOptions:
    """What ``nasd run`` was asked to do: the experiments of one file (one per model)."""

    configs: tuple[ExperimentConfig, ...]
    db: Path
    agents: int = 2
    fresh: bool = False
    benchmark_seconds: float = 1.0

    @property
    def name(self) -> str:
        """The file's experiment name: the models' group, or the single experiment's name."""
        return run_name(self.configs)


def run_name(configs: Sequence[ExperimentConfig]) -> str:
    """The name a run goes by (its database, its log folder): the group, else the experiment."""
    if not configs:
        raise ConfigError("nothing to run: the experiment file defines no experiment")
    return configs[0].group or configs[0].name


def set_aside(db: Path, run_dir: Path, stamp: str | None = None) -> Path | None:
    """Move a previous run out of the way (``--fresh``); the folder it went to, None if none.

    The run folder (logs, spools, checkpoints) is renamed to ``<name>.old-<stamp>`` beside it and
    the database with its WAL files moved into that folder, so that nothing of the old run is
    lost, appended to or mistaken for the new run's. ``stamp`` defaults to the local time.
    """
    moved = [Path(f"{db}{suffix}") for suffix in ("", "-wal", "-shm")]
    moved = [path for path in moved if path.exists()]
    if not moved and not run_dir.exists():
        return None
    stamp = stamp or time.strftime("%Y%m%d-%H%M%S")
    aside = run_dir.with_name(f"{run_dir.name}.old-{stamp}")
    count = 1
    while aside.exists():  # two fresh starts within a second
        count += 1
        aside = run_dir.with_name(f"{run_dir.name}.old-{stamp}-{count}")
    if run_dir.exists():
        run_dir.rename(aside)
    else:
        aside.mkdir(parents=True)
    for path in moved:
        path.rename(aside / path.name)
    return aside


def start_fresh(options: RunOptions, out: IO[str] = sys.stdout) -> RunOptions:
    """Set the previous run aside when ``--fresh`` asks, saying where; the options to run with.

    The returned options no longer ask for ``--fresh``: a caller that opens the run's log files
    itself (``nasd run``) calls this first, so that they land in the new run's folder.
    """
    if not options.fresh:
        return options
    aside = set_aside(options.db, options.db.parent / options.name)
    if aside is not None:
        print(
            f"{options.name}: --fresh: the previous run (database, logs, checkpoints)"
            f" moved to {aside}",
            file=out,
            flush=True,
        )
    return replace(options, fresh=False)


async def _spawn_agent(
    url: str,
    index: int,
    count: int,
    run_dir: Path,
    benchmark_seconds: float,
    trainers: Sequence[str],
) -> asyncio.subprocess.Process:
    threads = max(1, (os.cpu_count() or 1) // count)
    name = f"local-{index}"
    # Agents run only the trainers they offer: a user's module:function must be named to them.
    offer = [arg for trainer in trainers if ":" in trainer for arg in ("--trainer", trainer)]
    log_file = (run_dir / f"agent-{index}.log").open("ab")
    try:
        return await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "agents.cli",
            "--broker",
            url,
            "--name",
            name,
            "--device",
            "cpu",
            "--slots",
            "1",
            "--threads",
            str(threads),
            "--spool",
            str(run_dir / "spool" / name),
            "--checkpoints",
            str(run_dir / "checkpoints"),
            "--benchmark-seconds",
            str(benchmark_seconds),
            *offer,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=log_file,
            stderr=log_file,
        )
    finally:
        log_file.close()


@dataclass(frozen=True, slots=True)
class RunOutcome:
    """How ``nasd run`` ended: each experiment's best trial so far, and whether Ctrl-C stopped it.

    ``bests`` maps every experiment of the run (one per model) to its best trial, None where it
    has no finished evaluation.
    """

    bests: dict[str, dict[str, Any] | None]
    interrupted: bool = False

    @property
    def found(self) -> bool:
        """True when every experiment of the run has a best trial (the run's exit status)."""
        return bool(self.bests) and all(best is not None for best in self.bests.values())


async def run_local(options: RunOptions, out: IO[str] = sys.stdout) -> RunOutcome:
    """Run every experiment to completion (or Ctrl-C); return their best trials."""
    configs = list(options.configs)
    options = start_fresh(options, out)
    run_dir = options.db.parent / options.name
    run_dir.mkdir(parents=True, exist_ok=True)
    if all(_already_complete(options.db, config) for config in configs):
        print(
            f"{options.name}: already complete in {options.db} (use --fresh to start over)",
            file=out,
        )
        ProgressView(configs, options.db, out).finish(False, complete_before=True)
        outcome = RunOutcome(_bests(options.db, configs))
        write_figures(configs, outcome.bests, out, missing_only=True)
        return outcome
    broker = EmbeddedBroker()
    await broker.start()
    daemon = Daemon(
        DaemonOptions(BrokerUrl.parse(broker.url), options.db, connect_timeout_s=15.0), configs
    )
    trainers = sorted({config.trainer for config in configs})
    view = ProgressView(configs, options.db, out)
    interrupted = asyncio.Event()
    loop = asyncio.get_running_loop()
    with contextlib.suppress(NotImplementedError):
        import signal

        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, interrupted.set)
    try:
        # The daemon runs in this group: if it fails, the group cancels the supervision below,
        # whose cleanup still stops the agents, and then raises the daemon's error. If the
        # supervision fails instead, the cleanup lets the daemon stop gracefully before the group
        # would cancel it.
        async with asyncio.TaskGroup() as group:
            daemon_task = group.create_task(daemon.run(install_signals=False), name="daemon")
            agents: list[asyncio.subprocess.Process] = []
            try:
                await _until_ready(group, daemon, daemon_task)
                agents = [
                    await _spawn_agent(
                        broker.url,
                        i,
                        options.agents,
                        run_dir,
                        options.benchmark_seconds,
                        trainers,
                    )
                    for i in range(options.agents)
                ]
                view.start(broker.url, options.agents)
                while not interrupted.is_set() and not daemon_task.done():
                    summaries = view.refresh()
                    if summaries is not None and all(
                        summary["status"] in _FINISHED for summary in summaries
                    ):
                        break
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(interrupted.wait(), timeout=0.5)
            finally:
                await _stop_agents(agents)
                daemon.stop()
                await asyncio.wait([daemon_task])
    except BaseExceptionGroup as failed:
        raise _sole_error(failed) from None
    finally:
        await broker.stop()
    view.finish(interrupted.is_set())
    outcome = RunOutcome(_bests(options.db, configs), interrupted.is_set())
    if not outcome.interrupted:
        write_figures(configs, outcome.bests, out)
    return outcome


_FINISHED = ("done", "cancelled")
"""Experiment statuses after which ``nasd run`` has nothing left to wait for."""


async def _until_ready(
    group: asyncio.TaskGroup, daemon: Daemon, daemon_task: asyncio.Task[None]
) -> None:
    """Wait until the daemon serves; ConfigError if it ended before that without an error."""
    ready = group.create_task(daemon.ready.wait(), name="daemon-ready")
    await asyncio.wait([ready, daemon_task], return_when=asyncio.FIRST_COMPLETED)
    if not ready.done():
        ready.cancel()
        raise ConfigError("the daemon stopped before it was ready")


def _sole_error(failed: BaseExceptionGroup[BaseException]) -> BaseException:
    """The one error inside ``failed`` (through nested groups), or ``failed`` itself if several.

    Callers of :func:`run_local` handle nasd's own errors (a ConfigError from the daemon, say),
    not the task groups they travelled through.
    """
    error: BaseException = failed
    while isinstance(error, BaseExceptionGroup) and len(error.exceptions) == 1:
        error = error.exceptions[0]
    return error


async def _stop_agents(agents: list[asyncio.subprocess.Process]) -> None:
    for proc in agents:
        if proc.returncode is None:
            proc.terminate()
    for proc in agents:
        try:
            await asyncio.wait_for(proc.wait(), timeout=15)
        except TimeoutError:
            proc.kill()
            await proc.wait()


def _already_complete(db: Path, config: ExperimentConfig) -> bool:
    """True if the database holds this experiment, finished, at this budget or more."""
    if not db.exists() or _has_no_tables(db):
        return False  # a first run killed before the schema existed: the daemon creates it
    conn = open_reader(db)
    try:
        summary = queries.experiment_summary(conn, config.name)
    finally:
        conn.close()
    return (
        summary is not None and summary["status"] == "done" and summary["budget"] >= config.budget
    )


def _bests(db: Path, configs: Sequence[ExperimentConfig]) -> dict[str, dict[str, Any] | None]:
    if not db.exists() or _has_no_tables(db):
        return {config.name: None for config in configs}
    conn = open_reader(db)
    try:
        return {config.name: queries.best_trial(conn, config.name) for config in configs}
    finally:
        conn.close()


def default_db(configs: Sequence[ExperimentConfig]) -> Path:
    """Where ``nasd run`` keeps a file's database unless ``--db`` says otherwise."""
    return Path("runs") / f"{run_name(configs)}.db"


def _has_no_tables(db: Path) -> bool:
    """True for an empty SQLite file (read-only look; a foreign file is refused later)."""
    try:
        conn = sqlite3.connect(f"file:{db.resolve()}?mode=ro", uri=True)
    except sqlite3.Error:
        return False
    try:
        return conn.execute("SELECT COUNT(*) FROM sqlite_master").fetchone()[0] == 0
    except sqlite3.Error:
        return False  # not a database: open_reader says so in one line
    finally:
        conn.close()


FIGURE_TRAINER = "unet_em"
"""The trainer whose models may ask for a figure (``task.options.figure``, a PNG path)."""


def write_figures(
    configs: Sequence[ExperimentConfig],
    bests: Mapping[str, Mapping[str, Any] | None],
    out: IO[str],
    *,
    missing_only: bool = False,
) -> list[Path]:
    """Draw the U-Net EM figure of every model that asks for one; return the paths written.

    A model asks with ``figure`` in its ``task.options`` (a path relative to the working
    directory) and trainer ``unet_em``; the figure compares the default U-Net with the model's
    best genotype on the held-out slices of ``task.options.data``. Two models asking for the
    same path get the model name added before the suffix. ``missing_only`` skips figures that
    exist already (a run found complete). The drawing code lives with the agent (it trains);
    without the agent extra one line says so and nothing fails.
    """
    wanted = [
        config
        for config in configs
        if config.trainer == FIGURE_TRAINER and config.task.get("options", {}).get("figure")
    ]
    if not wanted:
        return []
    try:
        figure_module = importlib.import_module("agents.unet_figure")
    except ImportError as exc:
        print(
            f"figure: not drawn: it needs the agent extra (pip install 'nasd[agent]'): {exc}",
            file=out,
        )
        return []
    written: list[Path] = []
    for config, path in zip(wanted, _figure_paths(wanted), strict=True):
        best = bests.get(config.name)
        options = dict(config.task.get("options", {}))
        if best is None:
            print(f"{config.name}: no figure: no finished evaluation", file=out)
        elif "data" not in options:
            print(f"{config.name}: no figure: task.options.data names no data folder", file=out)
        elif not (missing_only and path.exists()):
            try:
                result = figure_module.write_figure(
                    options["data"], config.space, best["genotype"], path, options=options
                )
            except (NasdError, OSError, ValueError) as exc:
                print(f"{config.name}: figure not drawn: {exc}", file=out)
                continue
            done = Path(result) if isinstance(result, str | Path) else path
            print(f"{config.name}: figure written to {done}", file=out, flush=True)
            written.append(done)
    return written


def _figure_paths(configs: Sequence[ExperimentConfig]) -> list[Path]:
    """Each model's figure path; a path asked for twice gets the model's name before its suffix."""
    paths = [Path(str(config.task["options"]["figure"])) for config in configs]
    return [
        path.with_name(f"{path.stem}.{config.model or config.name}{path.suffix}")
        if paths.count(path) > 1
        else path
        for config, path in zip(configs, paths, strict=True)
    ]
