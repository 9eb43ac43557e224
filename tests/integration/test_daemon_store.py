"""Fault 13 of issue 6: the database fills up or turns read-only under a serving daemon.

The daemon must not exit: the failed batch is rolled back and nothing from it is published, it
logs ``store.unavailable``, stops assigning, answers control requests with the reason, probes,
and when writing works again rebuilds its engine from the database, logs ``store.available`` and
announces itself anew (a new ``born_at``), so agents re-announce and re-send their spools.

How the fault is made, on a CI machine that runs as root (where a read-only file mode does not
stop writes) and without mounting anything: through the daemon's own writer connection, which
these in-process tests can reach. ``PRAGMA max_page_count`` at the current size makes the next
write that needs a page fail with SQLITE_FULL, exactly as a full disk does; ``PRAGMA query_only``
makes every write fail with SQLITE_READONLY. Undoing the pragma is the disk getting space back.
"""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

from nasd.core.wire import agent_topic, daemon_state_topic, decode, encode
from nasd.core.wire.topics import AgentLeaf
from tests.brokers import MosquittoProcess
from tests.integration.test_daemon_control import ask, cli_client, serving
from tests.unit.test_wire_codec import PROFILE

pytestmark = pytest.mark.timeout(120)


def _big_profile() -> dict[str, Any]:
    """A legal profile of ~50 KB: storing it needs new database pages."""
    trainers = [f"t{i:03d}" + "m" * 124 + ":" + "f" * 63 for i in range(256)]
    return {**PROFILE, "trainers": trainers}


async def _births(client: Any, count: int, timeout: float) -> list[dict[str, Any]]:
    """The next ``count`` daemon states seen by ``client``."""
    seen: list[dict[str, Any]] = []
    async with asyncio.timeout(timeout):
        async for message in client.messages:
            if str(message.topic) == daemon_state_topic():
                seen.append(decode(message.payload, expect="daemon.state").body)
                if len(seen) >= count:
                    return seen
    return seen


@pytest.mark.parametrize(
    ("fail", "heal", "reason"),
    [
        ("PRAGMA max_page_count = {pages}", "PRAGMA max_page_count = 1073741823", "is full"),
        ("PRAGMA query_only = 1", "PRAGMA query_only = 0", "is read-only"),
    ],
    ids=["disk-full", "read-only"],
)
def test_the_daemon_survives_a_store_outage_and_resumes(
    mosquitto: MosquittoProcess, tmp_path: Path, fail: str, heal: str, reason: str
) -> None:
    url, db = mosquitto.url, tmp_path / "nasd.db"

    async def main() -> tuple[dict[str, Any], dict[str, Any]]:
        with capture_logs() as logs:
            async with (
                serving(url, db, store_probe_s=0.2) as daemon,
                cli_client(url, "operator") as operator,
            ):
                writer = daemon.writer
                assert writer is not None
                pages = await writer.read(lambda c: c.execute("PRAGMA page_count").fetchone()[0])
                await writer.run(lambda c: c.execute(fail.format(pages=pages)))
                await operator.subscribe(daemon_state_topic(), qos=1)
                (first,) = await _births(operator, 1, 5)  # the retained one
                state = encode("agent.state", {"state": "online", "profile": _big_profile()})
                await operator.publish(agent_topic("big-agent", AgentLeaf.STATE), state, qos=1)
                for _ in range(100):
                    if daemon.store_outage is not None:
                        break
                    await asyncio.sleep(0.05)
                assert daemon.store_outage is not None and reason in daemon.store_outage
                refused = await ask(operator, "status", {})
                assert refused["ok"] is False and "database is unavailable" in refused["error"]
                await asyncio.sleep(0.5)  # probes fail meanwhile; the daemon stays up
                assert daemon.store_outage is not None
                await writer.read(lambda c: c.execute(heal))
                reborn = first
                while reborn.get("born_at") == first["born_at"]:  # skip periodic refreshes
                    (reborn,) = await _births(operator, 1, 10)
                status = await ask(operator, "status", {})
                assert status["ok"] is True
                # The batch that failed left nothing, in the database or in memory.
                assert status["result"]["agents"] == []
                await operator.publish(agent_topic("big-agent", AgentLeaf.STATE), state, qos=1)
                for _ in range(100):
                    status = await ask(operator, "status", {})
                    if status["result"]["agents"]:
                        break
                    await asyncio.sleep(0.05)
                assert [a["name"] for a in status["result"]["agents"]] == ["big-agent"]
        events = [e["event"] for e in logs]
        assert "store.unavailable" in events and "store.available" in events
        return first, reborn

    first, reborn = asyncio.run(main())
    assert reborn["state"] == "online" and reborn["instance"] == first["instance"]
    assert reborn["born_at"] > first["born_at"]  # a new birth: agents re-announce
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)
