"""Real processes on loopback, shared by the tests and the benchmarks.

The integration tests (``tests/brokers.py``, ``tests/integration/procs.py``) and
``benchmarks/throughput.py`` start the same things: a Mosquitto on a free port with a generated
config, the daemon (``nasd serve``) from a settings file, helper processes whose output goes to
a log file; they wait for ports and for conditions, stop processes (SIGTERM, then SIGKILL) and
read the daemon's database without disturbing its writer. Keeping one copy here means a fix to
any of it (a port race, a stuck process, a locked database) reaches both.

Everything runs from the repository root with it on ``PYTHONPATH`` (:func:`python_env`), so test
trainers under ``tests/`` and the ``benchmarks`` package are importable by module path.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from nasd.mqtt.broker import free_port

__all__ = [
    "MOSQUITTO_FALLBACKS",
    "MOSQUITTO_MISSING",
    "ROOT",
    "MosquittoNotFound",
    "MosquittoProcess",
    "count_results",
    "find_mosquitto",
    "free_port",
    "kill",
    "log_tail",
    "mosquitto_config",
    "open_ro",
    "port_is_closed",
    "python_env",
    "query",
    "retained_state",
    "spawn",
    "start_daemon",
    "stop",
    "wait_port",
    "wait_until",
    "write_experiment",
    "write_settings",
]

ROOT = Path(__file__).resolve().parent.parent
"""The repository root: the working directory of every process started here."""

MOSQUITTO_MISSING = "mosquitto not found: run `make test`, which installs it"
MOSQUITTO_FALLBACKS = ("/usr/sbin/mosquitto", "/usr/local/sbin/mosquitto", "/usr/bin/mosquitto")
"""Where apt and source installs put the binary when ``sbin`` is not on PATH."""
START_TIMEOUT_S = 10.0
STOP_TIMEOUT_S = 10.0
VERBOSE_LOG = ("error", "warning", "notice", "information")
"""Mosquitto's default log types here: connections and disconnections, for failing tests."""


# -- ports and processes ------------------------------------------------------------------------


def wait_port(
    host: str,
    port: int,
    timeout: float = START_TIMEOUT_S,
    *,
    process: subprocess.Popen[bytes] | None = None,
) -> None:
    """Block until ``host:port`` accepts TCP connections; TimeoutError after ``timeout`` s.

    With ``process``, give up (TimeoutError too) as soon as it exits: the server that should
    open the port is gone, so waiting longer only delays the failure.
    """
    deadline = time.monotonic() + timeout
    while True:
        if process is not None and process.poll() is not None:
            raise TimeoutError(f"the process for {host}:{port} exited ({process.returncode})")
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return
        except OSError as exc:
            if time.monotonic() >= deadline:
                raise TimeoutError(f"nothing listens on {host}:{port} after {timeout} s") from exc
            time.sleep(0.02)


def port_is_closed(host: str, port: int) -> bool:
    """Whether nothing accepts connections on ``host:port`` right now."""
    try:
        with socket.create_connection((host, port), timeout=0.2):
            return False
    except OSError:
        return True


def python_env() -> dict[str, str]:
    """This environment with the repository on ``PYTHONPATH`` and one OpenMP thread per process.

    One thread keeps torch-using agents from oversubscribing a small machine's cores. Agents
    started with it also offer the test trainers (:data:`TEST_TRAINERS`, through
    ``$NASD_AGENT_TRAINERS``): an agent runs no ``module:function`` trainer it was not told to.
    """
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    env.setdefault("OMP_NUM_THREADS", "1")
    listed = [t.strip() for t in env.get("NASD_AGENT_TRAINERS", "").split(",") if t.strip()]
    env["NASD_AGENT_TRAINERS"] = ",".join(dict.fromkeys([*listed, *TEST_TRAINERS]))
    return env


TEST_TRAINERS = ("tests.integration.trainers:sleepy", "tests.faults.trainer:train")
"""The ``module:function`` trainers the integration tests, fault suite and benchmarks use."""


def spawn(
    argv: Sequence[str], log: Path, *, env: dict[str, str] | None = None, cwd: Path = ROOT
) -> subprocess.Popen[bytes]:
    """Start ``argv`` with stdout and stderr appended to ``log`` (restarts keep earlier output).

    The child gets its own session: a Ctrl-C in the terminal reaches only the test runner or the
    benchmark, which then stops its children in order instead of having them all die at once.
    """
    with log.open("ab") as handle:
        return subprocess.Popen(
            list(argv),
            cwd=cwd,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=handle,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def stop(process: subprocess.Popen[bytes], timeout: float = 20) -> int:
    """SIGTERM, then SIGKILL if it does not exit in time; returns the exit status.

    A SIGCONT goes first, since a SIGSTOPped process cannot act on SIGTERM.
    """
    if process.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            process.send_signal(signal.SIGCONT)
            process.send_signal(signal.SIGTERM)
        try:
            return process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
    return process.wait()


def kill(process: subprocess.Popen[bytes]) -> None:
    """SIGKILL and reap: the process vanishes without cleaning up."""
    with contextlib.suppress(ProcessLookupError):
        process.send_signal(signal.SIGKILL)
    process.wait()


def log_tail(log: Path, lines: int = 30) -> str:
    """The last ``lines`` lines of a log file under a header naming it, for failure messages."""
    try:
        text = log.read_text(errors="replace").splitlines()
    except OSError:
        return f"--- {log.name} (no log) ---"
    return f"--- {log.name} ---\n" + "\n".join(text[-lines:])


def wait_until(
    predicate: Callable[[], bool],
    timeout: float,
    what: str,
    processes: list[subprocess.Popen[bytes]] | None = None,
    logs: list[Path] | None = None,
) -> None:
    """Poll ``predicate`` every 0.1 s; AssertionError naming ``what`` and the log tails on failure.

    Fails early when one of ``processes`` has exited other than cleanly or by SIGTERM/SIGKILL (a
    crash), since the condition then cannot come true.
    """
    deadline = time.monotonic() + timeout
    problem = f"timed out after {timeout:.0f} s waiting for {what}"
    while time.monotonic() < deadline:
        if predicate():
            return
        crashed = [p for p in processes or [] if p.poll() not in (None, 0, -9, -15)]
        if crashed:
            problem = f"process {crashed[0].args!r} exited ({crashed[0].returncode}) before {what}"
            break
        time.sleep(0.1)
    tails = "\n".join(log_tail(log) for log in logs or [] if log.exists())
    raise AssertionError(f"{problem}\n{tails}")


# -- Mosquitto ----------------------------------------------------------------------------------


class MosquittoNotFound(RuntimeError):
    """No mosquitto binary on this machine."""


def find_mosquitto(fallbacks: Sequence[str] = MOSQUITTO_FALLBACKS) -> str:
    """Path of the mosquitto binary: on PATH, else the first executable of ``fallbacks``."""
    found = shutil.which("mosquitto")
    if found:
        return found
    for candidate in fallbacks:
        if os.access(candidate, os.X_OK):
            return candidate
    raise MosquittoNotFound(MOSQUITTO_MISSING)


def mosquitto_config(
    host: str,
    port: int,
    *,
    max_inflight_messages: int = 100,
    max_queued_messages: int = 10_000,
    log_types: Sequence[str] = VERBOSE_LOG,
    extra: str = "",
    allow_anonymous: bool = True,
    persistence_dir: Path | None = None,
) -> str:
    """A Mosquitto config: one anonymous loopback listener, no persistence, log to stderr.

    ``set_tcp_nodelay`` is always on: without it each small QoS-1 exchange can stall ~40 ms on
    Nagle's algorithm meeting delayed ACKs. ``max_inflight_messages`` 0 means unlimited (the
    benchmark's setting, so the broker never holds back PUBLISHes awaiting PUBACKs); deep queues
    let fault-injection tests and benchmarks measure nasd rather than broker limits. ``extra``
    is appended as is (another listener with TLS, say; or ``password_file`` and ``acl_file``
    lines, with ``allow_anonymous=False`` so that every client needs an account).

    With ``persistence_dir``, Mosquitto's default persistence instead of none: ``persistence
    true`` with its database in that directory, saved on a clean shutdown and every
    ``autosave_interval`` (1800 s by default), so a restart after SIGKILL brings back the last
    save. ``user`` names the current user so that a broker started as root may write there.
    """
    if persistence_dir is None:
        persistence = ["persistence false"]
    else:
        import pwd

        persistence = [
            f"user {pwd.getpwuid(os.geteuid()).pw_name}",
            "persistence true",
            f"persistence_location {persistence_dir}/",
        ]
    lines = [
        f"listener {port} {host}",
        f"allow_anonymous {'true' if allow_anonymous else 'false'}",
        *persistence,
        "set_tcp_nodelay true",
        f"max_queued_messages {max_queued_messages}",
        f"max_inflight_messages {max_inflight_messages}",
        # stderr, which MosquittoProcess sends to its log: mosquitto drops privileges when
        # started as root and could not open a file in a root-owned temporary directory itself.
        "log_dest stderr",
        *(f"log_type {kind}" for kind in log_types),
        "connection_messages true",
        "log_timestamp_format %Y-%m-%dT%H:%M:%S",
        extra,
    ]
    return "\n".join(lines) + "\n"


class MosquittoProcess:
    """A real Mosquitto on a loopback port, configured from a generated file in ``workdir``.

    The config comes from :func:`mosquitto_config` (its keyword options pass through). The log
    (``log_path``) gathers the output of every start. The port is chosen once and kept across
    restarts.
    """

    def __init__(
        self,
        workdir: Path,
        *,
        host: str = "127.0.0.1",
        port: int | None = None,
        extra_config: str = "",
        max_inflight_messages: int = 100,
        max_queued_messages: int = 10_000,
        log_types: Sequence[str] = VERBOSE_LOG,
        allow_anonymous: bool = True,
        persistence_dir: Path | None = None,
    ) -> None:
        self.binary = find_mosquitto()
        self.persistence_dir = persistence_dir
        self.workdir = workdir
        self._host = host
        self._port = port if port is not None else free_port(host)
        self._port_was_chosen = port is None
        self.extra_config = extra_config
        self.allow_anonymous = allow_anonymous
        self._limits = (max_inflight_messages, max_queued_messages, tuple(log_types))
        self.config_path = workdir / "mosquitto.conf"
        self.log_path = workdir / "mosquitto.log"
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def host(self) -> str:
        """The loopback address Mosquitto listens on."""
        return self._host

    @property
    def port(self) -> int:
        """The TCP port, the same across restarts."""
        return self._port

    @property
    def url(self) -> str:
        """``mqtt://HOST:PORT``."""
        return f"mqtt://{self._host}:{self._port}"

    @property
    def pid(self) -> int | None:
        """The process id while running (for SIGSTOP tests, CPU accounting), else None."""
        process = self._process
        return process.pid if process is not None and process.poll() is None else None

    @property
    def running(self) -> bool:
        """Whether the Mosquitto process is alive."""
        return self._process is not None and self._process.poll() is None

    def start(self) -> None:
        """Start Mosquitto and wait until its port accepts connections.

        If the port was picked here and another process took it meanwhile, a new one is picked
        (only before the first successful start: restarts keep the port).
        """
        if self.running:
            raise RuntimeError("mosquitto is already running")
        inflight, queued, log_types = self._limits
        for _attempt in range(5):
            self.config_path.write_text(
                mosquitto_config(
                    self._host,
                    self._port,
                    max_inflight_messages=inflight,
                    max_queued_messages=queued,
                    log_types=log_types,
                    extra=self.extra_config,
                    allow_anonymous=self.allow_anonymous,
                    persistence_dir=self.persistence_dir,
                ),
                encoding="utf-8",
            )
            self._process = spawn(
                [self.binary, "-c", str(self.config_path)], self.log_path, cwd=self.workdir
            )
            try:
                wait_port(self._host, self._port, START_TIMEOUT_S, process=self._process)
                self._port_was_chosen = False
                return
            except TimeoutError as exc:
                self.kill()
                if not self._port_was_chosen or "in use" not in self.log_tail():
                    raise TimeoutError(f"mosquitto: {exc}; log tail:\n{self.log_tail()}") from exc
                self._port = free_port(self._host)
        raise TimeoutError(f"mosquitto did not start; log tail:\n{self.log_tail()}")

    def stop(self) -> None:
        """SIGTERM, wait for the exit (SIGKILL after 10 s) and for the port to close."""
        if self._process is not None:
            stop(self._process, STOP_TIMEOUT_S)
        self._reap()

    def kill(self) -> None:
        """SIGKILL: the broker vanishes without closing sessions cleanly."""
        if self._process is not None:
            kill(self._process)
        self._reap()

    def restart(self) -> None:
        """SIGTERM, then start again on the same port."""
        self.stop()
        self.start()

    def _reap(self) -> None:
        self._process = None
        deadline = time.monotonic() + STOP_TIMEOUT_S
        while not port_is_closed(self._host, self._port) and time.monotonic() < deadline:
            time.sleep(0.02)

    def log_tail(self, max_bytes: int = 4000) -> str:
        """The end of the broker's log, for failure messages."""
        try:
            data = self.log_path.read_bytes()
        except FileNotFoundError:
            return ""
        return data[-max_bytes:].decode("utf-8", errors="replace")

    def __repr__(self) -> str:
        return f"MosquittoProcess(url={self.url!r}, running={self.running})"


# -- the daemon and its database ----------------------------------------------------------------


def write_experiment(
    path: Path,
    name: str,
    budget: int,
    *,
    trainer: str,
    space: str = 'kind = "nb201"',
    strategy: str = "random",
    lease_ttl_s: float = 30,
    epochs: int | None = None,
    options: str = "",
) -> Path:
    """Write an experiment TOML file and return its path."""
    text = (
        f'[experiment]\nname = "{name}"\nbudget = {budget}\nseed = 1\nmax_attempts = 3\n'
        f"lease_ttl_s = {lease_ttl_s}\n\n[space]\n{space}\n\n"
        f'[strategy]\nname = "{strategy}"\n\n[task]\ntrainer = "{trainer}"\n'
    )
    if epochs is not None:
        text += f"epochs = {epochs}\n"
    if options:
        text += f"\n[task.options]\n{options}\n"
    path.write_text(text)
    return path


def write_settings(directory: Path, broker_url: str, experiment: Path) -> Path:
    """A nasd.toml for ``nasd serve`` with its database, ``nasd.db``, in ``directory``."""
    path = directory / "nasd.toml"
    path.write_text(
        f'[daemon]\nbroker = "{broker_url}"\ndb = "nasd.db"\nexperiments = ["{experiment.name}"]\n'
    )
    return path


def start_daemon(
    settings: Path, log: Path, *, log_level: str | None = None
) -> subprocess.Popen[bytes]:
    """``nasd [--log-level LEVEL] serve --config settings`` with its output in ``log``."""
    level = ["--log-level", log_level] if log_level else []
    argv = [sys.executable, "-m", "nasd.cli", *level, "serve", "--config", str(settings)]
    return spawn(argv, log, env=python_env())


def open_ro(db: Path) -> sqlite3.Connection:
    """A read-only connection: in WAL mode it never blocks the daemon's writer."""
    return sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10)


def query(db: Path, sql: str, *args: Any) -> list[tuple[Any, ...]]:
    """Run a read-only query; an absent or still-initialising database gives []."""
    if not db.exists():
        return []
    try:
        with contextlib.closing(open_ro(db)) as conn:
            return conn.execute(sql, args).fetchall()
    except sqlite3.OperationalError:
        return []


def count_results(db: Path, experiment: str) -> int:
    """Finished evaluations of ``experiment`` so far."""
    rows = query(db, "SELECT COUNT(*) FROM results WHERE experiment = ?", experiment)
    return int(rows[0][0]) if rows else 0


def retained_state(broker_url: str, topic: str, timeout: float = 5.0) -> str | None:
    """The ``state`` field of the retained envelope on ``topic`` (None if nothing is retained)."""
    import asyncio

    from nasd.core.wire import decode, message_type_for_topic
    from nasd.mqtt import BrokerUrl
    from tests.clients import mqtt_client

    async def read() -> str | None:
        broker = BrokerUrl.parse(broker_url)
        async with mqtt_client(broker.host, broker.port) as client:
            await client.subscribe(topic, qos=1)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout):
                    async for message in client.messages:
                        body = decode(message.payload, expect=message_type_for_topic(topic)).body
                        return str(body["state"])
        return None

    return asyncio.run(read())
