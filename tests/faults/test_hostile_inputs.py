"""Scenario 10, model-based half: 10,000 Hypothesis-generated messages through the daemon's intake
and engine, on a real SQLite file, while an honest agent holds leases.

``test_hostile_flood.py`` floods a running daemon over a real broker with seeded generators; this
test lets Hypothesis search for the message that breaks an invariant, and shrink it if it finds
one. Each example is a batch of 25 messages on every topic the daemon reads (the honest
agent's result and progress topics, strangers' state/ready/result/progress, control requests,
and topics outside the protocol): arbitrary bytes, arbitrary msgpack values, envelopes around
arbitrary bodies, and near-valid messages (a valid one with one field replaced by an arbitrary
value). 400 examples of 25 messages make the 10,000. After every batch:

* the batch went through intake and engine without any exception but refusals;
* no result was stored and no trial finished or failed (none of them carries a lease token);
* the honest agent still holds exactly the leases it was given;
* every agent row belongs to a stranger that sent a *valid* birth (no ACL broker stops that);
* the live engine passes its invariants and equals the engine rebuilt from the database.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import msgpack
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nasd.core.wire import decode, message_type_for_topic
from nasd.engine import rebuild
from nasd.errors import WireError
from nasd.service.intake import Intake, Parsed
from tests.unit.engine_harness import PROFILE, Harness, assigns, config, view

HONEST = "honest"
STRANGERS = ("stranger", "x" * 64, "a.b-c_d")
EXPERIMENT = "exp"
TOKEN = "0123456789abcdef" * 2

TOPICS = (
    *(f"nasd/v1/agents/{HONEST}/{leaf}" for leaf in ("result", "progress")),
    *(
        f"nasd/v1/agents/{name}/{leaf}"
        for name in STRANGERS
        for leaf in ("state", "ready", "result", "progress", "assign", "ack")
    ),
    *(f"nasd/v1/control/request/{command}" for command in ("status", "submit", "nope")),
    "nasd/v1/daemon/state",
    "nasd/v1/agents/+/result",
    "nasd/v1/agents/a/b/result",
    "elsewhere",
)

TEMPLATES: dict[str, dict[str, Any]] = {
    "agent.state": {"state": "online", "profile": {**PROFILE, "trainers": ["zero"]}},
    "agent.ready": {"slots": 2, "running": [f"{EXPERIMENT}:0"]},
    "trial.result": {
        "job_id": f"{EXPERIMENT}:0",
        "epoch": 1,
        "token": TOKEN,
        "status": "ok",
        "metrics": {"val_acc": 0.9},
        "error": None,
        "started_at": 1.0,
        "finished_at": 2.0,
        "checkpoint": None,
    },
    "trial.progress": {
        "job_id": f"{EXPERIMENT}:0",
        "epoch": 1,
        "token": TOKEN,
        "step": 1,
        "total": 2,
        "metrics": {},
    },
    "control.request": {
        "client": "cli-1",
        "correlation_id": "c1",
        "command": "status",
        "args": {},
    },
}

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**64), max_value=2**64)
    | st.floats()
    | st.text(max_size=80)
    | st.binary(max_size=40),
    lambda children: (
        st.lists(children, max_size=6) | st.dictionaries(st.text(max_size=12), children, max_size=6)
    ),
    max_leaves=12,
)


def _pack(value: Any) -> bytes:
    try:
        packed: bytes = msgpack.packb(value, use_bin_type=True)
    except (TypeError, ValueError, OverflowError):
        return b"\xc1"  # msgpack's "never used" byte: garbage all the same
    return packed


def _envelope(message_type: Any, body: Any) -> bytes:
    return _pack({"v": 1, "type": message_type, "id": "abc", "sent_at": 1.0, "body": body})


@st.composite
def near_valid(draw: st.DrawFn, message_type: str | None = None) -> bytes:
    """A valid template, as it is or with one field (possibly nested one level) replaced."""
    if message_type is None:
        message_type = draw(st.sampled_from(sorted(TEMPLATES)))
    body = copy.deepcopy(TEMPLATES[message_type])
    if draw(st.integers(0, 3)) == 0:
        return _envelope(message_type, body)  # valid: only the engine's own rules refuse it
    key = draw(st.sampled_from(sorted(body)))
    if isinstance(body[key], dict) and body[key] and draw(st.booleans()):
        inner = draw(st.sampled_from(sorted(body[key])))
        body[key][inner] = draw(json_values)
    else:
        body[key] = draw(json_values)
    return _envelope(message_type, body)


payloads = st.one_of(
    st.binary(max_size=300),
    json_values.map(_pack),
    st.tuples(st.sampled_from([*sorted(TEMPLATES), "nope", 1]), json_values).map(
        lambda pair: _envelope(*pair)
    ),
    near_valid(),
)
messages = st.one_of(
    st.tuples(st.sampled_from(TOPICS), payloads),
    # Aimed at the honest agent's leases: its own topics, the right message types, the right
    # jobs and epochs; only the lease token (never known here) is wrong.
    st.tuples(st.just(f"nasd/v1/agents/{HONEST}/result"), near_valid("trial.result")),
    st.tuples(st.just(f"nasd/v1/agents/{HONEST}/progress"), near_valid("trial.progress")),
)


def _valid_birth(topic: str, payload: bytes) -> str | None:
    """The stranger a message legitimately makes known (a valid ``state online``), if any."""
    try:
        envelope = decode(payload, expect=message_type_for_topic(topic))
    except WireError:
        return None
    if envelope.type == "agent.state" and envelope.body["state"] == "online":
        return topic.split("/")[3]
    return None


class _Message:
    def __init__(self, topic: str, payload: bytes) -> None:
        self.topic = topic
        self.payload = payload


@pytest.mark.slow
def test_ten_thousand_generated_messages_change_nothing_they_must_not(tmp_path: Path) -> None:
    h = Harness(tmp_path / "nasd.db")
    h.submit(config(EXPERIMENT, budget=20, max_attempts=5, lease_ttl_s=86400))
    leased = sorted(a["job_id"] for a in assigns(h.online(HONEST, slots=2)))
    assert len(leased) == 2
    intake = Intake()
    born = {HONEST}
    sent = 0

    @settings(
        max_examples=400,
        deadline=None,
        derandomize=True,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )
    @given(batch=st.lists(messages, min_size=25, max_size=25))
    def one_batch(batch: list[tuple[str, bytes]]) -> None:
        nonlocal sent
        sent += len(batch)
        parsed = Parsed()
        for topic, payload in batch:
            intake.take(topic, payload, parsed)
            name = _valid_birth(topic, payload)
            if name is not None:
                born.add(name)
        h.now += 0.5

        def apply(conn: Any) -> None:
            parsed.refusals.record(conn, h.now)
            h.engine.apply(conn, parsed.inputs, h.now)

        h.writer.run_sync(apply)
        assert h.query("SELECT COUNT(*) FROM results") == [(0,)]
        assert h.query(
            "SELECT COUNT(*) FROM trials WHERE status IN ('succeeded', 'failed', 'cancelled')"
        ) == [(0,)]
        holder = h.engine.ledger.find_agent(HONEST)
        assert holder is not None and sorted(holder.leases) == leased
        rows = {name for (name,) in h.query("SELECT name FROM agents")}
        assert rows <= born, f"agent rows for names never validly born: {rows - born}"
        h.engine.ledger.check()
        assert view(h.writer.run_sync(lambda c: rebuild(c, h.now))) == view(h.engine)

    one_batch()
    assert sent >= 10_000
    counted = h.query("SELECT SUM(count) FROM security_events")[0][0]
    assert counted > sent // 2, f"only {counted} of {sent} hostile messages were counted"
