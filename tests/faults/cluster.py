"""A whole nasd deployment on loopback for the fault suite: Mosquitto, the daemon and N agents.

:class:`Cluster` starts a real Mosquitto on a free port, ``nasd serve`` on a temporary database
with one experiment (NAS-Bench-201 cells, the zero-cost trainer of :mod:`tests.faults.trainer`),
and ``nasd-agent`` processes; scenarios then kill, pause and restart any of them, wait for the
search to end, and hand the database to :func:`tests.faults.checker.check`.

Every process logs to a file under ``tmp`` (``daemon.log``, ``<agent>.log``,
``mosquitto/mosquitto.log``); :meth:`Cluster.log_tail` gathers their ends for failure messages.
The processes, the database helpers and the waiting come from :mod:`tests.harness`, shared with
the integration tests and the benchmarks. Agents are started here rather than with
``tests.integration.procs.start_agent`` because they need options it does not take (``--trainer``
for the fault trainer, a short heartbeat, several slots).
"""

from __future__ import annotations

import contextlib
import json
import resource
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import Self

from tests.faults.trainer import PATH as TRAINER
from tests.harness import (
    ROOT,
    MosquittoProcess,
    count_results,
    kill,
    log_tail,
    python_env,
    query,
    spawn,
    stop,
    wait_until,
    write_settings,
)

__all__ = ["EXPERIMENT", "Cluster"]

EXPERIMENT = "faults"
"""The experiment every cluster runs."""

START_TIMEOUT_S = 60.0
"""Agents import torch at start-up: on a busy two-core machine that alone can take ~10 s."""


def _events(log: Path, event: str) -> int:
    """How many JSON log lines of ``log`` have ``"event": event``."""
    try:
        text = log.read_text(errors="replace")
    except OSError:
        return 0
    count = 0
    for line in text.splitlines():
        if f'"{event}"' in line and line.startswith("{"):
            with contextlib.suppress(ValueError):
                count += json.loads(line).get("event") == event
    return count


class Cluster:
    """Mosquitto, ``nasd serve`` and ``agents`` agents with ``slots`` slots each, under ``tmp``.

    The experiment has ``budget`` trials of strategy ``strategy`` on NAS-Bench-201 cells, leases
    of ``lease_ttl_s`` seconds, ``max_attempts`` attempts per trial, and jobs that take between
    ``min_s`` and ``max_s`` seconds. ``persistence`` turns on Mosquitto's default persistence
    (its database under ``tmp/mosquitto``). ``daemon_env`` adds environment variables to every
    daemon start. ``broker_url`` is what the daemon and agents connect to unless a start names
    another URL (a proxy, say); a test may also reassign it before :meth:`start`.
    """

    def __init__(
        self,
        tmp: Path,
        *,
        agents: int = 3,
        slots: int = 2,
        budget: int = 100,
        lease_ttl_s: float = 3.0,
        max_attempts: int = 20,
        strategy: str = "random",
        min_s: float = 0.05,
        max_s: float = 1.0,
        persistence: bool = False,
        daemon_env: dict[str, str] | None = None,
    ) -> None:
        self.tmp = tmp
        tmp.mkdir(parents=True, exist_ok=True)
        broker_dir = tmp / "mosquitto"
        broker_dir.mkdir(exist_ok=True)
        self.broker = MosquittoProcess(
            broker_dir, persistence_dir=broker_dir if persistence else None
        )
        self.broker_url = self.broker.url
        self.experiment = EXPERIMENT
        self.db = tmp / "nasd.db"
        self.daemon_log = tmp / "daemon.log"
        self.daemon_env = dict(daemon_env or {})
        self.slots = slots
        self.initial_agents = agents
        self._experiment_settings = {
            "lease_ttl_s": lease_ttl_s,
            "max_attempts": max_attempts,
            "strategy": strategy,
            "min_s": min_s,
            "max_s": max_s,
        }
        self.experiment_path = self._write_experiment(EXPERIMENT, budget)
        self.extra_experiments: list[str] = []
        self._daemon: subprocess.Popen[bytes] | None = None
        self._log_pipe: subprocess.Popen[bytes] | None = None
        self._online_before = 0  # "daemon.online" lines in the log when the daemon last started
        self._agents: dict[str, subprocess.Popen[bytes]] = {}
        self._agent_logs: dict[str, Path] = {}
        self._connects_before: dict[str, int] = {}  # per agent: its log's connections at start
        self._next_agent = 0

    def _write_experiment(self, name: str, budget: int) -> Path:
        s = self._experiment_settings
        path = self.tmp / f"{name}.toml"
        path.write_text(
            f'[experiment]\nname = "{name}"\nbudget = {budget}\nseed = 1\n'
            f"max_attempts = {s['max_attempts']}\nlease_ttl_s = {s['lease_ttl_s']}\n\n"
            f"[space]\nkind = 'nb201'\n\n[strategy]\nname = '{s['strategy']}'\n\n"
            f"[task]\ntrainer = '{TRAINER}'\n\n[task.options]\n"
            f"min_s = {s['min_s']}\nmax_s = {s['max_s']}\n",
            encoding="utf-8",
        )
        return path

    def add_experiment(self, name: str, budget: int) -> None:
        """Another experiment like the main one, submitted from the next daemon start on.

        Some faults need several experiments (a crash between two strategies' snapshots).
        """
        self._write_experiment(name, budget)
        self.extra_experiments.append(name)

    def _write_settings(self, broker_url: str) -> Path:
        path = write_settings(self.tmp, broker_url, self.experiment_path)
        if self.extra_experiments:
            names = [self.experiment_path.name, *(f"{n}.toml" for n in self.extra_experiments)]
            listed = ", ".join(f'"{n}"' for n in names)
            text = path.read_text(encoding="utf-8")
            path.write_text(
                text.replace(f'["{self.experiment_path.name}"]', f"[{listed}]"), encoding="utf-8"
            )
        return path

    # -- the whole cluster ----------------------------------------------------------------------

    def start(self, *, wait_online: bool = True, log_through_pipe: bool = False) -> None:
        """Start the broker and the agents, then the daemon; wait until the daemon is online.

        The agents connect first, so the search starts as soon as the daemon is up. With
        ``wait_online=False`` the daemon is started but not waited for (it may be meant to crash
        at start-up). ``log_through_pipe`` is passed to :meth:`start_daemon`.
        """
        if not self.broker.running:
            self.broker.start()
        names = [self.start_agent(wait=False) for _ in range(self.initial_agents)]
        for name in names:
            self._wait_agent(name)
        self.start_daemon(wait=wait_online, log_through_pipe=log_through_pipe)

    def close(self) -> None:
        """Stop the agents (SIGTERM: they hand their jobs back), the daemon, then the broker."""
        for process in self._agents.values():
            stop(process)
        if self._daemon is not None:
            stop(self._daemon)
        if self._log_pipe is not None:
            stop(self._log_pipe)  # it ends by itself once the daemon's end of the pipe closes
        self.broker.stop()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -- the daemon -----------------------------------------------------------------------------

    def start_daemon(
        self,
        broker_url: str | None = None,
        env: dict[str, str] | None = None,
        *,
        wait: bool = True,
        log_through_pipe: bool = False,
    ) -> None:
        """``nasd serve`` on the cluster's database; wait until it says ``daemon.online``.

        ``env`` adds variables for this start only, on top of ``daemon_env`` (an empty
        ``NASD_CRASH_AT`` switches a crash point off). ``wait=False`` returns at once.
        ``log_through_pipe`` sends the daemon's output through a pipe to a ``cat`` that appends
        it to the log, so that a file-size limit put on the daemon (:meth:`limit_daemon_writes`)
        hits only its database files, as a full disk would, and not its log.
        """
        if self._daemon is not None and self._daemon.poll() is None:
            raise RuntimeError("the daemon is already running")
        url = broker_url or self.broker_url
        settings = self._write_settings(url)
        self._online_before = _events(self.daemon_log, "daemon.online")
        argv = [sys.executable, "-m", "nasd.cli", "serve", "--config", str(settings), "--broker"]
        daemon_env = {**python_env(), **self.daemon_env, **(env or {})}
        if log_through_pipe:
            with self.daemon_log.open("ab") as handle:
                self._log_pipe = subprocess.Popen(
                    ["cat"], stdin=subprocess.PIPE, stdout=handle, start_new_session=True
                )
            assert self._log_pipe.stdin is not None
            self._daemon = subprocess.Popen(
                [*argv, url],
                cwd=ROOT,
                env={**daemon_env, "PYTHONUNBUFFERED": "1"},
                stdin=subprocess.DEVNULL,
                stdout=self._log_pipe.stdin,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
            self._log_pipe.stdin.close()  # the daemon holds the write end now
        else:
            self._daemon = spawn([*argv, url], self.daemon_log, env=daemon_env)
        if wait:
            self.wait_daemon_online()

    def wait_daemon_online(self, timeout: float = START_TIMEOUT_S) -> None:
        """Wait until the daemon last started says ``daemon.online`` (AssertionError if not)."""
        assert self._daemon is not None, "the daemon was never started"
        before = self._online_before
        wait_until(
            lambda: _events(self.daemon_log, "daemon.online") > before,
            timeout,
            "the daemon to be online",
            processes=[self._daemon],
            logs=[self.daemon_log],
        )

    def daemon_came_online(self) -> bool:
        """Whether the daemon last started has said ``daemon.online`` yet."""
        return _events(self.daemon_log, "daemon.online") > self._online_before

    @property
    def daemon_pid(self) -> int | None:
        """The daemon's process id while it runs, else None."""
        daemon = self._daemon
        return daemon.pid if daemon is not None and daemon.poll() is None else None

    def limit_daemon_writes(self, max_bytes: int | None) -> None:
        """Limit the size of files the running daemon may write (``RLIMIT_FSIZE``); None lifts it.

        Python ignores ``SIGXFSZ``, so a write past the limit fails with ``EFBIG`` and SQLite
        reports an I/O error: to the daemon, a disk that filled up. Start the daemon with
        ``log_through_pipe=True`` first, or its own log writes fail too.
        """
        pid = self.daemon_pid
        assert pid is not None, "the daemon is not running"
        _soft, hard = resource.prlimit(pid, resource.RLIMIT_FSIZE)
        resource.prlimit(
            pid, resource.RLIMIT_FSIZE, (hard if max_bytes is None else max_bytes, hard)
        )

    def kill_daemon(self) -> None:
        """SIGKILL the daemon: it dies mid-whatever, as in a power cut."""
        if self._daemon is not None:
            kill(self._daemon)

    def stop_daemon(self) -> int:
        """SIGTERM the daemon (a graceful drain) and return its exit status."""
        if self._daemon is None:
            raise RuntimeError("the daemon was never started")
        return stop(self._daemon)

    def daemon_exit_code(self) -> int | None:
        """The daemon's exit status once it has exited, else None (also when never started)."""
        return None if self._daemon is None else self._daemon.poll()

    def wait_daemon_exit(self, timeout: float) -> int:
        """Wait for the daemon to exit on its own (a crash point, say); its exit status.

        AssertionError with the log tails if it is still running after ``timeout`` seconds.
        """
        assert self._daemon is not None, "the daemon was never started"
        try:
            return self._daemon.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(
                f"the daemon did not exit within {timeout} s\n{self.log_tail()}"
            ) from None

    # -- agents ---------------------------------------------------------------------------------

    def start_agent(
        self, name: str | None = None, broker_url: str | None = None, *, wait: bool = True
    ) -> str:
        """Start a ``nasd-agent`` (a new name unless given) and return its name.

        With ``wait`` (the default) it returns once the agent has connected to the broker.
        A restarted agent keeps its spool (``tmp/spool/<name>``) and log.
        """
        if name is None:
            name = f"agent-{self._next_agent}"
            self._next_agent += 1
        if name in self._agents and self._agents[name].poll() is None:
            raise RuntimeError(f"agent {name} is already running")
        url = broker_url or self.broker_url
        log = self.tmp / f"{name}.log"
        self._connects_before[name] = _events(log, "broker.connected")
        argv = [
            *(sys.executable, "-m", "agents.cli", "--broker", url, "--name", name),
            *("--slots", str(self.slots), "--benchmark-seconds", "0.05", "--heartbeat", "0.5"),
            *("--spool", str(self.tmp / "spool" / name)),
            *("--checkpoints", str(self.tmp / "checkpoints")),
            *("--trainer", TRAINER),  # agents run only the trainers they are told to offer
        ]
        self._agents[name] = spawn(argv, log, env=python_env())
        self._agent_logs[name] = log
        if wait:
            self._wait_agent(name)
        return name

    def _wait_agent(self, name: str) -> None:
        log, before = self._agent_logs[name], self._connects_before[name]
        wait_until(
            lambda: _events(log, "broker.connected") > before,
            START_TIMEOUT_S,
            f"agent {name} to connect",
            processes=[self._agents[name]],
            logs=[log],
        )

    def kill_agent(self, name: str) -> None:
        """SIGKILL an agent: its jobs' leases must expire for them to run elsewhere."""
        kill(self._agents[name])

    def stop_agent(self, name: str) -> int:
        """SIGTERM an agent (it hands its jobs back) and return its exit status."""
        return stop(self._agents[name])

    def pause_agent(self, name: str) -> None:
        """SIGSTOP an agent: a zombie that holds its leases and says nothing."""
        self._agents[name].send_signal(signal.SIGSTOP)

    def resume_agent(self, name: str) -> None:
        """SIGCONT a paused agent: it carries on as if no time had passed."""
        self._agents[name].send_signal(signal.SIGCONT)

    def agent_names(self) -> list[str]:
        """Names of the agents running now (paused ones included), in start order."""
        return [name for name, process in self._agents.items() if process.poll() is None]

    def agent_log(self, name: str) -> Path:
        """The log file of agent ``name``."""
        return self._agent_logs[name]

    # -- the database ---------------------------------------------------------------------------

    def results(self) -> int:
        """Rows in ``results`` for the experiment (read-only; never blocks the daemon)."""
        return count_results(self.db, self.experiment)

    def status(self) -> str | None:
        """The experiment's status in the database, None before it exists."""
        rows = query(self.db, "SELECT status FROM experiments WHERE name = ?", self.experiment)
        return str(rows[0][0]) if rows else None

    def wait_results(self, at_least: int, timeout: float) -> None:
        """Wait until ``at_least`` results are stored; AssertionError with the log tails."""
        self.wait_for(lambda: self.results() >= at_least, timeout, f"{at_least} results")

    def wait_done(self, timeout: float) -> None:
        """Wait until the experiment's status is ``done``; AssertionError with the log tails."""
        self.wait_for(lambda: self.status() == "done", timeout, "the experiment to be done")

    def spool_backlog(self) -> int:
        """Results the running agents still hold for an ack (0 once all are drained).

        A killed agent's spool is left out: nobody will ever send it again, and what it held
        either reached the daemon or was trained again elsewhere (the checker tells which).
        """
        total = 0
        for name in self.agent_names():
            rows = query(self.tmp / "spool" / name / "spool.db", "SELECT COUNT(*) FROM results")
            total += int(rows[0][0]) if rows else 0
        return total

    def wait_spools_drained(self, timeout: float) -> None:
        """Wait until every agent's spool is empty (every result acknowledged)."""
        self.wait_for(lambda: self.spool_backlog() == 0, timeout, "the agents' spools to drain")

    def wait_for(self, predicate: Callable[[], bool], timeout: float, what: str) -> None:
        """Poll ``predicate`` every 0.1 s; AssertionError naming ``what`` with the log tails."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if predicate():
                return
            time.sleep(0.1)
        raise AssertionError(
            f"timed out after {timeout:.0f} s waiting for {what}"
            f" (results {self.results()}, status {self.status()})\n{self.log_tail()}"
        )

    # -- diagnostics ----------------------------------------------------------------------------

    def log_tail(self, lines: int = 25) -> str:
        """The ends of the daemon's, the broker's and every agent's log."""
        parts = [log_tail(self.daemon_log, lines), log_tail(self.broker.log_path, lines)]
        parts += [log_tail(log, lines // 2) for log in self._agent_logs.values()]
        return "\n".join(parts)

    def count_log_events(self, event: str, *, daemon: bool = True) -> int:
        """How often ``event`` appears in the daemon's log (or, ``daemon=False``, the agents')."""
        if daemon:
            return _events(self.daemon_log, event)
        return sum(_events(log, event) for log in self._agent_logs.values())

    def __repr__(self) -> str:
        return f"Cluster({self.tmp}, broker={self.broker_url}, agents={self.agent_names()})"
