"""The message types of protocol version 1 and which topic carries which type.

Each message type has one JSON Schema, ``schemas/v1/<type>.json``. The envelope type of a message
must match its topic (DESIGN.md section 4): :func:`message_type_for_topic` gives the one type a
received topic may carry, to pass as ``expect`` to :func:`nasd.core.wire.codec.decode`.
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import StrEnum
from types import MappingProxyType

from nasd.core.wire.topics import (
    AgentLeaf,
    daemon_state_topic,
    parse_agent_topic,
    parse_control_request_topic,
    parse_control_response_topic,
    parse_experiment_events_topic,
)
from nasd.errors import WireError


class MessageType(StrEnum):
    """The ``type`` field of an envelope; also the stem of its schema file."""

    DAEMON_STATE = "daemon.state"
    AGENT_STATE = "agent.state"
    AGENT_READY = "agent.ready"
    TRIAL_ASSIGN = "trial.assign"
    TRIAL_CANCEL = "trial.cancel"
    TRIAL_ACK = "trial.ack"
    TRIAL_RESULT = "trial.result"
    TRIAL_PROGRESS = "trial.progress"
    CONTROL_REQUEST = "control.request"
    CONTROL_RESPONSE = "control.response"
    EXPERIMENT_EVENT = "experiment.event"


MESSAGE_TYPES: frozenset[str] = frozenset(str(t) for t in MessageType)
"""Every message type a v1 envelope may carry (plain strings, for membership tests)."""

_KIB = 1024

MAX_BYTES_BY_TYPE: Mapping[str, int] = MappingProxyType(
    {
        MessageType.DAEMON_STATE: 4 * _KIB,
        MessageType.AGENT_STATE: 64 * _KIB,
        MessageType.AGENT_READY: 8 * _KIB,
        MessageType.TRIAL_ASSIGN: 256 * _KIB,
        MessageType.TRIAL_CANCEL: 4 * _KIB,
        MessageType.TRIAL_ACK: 4 * _KIB,
        MessageType.TRIAL_RESULT: 48 * _KIB,
        MessageType.TRIAL_PROGRESS: 24 * _KIB,
        MessageType.CONTROL_REQUEST: 64 * _KIB,
        MessageType.CONTROL_RESPONSE: 256 * _KIB,
        MessageType.EXPERIMENT_EVENT: 256 * _KIB,
    }
)
"""Largest payload of each message type, checked before anything is unpacked.

Each limit is above the largest message its schema allows, even with every string at its
maximum length in 4-byte UTF-8 characters (``tests/unit/test_wire_codec.py`` builds those), and
far below the 256 KiB every message may have: what a stranger can send the daemon on its busiest
topics (results, progress, readiness, control requests) costs little to refuse or decode (defect
6 of issue 6: 800 requests of 255 KB blocked its event loop for 20 s).
"""


def payload_limit(message_type: str) -> int:
    """The most bytes a payload of ``message_type`` may have (the global cap for unknown ones)."""
    return MAX_BYTES_BY_TYPE.get(message_type, 256 * _KIB)


LEAF_MESSAGE_TYPE: Mapping[AgentLeaf, MessageType] = MappingProxyType(
    {
        AgentLeaf.STATE: MessageType.AGENT_STATE,
        AgentLeaf.ASSIGN: MessageType.TRIAL_ASSIGN,
        AgentLeaf.CANCEL: MessageType.TRIAL_CANCEL,
        AgentLeaf.ACK: MessageType.TRIAL_ACK,
        AgentLeaf.RESULT: MessageType.TRIAL_RESULT,
        AgentLeaf.PROGRESS: MessageType.TRIAL_PROGRESS,
        AgentLeaf.READY: MessageType.AGENT_READY,
    }
)
"""The message type each per-agent topic leaf carries."""

_PREFIX_PARSERS = (
    (parse_control_request_topic, MessageType.CONTROL_REQUEST),
    (parse_control_response_topic, MessageType.CONTROL_RESPONSE),
    (parse_experiment_events_topic, MessageType.EXPERIMENT_EVENT),
)


def message_type_for_topic(topic: str) -> MessageType:
    """The only message type ``topic`` may carry; :class:`WireError` for a topic outside v1.

    Typical use on receipt: ``decode(payload, expect=message_type_for_topic(topic))``.
    """
    if topic == daemon_state_topic():
        return MessageType.DAEMON_STATE
    try:
        _, leaf = parse_agent_topic(topic)
    except WireError:
        pass
    else:
        return LEAF_MESSAGE_TYPE[leaf]
    for parse, message_type in _PREFIX_PARSERS:
        try:
            parse(topic)
        except WireError:
            continue
        return message_type
    raise WireError(f"no message type is carried on topic {topic!r:.120}")
