"""The agent's profile for hardware-aware placement: free memory, compute capability, the reference
network's speed, the ``ready`` body, and the test-only profile overrides (parser, CLI, wire)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from agents.probe import free_memory_bytes, probe_hardware
from agents.profile import (
    OVERRIDABLE,
    OVERRIDE_ENV,
    apply_overrides,
    parse_override_items,
    parse_override_json,
    profile_overrides,
    ready_free_memory,
)
from agents.worker import Agent, AgentOptions
from nasd.core.wire import AgentLeaf, agent_topic, decode, encode, validate
from nasd.errors import ConfigError, WireError
from nasd.mqtt import BrokerUrl
from tests.brokers import MosquittoProcess
from tests.clients import mqtt_client
from tests.harness import ROOT, python_env
from tests.unit.test_worker import AGENT, PROFILE, FakeLink, until

GIB = 2**30


@pytest.fixture(scope="module")
def cpu_profile() -> dict[str, Any]:
    """One CPU probe with no benchmark time, shared by the tests that only read it."""
    return probe_hardware("cpu", benchmark_seconds=0.0)


def test_the_cpu_profile_has_free_memory_capability_and_reference_speed(
    cpu_profile: dict[str, Any],
) -> None:
    free, total = cpu_profile["free_memory_bytes"], cpu_profile["memory_bytes"]
    assert isinstance(free, int) and 0 < free <= total
    assert cpu_profile["compute_capability"] == "cpu"
    assert isinstance(cpu_profile["samples_per_s"], float) and cpu_profile["samples_per_s"] > 0
    assert isinstance(cpu_profile["throughput"], float) and cpu_profile["throughput"] > 0


def test_a_probe_without_benchmark_time_is_short(cpu_profile: dict[str, Any]) -> None:
    started = time.perf_counter()
    profile = probe_hardware("cpu", benchmark_seconds=0.0)  # imports were paid by the fixture
    assert time.perf_counter() - started < 3.0
    assert profile["samples_per_s"] > 0 and profile["throughput"] > 0


def test_free_memory_on_cpu_is_a_fresh_reading_within_physical_memory(
    cpu_profile: dict[str, Any],
) -> None:
    free = free_memory_bytes("cpu")
    assert isinstance(free, int) and 0 < free <= cpu_profile["memory_bytes"]
    meminfo = Path("/proc/meminfo").read_text().splitlines()
    available = next(int(line.split()[1]) * 1024 for line in meminfo if "MemAvailable" in line)
    assert abs(free - available) < cpu_profile["memory_bytes"] // 10  # other processes move it


def test_the_profile_and_a_ready_body_validate(cpu_profile: dict[str, Any]) -> None:
    profile = {**cpu_profile, "slots": 2, "trainers": ["digits"]}
    state: dict[str, Any] = {"state": "online", "profile": profile}
    assert decode(encode("agent.state", state)).body == state
    ready = {"slots": 2, "running": [], "free_memory_bytes": free_memory_bytes("cpu")}
    assert decode(encode("agent.ready", ready)).body == ready
    new_fields = {"free_memory_bytes", "compute_capability", "samples_per_s"}
    older = {key: value for key, value in profile.items() if key not in new_fields}
    validate("agent.state", {"state": "online", "profile": older})  # an older agent's birth
    validate("agent.ready", {"slots": 2, "running": []})  # and its ready


@pytest.mark.parametrize(
    ("message_type", "body", "match"),
    [
        ("agent.state", {"compute_capability": "9" * 33}, "compute_capability must be shorter"),
        ("agent.state", {"compute_capability": ""}, "compute_capability must be longer"),
        ("agent.state", {"samples_per_s": -1.0}, "samples_per_s must be bigger than or equal"),
        ("agent.state", {"free_memory_bytes": -1}, "free_memory_bytes must be bigger than or"),
        ("agent.state", {"free_memory_bytes": 1.5}, "free_memory_bytes must be integer"),
        ("agent.ready", {"free_memory_bytes": -1}, "free_memory_bytes must be bigger than or"),
        ("agent.ready", {"free_memory_bytes": 2.0}, "free_memory_bytes must be integer"),
        ("agent.ready", {"free_memory_bytes": "1"}, "free_memory_bytes must be integer"),
    ],
)
def test_the_schemas_refuse_bad_new_fields(
    message_type: str, body: dict[str, Any], match: str
) -> None:
    message: dict[str, Any]
    if message_type == "agent.state":
        message = {"state": "online", "profile": {**PROFILE, "slots": 1, "trainers": [], **body}}
    else:
        message = {"slots": 1, "running": [], **body}
    with pytest.raises(WireError, match=match):
        validate(message_type, message)


def test_override_items_parse_numbers_as_numbers_and_text_as_text() -> None:
    overrides = parse_override_items(
        [
            "free_memory_bytes=2147483648",
            "memory_bytes=4e9",
            "samples_per_s=12.5",
            "throughput=3",
            "device_name=Fake GPU = big",
            "compute_capability=8.6",
            "throughput=7",  # the last one wins
        ]
    )
    assert overrides == {
        "free_memory_bytes": 2 * GIB,
        "memory_bytes": 4_000_000_000,
        "samples_per_s": 12.5,
        "throughput": 7.0,
        "device_name": "Fake GPU = big",
        "compute_capability": "8.6",
    }
    assert type(overrides["memory_bytes"]) is int and type(overrides["throughput"]) is float


def test_an_unknown_key_names_the_allowed_ones() -> None:
    assert set(OVERRIDABLE) == {
        *("device_name", "memory_bytes", "free_memory_bytes"),
        *("compute_capability", "samples_per_s", "throughput"),
    }
    with pytest.raises(ConfigError) as caught:
        parse_override_items(["gpu_count=4"])
    assert str(caught.value) == (
        "--profile-override 'gpu_count=4': unknown key 'gpu_count'; allowed: compute_capability,"
        " device_name, free_memory_bytes, memory_bytes, samples_per_s, throughput"
    )


@pytest.mark.parametrize(
    ("item", "match"),
    [
        ("free_memory_bytes", "expected KEY=VALUE"),
        ("=5", "expected KEY=VALUE"),
        ("memory_bytes=lots", "memory_bytes must be a number, got 'lots'"),
        ("memory_bytes=-1", "memory_bytes must be >= 0"),
        ("memory_bytes=1.5", "memory_bytes must be an integer"),
        ("memory_bytes=1e30", "memory_bytes must be an integer of at most"),
        ("samples_per_s=nan", "samples_per_s must be a finite number"),
        ("throughput=inf", "throughput must be a finite number"),
        ("compute_capability=", "compute_capability must be a string of 1 to 32"),
        ("device_name=" + "x" * 256, "device_name must be a string of 1 to 255"),
    ],
)
def test_bad_override_items_are_one_clear_error(item: str, match: str) -> None:
    with pytest.raises(ConfigError, match=match) as caught:
        parse_override_items([item])
    assert str(caught.value).startswith("--profile-override '")
    assert "\n" not in str(caught.value)


def test_the_environment_is_applied_first_and_the_arguments_win() -> None:
    environ = {OVERRIDE_ENV: '{"free_memory_bytes": 2e9, "device_name": "Fake", "throughput": 1}'}
    overrides = profile_overrides(["throughput=5"], environ)
    assert overrides == {
        "free_memory_bytes": 2_000_000_000,
        "device_name": "Fake",
        "throughput": 5.0,
    }
    assert profile_overrides([], {}) == {} == parse_override_json("  ")


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("[1]", "expected a JSON object"),
        ("{", "Expecting property name"),
        ('{"samples_per_s": NaN}', "NaN is not a number JSON allows"),
        ('{"memory_bytes": true}', "memory_bytes must be a finite number, got True"),
        ('{"memory_bytes": "4"}', "memory_bytes must be a finite number"),
        ('{"device_name": 5}', "device_name must be a string"),
        ('{"cpu_count": 5}', "unknown key 'cpu_count'"),
    ],
)
def test_a_bad_environment_override_is_one_clear_error(text: str, match: str) -> None:
    with pytest.raises(ConfigError, match=match) as caught:
        parse_override_json(text)
    assert str(caught.value).startswith(f"${OVERRIDE_ENV}: ")
    assert "\n" not in str(caught.value)


def test_overrides_apply_on_top_of_the_probed_profile(cpu_profile: dict[str, Any]) -> None:
    overrides = {"memory_bytes": 8 * GIB, "free_memory_bytes": 2 * GIB, "device_name": "Fake"}
    profile = apply_overrides(cpu_profile, overrides)
    assert profile == {**cpu_profile, **overrides}
    validate("agent.state", {"state": "online", "profile": {**profile, "trainers": []}})
    with pytest.raises(ConfigError, match=r"free_memory_bytes \(2\) exceeds memory_bytes \(1\)"):
        apply_overrides(cpu_profile, {"memory_bytes": 1, "free_memory_bytes": 2})
    with pytest.raises(ConfigError, match="profile override: unknown key 'host'"):
        apply_overrides(cpu_profile, {"host": "elsewhere"})


def test_ready_reports_the_overridden_free_memory_else_a_fresh_reading() -> None:
    assert ready_free_memory("cpu", {"free_memory_bytes": 2 * GIB})() == 2 * GIB
    measured = ready_free_memory("cpu", {"throughput": 1.0})()
    assert isinstance(measured, int) and measured > 0


def test_every_ready_of_the_agent_carries_its_free_memory(tmp_path: Path) -> None:
    readings = iter([3 * GIB, None])

    async def main() -> None:
        options = AgentOptions(
            broker=BrokerUrl.parse("mqtt://127.0.0.1:1"),
            name=AGENT,
            profile=PROFILE,
            spool_dir=tmp_path / "spool",
            free_memory=lambda: next(readings),
        )
        agent = Agent(options, link_factory=FakeLink)
        task = asyncio.create_task(agent.run())
        await until(lambda: isinstance(agent.link, FakeLink), "the link")
        link = agent.link
        assert isinstance(link, FakeLink)
        await until(lambda: len(link.sent(AgentLeaf.READY)) == 1, "the first ready")
        link.deliver(None, "daemon.state", {"state": "online"})  # a daemon (re)born: ready again
        await until(lambda: len(link.sent(AgentLeaf.READY)) == 2, "the second ready")
        agent.stop()
        await asyncio.wait_for(task, 10)
        bodies = [envelope.body for envelope in link.sent(AgentLeaf.READY)]
        assert bodies == [
            {"slots": 1, "running": [], "free_memory_bytes": 3 * GIB},
            {"slots": 1, "running": []},
        ]

    asyncio.run(main())


def _agent_cli(*extra: str, env: dict[str, str] | None = None) -> list[str]:
    return [
        *(sys.executable, "-m", "agents.cli", "--name", "profile-agent", "--threads", "1"),
        *("--benchmark-seconds", "0", "--heartbeat", "3600", *extra),
    ]


@pytest.mark.parametrize(
    ("argument", "environment", "first_words"),
    [
        ("throughput=fast", "", "nasd-agent: error: --profile-override 'throughput=fast': "),
        ("throughput=1", "{bad", f"nasd-agent: error: ${OVERRIDE_ENV}: Expecting property"),
    ],
)
def test_the_cli_refuses_a_bad_override_in_one_line_with_status_2(
    tmp_path: Path, argument: str, environment: str, first_words: str
) -> None:
    argv = _agent_cli("--broker", "mqtt://127.0.0.1:1", "--profile-override", argument)
    argv += ["--spool", str(tmp_path / "spool")]
    done = subprocess.run(
        argv,
        cwd=ROOT,
        env={**python_env(), OVERRIDE_ENV: environment},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2, done.stderr
    assert done.stderr.startswith(first_words)
    assert len(done.stderr.strip().splitlines()) == 1


def test_an_overridden_agent_announces_and_readies_what_it_was_told(
    tmp_path: Path, mosquitto: MosquittoProcess
) -> None:
    """The real ``nasd-agent`` over Mosquitto: the CLI and environment overrides reach the wire."""
    name = "profile-agent"
    argv = _agent_cli("--broker", f"mqtt://{mosquitto.host}:{mosquitto.port}")
    argv += ["--profile-override", "free_memory_bytes=2147483648"]
    argv += ["--profile-override", "samples_per_s=50", "--spool", str(tmp_path / "spool")]
    environment = {"memory_bytes": 4 * GIB, "compute_capability": "8.6", "samples_per_s": 1}
    env = {**python_env(), OVERRIDE_ENV: json.dumps(environment)}

    async def main() -> tuple[dict[str, Any], dict[str, Any]]:
        async with mqtt_client(mosquitto.host, mosquitto.port, "profile-watcher") as client:
            await client.subscribe(agent_topic(name, AgentLeaf.STATE), qos=1)
            await client.subscribe(agent_topic(name, AgentLeaf.READY), qos=1)
            with (tmp_path / "agent.log").open("wb") as log:
                agent = subprocess.Popen(argv, cwd=ROOT, env=env, stdout=log, stderr=log)
            try:
                seen: dict[str, dict[str, Any]] = {}
                async with asyncio.timeout(60):
                    async for message in client.messages:
                        seen[str(message.topic).rsplit("/", 1)[1]] = decode(message.payload).body
                        if "ready" in seen and "state" in seen:
                            return seen["state"], seen["ready"]
            finally:
                agent.send_signal(signal.SIGTERM)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    agent.wait(20)
                if agent.poll() is None:
                    agent.kill()
                    agent.wait()
        log_text = (tmp_path / "agent.log").read_text(errors="replace")
        raise AssertionError(f"the agent never announced itself:\n{log_text}")

    state, ready = asyncio.run(main())
    profile = state["profile"]
    assert profile["free_memory_bytes"] == 2 * GIB and profile["memory_bytes"] == 4 * GIB
    assert profile["compute_capability"] == "8.6" and profile["samples_per_s"] == 50.0
    assert ready == {"slots": 1, "running": [], "free_memory_bytes": 2 * GIB}
