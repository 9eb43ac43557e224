"""MQTT topic builders and parsers for protocol version 1 (DESIGN.md section 4).

Every topic nasd publishes or subscribes to is built here, and every topic it receives is parsed
here, so the layout lives in one place. Identifiers that become a topic level (agent ids, client
ids, experiment names) must match a strict ASCII pattern: a ``/`` would add a level, and ``+`` or
``#`` would turn a topic into a wildcard, which broker ACLs such as
``pattern write nasd/v1/agents/%u/#`` depend on never happening.
"""

from __future__ import annotations

import re
from enum import StrEnum

from nasd.errors import WireError

ROOT = "nasd/v1"
"""The prefix of every topic of protocol version 1."""

AGENT_ID_RE = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"
"""Agent and control-client ids: one topic level of 1-64 ASCII letters, digits, ``_ . -``."""

EXPERIMENT_NAME_RE = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"
"""Experiment names (they name a topic level and prefix every job id)."""

_AGENT_ID = re.compile(AGENT_ID_RE)
_EXPERIMENT_NAME = re.compile(EXPERIMENT_NAME_RE)
_AGENTS_PREFIX = f"{ROOT}/agents/"
_CONTROL_REQUEST_PREFIX = f"{ROOT}/control/request/"
_CONTROL_RESPONSE_PREFIX = f"{ROOT}/control/response/"
_EVENTS_PREFIX = f"{ROOT}/events/"


class AgentLeaf(StrEnum):
    """The last level of a per-agent topic: which conversation with that agent it carries."""

    STATE = "state"
    ASSIGN = "assign"
    CANCEL = "cancel"
    ACK = "ack"
    RESULT = "result"
    PROGRESS = "progress"
    READY = "ready"


class ControlCommand(StrEnum):
    """The commands a CLI may send the daemon (the last level of a control request topic)."""

    SUBMIT = "submit"
    STATUS = "status"
    PAUSE = "pause"
    RESUME = "resume"
    CANCEL = "cancel"


def is_valid_id(name: str) -> bool:
    """True if ``name`` may be an agent id, client id or experiment name (one topic level)."""
    # fullmatch, not match: ``$`` alone would accept a trailing newline.
    return isinstance(name, str) and _AGENT_ID.fullmatch(name) is not None


def _checked(name: str, what: str, pattern: re.Pattern[str]) -> str:
    if not isinstance(name, str) or pattern.fullmatch(name) is None:
        raise WireError(f"invalid {what} {name!r:.80}: must match {pattern.pattern}")
    return name


def check_agent_id(agent: str) -> str:
    """Return ``agent`` unchanged, or raise :class:`WireError` if it is not a valid agent id."""
    return _checked(agent, "agent id", _AGENT_ID)


def check_experiment_name(experiment: str) -> str:
    """Return ``experiment`` unchanged, or raise :class:`WireError` unless it is a valid name."""
    return _checked(experiment, "experiment name", _EXPERIMENT_NAME)


def daemon_state_topic() -> str:
    """The retained topic of the daemon's birth message and last will."""
    return f"{ROOT}/daemon/state"


def agent_topic(agent: str, leaf: AgentLeaf) -> str:
    """The topic ``nasd/v1/agents/<agent>/<leaf>``; :class:`WireError` for a bad agent id."""
    return f"{_AGENTS_PREFIX}{check_agent_id(agent)}/{AgentLeaf(leaf)}"


def agent_wildcard(leaf: AgentLeaf) -> str:
    """The subscription filter matching ``leaf`` for every agent: ``nasd/v1/agents/+/<leaf>``."""
    return f"{_AGENTS_PREFIX}+/{AgentLeaf(leaf)}"


def parse_agent_topic(topic: str) -> tuple[str, AgentLeaf]:
    """Split a per-agent topic into ``(agent, leaf)``; :class:`WireError` for any other topic."""
    if not isinstance(topic, str) or not topic.startswith(_AGENTS_PREFIX):
        raise WireError(f"not an agent topic: {topic!r:.120}")
    parts = topic[len(_AGENTS_PREFIX) :].split("/")
    if len(parts) != 2:
        raise WireError(f"not an agent topic: {topic!r:.120}")
    agent, leaf = parts
    try:
        return check_agent_id(agent), AgentLeaf(leaf)
    except ValueError:
        raise WireError(f"unknown agent topic leaf in {topic!r:.120}") from None


def control_request_topic(command: str) -> str:
    """The topic a CLI publishes ``command`` on; :class:`WireError` for an unknown command."""
    return f"{_CONTROL_REQUEST_PREFIX}{_command(command)}"


def control_request_wildcard() -> str:
    """The daemon's subscription filter for every control request."""
    return f"{_CONTROL_REQUEST_PREFIX}+"


def parse_control_request_topic(topic: str) -> ControlCommand:
    """The command named by a control request topic; :class:`WireError` for any other topic."""
    if not isinstance(topic, str) or not topic.startswith(_CONTROL_REQUEST_PREFIX):
        raise WireError(f"not a control request topic: {topic!r:.120}")
    return _command(topic[len(_CONTROL_REQUEST_PREFIX) :])


def control_response_topic(client: str) -> str:
    """The topic the daemon answers ``client`` on (a client id follows the agent id pattern)."""
    return f"{_CONTROL_RESPONSE_PREFIX}{_checked(client, 'client id', _AGENT_ID)}"


def parse_control_response_topic(topic: str) -> str:
    """The client id of a control response topic; :class:`WireError` for any other topic."""
    if not isinstance(topic, str) or not topic.startswith(_CONTROL_RESPONSE_PREFIX):
        raise WireError(f"not a control response topic: {topic!r:.120}")
    return _checked(topic[len(_CONTROL_RESPONSE_PREFIX) :], "client id", _AGENT_ID)


def experiment_events_topic(experiment: str) -> str:
    """The topic of an experiment's public progress events (``nasd/v1/events/<experiment>``)."""
    return f"{_EVENTS_PREFIX}{check_experiment_name(experiment)}"


def experiment_events_wildcard() -> str:
    """The subscription filter for the progress events of every experiment."""
    return f"{_EVENTS_PREFIX}+"


def parse_experiment_events_topic(topic: str) -> str:
    """The experiment name of an events topic; :class:`WireError` for any other topic."""
    if not isinstance(topic, str) or not topic.startswith(_EVENTS_PREFIX):
        raise WireError(f"not an experiment events topic: {topic!r:.120}")
    return check_experiment_name(topic[len(_EVENTS_PREFIX) :])


def _command(command: str) -> ControlCommand:
    try:
        return ControlCommand(command)
    except ValueError:
        raise WireError(f"unknown control command {command!r:.80}") from None
