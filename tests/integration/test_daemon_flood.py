"""Defect 6 of issue 6: valid-but-heavy control requests must not stall the daemon's event loop.

800 requests of 255 KB (255,000 small integers, ~60 ms each to decode) once blocked the loop for
~20 s: the broker dropped the daemon for a missed keep-alive and honest leases expired. Here a
thread floods the daemon with oversized requests and with heavy ones that are just under the
control-request limit, from many made-up client ids, while a probe coroutine on the daemon's own
loop measures how late its 10 ms sleeps wake up. The measure is the loop's lag, not wall time.
"""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import msgpack
import pytest

from nasd.core.wire import control_request_topic
from nasd.mqtt import BrokerUrl
from tests.brokers import MosquittoProcess
from tests.clients import mqtt_client
from tests.integration.test_daemon_control import ask, cli_client, serving

pytestmark = pytest.mark.timeout(180)

OVERSIZED = 150
HEAVY = 300


def _raw(body: dict[str, object]) -> bytes:
    """A control request packed as an attacker would: no sender-side check or limit."""
    envelope = {"v": 1, "type": "control.request", "id": "x", "sent_at": 1.0, "body": body}
    return bytes(msgpack.packb(envelope))


def _payloads() -> list[tuple[str, bytes]]:
    small_ints = list(range(128)) * 1990  # ~255,000 one-byte integers: ~255 KB
    oversized = _raw(
        {"client": "m", "correlation_id": "o", "command": "status", "args": {"x": small_ints}}
    )
    heavy = []
    for i in range(HEAVY):
        client = "mallory-1" if i % 2 else f"m{i}"  # one client id, and many made-up ones
        config = {"experiment": {"name": f"h{i}", "pad": list(range(128)) * 460}}  # ~59 KB
        body = {"client": client, "correlation_id": f"h{i}", "command": "submit"}
        heavy.append(_raw({**body, "args": {"config": config}}))
    topic_status, topic_submit = control_request_topic("status"), control_request_topic("submit")
    return [(topic_status, oversized)] * OVERSIZED + [(topic_submit, p) for p in heavy]


async def _flood(url: str, payloads: list[tuple[str, bytes]]) -> None:
    broker = BrokerUrl.parse(url)
    async with mqtt_client(
        broker.host, broker.port, "mallory", max_inflight_messages=100
    ) as client:
        client.pending_calls_threshold = 1 << 20
        await asyncio.gather(*(client.publish(t, p, qos=1) for t, p in payloads))


def test_a_flood_of_heavy_requests_never_stalls_the_loop_or_the_keepalive(
    mosquitto: MosquittoProcess, tmp_path: Path
) -> None:
    """The flood waits in the broker for the daemon's session (sent while it was stopped), so it
    arrives in one burst, the worst case; then an honest request must still be answered."""
    url, db = mosquitto.url, tmp_path / "nasd.db"
    payloads = _payloads()

    async def main() -> tuple[float, int]:
        async with serving(url, db):
            pass  # the daemon's persistent session now exists: the broker queues for it
        await _flood(url, payloads)
        loop = asyncio.get_running_loop()
        lags: list[float] = []
        disconnects = 0
        async with serving(url, db) as daemon, cli_client(url, "honest") as honest:
            assert daemon.link is not None
            answer = asyncio.create_task(ask(honest, "status", {}, timeout=60))
            while not answer.done():
                before = loop.time()
                await asyncio.sleep(0.01)
                lags.append(loop.time() - before - 0.01)
                disconnects += not daemon.link.connected.is_set()
            assert answer.result()["ok"] is True
        return max(lags), disconnects

    worst, disconnects = asyncio.run(main())
    print(f"worst event-loop lag while the flood was handled: {worst * 1000:.0f} ms")
    assert disconnects == 0, "the broker dropped the daemon"
    assert worst < 1.0, f"the event loop stalled for {worst:.2f} s"
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
        kinds = dict(conn.execute("SELECT kind, count FROM security_events").fetchall())
        experiments = conn.execute("SELECT COUNT(*) FROM experiments").fetchone()[0]
    assert kinds.get("oversized", 0) >= 1 and kinds.get("rate_limited", 0) >= 1, kinds
    assert experiments == 0  # the heavy submits were refused, none was stored
