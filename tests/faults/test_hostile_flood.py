"""Scenario 10: a hostile flood on every topic the daemon reads, while honest agents work.

10,000 generated messages (garbage bytes, deep nesting, huge strings, wrong types, and near-valid
messages: a valid message with one thing broken), one oversized payload and a flood of valid
but unwelcome messages from one agent the daemon never saw online are published as fast as one
client can, on ``nasd/v1/agents/<id>/{state,ready,result,progress}`` (hostile ids and the honest
agents' own ids) and ``nasd/v1/control/request/<command>``. Afterwards:

* the daemon is still running (the flood never took it down);
* the checker is clean: every honest evaluation was recorded exactly once, with its true metric;
* nothing hostile reached the database: no ``agents`` row for a hostile id, no result for a
  made-up job, no experiment but the honest one; and the refusals were counted in
  ``security_events``.

The generator is a seeded :class:`random.Random` with hand-written producers (one per kind of
damage), so a failure repeats exactly. Each message is classified with nasd's own decoder: those
that happen to be *valid* are kept only if a stranger may legitimately send them without harming
an honest search (a status request; ready, offline, progress or result from a hostile id) and
dropped otherwise (a valid ``cancel`` would rightly cancel the search: only broker ACLs can stop
that, which ``tests/integration/test_acl.py`` covers).
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import random
import sqlite3
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgpack
import pytest

from nasd.core.wire import decode, message_type_for_topic
from nasd.core.wire.codec import MAX_PAYLOAD_BYTES
from nasd.errors import WireError
from nasd.mqtt import BrokerUrl
from tests.clients import mqtt_client
from tests.faults.checker import check
from tests.faults.cluster import Cluster

MESSAGES = 10_000
FLOOD = 3_000
"""Valid-looking messages from one agent id the daemon never saw online."""
SEED = 20_260_601
HOSTILE = (*(f"mallory-{i}" for i in range(8)), "flooder")
LEAVES = ("state", "ready", "result", "progress")
COMMANDS = ("submit", "status", "pause", "resume", "cancel")
HARMLESS_IF_VALID = {"agent.ready", "trial.progress", "trial.result"}
"""Valid message types a hostile id may send: the daemon must refuse them by its own rules."""

Publication = tuple[str, bytes]


# -- valid templates ----------------------------------------------------------------------------


def profile() -> dict[str, Any]:
    return {
        "host": "h",
        "device": "cpu",
        "device_name": "cpu",
        "memory_bytes": 1 << 30,
        "cpu_count": 2,
        "gpu_count": 0,
        "torch_version": "2.3",
        "throughput": 1.0,
        "slots": 2,
        "nasd_version": "0",
        "trainers": ["zero"],
    }


def made_up_job(rng: random.Random) -> str:
    return f"{rng.choice(['evil', 'x', 'fault', 'nope'])}:{rng.randrange(1, 10**6)}"


def template(rng: random.Random, message_type: str) -> dict[str, Any]:
    """A schema-valid body of ``message_type`` (the raw material of near-valid messages)."""
    if message_type == "agent.state":
        if rng.random() < 0.5:
            return {"state": "offline"}
        return {"state": "online", "profile": profile()}
    if message_type == "agent.ready":
        return {"slots": rng.randint(1, 64), "running": [made_up_job(rng)]}
    if message_type == "trial.result":
        return {
            "job_id": made_up_job(rng),
            "epoch": rng.randint(1, 5),
            "token": f"{rng.getrandbits(128):032x}",
            "status": rng.choice(["ok", "failed", "released"]),
            "metrics": {"val_acc": rng.random()},
            "error": None,
            "started_at": 1.0,
            "finished_at": 2.0,
            "checkpoint": None,
        }
    if message_type == "trial.progress":
        return {
            "job_id": made_up_job(rng),
            "epoch": 1,
            "token": f"{rng.getrandbits(128):032x}",
            "step": 1,
            "total": 2,
            "metrics": {},
        }
    if message_type == "control.request":
        return {"client": "mallory", "correlation_id": "c", "command": "status", "args": {}}
    raise AssertionError(message_type)


def envelope(message_type: str, body: Any, **overrides: Any) -> dict[str, Any]:
    value = {"v": 1, "type": message_type, "id": "m1", "sent_at": 1.0, "body": body}
    value.update(overrides)
    return value


def pack(value: Any) -> bytes:
    return msgpack.packb(value, use_bin_type=True)


# -- kinds of damage ----------------------------------------------------------------------------


def garbage(rng: random.Random, message_type: str) -> bytes:
    """Random bytes, or a valid message truncated or with bytes flipped."""
    choice = rng.random()
    if choice < 0.4:
        return rng.randbytes(rng.randrange(0, 2048))
    payload = bytearray(pack(envelope(message_type, template(rng, message_type))))
    if choice < 0.7:
        return bytes(payload[: rng.randrange(0, len(payload))])
    for _ in range(rng.randint(1, 4)):
        payload[rng.randrange(len(payload))] = rng.randrange(256)
    return bytes(payload)


def deep(rng: random.Random, message_type: str) -> bytes:
    """Nesting far beyond the decoder's limit: packed by hand (msgpack's packer would refuse)."""
    depth = rng.choice([33, 100, 1_000, 60_000])
    opener = rng.choice([b"\x91", b"\x81\xa1k"])  # a 1-element array, or a map {"k": ...}
    inner = opener * depth + b"\xc0"
    if rng.random() < 0.5:
        return inner
    # The nesting inside a real envelope's body.
    head = pack(envelope(message_type, {}))
    return head[: head.rfind(b"\xa4body") + 5] + b"\x81\xa1x" + inner


def huge(rng: random.Random, message_type: str) -> bytes:
    """A string or container as large as the payload limit allows, in some field."""
    size = rng.choice([5_000, 70_000, MAX_PAYLOAD_BYTES - 1_000])
    body = template(rng, message_type)
    key = rng.choice([*body, "extra"])
    roll = rng.random()
    if roll < 0.6:
        body[key] = "A" * size
    elif roll < 0.8:
        body[key] = list(range(min(size, 65_000)))
    else:
        body[key] = {f"k{i}": i for i in range(min(size // 12, 20_000))}
    overrides = {"id": "i" * size} if rng.random() < 0.1 else {}
    payload = pack(envelope(message_type, body, **overrides))
    return payload[:MAX_PAYLOAD_BYTES]


WRONG_VALUES: tuple[Any, ...] = (
    None,
    True,
    -1,
    0,
    2**63,
    -(2**63),
    1.5,
    math.nan,
    math.inf,
    -math.inf,
    "",
    "x" * 300,
    "\x00\ud7ff",
    [],
    [1, [2, [3]]],
    {},
    {"a": {"b": None}},
    b"\x00bytes",
    msgpack.ExtType(1, b"ext"),
)


def wrong_types(rng: random.Random, message_type: str) -> bytes:
    """A valid envelope whose body fields have the wrong types, or a body that is not a map."""
    body: Any = template(rng, message_type)
    if rng.random() < 0.15:
        body = rng.choice(WRONG_VALUES)
    else:
        for key in rng.sample(sorted(body), k=rng.randint(1, len(body))):
            body[key] = rng.choice(WRONG_VALUES)
    return pack(envelope(message_type, body))


def near_valid(rng: random.Random, message_type: str) -> bytes:
    """A valid message with exactly one thing broken."""
    body = template(rng, message_type)
    env = envelope(message_type, body)
    damage = rng.randrange(10)
    if damage == 0:
        del body[rng.choice(sorted(body))]
    elif damage == 1:
        body[rng.choice(["extra", "__proto__", "x" * 64])] = 1
    elif damage == 2:
        env["type"] = rng.choice(["trial.assign", "trial.ack", "daemon.state", "nope", ""])
    elif damage == 3:
        env[rng.choice(["v", "id", "sent_at"])] = rng.choice([2, 0, "", None, "1" * 65])
    elif damage == 4:
        env[rng.choice(["extra", "body2"])] = {}
    elif damage == 5:
        del env[rng.choice(sorted(env))]
    elif damage == 6 and message_type == "trial.result":
        body[rng.choice(["token", "job_id"])] = rng.choice(
            ["A" * 32, "0" * 31, "g" * 32, "evil", "evil:1\n", "../../x:1", "a:" + "9" * 10]
        )
    elif damage == 6 and message_type == "agent.state":
        body["profile"] = {**profile(), "trainers": ["os:system", "../../evil"], "slots": 65}
    elif damage == 7:
        # Non-string map keys: refused by strict_map_key.
        return pack(envelope(message_type, {1: 2, **body}))
    elif damage == 8 and message_type == "trial.result":
        body["metrics"] = rng.choice(
            [{"val_acc": math.nan}, {"val_acc": math.inf}, {"": 1.0}, {"m": "x"}]
        )
    elif damage == 8 and message_type == "control.request":
        # The command in the body differs from the topic's (the topic is chosen separately).
        body["command"] = rng.choice(["shutdown", "status", "cancel"])
        body["args"] = {"experiment": "x" * 5_000}
    else:
        body[rng.choice(sorted(body))] = rng.choice(WRONG_VALUES)
    return pack(env)


def unpackable(rng: random.Random, message_type: str) -> bytes:
    """msgpack the decoder must refuse however it is wrapped: ext types, binary, NaN metrics."""
    body = template(rng, message_type)
    body[rng.choice(sorted(body))] = rng.choice(
        [msgpack.ExtType(42, b"\x00" * 8), b"raw-bytes", math.nan]
    )
    return pack(envelope(message_type, body))


PRODUCERS: tuple[Callable[[random.Random, str], bytes], ...] = (
    garbage,
    deep,
    huge,
    wrong_types,
    near_valid,
    near_valid,
    unpackable,
)


# -- the generated stream -----------------------------------------------------------------------


@dataclass(slots=True)
class Flood:
    """The messages to publish and what the daemon must do about the valid ones among them."""

    publications: list[Publication] = field(default_factory=list)
    valid: dict[str, int] = field(default_factory=dict)  # message type -> count kept
    skipped_valid: int = 0  # valid but harmful messages not sent (see the module docstring)


def topic_for(rng: random.Random, honest: list[str]) -> tuple[str, str]:
    """A topic the daemon reads and the message type it carries."""
    if rng.random() < 0.2:
        command = rng.choice(COMMANDS)
        return f"nasd/v1/control/request/{command}", "control.request"
    agent = rng.choice(HOSTILE + tuple(honest)) if rng.random() < 0.8 else rng.choice(honest)
    leaf = rng.choice(LEAVES)
    return f"nasd/v1/agents/{agent}/{leaf}", str(message_type_for_topic(f"nasd/v1/agents/a/{leaf}"))


def harmless(topic: str, payload: bytes, honest: list[str]) -> tuple[bool, str | None]:
    """Whether sending ``payload`` cannot harm an honest search, and its type if it is valid."""
    try:
        envelope_ = decode(payload, expect=message_type_for_topic(topic))
    except WireError:
        return True, None
    if topic.startswith("nasd/v1/control/request/"):
        return topic.endswith("/status") and envelope_.body.get("command") == "status", "status"
    agent = topic.split("/")[3]
    return agent not in honest and envelope_.type in HARMLESS_IF_VALID, envelope_.type


def generate(honest: list[str], count: int = MESSAGES, seed: int = SEED) -> Flood:
    """``count`` hostile publications, reproducible from ``seed``."""
    rng = random.Random(seed)
    flood = Flood()
    while len(flood.publications) < count:
        topic, message_type = topic_for(rng, honest)
        payload = rng.choice(PRODUCERS)(rng, message_type)
        ok, valid_type = harmless(topic, payload, honest)
        if not ok:
            flood.skipped_valid += 1
            continue
        if valid_type is not None:
            flood.valid[valid_type] = flood.valid.get(valid_type, 0) + 1
        flood.publications.append((topic, payload))
    return flood


def flood_from_one_agent(count: int = FLOOD, seed: int = SEED) -> Iterator[Publication]:
    """Valid ready and progress messages, as fast as possible, from an agent never online."""
    rng = random.Random(seed + 1)
    for i in range(count):
        if i % 2:
            body = template(rng, "agent.ready")
            yield "nasd/v1/agents/flooder/ready", pack(envelope("agent.ready", body, id=f"f{i}"))
        else:
            body = template(rng, "trial.progress")
            yield (
                "nasd/v1/agents/flooder/progress",
                pack(envelope("trial.progress", body, id=f"f{i}")),
            )


def oversized() -> Publication:
    """One payload over the decoder's limit, on the result topic of a hostile id."""
    return "nasd/v1/agents/mallory-0/result", b"\x92" + b"\xa1x" * (MAX_PAYLOAD_BYTES // 2 + 10)


async def publish_all(url: str, publications: list[Publication], batch: int = 200) -> None:
    """Publish everything (QoS 1) from one client, ``batch`` messages in flight at a time."""
    broker = BrokerUrl.parse(url)
    async with mqtt_client(
        broker.host, broker.port, "mallory", max_queued_outgoing_messages=0
    ) as c:
        for start in range(0, len(publications), batch):
            chunk = publications[start : start + batch]
            await asyncio.gather(*(c.publish(t, p, qos=1, timeout=60) for t, p in chunk))


# -- the scenario -------------------------------------------------------------------------------


def test_the_generator_makes_what_it_promises() -> None:
    """The stream is reproducible, mostly invalid, and holds no harmful valid message."""
    honest = ["agent-0", "agent-1"]
    first, second = generate(honest, 2_000), generate(honest, 2_000)
    assert first.publications == second.publications
    invalid = sum(1 for t, p in first.publications if harmless(t, p, honest)[1] is None)
    assert invalid > 1_800
    assert all(harmless(t, p, honest)[0] for t, p in first.publications)
    topics = {t.rsplit("/", 1)[1] for t, _ in first.publications}
    assert topics >= {*LEAVES, *COMMANDS}
    sizes = [len(p) for _, p in first.publications]
    assert max(sizes) <= MAX_PAYLOAD_BYTES and max(sizes) > 100_000
    with pytest.raises(WireError, match="exceeds"):
        decode(oversized()[1])


def security_counts(db: Path) -> dict[str, int]:
    with contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True)) as conn:
        return dict(conn.execute("SELECT kind, count FROM security_events").fetchall())


def rows(db: Path, sql: str, *args: Any) -> list[tuple[Any, ...]]:
    with contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True)) as conn:
        return conn.execute(sql, args).fetchall()


@pytest.mark.slow
def test_a_hostile_flood_changes_nothing_and_honest_work_is_all_recorded(tmp_path: Path) -> None:
    budget = 60
    cluster = Cluster(tmp_path, agents=2, slots=2, budget=budget, min_s=0.2, max_s=1.0)
    try:
        cluster.start()
        honest = cluster.agent_names()
        flood = generate(honest)
        publications = [*flood.publications, oversized(), *flood_from_one_agent()]
        random.Random(SEED).shuffle(publications)
        before = cluster.results()
        assert before < budget, "the search ended before the flood"
        started = time.monotonic()
        asyncio.run(publish_all(cluster.broker_url, publications))
        print(
            f"hostile flood: {len(publications)} messages in {time.monotonic() - started:.1f} s"
            f" (valid ones kept {flood.valid}); results {before} -> {cluster.results()}"
        )
        cluster.wait_done(timeout=150)
        assert cluster.daemon_exit_code() is None, "the daemon died:\n" + cluster.log_tail()
        report = check(cluster.db, cluster.experiment)
        report.line("hostile_flood")
        report.assert_clean()
        db = cluster.db
        assert rows(db, "SELECT name FROM experiments") == [(cluster.experiment,)]
        agents = {name for (name,) in rows(db, "SELECT name FROM agents")}
        assert agents <= set(honest), f"hostile agents stored: {sorted(agents - set(honest))}"
        strangers = rows(
            db, "SELECT job_id FROM results WHERE job_id NOT IN (SELECT job_id FROM trials)"
        )
        assert strangers == []
        assert {a for (a,) in rows(db, "SELECT DISTINCT agent FROM results")} <= set(honest)
        counts = security_counts(db)
        print(f"security_events: {counts}")
        assert counts.get("malformed", 0) > 0 and counts.get("oversized", 0) > 0, counts
        assert sum(counts.values()) > 0
    finally:
        cluster.close()
