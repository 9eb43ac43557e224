"""SIGTERM drains and says "offline", SIGHUP reloads the settings file, and the daemon's crash
points (``NASD_CRASH_AT``) end it where the fault suite needs."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
import time
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from nasd.faults import CRASH_EXIT_CODE
from nasd.service import daemon as daemon_module
from tests.brokers import MosquittoProcess
from tests.harness import python_env, spawn
from tests.integration import procs
from tests.integration.test_daemon_control import ask, cli_client, serving

pytestmark = pytest.mark.timeout(120)


def _settings(tmp_path: Path, url: str, extra: str = "") -> Path:
    path = tmp_path / "nasd.toml"
    path.write_text(f'[daemon]\nbroker = "{url}"\ndb = "nasd.db"\n{extra}')
    return path


def _wait_online(log: Path, count: int = 1) -> None:
    procs.wait_until(
        lambda: log.exists() and log.read_text().count("daemon.online") >= count,
        30,
        "the daemon to serve",
        logs=[log],
    )


def test_sigterm_exits_0_promptly_and_leaves_offline(
    mosquitto: MosquittoProcess, tmp_path: Path
) -> None:
    url = mosquitto.url
    log = tmp_path / "daemon.log"
    daemon = procs.start_daemon(_settings(tmp_path, url), log)
    try:
        _wait_online(log)
        assert procs.retained_state(url, "nasd/v1/daemon/state") == "online"
        started = time.monotonic()
        daemon.send_signal(signal.SIGTERM)
        assert daemon.wait(10) == 0
        assert time.monotonic() - started < 10
    finally:
        procs.stop(daemon)
    assert procs.retained_state(url, "nasd/v1/daemon/state") == "offline"
    assert "daemon.stopped" in log.read_text()


def test_sighup_reloads_experiments_and_log_level_and_ignores_a_bad_file(
    mosquitto: MosquittoProcess, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    url, db = mosquitto.url, tmp_path / "nasd.db"
    settings = _settings(tmp_path, url)
    experiment = procs.write_experiment(tmp_path / "hup.toml", "hup", 3, trainer="zero")
    levels: list[str] = []
    monkeypatch.setattr(daemon_module, "_set_log_level", levels.append)

    async def names(client: object) -> list[str]:
        reply = await ask(client, "status", {})  # type: ignore[arg-type]
        return [e["name"] for e in reply["result"]["experiments"]]

    async def hangup_until(check: object, client: object) -> None:
        os.kill(os.getpid(), signal.SIGHUP)
        for _ in range(100):
            if await check(client):  # type: ignore[operator]
                return
            await asyncio.sleep(0.05)

    async def main() -> None:
        async with (
            serving(url, db, settings=settings, install_signals=True),
            cli_client(url, "operator") as operator,
        ):
            assert await names(operator) == []
            settings.write_text(
                settings.read_text() + f'experiments = ["{experiment.name}"]\nlog_level = "debug"\n'
            )

            async def has_hup(client: object) -> bool:
                return await names(client) == ["hup"]

            await hangup_until(has_hup, operator)
            assert await names(operator) == ["hup"] and levels == ["debug"]
            settings.write_text("[daemon\nbroken = ")
            with capture_logs() as logs:

                async def failed(_client: object) -> bool:
                    return any(e["event"] == "reload.failed" for e in logs)

                await hangup_until(failed, operator)
            assert any(e["event"] == "reload.failed" for e in logs)
            assert await names(operator) == ["hup"] and levels == ["debug"]  # nothing changed

    asyncio.run(main())


@pytest.mark.parametrize(
    "point", ["commit.before", "commit.after_before_publish", "publish.after_first"]
)
def test_crash_points_end_the_daemon_where_asked(
    mosquitto: MosquittoProcess, tmp_path: Path, point: str
) -> None:
    url = mosquitto.url
    log = tmp_path / "daemon.log"
    argv = [sys.executable, "-m", "nasd.cli", "serve", "--config", str(_settings(tmp_path, url))]
    env = {**python_env(), "NASD_CRASH_AT": point}
    daemon = spawn(argv, log, env=env)
    try:
        if point == "publish.after_first":
            _wait_online(log)

            async def poke() -> None:  # a batch with something to publish: the reply
                async with cli_client(url, "poker") as poker:
                    with contextlib.suppress(TimeoutError):  # it may die before replying
                        await ask(poker, "status", {}, timeout=3)

            asyncio.run(poke())
        assert daemon.wait(30) == CRASH_EXIT_CODE
    finally:
        procs.stop(daemon)
    assert f"crash point {point} reached" in log.read_text()
