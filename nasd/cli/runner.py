"""``nasd run``: the whole service in one command — embedded broker, daemon, local agents.

Everything a run writes lives beside its database: ``<db dir>/<experiment>/`` holds the daemon and
agent logs, the agents' spools and the checkpoints. Running the same command again resumes the
experiment from its database; ``--fresh`` deletes the database first.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sqlite3
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from nasd.cli.progress import ProgressView
from nasd.config import ExperimentConfig
from nasd.errors import ConfigError
from nasd.mqtt import BrokerUrl
from nasd.mqtt.broker import EmbeddedBroker
from nasd.service.daemon import Daemon, DaemonOptions
from nasd.store import open_reader, queries


@dataclass(frozen=True, slots=True)
class RunOptions:
    """What ``nasd run`` was asked to do."""

    config: ExperimentConfig
    db: Path
    agents: int = 2
    fresh: bool = False
    benchmark_seconds: float = 1.0


def delete_database(db: Path) -> None:
    """Remove a database and its WAL files (``--fresh``)."""
    for suffix in ("", "-wal", "-shm"):
        with contextlib.suppress(FileNotFoundError):
            Path(f"{db}{suffix}").unlink()


async def _spawn_agent(
    url: str, index: int, count: int, run_dir: Path, benchmark_seconds: float, trainer: str
) -> asyncio.subprocess.Process:
    threads = max(1, (os.cpu_count() or 1) // count)
    name = f"local-{index}"
    # Agents run only the trainers they offer: a user's module:function must be named to them.
    offer = ["--trainer", trainer] if ":" in trainer else []
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
    """How ``nasd run`` ended: the best trial so far and whether Ctrl-C stopped it."""

    best: dict[str, Any] | None
    interrupted: bool = False


async def run_local(options: RunOptions, out: IO[str] = sys.stdout) -> RunOutcome:
    """Run the experiment to completion (or Ctrl-C); return its best trial."""
    config = options.config
    if options.fresh:
        delete_database(options.db)
    run_dir = options.db.parent / config.name
    run_dir.mkdir(parents=True, exist_ok=True)
    if _already_complete(options.db, config):
        print(
            f"{config.name}: already complete in {options.db} (use --fresh to start over)", file=out
        )
        return RunOutcome(_best(options.db, config.name))
    broker = EmbeddedBroker()
    await broker.start()
    daemon = Daemon(
        DaemonOptions(BrokerUrl.parse(broker.url), options.db, connect_timeout_s=15.0), [config]
    )
    view = ProgressView(config, options.db, out)
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
                        options.config.trainer,
                    )
                    for i in range(options.agents)
                ]
                view.start(broker.url, options.agents)
                while not interrupted.is_set() and not daemon_task.done():
                    summary = view.refresh()
                    if summary is not None and summary["status"] in ("done", "cancelled"):
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
    return RunOutcome(_best(options.db, config.name), interrupted.is_set())


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


def _best(db: Path, name: str) -> dict[str, Any] | None:
    conn = open_reader(db)
    try:
        return queries.best_trial(conn, name)
    finally:
        conn.close()


def default_db(config: ExperimentConfig) -> Path:
    """Where ``nasd run`` keeps an experiment's database unless ``--db`` says otherwise."""
    return Path("runs") / f"{config.name}.db"


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
