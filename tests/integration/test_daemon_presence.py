"""One daemon per broker (defect 5 of issue 6): a second one refuses to start, a takeover stops the
older one, and a restart after SIGKILL does not wait."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from nasd.core.wire import daemon_state_topic, decode
from nasd.mqtt import BrokerUrl
from nasd.service import daemon as daemon_module
from nasd.service.daemon import Daemon, DaemonOptions
from nasd.service.presence import DaemonConflict
from tests.brokers import MosquittoProcess
from tests.clients import mqtt_client
from tests.integration import procs
from tests.integration.test_daemon_control import ask, cli_client, serving

pytestmark = pytest.mark.timeout(120)


def _serve(settings: Path, db: Path) -> subprocess.CompletedProcess[str]:
    """``nasd serve`` to completion (it should refuse at once)."""
    return subprocess.run(
        [sys.executable, "-m", "nasd.cli", "serve", "--config", str(settings), "--db", str(db)],
        cwd=procs.ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.mark.parametrize("client_id", ["nasd-daemon", "nasd-daemon-2"])
def test_a_second_daemon_refuses_to_start_and_the_first_keeps_working(
    mosquitto: MosquittoProcess, tmp_path: Path, client_id: str
) -> None:
    url, db = mosquitto.url, tmp_path / "nasd.db"
    settings = tmp_path / "nasd.toml"
    settings.write_text(f'[daemon]\nbroker = "{url}"\nclient_id = "{client_id}"\n')

    async def main() -> None:
        async with serving(url, db), cli_client(url, "watcher") as watcher:
            started = time.monotonic()
            second = await asyncio.to_thread(_serve, settings, tmp_path / "other.db")
            assert time.monotonic() - started < 20
            assert second.returncode == 2, second.stderr
            lines = second.stderr.strip().splitlines()
            assert len(lines) == 1 and "Traceback" not in second.stderr, second.stderr
            assert "another nasd daemon is serving" in lines[0]
            assert f"pid {os.getpid()}" in lines[0]
            assert not (tmp_path / "other.db").exists()  # refused before touching a database
            reply = await ask(watcher, "status", {})  # the first one was never disturbed
            assert reply["ok"] is True

    asyncio.run(main())


def test_a_takeover_stops_the_older_daemon_without_clearing_the_newer_ones_state(
    mosquitto: MosquittoProcess, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two daemons that both passed the start-up check (started at the same moment, say)."""
    url = mosquitto.url
    broker = BrokerUrl.parse(url)

    async def main() -> None:
        older = Daemon(DaemonOptions(broker, tmp_path / "a.db", client_id="a", refresh_s=0.5))
        older_task = asyncio.create_task(older.run(install_signals=False))
        await asyncio.wait_for(older.ready.wait(), 30)

        async def no_check(*_args: object, **_kwargs: object) -> None:
            return None

        monkeypatch.setattr(daemon_module, "check_alone", no_check)
        async with serving(url, tmp_path / "b.db", client_id="b", refresh_s=0.5) as newer:
            with pytest.raises(DaemonConflict, match="took over"):
                await asyncio.wait_for(older_task, 20)
            await asyncio.sleep(1.0)  # the older one is gone: the retained state stays the newer's
            async with mqtt_client(broker.host, broker.port, "reader") as reader:
                await reader.subscribe(daemon_state_topic(), qos=1)
                async with asyncio.timeout(5):
                    async for message in reader.messages:
                        body = decode(message.payload, expect="daemon.state").body
                        break
            assert body["state"] == "online"
            assert body["instance"] == newer.identity.instance

    asyncio.run(main())


def test_a_restart_after_sigkill_does_not_wait(mosquitto: MosquittoProcess, tmp_path: Path) -> None:
    url = mosquitto.url
    settings = tmp_path / "nasd.toml"
    settings.write_text(f'[daemon]\nbroker = "{url}"\ndb = "nasd.db"\n')
    log = tmp_path / "daemon.log"
    daemon = procs.start_daemon(settings, log)
    try:
        procs.wait_until(lambda: "daemon.online" in log.read_text(), 30, "the daemon", logs=[log])
        procs.kill(daemon)
        started = time.monotonic()
        daemon = procs.start_daemon(settings, log)
        procs.wait_until(
            lambda: log.read_text().count("daemon.online") >= 2, 30, "the restart", logs=[log]
        )
        assert time.monotonic() - started < 8, "the restart waited for the killed daemon"
    finally:
        assert procs.stop(daemon) == 0
