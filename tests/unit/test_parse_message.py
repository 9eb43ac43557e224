"""nasd.service.daemon.parse_message: which received messages become engine inputs, which not."""

from __future__ import annotations

import os

import pytest

from nasd.core.wire import encode
from nasd.engine import Inbound
from nasd.errors import WireError
from nasd.service.daemon import parse_message
from tests.unit.test_wire_codec import EXAMPLES, raw

AGENT = "gpu-box-01"


ARGS: dict[str, dict[str, object]] = {
    "status": {},
    "submit": {"config": {"experiment": {"name": "x", "budget": 1}}},
    "pause": {"experiment": "x"},
    "resume": {"experiment": "x"},
    "cancel": {"experiment": "x"},
}


def control_request(command: str) -> dict[str, object]:
    """A valid control.request body asking for ``command``."""
    return {
        "client": "cli-9f2c",
        "correlation_id": "c0ffee",
        "command": command,
        "args": ARGS[command],
    }


@pytest.mark.parametrize(
    ("leaf", "message_type"),
    [
        ("result", "trial.result"),
        ("progress", "trial.progress"),
        ("ready", "agent.ready"),
        ("state", "agent.state"),
    ],
)
def test_agent_messages_become_inputs_naming_the_agent(leaf: str, message_type: str) -> None:
    body = EXAMPLES[message_type]
    inbound = parse_message(f"nasd/v1/agents/{AGENT}/{leaf}", encode(message_type, body))
    assert inbound == Inbound(message_type, AGENT, body)


def test_the_agent_comes_from_the_topic() -> None:
    payload = encode("trial.result", EXAMPLES["trial.result"])
    assert parse_message("nasd/v1/agents/other-agent/result", payload).agent == "other-agent"


@pytest.mark.parametrize(
    ("leaf", "message_type"),
    [("assign", "trial.assign"), ("cancel", "trial.cancel"), ("ack", "trial.ack")],
)
def test_agent_leaves_the_daemon_only_sends_are_refused(leaf: str, message_type: str) -> None:
    payload = encode(message_type, EXAMPLES[message_type])
    with pytest.raises(WireError, match=f"does not accept {leaf} messages"):
        parse_message(f"nasd/v1/agents/{AGENT}/{leaf}", payload)


@pytest.mark.parametrize("command", ["submit", "status", "pause", "resume", "cancel"])
def test_control_requests_become_inputs_without_an_agent(command: str) -> None:
    body = control_request(command)
    inbound = parse_message(f"nasd/v1/control/request/{command}", encode("control.request", body))
    assert inbound == Inbound("control.request", None, body)


def test_control_request_whose_topic_and_body_commands_differ_is_refused() -> None:
    payload = encode("control.request", control_request("cancel"))
    with pytest.raises(WireError, match="topic and body command differ"):
        parse_message("nasd/v1/control/request/status", payload)


@pytest.mark.parametrize(
    ("topic", "message_type", "match"),
    [
        ("nasd/v1/daemon/state", "daemon.state", "does not accept daemon.state"),
        ("nasd/v1/control/response/cli-9f2c", "control.response", "does not accept control.resp"),
        ("nasd/v1/events/mnist1d-cnn", "experiment.event", "does not accept experiment.event"),
        ("nasd/v2/agents/gpu-box-01/result", "trial.result", "no message type"),
        ("nasd/v1/agents/gpu-box-01/result/extra", "trial.result", "no message type"),
        ("nasd/v1/agents/../result", "trial.result", "no message type"),
        ("other/topic", "trial.result", "no message type"),
    ],
)
def test_other_topics_are_refused(topic: str, message_type: str, match: str) -> None:
    with pytest.raises(WireError, match=match):
        parse_message(topic, encode(message_type, EXAMPLES[message_type]))


@pytest.mark.parametrize(
    "payload",
    [b"", b"\xc1", b"\x81" * 10, os.urandom(300), b"\x00" * 300_000, "text", None, 42],
    ids=["empty", "never-used", "nested-maps", "random", "oversize", "str", "none", "int"],
)
def test_garbage_payloads_are_refused(payload: object) -> None:
    with pytest.raises(WireError):
        parse_message(f"nasd/v1/agents/{AGENT}/result", payload)


@pytest.mark.parametrize(
    ("topic", "message_type"),
    [
        (f"nasd/v1/agents/{AGENT}/result", "trial.progress"),
        (f"nasd/v1/agents/{AGENT}/state", "agent.ready"),
        (f"nasd/v1/agents/{AGENT}/ready", "trial.result"),
        ("nasd/v1/control/request/status", "control.response"),
    ],
)
def test_envelope_type_must_be_the_one_the_topic_carries(topic: str, message_type: str) -> None:
    with pytest.raises(WireError, match=f"message type '{message_type}' not expected here"):
        parse_message(topic, encode(message_type, EXAMPLES[message_type]))


def test_a_valid_envelope_with_an_invalid_body_is_refused() -> None:
    body = dict(EXAMPLES["trial.result"], epoch=2.0)
    with pytest.raises(WireError, match=r"body\.epoch must be integer"):
        parse_message(f"nasd/v1/agents/{AGENT}/result", raw(body))
