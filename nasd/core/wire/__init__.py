"""The only door for bytes: msgpack envelopes, JSON Schema validation and MQTT topics (v1).

Nothing else in nasd parses network payloads or builds topic strings. Everything refused here
raises :class:`nasd.errors.WireError`, which callers log and drop. :mod:`~nasd.core.wire.codec`
packs and unpacks envelopes, :mod:`~nasd.core.wire.schemas` checks message bodies with
fastjsonschema (and experiment configs with jsonschema, for fuller messages to people),
:mod:`~nasd.core.wire.messages`
says which message type each topic carries, and :mod:`~nasd.core.wire.topics` builds and parses
them.
"""

from __future__ import annotations

from nasd.core.wire.codec import (
    MAX_CONTAINER_LEN,
    MAX_DEPTH,
    MAX_ID_LEN,
    MAX_PAYLOAD_BYTES,
    PROTOCOL_VERSION,
    Envelope,
    decode,
    encode,
    reply_address,
)
from nasd.core.wire.messages import (
    LEAF_MESSAGE_TYPE,
    MAX_BYTES_BY_TYPE,
    MESSAGE_TYPES,
    MessageType,
    message_type_for_topic,
    payload_limit,
)
from nasd.core.wire.schemas import (
    EXPERIMENT_SCHEMA,
    SCHEMAS_DIR_ENV,
    preload,
    schema_dir,
    validate,
    validate_experiment_config,
)
from nasd.core.wire.topics import (
    AGENT_ID_RE,
    EXPERIMENT_NAME_RE,
    ROOT,
    AgentLeaf,
    ControlCommand,
    agent_topic,
    agent_wildcard,
    check_agent_id,
    check_experiment_name,
    control_request_topic,
    control_request_wildcard,
    control_response_topic,
    daemon_state_topic,
    experiment_events_topic,
    experiment_events_wildcard,
    is_valid_id,
    parse_agent_topic,
    parse_control_request_topic,
    parse_control_response_topic,
    parse_experiment_events_topic,
)

__all__ = [
    "AGENT_ID_RE",
    "EXPERIMENT_NAME_RE",
    "EXPERIMENT_SCHEMA",
    "LEAF_MESSAGE_TYPE",
    "MAX_BYTES_BY_TYPE",
    "MAX_CONTAINER_LEN",
    "MAX_DEPTH",
    "MAX_ID_LEN",
    "MAX_PAYLOAD_BYTES",
    "MESSAGE_TYPES",
    "PROTOCOL_VERSION",
    "ROOT",
    "SCHEMAS_DIR_ENV",
    "AgentLeaf",
    "ControlCommand",
    "Envelope",
    "MessageType",
    "agent_topic",
    "agent_wildcard",
    "check_agent_id",
    "check_experiment_name",
    "control_request_topic",
    "control_request_wildcard",
    "control_response_topic",
    "daemon_state_topic",
    "decode",
    "encode",
    "experiment_events_topic",
    "experiment_events_wildcard",
    "is_valid_id",
    "message_type_for_topic",
    "parse_agent_topic",
    "parse_control_request_topic",
    "parse_control_response_topic",
    "parse_experiment_events_topic",
    "payload_limit",
    "preload",
    "reply_address",
    "schema_dir",
    "validate",
    "validate_experiment_config",
]
