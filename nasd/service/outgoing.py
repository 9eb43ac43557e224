"""Turning the engine's messages into publications, where a failure to encode is never fatal.

An outbound message is encoded after the transaction that decided it has committed, so an
exception here used to escape the daemon's task group and end the process; a retained request
that provoked it ended every restart too (defect 1 of issue 6). Now a message that cannot be
encoded is logged as ``publish.unencodable`` (its type, topic and the reason) and dropped; a
``control.response`` is replaced by a short ``ok: false`` reply saying why, so the client still
gets an answer instead of waiting for its timeout.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import structlog

from nasd.core.wire import encode
from nasd.engine import Outbound
from nasd.engine.control import clip, refusal
from nasd.mqtt import Publication

log = structlog.get_logger("nasd.service.daemon")

TRUSTED = frozenset({"trial.assign", "trial.ack", "experiment.event"})
"""Hot-path messages the engine assembles from validated parts: encoded without re-checking."""

MAX_REASON_CHARS = 300
"""Longest encoding error kept in a log line or a replacement reply."""


def to_publication(message: Outbound) -> Publication | None:
    """Encode ``message`` for the wire; None (logged) when it cannot be encoded."""
    try:
        payload = encode(message.type, message.body, checked=message.type not in TRUSTED)
    except Exception as exc:  # whatever went wrong, one message must not end the daemon
        reason = clip(f"{type(exc).__name__}: {exc}", MAX_REASON_CHARS)
        log.error(
            "publish.unencodable", type=message.type, topic=message.topic[:200], reason=reason
        )
        if message.type != "control.response":
            return None
        replacement = _unencodable_reply(message.body, reason)
        if replacement is None:
            return None
        payload = replacement
    return Publication(message.topic, payload, message.qos, message.retain)


def to_publications(messages: Iterable[Outbound]) -> list[Publication]:
    """The publications of every message that could be encoded, in order."""
    out = []
    for message in messages:
        publication = to_publication(message)
        if publication is not None:
            out.append(publication)
    return out


def _unencodable_reply(body: Any, reason: str) -> bytes | None:
    """The payload of a short ``ok: false`` reply to the request ``body`` answered."""
    correlation_id = body.get("correlation_id") if isinstance(body, dict) else None
    if not isinstance(correlation_id, str):
        return None
    try:
        return encode(
            "control.response",
            refusal(correlation_id, f"the daemon could not send its reply: {reason}"),
        )
    except Exception as exc:  # e.g. a correlation id the schema refuses: no reply is possible
        log.error("publish.unencodable", type="control.response", reason=clip(str(exc), 200))
        return None
