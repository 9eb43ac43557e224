"""Hostile and malformed messages on the daemon's topics are logged, dropped and change nothing."""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path

from nasd.core.wire import encode
from nasd.mqtt import BrokerUrl
from tests.clients import mqtt_client
from tests.integration import procs

SLEEPY = "tests.integration.trainers:sleepy"


async def _barrage(url: str, job_id: str, epoch: int) -> dict:
    broker = BrokerUrl.parse(url)
    async with mqtt_client(broker.host, broker.port, "mallory") as client:
        await client.subscribe("nasd/v1/control/response/mallory", qos=1)
        junk = [
            ("nasd/v1/agents/mallory/result", os.urandom(300)),
            ("nasd/v1/agents/mallory/result", b"\x81" * 10),
            ("nasd/v1/agents/mallory/ready", b"\x00" * 300_000),  # oversize
            ("nasd/v1/agents/mallory/state", encode("agent.ready", {"slots": 1, "running": []})),
            # A well-formed result for a running job that is leased to another agent.
            (
                "nasd/v1/agents/mallory/result",
                encode(
                    "trial.result",
                    {
                        "job_id": job_id,
                        "epoch": epoch,
                        "token": "0" * 32,
                        "status": "ok",
                        "metrics": {"val_acc": 1.0},
                        "error": None,
                        "started_at": 0.0,
                        "finished_at": 0.0,
                        "checkpoint": None,
                    },
                ),
            ),
            # The command in the topic and in the body differ.
            (
                "nasd/v1/control/request/status",
                encode(
                    "control.request",
                    {
                        "client": "mallory",
                        "correlation_id": "x",
                        "command": "cancel",
                        "args": {"experiment": "hostile"},
                    },
                ),
            ),
        ]
        for topic, payload in junk:
            await client.publish(topic, payload, qos=1)
        bad_config = {
            "experiment": {"name": "evil", "budget": 5},
            "space": {"kind": "nb201"},
            "strategy": {"name": "random", "nope": 1},
            "task": {"trainer": "zero"},
        }
        await client.publish(
            "nasd/v1/control/request/submit",
            encode(
                "control.request",
                {
                    "client": "mallory",
                    "correlation_id": "c1",
                    "command": "submit",
                    "args": {"config": bad_config},
                },
            ),
            qos=1,
        )
        async with asyncio.timeout(20):
            async for message in client.messages:
                from nasd.core.wire import decode

                body = decode(message.payload, expect="control.response").body
                if body["correlation_id"] == "c1":  # the mismatched request "x" is refused too
                    return body
    raise AssertionError("no reply")


def test_garbage_is_dropped_and_the_search_stays_exact(mosquitto: object, tmp_path: Path) -> None:
    url = mosquitto.url  # type: ignore[attr-defined]
    experiment = procs.write_experiment(
        tmp_path / "exp.toml", "hostile", 10, trainer=SLEEPY, options="seconds = 0.6\nsteps = 2"
    )
    settings = procs.write_settings(tmp_path, url, experiment)
    db = tmp_path / "nasd.db"
    logs = [tmp_path / "daemon.log", tmp_path / "agent-0.log"]
    daemon = procs.start_daemon(settings, logs[0])
    agent = procs.start_agent(url, "agent-0", tmp_path)
    try:
        procs.wait_until(
            lambda: procs.count_results(db, "hostile") >= 1, 60, "a first result", logs=logs
        )
        procs.wait_until(
            lambda: bool(procs.query(db, "SELECT 1 FROM trials WHERE status = 'running'")),
            30,
            "a running job",
            logs=logs,
        )
        job_id, epoch = procs.query(
            db, "SELECT job_id, epoch FROM trials WHERE status = 'running'"
        )[0]
        reply = asyncio.run(_barrage(url, job_id, epoch))
        assert reply["ok"] is False and "nope" in reply["error"]
        procs.wait_until(
            lambda: procs.query(db, "SELECT status FROM experiments") == [("done",)],
            60,
            "the search to finish",
            [daemon, agent],
            logs,
        )
        assert daemon.poll() is None, "the daemon died"
        assert procs.retained_state(url, "nasd/v1/daemon/state") == "online"
    finally:
        assert procs.stop(agent) == 0
        assert procs.stop(daemon) == 0
    # Graceful SIGTERM: the last batch committed, then the retained states say "offline".
    assert procs.retained_state(url, "nasd/v1/daemon/state") == "offline"
    assert procs.retained_state(url, "nasd/v1/agents/agent-0/state") == "offline"
    assert procs.query(db, "SELECT name FROM experiments") == [("hostile",)]
    assert procs.query(db, "SELECT COUNT(*), COUNT(DISTINCT trial_id) FROM results") == [(10, 10)]
    assert procs.query(db, "SELECT DISTINCT agent FROM results") == [("agent-0",)]
    assert procs.query(db, "SELECT COUNT(*) FROM agents WHERE name = 'mallory'") == [(0,)]
    events = [json.loads(line) for line in logs[0].read_text().splitlines() if line.startswith("{")]
    dropped = [e for e in events if e.get("event") == "message.dropped"]
    assert len(dropped) >= 5
    refused = {"result.rejected", "security.wrong_agent", "security.bad_token"}
    assert any(e.get("event") in refused for e in events)
