"""Topic builders and parsers: round trips, and refusal of anything that could break a level."""

from __future__ import annotations

import contextlib
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nasd.core.wire import (
    LEAF_MESSAGE_TYPE,
    AgentLeaf,
    ControlCommand,
    MessageType,
    agent_topic,
    agent_wildcard,
    check_experiment_name,
    control_request_topic,
    control_request_wildcard,
    control_response_topic,
    daemon_state_topic,
    experiment_events_topic,
    experiment_events_wildcard,
    is_valid_id,
    message_type_for_topic,
    parse_agent_topic,
    parse_control_request_topic,
    parse_control_response_topic,
    parse_experiment_events_topic,
)
from nasd.errors import WireError

GOOD_IDS = ["a", "gpu-box-01", "host.lab_3", "A9", "0", "x" * 64, "node-1.cuda_0"]
BAD_IDS: list[Any] = [
    "",
    "a/b",
    "/a",
    "+",
    "#",
    "a+",
    "a#",
    "-a",
    ".a",
    "_a",
    "a b",
    " a",
    "a\n",
    "a\x00",
    "é",
    "gpü",
    "\uff41",  # fullwidth "a": \w would take it, the ASCII pattern must not
    "x" * 65,
    None,
    5,
    b"agent",
]


def test_daemon_state_topic() -> None:
    assert daemon_state_topic() == "nasd/v1/daemon/state"


@pytest.mark.parametrize("agent", GOOD_IDS)
@pytest.mark.parametrize("leaf", list(AgentLeaf))
def test_agent_topic_round_trip(agent: str, leaf: AgentLeaf) -> None:
    topic = agent_topic(agent, leaf)
    assert topic == f"nasd/v1/agents/{agent}/{leaf.value}"
    assert parse_agent_topic(topic) == (agent, leaf)


@pytest.mark.parametrize("agent", BAD_IDS)
def test_agent_topic_refuses_bad_ids(agent: Any) -> None:
    with pytest.raises(WireError):
        agent_topic(agent, AgentLeaf.STATE)
    with pytest.raises(WireError):
        control_response_topic(agent)
    with pytest.raises(WireError):
        experiment_events_topic(agent)
    assert not is_valid_id(agent)


@pytest.mark.parametrize(
    "topic",
    [
        "",
        "nasd/v1/agents",
        "nasd/v1/agents/",
        "nasd/v1/agents/a",
        "nasd/v1/agents/a/",
        "nasd/v1/agents//state",
        "nasd/v1/agents/a/state/",
        "nasd/v1/agents/a/state/extra",
        "nasd/v1/agents/a/b/state",
        "nasd/v1/agents/a/bogus",
        "nasd/v1/agents/a/STATE",
        "nasd/v1/agents/+/state",
        "nasd/v1/agents/#",
        "nasd/v2/agents/a/state",
        "/nasd/v1/agents/a/state",
        "nasd/v1/daemon/state",
        "nasd/v1/agents/a b/state",
        "nasd/v1/agents/é/state",
    ],
)
def test_parse_agent_topic_refuses(topic: str) -> None:
    with pytest.raises(WireError):
        parse_agent_topic(topic)


def test_parse_agent_topic_refuses_non_strings() -> None:
    with pytest.raises(WireError):
        parse_agent_topic(b"nasd/v1/agents/a/state")  # type: ignore[arg-type]


def test_wildcards() -> None:
    assert agent_wildcard(AgentLeaf.RESULT) == "nasd/v1/agents/+/result"
    assert control_request_wildcard() == "nasd/v1/control/request/+"
    assert experiment_events_wildcard() == "nasd/v1/events/+"


@pytest.mark.parametrize("command", list(ControlCommand))
def test_control_request_round_trip(command: ControlCommand) -> None:
    topic = control_request_topic(command)
    assert topic == f"nasd/v1/control/request/{command.value}"
    assert parse_control_request_topic(topic) == command
    assert control_request_topic(command.value) == topic


@pytest.mark.parametrize(
    "topic",
    [
        "nasd/v1/control/request/",
        "nasd/v1/control/request/+",
        "nasd/v1/control/request/shutdown",
        "nasd/v1/control/request/submit/x",
        "nasd/v1/control/response/submit",
        "nasd/v1/agents/a/state",
    ],
)
def test_parse_control_request_topic_refuses(topic: str) -> None:
    with pytest.raises(WireError):
        parse_control_request_topic(topic)


def test_control_request_topic_refuses_unknown_command() -> None:
    with pytest.raises(WireError):
        control_request_topic("rm -rf")


def test_control_response_and_events_round_trip() -> None:
    assert control_response_topic("cli-1234") == "nasd/v1/control/response/cli-1234"
    assert parse_control_response_topic("nasd/v1/control/response/cli-1234") == "cli-1234"
    assert experiment_events_topic("mnist1d-cnn") == "nasd/v1/events/mnist1d-cnn"
    assert parse_experiment_events_topic("nasd/v1/events/mnist1d-cnn") == "mnist1d-cnn"
    assert check_experiment_name("mnist1d-cnn") == "mnist1d-cnn"
    with pytest.raises(WireError):
        parse_control_response_topic("nasd/v1/control/response/a/b")
    with pytest.raises(WireError):
        parse_experiment_events_topic("nasd/v1/events/+")


def test_every_leaf_carries_one_message_type() -> None:
    assert set(LEAF_MESSAGE_TYPE) == set(AgentLeaf)
    assert len(set(LEAF_MESSAGE_TYPE.values())) == len(AgentLeaf)


@pytest.mark.parametrize(
    ("topic", "expected"),
    [
        ("nasd/v1/daemon/state", MessageType.DAEMON_STATE),
        ("nasd/v1/agents/g1/state", MessageType.AGENT_STATE),
        ("nasd/v1/agents/g1/ready", MessageType.AGENT_READY),
        ("nasd/v1/agents/g1/assign", MessageType.TRIAL_ASSIGN),
        ("nasd/v1/agents/g1/cancel", MessageType.TRIAL_CANCEL),
        ("nasd/v1/agents/g1/ack", MessageType.TRIAL_ACK),
        ("nasd/v1/agents/g1/result", MessageType.TRIAL_RESULT),
        ("nasd/v1/agents/g1/progress", MessageType.TRIAL_PROGRESS),
        ("nasd/v1/control/request/pause", MessageType.CONTROL_REQUEST),
        ("nasd/v1/control/response/cli", MessageType.CONTROL_RESPONSE),
        ("nasd/v1/events/exp", MessageType.EXPERIMENT_EVENT),
    ],
)
def test_message_type_for_topic(topic: str, expected: MessageType) -> None:
    assert message_type_for_topic(topic) == expected


@pytest.mark.parametrize(
    "topic", ["nasd/v1/daemon/status", "nasd/v1/agents/g1/bogus", "other/topic", "nasd/v1/events/"]
)
def test_message_type_for_unknown_topic(topic: str) -> None:
    with pytest.raises(WireError):
        message_type_for_topic(topic)


@settings(max_examples=200, deadline=None)
@given(agent=st.text(max_size=70), leaf=st.sampled_from(list(AgentLeaf)))
def test_any_text_is_refused_or_makes_one_safe_level(agent: str, leaf: AgentLeaf) -> None:
    try:
        topic = agent_topic(agent, leaf)
    except WireError:
        assert not is_valid_id(agent)
        return
    levels = topic.split("/")
    assert len(levels) == 5
    assert not set(agent) & {"/", "+", "#", "\x00", "\n"}
    assert agent.isascii()
    assert parse_agent_topic(topic) == (agent, leaf)


@settings(max_examples=200, deadline=None)
@given(topic=st.text(max_size=80))
def test_parsers_raise_only_wire_error(topic: str) -> None:
    for parse in (
        parse_agent_topic,
        parse_control_request_topic,
        parse_control_response_topic,
        parse_experiment_events_topic,
        message_type_for_topic,
    ):
        with contextlib.suppress(WireError):
            parse(topic)
