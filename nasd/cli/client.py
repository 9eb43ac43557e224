"""The CLI's side of the control protocol: requests and correlated responses over MQTT.

A :class:`DaemonSession` is one connection to the broker: it reads the daemon's retained state,
then sends requests and waits for the answer carrying each one's correlation id. :func:`request`
sends one; :func:`fetch_status` fetches every page of a ``status`` (the daemon pages its reply so
that it always fits in a message, however many agents it knows).

Is a daemon there? The retained state says so, but a stale will or a forged "offline" can say
otherwise while a daemon serves (it repairs its state within a second, and re-publishes it every
few seconds anyway). So a read-only ``status`` is sent whatever the state says, and only an
unanswered one means "no daemon"; a command that changes something is sent only once a daemon
says "online" (waiting for its next refresh if needed), since a request to a daemon that is away
would wait in its broker session and run whenever it comes back.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import uuid
from types import TracebackType
from typing import Any

import aiomqtt

from nasd.core.wire import (
    control_request_topic,
    control_response_topic,
    daemon_state_topic,
    decode,
    encode,
)
from nasd.errors import BrokerUnavailable, NasdError, WireError
from nasd.mqtt import BrokerUrl
from nasd.mqtt.link import PAHO_LOG

RETAINED_WAIT_S = 3.0
"""How long the retained daemon state is waited for after subscribing."""

REFRESH_WAIT_S = 6.5
"""How long a live "online" is waited for when the retained state says "offline" (a daemon
re-publishes its state every 5 s)."""

UNCONFIRMED_STATUS_TIMEOUT_S = 4.0
"""How long a ``status`` sent without an "online" state waits for an answer."""

PAGE_LIMIT = 1000
"""Agents (and experiments) asked for per status page; the daemon may send fewer."""

MAX_PAGES = 10_000
"""A bound on the pages of one status, against a daemon that never says it is done."""


class DaemonError(NasdError):
    """The daemon is not there, did not answer, or refused the request."""


def _unreachable(broker: BrokerUrl, exc: Exception) -> BrokerUnavailable:
    return BrokerUnavailable(f"cannot reach the MQTT broker at {broker}: {exc}")


def _no_daemon(broker: BrokerUrl) -> DaemonError:
    return DaemonError(
        f"no nasd daemon is running on the broker at {broker} "
        "(start one with `nasd serve --config nasd.toml`)"
    )


class DaemonSession:
    """One connection to the daemon through ``broker``: ``async with DaemonSession(url) as s``."""

    def __init__(self, broker: BrokerUrl, *, timeout: float = 10.0) -> None:
        self.broker = broker
        self.timeout = timeout
        self.client_id = f"nasd-cli-{uuid.uuid4().hex[:16]}"
        self.online: bool | None = None
        """What the daemon's state said: True online, False offline, None nothing retained."""
        self._client = aiomqtt.Client(
            **broker.client_options(),
            identifier=self.client_id,
            clean_session=True,
            timeout=timeout,
            logger=PAHO_LOG,
            # Small request/response exchanges otherwise wait ~40 ms on Nagle + delayed ACK.
            socket_options=((socket.IPPROTO_TCP, socket.TCP_NODELAY, 1),),
        )

    async def __aenter__(self) -> DaemonSession:
        try:
            await self._client.__aenter__()
            await self._client.subscribe(daemon_state_topic(), qos=1)
            await self._client.subscribe(control_response_topic(self.client_id), qos=1)
            self.online = await self._read_state(RETAINED_WAIT_S, first_only=True)
        except aiomqtt.MqttError as exc:
            raise _unreachable(self.broker, exc) from None
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        with contextlib.suppress(aiomqtt.MqttError):
            await self._client.__aexit__(exc_type, exc, traceback)

    async def _read_state(self, wait_s: float, *, first_only: bool) -> bool | None:
        """The daemon's state from the next ``daemon.state`` message (``first_only``), or True
        as soon as one says "online" within ``wait_s``; None if none came."""
        seen: bool | None = None
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(wait_s):
                async for message in self._client.messages:
                    if str(message.topic) != daemon_state_topic():
                        continue
                    try:
                        state = decode(message.payload, expect="daemon.state")
                    except WireError:
                        continue
                    seen = state.body["state"] == "online"
                    if seen or first_only:
                        return seen
        return seen

    async def require_online(self) -> None:
        """Return once a daemon says "online"; DaemonError if none does (module docstring)."""
        if self.online:
            return
        if self.online is False and await self._read_state(REFRESH_WAIT_S, first_only=False):
            self.online = True
            return
        raise _no_daemon(self.broker)

    async def request(
        self, command: str, args: dict[str, Any], *, timeout: float | None = None
    ) -> Any:
        """Send ``command`` and return its result; DaemonError if refused or unanswered."""
        correlation_id = uuid.uuid4().hex
        body = {
            "client": self.client_id,
            "correlation_id": correlation_id,
            "command": command,
            "args": args,
        }
        wait = self.timeout if timeout is None else timeout
        try:
            await self._client.publish(
                control_request_topic(command), encode("control.request", body), qos=1
            )
            async with asyncio.timeout(wait):
                async for message in self._client.messages:
                    reply = _reply(message, correlation_id)
                    if reply is not None:
                        if not reply["ok"]:
                            raise DaemonError(str(reply["error"]))
                        return reply["result"]
        except TimeoutError:
            if not self.online:
                raise _no_daemon(self.broker) from None
            raise DaemonError(f"the daemon did not answer within {wait:g} s") from None
        except aiomqtt.MqttError as exc:
            raise _unreachable(self.broker, exc) from None
        raise DaemonError("connection closed before the daemon answered")

    async def status(self) -> dict[str, Any]:
        """Every page of the daemon's ``status``, merged into one mapping like the database's."""
        timeout = None if self.online else UNCONFIRMED_STATUS_TIMEOUT_S
        agents: list[Any] = []
        experiments: list[Any] = []
        merged: dict[str, Any] = {}
        agents_done = experiments_done = False
        for _page in range(MAX_PAGES):
            args = {
                "agents_offset": len(agents),
                "agents_limit": PAGE_LIMIT,
                "experiments_offset": len(experiments),
                "experiments_limit": PAGE_LIMIT,
            }
            page = await self.request("status", args, timeout=timeout)
            timeout = None  # it answered: it is there
            if not isinstance(page, dict):
                raise DaemonError(f"the daemon answered status with {type(page).__name__}")
            if not merged:
                merged = dict(page)
            else:
                _merge_scheduling(merged, page)
            if not agents_done:
                agents.extend(page.get("agents", []))
            if not experiments_done:
                experiments.extend(page.get("experiments", []))
            agents_done = _complete(page, "agents", len(agents))
            experiments_done = _complete(page, "experiments", len(experiments))
            if agents_done and experiments_done:
                break
        else:
            raise DaemonError(f"the daemon's status did not end within {MAX_PAGES} pages")
        for key in ("agents", "experiments"):
            merged.pop(f"{key}_offset", None)
            merged.pop(f"{key}_total", None)
        merged["agents"], merged["experiments"] = agents, experiments
        return merged


def _merge_scheduling(merged: dict[str, Any], page: dict[str, Any]) -> None:
    """Add a later page's ``scheduling.models`` to the first page's (a daemon may page them with
    the experiments); the compute classes are the first page's."""
    later = page.get("scheduling")
    if not isinstance(later, dict) or not isinstance(later.get("models"), dict):
        return
    first = merged.get("scheduling")
    if not isinstance(first, dict):
        merged["scheduling"] = later
        return
    models = first.get("models")
    merged["scheduling"] = {
        **first,
        "models": {**(models if isinstance(models, dict) else {}), **later["models"]},
    }


def _complete(page: dict[str, Any], key: str, have: int) -> bool:
    """Whether every item of ``key`` is fetched (an old daemon without paging sends them all)."""
    total = page.get(f"{key}_total")
    return not isinstance(total, int) or have >= total or not page.get(key)


async def request(
    broker: BrokerUrl, command: str, args: dict[str, Any], *, timeout: float = 10.0
) -> Any:
    """Send ``command`` to the daemon and return its result (DaemonError if refused)."""
    async with DaemonSession(broker, timeout=timeout) as session:
        if command == "status":
            return await session.status()
        await session.require_online()
        return await session.request(command, args)


async def fetch_status(broker: BrokerUrl, *, timeout: float = 10.0) -> dict[str, Any]:
    """The daemon's whole ``status`` (every page), as ``nasd status --broker`` prints it."""
    async with DaemonSession(broker, timeout=timeout) as session:
        return await session.status()


def _reply(message: aiomqtt.Message, correlation_id: str) -> dict[str, Any] | None:
    try:
        envelope = decode(message.payload, expect="control.response")
    except WireError:
        return None
    if envelope.body["correlation_id"] != correlation_id:
        return None
    return envelope.body
