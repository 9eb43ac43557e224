"""Real processes for integration tests: the daemon (``nasd serve``) and agents (``nasd-agent``).

Each runs as ``python -m ...`` from the repository root so that test trainers under ``tests/`` are
importable by ``module:function`` path, exactly as a user's plug-in would be.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]


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
    """A nasd.toml for ``nasd serve`` with its database in ``directory``."""
    path = directory / "nasd.toml"
    path.write_text(
        f'[daemon]\nbroker = "{broker_url}"\ndb = "nasd.db"\nexperiments = ["{experiment.name}"]\n'
    )
    return path


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    env.setdefault("OMP_NUM_THREADS", "1")
    return env


def cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run ``nasd ARGS`` to completion (60 s at most) and capture its output."""
    return subprocess.run(
        [sys.executable, "-m", "nasd.cli", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def start_daemon(settings: Path, log: Path) -> subprocess.Popen[bytes]:
    """``nasd serve --config settings`` with its logs in ``log``."""
    with log.open("ab") as handle:
        return subprocess.Popen(
            [sys.executable, "-m", "nasd.cli", "serve", "--config", str(settings)],
            cwd=ROOT,
            env=_env(),
            stdout=handle,
            stderr=subprocess.STDOUT,
        )


def start_agent(
    broker_url: str, name: str, directory: Path, *, slots: int = 1, heartbeat: float = 0.5
) -> subprocess.Popen[bytes]:
    """A ``nasd-agent`` with one torch thread, its spool and log under ``directory``."""
    with (directory / f"{name}.log").open("ab") as handle:
        return subprocess.Popen(
            [
                sys.executable,
                "-m",
                "agents.cli",
                "--broker",
                broker_url,
                "--name",
                name,
                "--slots",
                str(slots),
                "--threads",
                "1",
                "--benchmark-seconds",
                "0.1",
                "--heartbeat",
                str(heartbeat),
                "--spool",
                str(directory / "spool" / name),
                "--checkpoints",
                str(directory / "checkpoints"),
            ],
            cwd=ROOT,
            env=_env(),
            stdout=handle,
            stderr=subprocess.STDOUT,
        )


def stop(process: subprocess.Popen[bytes], timeout: float = 20) -> int:
    """SIGTERM, then SIGKILL if it does not exit in time; returns the exit status."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            return process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
    return process.wait()


def kill(process: subprocess.Popen[bytes]) -> None:
    """SIGKILL and reap."""
    with contextlib.suppress(ProcessLookupError):
        process.send_signal(signal.SIGKILL)
    process.wait()


def query(db: Path, sql: str, *args: Any) -> list[tuple[Any, ...]]:
    """Run a read-only query; an absent or still-initialising database gives []."""
    if not db.exists():
        return []
    try:
        conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10)
        try:
            return conn.execute(sql, args).fetchall()
        finally:
            conn.close()
    except sqlite3.OperationalError:
        return []


def count_results(db: Path, experiment: str) -> int:
    """Finished evaluations of ``experiment`` so far."""
    rows = query(db, "SELECT COUNT(*) FROM results WHERE experiment = ?", experiment)
    return int(rows[0][0]) if rows else 0


def wait_until(
    predicate: Callable[[], bool],
    timeout: float,
    what: str,
    processes: list[subprocess.Popen[bytes]] | None = None,
    logs: list[Path] | None = None,
) -> None:
    """Poll ``predicate`` every 0.1 s; fail with ``what`` and the tail of the logs on timeout."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        for proc in processes or []:
            if proc.poll() is not None and proc.returncode not in (0, -9, -15):
                break
        time.sleep(0.1)
    tails = "\n".join(
        f"--- {log.name} ---\n" + "\n".join(log.read_text(errors="replace").splitlines()[-30:])
        for log in logs or []
        if log.exists()
    )
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}\n{tails}")


def retained_state(broker_url: str, topic: str, timeout: float = 5.0) -> str | None:
    """The ``state`` field of the retained envelope on ``topic`` (None if nothing is retained)."""
    import asyncio

    from nasd.mqtt import BrokerUrl
    from nasd.wire import decode, message_type_for_topic
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
