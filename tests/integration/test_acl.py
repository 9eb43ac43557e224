"""Who may do what on a production broker: the shipped drop-in and ACL file on a real Mosquitto.

The broker here runs ``systemd/mosquitto-nasd.conf`` itself, with only its ports and file paths
rewritten (every rewrite must match, so a change to the drop-in cannot silently bypass this
test), the shipped ``systemd/mosquitto-nasd.acl`` unchanged, and a password file made with
``mosquitto_passwd``. Each role connects with its own account and tries what it may and may not
do.

Mosquitto drops a refused PUBLISH without telling an MQTT 3.1.1 client, and it accepts every
SUBSCRIBE but delivers only what the subscriber may read. So each refusal is shown by what never
arrives: a forbidden message is sent first, then an allowed "marker" on the same connection; QoS 1
from one publisher arrives in order, so once the marker is in, the forbidden message would have
been too. The last test runs a real daemon and agent through this broker, each with its account.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import ssl
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiomqtt
import pytest

from nasd.cli import credentials
from nasd.mqtt import BrokerUrl
from nasd.mqtt.broker import free_port
from tests.clients import mqtt_client
from tests.harness import (
    ROOT,
    MosquittoNotFound,
    MosquittoProcess,
    python_env,
    query,
    spawn,
    stop,
    wait_port,
    wait_until,
    write_experiment,
    write_settings,
)
from tests.integration.test_tls import make_certificates

pytestmark = pytest.mark.timeout(120)

DROP_IN = ROOT / "systemd" / "mosquitto-nasd.conf"
ACL = ROOT / "systemd" / "mosquitto-nasd.acl"
USERS = ("a1", "a2", "nasd-daemon", "nasd-admin", "nasd-readonly")
WAIT_S = 10.0


@dataclass(frozen=True)
class AclBroker:
    """The broker's two listeners, its CA, its password file and its process (for reloads)."""

    host: str
    port: int
    tls_port: int
    ca_file: Path
    password_file: Path
    pid: int

    def reload(self) -> None:
        """SIGHUP: Mosquitto re-reads its password and ACL files (``systemctl reload``)."""
        os.kill(self.pid, signal.SIGHUP)


def password(user: str) -> str:
    """Each test account's password (the test's own broker; never a real one)."""
    return f"test-password-of-{user}"


def _production_config(directory: Path, tls_port: int, cert: Path, key: Path) -> str:
    """The shipped drop-in, with the TLS port and every /etc path pointing into ``directory``.

    Its loopback listener line is dropped: the harness writes that one itself, on a free port.
    """
    text = DROP_IN.read_text(encoding="utf-8")
    rewrites = {
        "listener 1883 127.0.0.1\n": "",
        "listener 8883\n": f"listener {tls_port} 127.0.0.1\n",
        "/etc/mosquitto/certs/server.crt": str(cert),
        "/etc/mosquitto/certs/server.key": str(key),
        "password_file /etc/mosquitto/nasd.passwd": f"password_file {directory / 'nasd.passwd'}",
        "acl_file /etc/mosquitto/nasd.acl": f"acl_file {directory / 'nasd.acl'}",
        # No mosquitto.db left behind: this broker's life is one test module.
        "persistence true": "persistence false",
    }
    for old, new in rewrites.items():
        assert old in text, f"{DROP_IN.name} no longer contains {old!r}: update this test"
        text = text.replace(old, new)
    return text


def _make_password_file(path: Path) -> None:
    passwd = shutil.which("mosquitto_passwd")
    if passwd is None:
        pytest.fail("mosquitto_passwd not found (it ships with mosquitto)", pytrace=False)
    path.touch()
    for user in USERS:
        subprocess.run([passwd, "-b", str(path), user, password(user)], check=True)


@pytest.fixture(scope="module")
def acl_broker() -> Iterator[AclBroker]:
    """Mosquitto with the production drop-in and ACL: no anonymous access, one account per role."""
    # Not under tmp_path: its parents are private, and Mosquitto started as root reads the
    # password and ACL files only after switching to its own user.
    files = Path(tempfile.mkdtemp(prefix="nasd-acl-"))
    try:
        _ca, cert, key = make_certificates(files)
        _make_password_file(files / "nasd.passwd")
        shutil.copyfile(ACL, files / "nasd.acl")
        for path in files.iterdir():
            path.chmod(0o644)
        files.chmod(0o755)
        tls_port = free_port()
        workdir = files / "mosquitto"
        workdir.mkdir()
        try:
            mosquitto = MosquittoProcess(
                workdir,
                allow_anonymous=False,
                extra_config=_production_config(files, tls_port, cert, key),
            )
        except MosquittoNotFound as exc:
            pytest.fail(str(exc), pytrace=False)
        mosquitto.start()
        try:
            wait_port("127.0.0.1", tls_port)
            assert mosquitto.pid is not None
            yield AclBroker(
                mosquitto.host,
                mosquitto.port,
                tls_port,
                files / "ca.pem",
                files / "nasd.passwd",
                mosquitto.pid,
            )
        finally:
            mosquitto.stop()
            print(f"--- mosquitto log ---\n{mosquitto.log_tail()}")
    finally:
        shutil.rmtree(files, ignore_errors=True)


def _as(broker: AclBroker, user: str, client_id: str | None = None, **kwargs: Any) -> Any:
    """A connected test client logged in as ``user`` (an async context manager)."""
    return mqtt_client(
        broker.host,
        broker.port,
        client_id or f"test-{user}",
        username=user,
        password=password(user),
        **kwargs,
    )


async def _topics_until(client: aiomqtt.Client, marker: str) -> list[str]:
    """Topics of the messages ``client`` receives, up to and including one on ``marker``.

    Retained messages (states a real daemon or agent left behind) are not counted.
    """
    seen: list[str] = []
    async with asyncio.timeout(WAIT_S):
        async for message in client.messages:
            if message.retain:
                continue
            seen.append(str(message.topic))
            if seen[-1] == marker:
                return seen
    raise AssertionError(f"the marker on {marker} never arrived; got {seen}")


async def _published_by(
    broker: AclBroker, user: str, attempts: list[str], marker: str, *, client_id: str | None = None
) -> list[str]:
    """What a daemon-role subscriber to ``nasd/v1/#`` receives of ``user``'s publications.

    ``user`` publishes on each of ``attempts`` (QoS 1), then on ``marker``.
    """
    async with _as(broker, "nasd-daemon", "test-observer") as observer:
        await observer.subscribe("nasd/v1/#", qos=1)
        async with _as(broker, user, client_id) as client:
            for topic in [*attempts, marker]:
                await client.publish(topic, b"payload", qos=1)
        return await _topics_until(observer, marker)


async def _received_by(
    broker: AclBroker, user: str, filters: list[str], attempts: list[str], marker: str
) -> list[str]:
    """What ``user``, subscribed to ``filters``, receives of the daemon's publications.

    The daemon publishes on each of ``attempts`` (QoS 1), then on ``marker``.
    """
    async with _as(broker, user) as client:
        for topic_filter in filters:
            await client.subscribe(topic_filter, qos=1)
        async with _as(broker, "nasd-daemon", "test-daemon") as daemon:
            for topic in [*attempts, marker]:
                await daemon.publish(topic, b"payload", qos=1)
        return await _topics_until(client, marker)


async def _connect_error(broker: AclBroker, **kwargs: Any) -> str:
    client = aiomqtt.Client(broker.host, broker.port, identifier="test-refused", **kwargs)
    with pytest.raises(aiomqtt.MqttError) as refused:
        async with client:
            pass
    return str(refused.value)


def test_anonymous_and_wrong_password_are_refused(acl_broker: AclBroker) -> None:
    anonymous = asyncio.run(_connect_error(acl_broker))
    wrong = asyncio.run(_connect_error(acl_broker, username="a1", password="not-a1s-password"))
    unknown = asyncio.run(_connect_error(acl_broker, username="mallory", password="x"))
    for error in (anonymous, wrong, unknown):
        assert "not authori" in error.lower(), error


def test_an_agent_publishes_only_on_its_own_topics(acl_broker: AclBroker) -> None:
    forbidden = [
        "nasd/v1/agents/a2/result",  # a forged result for another agent's job
        "nasd/v1/agents/a2/ready",
        "nasd/v1/agents/a2/state",
        "nasd/v1/agents/a1/assign",  # work for itself, as if from the daemon
        "nasd/v1/agents/a1/ack",
        "nasd/v1/daemon/state",  # a fake "offline" daemon
        "nasd/v1/control/request/pause",
        "nasd/v1/control/response/nasd-cli-0",
        "nasd/v1/events/exp",
    ]
    own = ["nasd/v1/agents/a1/state", "nasd/v1/agents/a1/ready", "nasd/v1/agents/a1/progress"]
    seen = asyncio.run(_published_by(acl_broker, "a1", forbidden + own, "nasd/v1/agents/a1/result"))
    assert seen == [*own, "nasd/v1/agents/a1/result"]


def test_an_agent_reads_only_its_own_work(acl_broker: AclBroker) -> None:
    others = [
        "nasd/v1/agents/a2/assign",
        "nasd/v1/agents/a2/cancel",
        "nasd/v1/agents/a2/ack",
        "nasd/v1/agents/a2/result",
        "nasd/v1/agents/a2/state",
        "nasd/v1/control/request/submit",
        "nasd/v1/events/exp",
    ]
    own = ["nasd/v1/daemon/state", "nasd/v1/agents/a1/cancel", "nasd/v1/agents/a1/ack"]
    seen = asyncio.run(
        _received_by(
            acl_broker,
            "a1",
            # What it needs, what it should not have, and everything at once.
            ["nasd/v1/agents/a1/#", "nasd/v1/agents/a2/assign", "nasd/v1/#", "#"],
            others + own,
            "nasd/v1/agents/a1/assign",
        )
    )
    # A message matching several of a client's subscriptions may arrive once per match.
    assert set(seen) == {*own, "nasd/v1/agents/a1/assign"}


def test_oversized_packets_never_reach_the_daemon(acl_broker: AclBroker) -> None:
    """The drop-in's max_packet_size: the broker drops a client that sends more than nasd takes."""

    async def scenario() -> list[str]:
        async with _as(acl_broker, "nasd-daemon", "test-observer") as observer:
            await observer.subscribe("nasd/v1/#", qos=1)
            with pytest.raises(aiomqtt.MqttError):  # the broker closes the connection
                async with _as(acl_broker, "a1") as agent:
                    await agent.publish("nasd/v1/agents/a1/result", b"x" * 300_000, qos=0)
                    async with asyncio.timeout(WAIT_S):
                        async for _message in agent.messages:
                            pass
            async with _as(acl_broker, "a1") as agent:
                await agent.publish("nasd/v1/agents/a1/ready", b"small", qos=1)
            return await _topics_until(observer, "nasd/v1/agents/a1/ready")

    assert asyncio.run(scenario()) == ["nasd/v1/agents/a1/ready"]


def test_readonly_cli_may_only_ask_for_status(acl_broker: AclBroker) -> None:
    forbidden = [
        "nasd/v1/control/request/pause",
        "nasd/v1/control/request/cancel",
        "nasd/v1/control/request/submit",
        "nasd/v1/control/request/resume",
        # The agent patterns apply to every username: this account must not pose as an agent.
        "nasd/v1/agents/nasd-readonly/state",
        "nasd/v1/agents/nasd-readonly/result",
    ]
    seen = asyncio.run(
        _published_by(acl_broker, "nasd-readonly", forbidden, "nasd/v1/control/request/status")
    )
    assert seen == ["nasd/v1/control/request/status"]


def test_readonly_cli_reads_replies_to_itself_states_and_events(acl_broker: AclBroker) -> None:
    readable = [
        "nasd/v1/control/response/nasd-cli-mine",
        "nasd/v1/daemon/state",
        "nasd/v1/agents/a1/state",
        "nasd/v1/events/exp",
    ]
    unreadable = [
        "nasd/v1/control/response/nasd-cli-someone-else",
        "nasd/v1/agents/a1/assign",
        "nasd/v1/agents/a1/result",
    ]

    async def scenario() -> list[str]:
        async with _as(acl_broker, "nasd-readonly", "nasd-cli-mine") as cli:
            await cli.subscribe("nasd/v1/#", qos=1)
            async with _as(acl_broker, "nasd-daemon", "test-daemon") as daemon:
                for topic in [*unreadable, *readable]:
                    await daemon.publish(topic, b"payload", qos=1)
            return await _topics_until(cli, readable[-1])

    assert asyncio.run(scenario()) == readable


def test_admin_cli_sends_every_command_but_is_no_agent(acl_broker: AclBroker) -> None:
    commands = [f"nasd/v1/control/request/{name}" for name in ("submit", "pause", "resume")]
    seen = asyncio.run(
        _published_by(
            acl_broker,
            "nasd-admin",
            ["nasd/v1/agents/nasd-admin/result", "nasd/v1/daemon/state", *commands],
            "nasd/v1/control/request/cancel",
        )
    )
    assert seen == [*commands, "nasd/v1/control/request/cancel"]


def test_daemon_serves_an_agent_over_tls(acl_broker: AclBroker) -> None:
    """The daemon's role end to end, with the agent on the TLS listener as on another machine."""
    context = ssl.create_default_context(cafile=str(acl_broker.ca_file))

    async def scenario() -> tuple[list[str], list[str]]:
        async with (
            _as(acl_broker, "nasd-daemon", "nasd-daemon") as daemon,
            mqtt_client(
                acl_broker.host,
                acl_broker.tls_port,
                "nasd-agent-a1",
                username="a1",
                password=password("a1"),
                tls_context=context,
            ) as agent,
        ):
            await daemon.subscribe("nasd/v1/agents/+/+", qos=1)
            await agent.subscribe("nasd/v1/agents/a1/+", qos=1)
            for leaf in ("state", "ready", "progress", "result"):
                await agent.publish(f"nasd/v1/agents/a1/{leaf}", b"payload", qos=1)
            from_agent = await _topics_until(daemon, "nasd/v1/agents/a1/result")
            for leaf in ("assign", "cancel", "ack"):
                await daemon.publish(f"nasd/v1/agents/a1/{leaf}", b"payload", qos=1)
            to_agent = await _topics_until(agent, "nasd/v1/agents/a1/ack")
        return from_agent, to_agent

    from_agent, to_agent = asyncio.run(scenario())
    assert from_agent == [
        f"nasd/v1/agents/a1/{leaf}" for leaf in ("state", "ready", "progress", "result")
    ]
    assert to_agent == [f"nasd/v1/agents/a1/{leaf}" for leaf in ("assign", "cancel", "ack")]


def test_plain_listener_is_loopback_only() -> None:
    """The drop-in's only non-TLS listener is bound to 127.0.0.1 (passwords in clear text)."""
    listeners = [
        line.split()
        for line in DROP_IN.read_text(encoding="utf-8").splitlines()
        if line.startswith("listener ")
    ]
    assert ["listener", "1883", "127.0.0.1"] in listeners
    assert ["listener", "8883"] in listeners
    assert len(listeners) == 2


def test_agent_credentials_add_and_remove_on_a_live_broker(
    acl_broker: AclBroker, tmp_path: Path
) -> None:
    """``nasd agent-credentials``: the new agent logs in after a reload; once removed, a reload
    disconnects it and it cannot log in again.

    The agent takes its password from the file the command wrote, as ``nasd-agent`` does.
    """
    secret_file = credentials.add_agent("gpu-new-0", acl_broker.password_file, tmp_path)
    url = f"mqtt://gpu-new-0@{acl_broker.host}:{acl_broker.port}"
    broker = BrokerUrl.parse(url, environ={"NASD_BROKER_PASSWORD_FILE": str(secret_file)})

    async def login() -> str | None:
        """None if the agent may log in and publish its state, else the broker's refusal."""
        try:
            async with aiomqtt.Client(**broker.client_options(), identifier="gpu-new-0") as agent:
                await agent.publish("nasd/v1/agents/gpu-new-0/state", b"online", qos=1)
        except aiomqtt.MqttError as exc:
            return str(exc)
        return None

    async def login_after_reload(expect_refusal: bool) -> str | None:
        acl_broker.reload()
        async with asyncio.timeout(WAIT_S):
            while True:
                outcome = await login()
                if (outcome is not None) == expect_refusal:
                    return outcome
                await asyncio.sleep(0.05)

    async def scenario() -> str | None:
        assert await login_after_reload(expect_refusal=False) is None
        live = aiomqtt.Client(**broker.client_options(), identifier="gpu-new-0-live")
        await live.__aenter__()
        try:
            credentials.remove_agent("gpu-new-0", acl_broker.password_file)
            refusal = await login_after_reload(expect_refusal=True)
            with pytest.raises(aiomqtt.MqttError):  # the broker closed the live connection
                async with asyncio.timeout(WAIT_S):
                    async for _message in live.messages:
                        pass
        finally:
            with contextlib.suppress(aiomqtt.MqttError):  # leaving a closed connection may raise
                await live.__aexit__(None, None, None)
        return refusal

    refusal = asyncio.run(scenario())
    assert refusal is not None and "not authori" in refusal.lower(), refusal


def test_search_runs_with_accounts_and_acls(acl_broker: AclBroker, tmp_path: Path) -> None:
    """A real daemon and agent, each logged in with its own account, finish a search.

    The daemon uses the loopback listener as ``nasd-daemon``; the agent the TLS listener, with an
    account from ``nasd agent-credentials``; neither has its password on its command line. Then
    the read-only CLI account asks the daemon for its status.
    """
    secrets_dir = tmp_path / "secrets"
    secrets_dir.mkdir()
    agent_secret = credentials.add_agent("e2e-gpu0", acl_broker.password_file, secrets_dir)
    acl_broker.reload()
    daemon_secret = secrets_dir / "daemon.password"
    daemon_secret.write_text(password("nasd-daemon") + "\n")
    readonly_secret = secrets_dir / "readonly.password"
    readonly_secret.write_text(password("nasd-readonly") + "\n")
    plain = f"{acl_broker.host}:{acl_broker.port}"
    experiment = write_experiment(tmp_path / "exp.toml", "acl-e2e", 4, trainer="zero")
    settings = write_settings(tmp_path, f"mqtt://nasd-daemon@{plain}", experiment)
    db = tmp_path / "nasd.db"
    logs = [tmp_path / "daemon.log", tmp_path / "agent.log"]

    def env(secret: Path) -> dict[str, str]:
        return {
            **python_env(),
            "NASD_BROKER_PASSWORD_FILE": str(secret),
            "SSL_CERT_FILE": str(acl_broker.ca_file),
        }

    daemon = spawn(
        [sys.executable, "-m", "nasd.cli", "serve", "--config", str(settings)],
        logs[0],
        env=env(daemon_secret),
    )
    agent_url = f"mqtts://e2e-gpu0@{acl_broker.host}:{acl_broker.tls_port}"
    agent = spawn(
        [
            *(sys.executable, "-m", "agents.cli", "--broker", agent_url, "--name", "e2e-gpu0"),
            *("--threads", "1", "--benchmark-seconds", "0.1", "--heartbeat", "0.5"),
            *("--spool", str(tmp_path / "spool"), "--checkpoints", str(tmp_path / "ckpt")),
        ],
        logs[1],
        env=env(agent_secret),
    )
    try:
        wait_until(
            lambda: query(db, "SELECT status FROM experiments") == [("done",)],
            90,
            "the search through the ACL broker to finish",
            [daemon, agent],
            logs,
        )
        status = subprocess.run(
            [
                sys.executable,
                "-m",
                "nasd.cli",
                "status",
                "--json",
                "--broker",
                f"mqtt://nasd-readonly@{plain}",
            ],
            cwd=ROOT,
            env=env(readonly_secret),
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert status.returncode == 0, status.stderr
        assert '"acl-e2e"' in status.stdout
    finally:
        assert stop(agent) == 0
        assert stop(daemon) == 0
    assert query(db, "SELECT COUNT(DISTINCT trial_id) FROM results") == [(4,)]
