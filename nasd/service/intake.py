"""What the daemon lets in: size limits, rate limits and decoding within a time budget.

Strangers on the broker can send the daemon anything on the topics it reads, and all of it is
handled on the event loop that also answers the broker's keep-alives. Defect 6 of issue 6: 800
valid but heavy control requests (255 KB of integers each, ~60 ms to decode) blocked the loop for
~20 s; the broker dropped the daemon for a missed keep-alive and honest leases expired. So:

1. Each topic has a size limit checked before a byte is unpacked
   (:func:`nasd.core.wire.payload_limit`: 64 KiB for control requests, 48 KiB for results, ...).
2. Control requests pass a global token bucket before decoding, and one per client id after
   (:class:`RateLimiter`): one sender, or many made-up ones, cannot make the daemon do more than
   a bounded amount of work per second. Refused requests get no reply (no amplification).
3. :meth:`Intake.parse` decodes a batch in slices of :data:`SLICE_S` and yields to the event loop
   between them, so a big batch never holds the loop for long whatever it contains.

Everything refused is tallied per ``(kind, source)`` (:class:`Refusals`) and counted in the
database once per batch, inside the batch's transaction (:meth:`Refusals.record`): a flood costs
a few rows updated per batch, not one write per message. A malformed control request whose
client and correlation id are readable gets an ``ok: false`` reply saying why, so a person with
an old or broken client is told rather than left to time out.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import structlog

from nasd.core.wire import (
    MessageType,
    control_response_topic,
    decode,
    message_type_for_topic,
    parse_agent_topic,
    parse_control_request_topic,
    payload_limit,
    reply_address,
)
from nasd.core.wire.topics import AgentLeaf
from nasd.engine import Inbound, Outbound, security
from nasd.engine.control import clip, refusal
from nasd.engine.security import SecurityKind
from nasd.errors import WireError

log = structlog.get_logger("nasd.service.intake")

INBOUND_LEAVES = (AgentLeaf.STATE, AgentLeaf.READY, AgentLeaf.RESULT, AgentLeaf.PROGRESS)
"""The per-agent topics the daemon reads."""

SLICE_S = 0.005
"""Longest the intake decodes without letting the event loop run other work."""

CLIENT_RATE = 10.0
CLIENT_BURST = 30.0
"""Control requests per second one client id may send, and how many at once (a paged
``nasd status`` of thousands of agents fits in the burst)."""

GLOBAL_RATE = 100.0
GLOBAL_BURST = 300.0
"""Control requests per second from everyone together (made-up client ids included)."""

MAX_CLIENTS = 4096
"""Client ids whose buckets are remembered (the least recently seen are forgotten first)."""

MAX_LOGGED_PER_BATCH = 10
"""Refused messages of one batch logged one by one (``message.dropped``); the rest at debug."""

MAX_SOURCES_PER_BATCH = 32
"""Distinct ``(kind, source)`` counts written per batch; the rest are merged per kind."""


def parse_message(topic: str, payload: object) -> Inbound:
    """Turn a received MQTT message into an engine input; WireError if it must be dropped."""
    message_type = message_type_for_topic(topic)
    envelope = decode(payload, expect=message_type)
    agent: str | None = None
    if topic.startswith("nasd/v1/agents/"):
        agent, leaf = parse_agent_topic(topic)
        if leaf not in INBOUND_LEAVES:
            raise WireError(f"the daemon does not accept {leaf} messages")
    elif envelope.type == "control.request":
        if parse_control_request_topic(topic) != envelope.body["command"]:
            raise WireError("control request topic and body command differ")
    else:
        raise WireError(f"the daemon does not accept {envelope.type} messages")
    return Inbound(envelope.type, agent, envelope.body)


class TokenBucket:
    """``rate`` tokens per second up to ``burst``; :meth:`take` spends one if there is one."""

    __slots__ = ("burst", "rate", "tokens", "updated")

    def __init__(self, rate: float, burst: float, now: float) -> None:
        self.rate = rate
        self.burst = burst
        self.tokens = burst
        self.updated = now

    def take(self, now: float) -> bool:
        """Spend a token (True), or say there is none (False)."""
        self.tokens = min(self.burst, self.tokens + (now - self.updated) * self.rate)
        self.updated = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return True
        return False


class RateLimiter:
    """A global token bucket for control requests, and one per client id (bounded in number)."""

    def __init__(
        self,
        *,
        client_rate: float = CLIENT_RATE,
        client_burst: float = CLIENT_BURST,
        global_rate: float = GLOBAL_RATE,
        global_burst: float = GLOBAL_BURST,
        max_clients: int = MAX_CLIENTS,
    ) -> None:
        self._client = (client_rate, client_burst)
        self._global = TokenBucket(global_rate, global_burst, time.monotonic())
        self._clients: OrderedDict[str, TokenBucket] = OrderedDict()
        self._max_clients = max_clients

    def allow_any(self, now: float) -> bool:
        """Whether one more control request may be decoded at all."""
        return self._global.take(now)

    def allow_client(self, client: str, now: float) -> bool:
        """Whether ``client`` may have one more request handled."""
        bucket = self._clients.get(client)
        if bucket is None:
            bucket = self._clients[client] = TokenBucket(*self._client, now)
            if len(self._clients) > self._max_clients:
                self._clients.popitem(last=False)
        else:
            self._clients.move_to_end(client)
        return bucket.take(now)


@dataclass(slots=True)
class _Tally:
    count: int
    detail: str


@dataclass(slots=True)
class Refusals:
    """Refused messages of one batch, counted per ``(kind, source)``."""

    counts: dict[tuple[SecurityKind, str | None], _Tally] = field(default_factory=dict)

    def add(self, kind: SecurityKind, source: str | None, detail: str) -> None:
        """Count one refusal (the first detail of each ``(kind, source)`` is kept)."""
        tally = self.counts.get((kind, source))
        if tally is None:
            self.counts[(kind, source)] = _Tally(1, clip(detail, 160))
        else:
            tally.count += 1

    @property
    def total(self) -> int:
        """How many messages were refused."""
        return sum(t.count for t in self.counts.values())

    def record(self, conn: sqlite3.Connection, now: float) -> None:
        """Count these refusals in the database (inside the caller's transaction): one
        ``security.<kind>`` event per ``(kind, source)``, at most :data:`MAX_SOURCES_PER_BATCH`,
        the rest merged per kind."""
        merged: dict[SecurityKind, list[int]] = {}
        for index, ((kind, source), tally) in enumerate(self.counts.items()):
            if index >= MAX_SOURCES_PER_BATCH:
                merged.setdefault(kind, [0, 0])
                merged[kind][0] += tally.count
                merged[kind][1] += 1
                continue
            detail = _detail(tally.count, tally.detail)
            security.note(conn, kind, source, detail, now, tally.count)
        for kind, (count, sources) in merged.items():
            detail = f"{count} more from {sources} sources"
            security.note(conn, kind, None, detail, now, count)


def _detail(count: int, detail: str) -> str:
    return detail if count == 1 else f"{count} in one batch, the first: {detail}"


@dataclass(slots=True)
class Parsed:
    """One batch after intake: engine inputs, replies to refused requests, and refusals."""

    inputs: list[Inbound] = field(default_factory=list)
    replies: list[Outbound] = field(default_factory=list)
    refusals: Refusals = field(default_factory=Refusals)


class Intake:
    """Turns received messages into engine inputs under the limits of the module docstring."""

    def __init__(self, limiter: RateLimiter | None = None, *, slice_s: float = SLICE_S) -> None:
        self.limiter = limiter if limiter is not None else RateLimiter()
        self.slice_s = slice_s

    async def parse(self, messages: Iterable[Any]) -> Parsed:
        """Parse ``messages`` (objects with ``topic`` and ``payload``), yielding to the loop
        every :attr:`slice_s` seconds."""
        parsed = Parsed()
        started = time.perf_counter()
        for message in messages:
            self.take(str(message.topic), message.payload, parsed)
            if time.perf_counter() - started > self.slice_s:
                await asyncio.sleep(0)
                started = time.perf_counter()
        return parsed

    def take(self, topic: str, payload: object, parsed: Parsed) -> None:
        """Parse one message into ``parsed`` (an input, or a refusal and maybe a reply)."""
        now = time.monotonic()
        try:
            message_type = message_type_for_topic(topic)
        except WireError as exc:
            self._refuse(parsed, SecurityKind.MALFORMED, None, topic, exc)
            return
        is_control = message_type == MessageType.CONTROL_REQUEST
        source = _agent_of(topic) if not is_control else None
        if is_control and not self.limiter.allow_any(now):
            self._refuse(parsed, SecurityKind.RATE_LIMITED, None, topic, "global control cap")
            return
        size = len(payload) if isinstance(payload, bytes | bytearray) else 0
        limit = payload_limit(message_type)
        if size > limit:
            self._refuse(
                parsed, SecurityKind.OVERSIZED, source, topic, f"{size} bytes exceeds {limit}"
            )
            return
        try:
            inbound = parse_message(topic, payload)
        except WireError as exc:
            if is_control:
                self._answer_malformed(parsed, payload, exc, now)
            self._refuse(parsed, SecurityKind.MALFORMED, source, topic, exc)
            return
        if is_control:
            client = str(inbound.body["client"])
            if not self.limiter.allow_client(client, now):
                self._refuse(parsed, SecurityKind.RATE_LIMITED, client, topic, "client rate")
                return
        parsed.inputs.append(inbound)

    def _answer_malformed(
        self, parsed: Parsed, payload: object, error: WireError, now: float
    ) -> None:
        address = reply_address(payload)
        if address is None:
            return
        client, correlation_id = address
        if not self.limiter.allow_client(client, now):
            return
        body = refusal(correlation_id, f"request refused: {error}")
        parsed.replies.append(Outbound(control_response_topic(client), "control.response", body))

    @staticmethod
    def _refuse(
        parsed: Parsed,
        kind: SecurityKind,
        source: str | None,
        topic: str,
        reason: object,
    ) -> None:
        # The first few of a batch are logged one by one; a flood is summed up by the
        # ``security.<kind>`` lines the batch writes (Refusals.record).
        emit = log.warning if parsed.refusals.total < MAX_LOGGED_PER_BATCH else log.debug
        emit("message.dropped", kind=str(kind), topic=topic[:200], reason=str(reason)[:300])
        parsed.refusals.add(kind, source, f"{topic[:80]}: {reason}")


def _agent_of(topic: str) -> str | None:
    try:
        return parse_agent_topic(topic)[0]
    except WireError:
        return None
