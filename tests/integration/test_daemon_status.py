"""``nasd status --broker`` against a daemon that knows thousands of agents, or whose retained
state someone overwrote with a fake "offline" (defects 2 and 11 of issue 6)."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import pytest

from nasd.core.wire import daemon_state_topic, encode
from nasd.mqtt import BrokerUrl
from nasd.store import open_writer
from tests.brokers import MosquittoProcess
from tests.clients import mqtt_client
from tests.integration import procs
from tests.integration.test_daemon_control import ask, cli_client, serving

pytestmark = pytest.mark.timeout(120)

AGENTS = 3000


def _fake_agents(db: Path, count: int) -> None:
    """``count`` agent rows, as made-up ``agent.state`` messages used to leave behind."""
    conn = open_writer(db)
    profile = json.dumps({"device": "cuda:0", "device_name": "NVIDIA H100 80GB HBM3" * 4})
    with conn:
        conn.execute("BEGIN")
        conn.executemany(
            "INSERT INTO agents (name, profile, slots, online, first_seen, last_seen)"
            " VALUES (?, ?, 1, 0, ?, ?)",
            [(f"fake-agent-{i:05d}", profile, time.time(), time.time()) for i in range(count)],
        )
    conn.close()


def test_status_of_thousands_of_agents_is_paged_and_complete(
    mosquitto: MosquittoProcess, tmp_path: Path
) -> None:
    url, db = mosquitto.url, tmp_path / "nasd.db"
    _fake_agents(db, AGENTS)

    async def main() -> None:
        async with serving(url, db), cli_client(url, "pager") as pager:
            one = await ask(pager, "status", {})
            assert one["ok"] is True and one["result"]["agents_total"] == AGENTS
            assert 0 < len(one["result"]["agents"]) < AGENTS  # a page, not everything
            done = await asyncio.to_thread(procs.cli, "status", "--broker", url, "--json")
            assert done.returncode == 0, done.stderr
            status = json.loads(done.stdout)
            names = [a["name"] for a in status["agents"]]
            assert names == [f"fake-agent-{i:05d}" for i in range(AGENTS)]
            assert "agents_total" not in status and status["experiments"] == []
            table = await asyncio.to_thread(procs.cli, "status", "--broker", url)
            assert table.returncode == 0 and "fake-agent-02999" in table.stdout

    asyncio.run(main())


def test_a_fake_offline_state_does_not_hide_a_serving_daemon(
    mosquitto: MosquittoProcess, tmp_path: Path
) -> None:
    url, db = mosquitto.url, tmp_path / "nasd.db"

    async def main() -> None:
        broker = BrokerUrl.parse(url)
        async with serving(url, db):
            async with mqtt_client(broker.host, broker.port, "forger") as forger:
                fake = encode("daemon.state", {"state": "offline"})
                await forger.publish(daemon_state_topic(), fake, qos=1, retain=True)
            status = await asyncio.to_thread(procs.cli, "status", "--broker", url, "--json")
            assert status.returncode == 0, status.stderr
            assert json.loads(status.stdout)["agents"] == []
            # The daemon put its own state back: commands that need "online" work at once.
            state = await asyncio.to_thread(procs.retained_state, url, daemon_state_topic(), 3)
            assert state == "online"

    asyncio.run(main())
