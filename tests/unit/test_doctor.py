"""``nasd doctor``: each check on real files and a real Mosquitto, and the command's exit status."""

from __future__ import annotations

import asyncio
import re
import sqlite3
import time
from pathlib import Path

import pytest

from nasd.cli import main
from nasd.cli.doctor import check_agents, check_config, check_database, check_disk
from nasd.cli.doctor_broker import (
    Observation,
    Seen,
    check_broker,
    check_clocks,
    check_daemon,
    check_tls,
    observe,
)
from nasd.cli.doctor_types import Level, Result
from nasd.core.wire import encode
from nasd.mqtt import BrokerUrl
from nasd.store import open_writer, repo
from tests.clients import mqtt_client
from tests.harness import MosquittoProcess
from tests.integration.test_tls import TlsBroker, tls_broker  # noqa: F401 (a fixture)

EXPERIMENT = (
    '[experiment]\nname = "doc"\nbudget = 3\n[space]\nkind = "nb201"\n[strategy]\n'
    'name = "random"\n[task]\ntrainer = "zero"\n'
)


def _levels(results: list[Result]) -> dict[str, Level]:
    return {r.check: r.level for r in results}


def test_a_result_is_one_line_with_its_fix() -> None:
    line = Result("database", Level.FAIL, "broken\nreally", "restore it").line()
    assert line == "FAIL database: broken really -> fix: restore it"
    assert Result("disk", Level.OK, "fine", "unused").line() == "ok   disk: fine"


def test_config_loads_with_its_experiments_or_fails_naming_the_file(tmp_path: Path) -> None:
    (tmp_path / "exp.toml").write_text(EXPERIMENT)
    (tmp_path / "bad.toml").write_text("[experiment\n")
    config = tmp_path / "nasd.toml"
    config.write_text('[daemon]\ndb = "n.db"\nexperiments = ["exp.toml"]\n')
    results, settings = check_config(config)
    assert [r.level for r in results] == [Level.OK, Level.OK]
    assert settings is not None and settings.db == str(tmp_path / "n.db")
    config.write_text('[daemon]\nexperiments = ["exp.toml", "bad.toml"]\n')
    results, _ = check_config(config)
    assert [r.level for r in results] == [Level.OK, Level.OK, Level.FAIL]
    assert "bad.toml" in results[-1].detail
    config.write_text("[daemon]\nbrokr = 1\n")
    results, settings = check_config(config)
    assert settings is None and results[0].level is Level.FAIL and "brokr" in results[0].detail


def test_a_healthy_database(tmp_path: Path) -> None:
    db = tmp_path / "n.db"
    open_writer(db).close()
    results = check_database(db)
    assert _levels(results) == {"database": Level.OK, "integrity": Level.OK}


def test_database_problems_each_fail_or_warn_with_a_fix(tmp_path: Path) -> None:
    missing = check_database(tmp_path / "missing.db")
    assert missing[0].level is Level.FAIL and "no database" in missing[0].detail
    other = tmp_path / "other.db"
    sqlite3.connect(other).execute("CREATE TABLE events (x)").connection.close()
    (foreign,) = check_database(other)
    assert foreign.level is Level.FAIL and "not a nasd database" in foreign.detail
    old = tmp_path / "old.db"
    open_writer(old).close()
    conn = sqlite3.connect(old, isolation_level=None)
    conn.execute("PRAGMA application_id = 0")
    conn.execute("PRAGMA journal_mode = DELETE")
    conn.close()
    levels = _levels(check_database(old))
    assert levels["database stamp"] is Level.WARN and levels["journal"] is Level.WARN
    assert levels["integrity"] is Level.OK
    big = tmp_path / "big.db"
    conn = open_writer(big)
    conn.execute("CREATE TABLE filler (x)")
    conn.executemany("INSERT INTO filler VALUES (?)", [(b"z" * 3000,) for _ in range(300)])
    conn.close()
    data = bytearray(big.read_bytes())
    data[4096 * 60 : 4096 * 60 + 300] = b"\xff" * 300
    big.write_bytes(bytes(data))
    damaged = [r for r in check_database(big) if r.level is Level.FAIL]
    assert damaged and "nasd restore" in damaged[0].fix


def test_disk_thresholds(tmp_path: Path) -> None:
    db = tmp_path / "n.db"
    assert check_disk(db, warn_bytes=1, fail_bytes=0).level is Level.OK
    assert check_disk(db, warn_bytes=2**62, fail_bytes=0).level is Level.WARN
    failed = check_disk(db, warn_bytes=2**62, fail_bytes=2**61)
    assert failed.level is Level.FAIL and "free space" in failed.fix


def test_agents_online_draining_quarantined_and_stale(tmp_path: Path) -> None:
    db = tmp_path / "n.db"
    conn = open_writer(db)
    for name, online in (("gpu-0", True), ("gpu-1", True), ("old", False), ("gone", True)):
        repo.upsert_agent(conn, name, {"device": "cpu"}, 1, online, 1.0)
    conn.execute("UPDATE agents SET draining = 1 WHERE name = 'gpu-1'")
    columns = {row[1] for row in conn.execute("PRAGMA table_info(agents)")}
    if "quarantined_until" in columns:
        conn.execute("UPDATE agents SET quarantined_until = 1e12 WHERE name = 'gpu-0'")
    conn.close()
    seen = Observation(
        "mqtt://x",
        seen=[Seen("nasd/v1/agents/gone/state", "gone", True, 1.0, 2.0, {"state": "offline"})],
    )
    results = check_agents(db, seen, now=100.0)
    lines = [r.line() for r in results]
    assert any("gpu-1" in line and "draining" in line for line in lines)
    assert any("gone" in line and "stale" in line for line in lines)
    if "quarantined_until" in columns:
        assert any("gpu-0" in line and "quarantined" in line for line in lines)
    assert results[-1] == Result("agents", Level.OK, "3 online of 4 known")
    empty = tmp_path / "e.db"
    open_writer(empty).close()
    assert check_agents(empty)[-1].level is Level.WARN


def test_clocks_compare_live_messages_and_retained_ones_only_when_ahead() -> None:
    now = 1000.0
    seen = Observation(
        "mqtt://x",
        seen=[
            Seen("nasd/v1/agents/a/ready", "a", False, now + 30, now, {}),  # a is 30 s ahead
            Seen("nasd/v1/agents/b/ready", "b", False, now - 0.01, now, {}),  # fine
            Seen("nasd/v1/agents/c/state", "c", True, now - 86400, now, {}),  # old, retained
            Seen("nasd/v1/daemon/state", "daemon", True, now + 60, now, {}),  # ahead
        ],
    )
    results = check_clocks(seen, max_skew_s=5)
    assert {r.check for r in results} == {"clock of a", "clock of daemon"}
    assert all(r.level is Level.WARN and "NTP" in r.fix for r in results)
    quiet = check_clocks(Observation("mqtt://x"))
    assert quiet[0].level is Level.OK and "not compared" in quiet[0].detail


def test_daemon_state_checks() -> None:
    assert check_daemon(Observation("mqtt://x")).level is Level.FAIL
    offline = Seen("nasd/v1/daemon/state", "daemon", True, 1.0, 2.0, {"state": "offline"})
    assert check_daemon(Observation("mqtt://x", seen=[offline])).level is Level.FAIL
    online = Seen(
        "nasd/v1/daemon/state",
        "daemon",
        True,
        1.0,
        2.0,
        {"state": "online", "pid": 7, "started_at": 1.0},
    )
    result = check_daemon(Observation("mqtt://x", seen=[online]), now=3601.0 * 3)
    assert result.level is Level.OK and "pid 7" in result.detail and "up 3.0 h" in result.detail


async def _publish_while_observed(broker: BrokerUrl) -> Observation:
    async with mqtt_client(broker.host, broker.port, "fake-daemon-and-agent") as client:
        await client.publish(
            "nasd/v1/daemon/state",
            encode("daemon.state", {"state": "online", "pid": 42, "started_at": time.time()}),
            qos=1,
            retain=True,
        )
        task = asyncio.create_task(observe(broker, window_s=1.0))
        while not task.done():  # a live agent whose clock is 60 s ahead, and a stranger
            ready = encode("agent.ready", {"slots": 1, "running": []}, sent_at=time.time() + 60)
            await client.publish("nasd/v1/agents/skewed/ready", ready, qos=0)
            await client.publish("nasd/v1/agents/x/state", b"\x00garbage", qos=0)
            await asyncio.sleep(0.1)
        return await task


def test_observe_a_real_broker(mosquitto: MosquittoProcess) -> None:
    broker = BrokerUrl.parse(mosquitto.url)
    seen = asyncio.run(_publish_while_observed(broker))
    assert seen.error is None
    assert seen.round_trip_s is not None and seen.round_trip_s < 1.0
    levels = _levels(check_broker(seen))
    assert levels == {
        "broker": Level.OK,
        "broker round trip": Level.OK,
        "broker traffic": Level.WARN,
    }
    daemon = check_daemon(seen)
    assert daemon.level is Level.OK and "pid 42" in daemon.detail
    assert [r.check for r in check_clocks(seen)] == ["clock of skewed"]


def test_an_unreachable_broker_and_refused_credentials_fail(
    tmp_path: Path, mosquitto: MosquittoProcess
) -> None:
    from nasd.mqtt.broker import free_port

    gone = asyncio.run(observe(BrokerUrl.parse(f"mqtt://127.0.0.1:{free_port()}")))
    (result,) = check_broker(gone)
    assert result.level is Level.FAIL and result.check == "broker reachable"
    assert "start the broker" in result.fix
    (tmp_path / "secured").mkdir()
    secured = MosquittoProcess(tmp_path / "secured", allow_anonymous=False)
    secured.start()
    try:
        url = f"mqtt://nobody:wrong@{secured.host}:{secured.port}"
        refused = asyncio.run(observe(BrokerUrl.parse(url)))
    finally:
        secured.stop()
    (result,) = check_broker(refused)
    assert result.level is Level.FAIL and result.check == "broker credentials", refused.error


def test_the_command_prints_one_line_per_check_and_exits_by_failures(
    tmp_path: Path, mosquitto: MosquittoProcess, capsys: pytest.CaptureFixture[str]
) -> None:
    db = tmp_path / "n.db"
    open_writer(db).close()
    status = main(["doctor", "--db", str(db), "--broker", mosquitto.url, "--window", "0.2"])
    out = capsys.readouterr().out.splitlines()
    assert status == 1  # no daemon has ever run on this broker
    assert any(line.startswith("FAIL daemon:") for line in out)
    assert any(line.startswith("ok   integrity:") for line in out)
    assert all(line.split()[0] in {"ok", "warn", "FAIL"} for line in out)
    assert main(["doctor", "--db", str(db)]) == 0
    assert main(["doctor", "--broker", "http://nope"]) == 2
    assert main(["doctor"]) == 1


def test_tls_certificate_trust_and_expiry(
    tls_broker: TlsBroker,  # noqa: F811 (the fixture imported above)
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    broker = BrokerUrl.parse(tls_broker.url)
    monkeypatch.delenv("SSL_CERT_FILE", raising=False)
    untrusted = check_tls(broker)
    assert untrusted.level is Level.FAIL and "SSL_CERT_FILE" in untrusted.fix
    refused = asyncio.run(observe(broker, window_s=0.1))
    assert check_broker(refused)[0].check == "broker tls"
    monkeypatch.setenv("SSL_CERT_FILE", str(tls_broker.ca_file))
    expiring = check_tls(broker)  # the test certificate is valid for two days
    assert expiring.level is Level.WARN and re.search(r"expires in [12]\.\d days", expiring.detail)
    assert check_tls(broker, warn_days=1).level is Level.OK
    seen = asyncio.run(observe(broker, window_s=0.1))
    assert check_broker(seen)[0].level is Level.OK, seen.error
