"""One daemon per broker: the daemon's identity, its retained state, and refusing to run twice.

Two daemons on the same topics (defect 5 of issue 6) acknowledge each other's results as
duplicates and assign the same agents; with the same client id they also take each other's MQTT
session over and over. So every daemon has an instance id (a uuid4) and keeps the retained
``nasd/v1/daemon/state`` saying who it is (:meth:`Identity.birth`: instance, host, pid,
``started_at``, ``born_at``), re-published every :data:`REFRESH_S` seconds.

- Before serving (and before opening the database), :func:`check_alone` reads that retained state
  with a client id of its own, so the running daemon's session is never touched. If another
  instance is online and alive (its retained state was sent less than :data:`ALIVE_S` ago, or a
  fresh refresh arrives within that time) it raises :class:`AnotherDaemon`, which names the other
  daemon's host and pid. A daemon killed with SIGKILL leaves no such state: the broker publishes
  its last will "offline" at once, so a restart never waits.
- While serving, :class:`Presence` watches that topic. Another instance's birth newer than its own
  means a takeover (two daemons started at the same moment, say): the older one logs
  ``daemon.conflict`` and stops with :class:`DaemonConflict`, without publishing "offline" over
  the newer one's state. An "offline" (or an older birth) that is not its own is a stale will or a
  forgery: it re-publishes its birth at once, so ``nasd status --broker`` is not misled for long.

``born_at`` changes whenever the daemon announces itself anew (each connection, and the end of a
database outage) and stays the same in the periodic refreshes, so an agent can tell a new birth
(re-announce, re-send spooled results) from a refresh.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import aiomqtt
import structlog

import nasd
from nasd.core.wire import daemon_state_topic, decode, encode
from nasd.errors import BrokerUnavailable, NasdError, WireError
from nasd.mqtt import BrokerUrl, Publication
from nasd.mqtt.link import PAHO_LOG

log = structlog.get_logger("nasd.service.presence")

REFRESH_S = 5.0
"""How often a serving daemon re-publishes its retained state."""

ALIVE_S = 2 * REFRESH_S + 1.0
"""A daemon whose state was refreshed this recently is alive."""

RETAINED_WAIT_S = 0.5
"""How long after subscribing a retained state is waited for (the broker sends it at once)."""

REPAIR_INTERVAL_S = 1.0
"""Least time between two re-publications of a birth that someone else's message overwrote."""


class AnotherDaemon(NasdError):
    """Another nasd daemon is serving on this broker: this one refuses to start."""


class DaemonConflict(NasdError):
    """Another daemon took over while this one was serving: this one stopped."""


@dataclass(frozen=True, slots=True)
class Identity:
    """Who this daemon is, as its retained state tells everyone."""

    instance: str
    host: str
    pid: int
    started_at: float
    version: str = nasd.__version__

    @classmethod
    def new(cls) -> Identity:
        """A fresh identity for this process."""
        return cls(uuid.uuid4().hex, socket.gethostname()[:255], os.getpid(), time.time())

    def birth(self, born_at: float) -> dict[str, Any]:
        """The ``daemon.state`` "online" body, announced at ``born_at``."""
        return {**self._fields(), "state": "online", "born_at": born_at}

    def will(self) -> dict[str, Any]:
        """The ``daemon.state`` "offline" body (last will and farewell)."""
        return {**self._fields(), "state": "offline"}

    def _fields(self) -> dict[str, Any]:
        return {
            "instance": self.instance,
            "host": self.host,
            "pid": self.pid,
            "started_at": self.started_at,
            "version": self.version,
        }

    def publication(self, body: Mapping[str, Any]) -> Publication:
        """``body`` as the retained daemon state."""
        return Publication(daemon_state_topic(), encode("daemon.state", body), 1, True)

    def is_newer(self, other: Mapping[str, Any]) -> bool:
        """Whether the daemon ``other`` (a state body) started after this one."""
        theirs = (float(other.get("started_at", 0.0)), str(other.get("instance", "")))
        return theirs > (self.started_at, self.instance)


def describe(body: Mapping[str, Any]) -> str:
    """``host HOST, pid PID (instance 1a2b3c4d)`` for an error message or a log line."""
    instance = str(body.get("instance", "unknown"))[:8]
    return f"host {body.get('host', '?')}, pid {body.get('pid', '?')} (instance {instance})"


async def check_alone(
    broker: BrokerUrl,
    identity: Identity,
    *,
    alive_s: float = ALIVE_S,
    connect_timeout_s: float | None = None,
) -> None:
    """Raise :class:`AnotherDaemon` if another daemon serves on ``broker`` (module docstring).

    Connects with a client id of its own (clean session), so the other daemon's session is left
    alone. Retries the connection like the link does; with ``connect_timeout_s``, gives up with
    :class:`BrokerUnavailable` after that long.
    """
    started = time.monotonic()
    backoff = 0.2
    while True:
        try:
            await _check_once(broker, identity, alive_s)
            return
        except aiomqtt.MqttError as exc:
            waited = time.monotonic() - started
            if connect_timeout_s is not None and waited > connect_timeout_s:
                raise BrokerUnavailable(
                    f"cannot reach the MQTT broker at {broker}: {exc}"
                ) from None
            log.warning("broker.unreachable", broker=str(broker), error=str(exc), retry_in=backoff)
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, 5.0)


async def _check_once(broker: BrokerUrl, identity: Identity, alive_s: float) -> None:
    async with aiomqtt.Client(
        **broker.client_options(),
        identifier=f"nasd-daemon-check-{identity.instance[:12]}",
        clean_session=True,
        timeout=30,
        logger=PAHO_LOG,
    ) as client:
        await client.subscribe(daemon_state_topic(), qos=1)
        other = await _other_online(client, identity, RETAINED_WAIT_S)
        if other is None:
            return
        body, sent_at = other
        if time.time() - sent_at > alive_s:
            # Not refreshed lately by its clock and ours: wait for a refresh to be sure.
            log.info("daemon.stale_state_seen", other=describe(body))
            refreshed = await _other_online(client, identity, alive_s, live_only=True)
            if refreshed is None:
                log.info("daemon.stale_state_ignored", other=describe(body))
                return
            body = refreshed[0]
        raise AnotherDaemon(
            f"another nasd daemon is serving on the broker at {broker}: {describe(body)}; "
            "stop it first (a database must have one daemon)"
        )


async def _other_online(
    client: aiomqtt.Client, identity: Identity, wait_s: float, *, live_only: bool = False
) -> tuple[dict[str, Any], float] | None:
    """The state body and send time of another instance that says "online", if one arrives."""
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(wait_s):
            async for message in client.messages:
                if live_only and message.retain:
                    continue
                try:
                    envelope = decode(message.payload, expect="daemon.state")
                except WireError:
                    continue
                body = envelope.body
                if body["state"] != "online" or body.get("instance") == identity.instance:
                    if not live_only:
                        return None  # the retained state says nobody else is online
                    continue
                return body, envelope.sent_at
    return None


class Presence:
    """Watches the daemon state topic while serving (see the module docstring)."""

    def __init__(self, identity: Identity) -> None:
        self.identity = identity
        self.conflict: DaemonConflict | None = None
        self._last_repair = 0.0

    def observe(self, payload: object) -> bool:
        """Take one message of the state topic; True if our birth should be re-published."""
        try:
            body = decode(payload, expect="daemon.state").body
        except WireError:
            return False
        if body.get("instance") == self.identity.instance:
            return False
        if body["state"] == "online" and self.identity.is_newer(body):
            if self.conflict is None:
                log.error("daemon.conflict", other=describe(body), action="stopping")
                self.conflict = DaemonConflict(
                    f"another nasd daemon took over on this broker: {describe(body)}; "
                    "this one stopped (a database must have one daemon)"
                )
            return False
        now = time.monotonic()
        if now - self._last_repair < REPAIR_INTERVAL_S:
            return False
        self._last_repair = now
        log.warning("daemon.state_overwritten", by=describe(body), state=body["state"])
        return True
