"""A reconnecting MQTT connection with birth, last will and publishing, over aiomqtt.

Everything network-shaped from paho/aiomqtt stops here. :class:`Link` keeps one connection alive
(reconnecting with back-off), re-runs ``on_connect`` after every (re)connection so the owner can
publish its birth message and re-send what the broker may have lost, and queues every received
message on :attr:`Link.inbox`. Correctness never depends on the broker keeping state: the owner's
``on_connect`` re-sends what matters.

A link also checks its socket once a second for a connection the peer has closed or reset
(:func:`nasd.mqtt.sockets.peer_gone`), and then lets paho read that end itself. The event loop
should have said so at once, but uvloop does not: when the kernel flags an error on a watched
socket (a broker that exits with our last bytes unread resets the connection), libuv stops
watching it and uvloop reports nothing to the reader, so paho would learn of the loss only from
its keep-alive, up to twice ``keepalive`` seconds later. Measured before the check: one process
in about every three broker restarts took 10 s to notice; with it, all notice within a second.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import AsyncIterator, Callable, Coroutine, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import aiomqtt
import structlog

from nasd.mqtt.adapters import paho_client
from nasd.mqtt.sockets import peer_gone
from nasd.mqtt.url import BrokerUrl

__all__ = ["MAX_INFLIGHT", "SOCKET_CHECK_S", "Link", "Publication", "session_taken_over"]

log = structlog.get_logger("nasd.mqtt")

MAX_INFLIGHT = 1000
"""QoS-1 messages a client may have unacknowledged at once (paho's default is 20)."""

SOCKET_CHECK_S = 1.0
"""How often a link looks for a peer that closed or reset the connection unnoticed."""

PAHO_LOG = logging.getLogger("nasd.mqtt.client")
"""The logger handed to paho: its chatter is muted, errors reach us as exceptions anyway."""
PAHO_LOG.setLevel(logging.ERROR)


SESSION_TAKEN_OVER = 142
"""MQTT 5 reason code of a DISCONNECT sent because another client connected with our client id."""


def session_taken_over(exc: BaseException) -> bool:
    """Whether the broker said it dropped us for another connection with the same client id.

    Only an MQTT 5 broker says so (reason code 142, "Session taken over"); on MQTT 3.1.1 the
    connection just ends, and the daemon's retained-state check (:mod:`nasd.service.presence`)
    is what notices a second daemon.
    """
    rc = getattr(exc, "rc", None)
    return "taken over" in str(exc).lower() or getattr(rc, "value", rc) == SESSION_TAKEN_OVER


@dataclass(frozen=True, slots=True)
class Publication:
    """One message to publish."""

    topic: str
    payload: bytes
    qos: int = 1
    retain: bool = False


class Link:
    """One long-lived, reconnecting MQTT connection.

    ``subscriptions`` are (re)made on every connection before ``on_connect`` runs. ``clean_session``
    is off by default so the broker queues QoS-1 messages while we are away (a bonus, never relied
    on).
    """

    def __init__(
        self,
        url: BrokerUrl,
        client_id: str,
        *,
        subscriptions: Sequence[tuple[str, int]] = (),
        will: Publication | None = None,
        on_connect: Callable[[], Coroutine[Any, Any, None]] | None = None,
        clean_session: bool = False,
        keepalive: int = 5,
    ) -> None:
        self.url = url
        self.client_id = client_id
        self.subscriptions = list(subscriptions)
        self.will = will
        self.on_connect = on_connect
        self.clean_session = clean_session
        self.keepalive = keepalive
        self.inbox: asyncio.Queue[aiomqtt.Message] = asyncio.Queue()
        self.connected = asyncio.Event()
        self._client: aiomqtt.Client | None = None
        self._lost: asyncio.Future[None] | None = None  # resolves when this connection ends
        self._closing = False

    def _make_client(self) -> aiomqtt.Client:
        will = None
        if self.will is not None:
            will = aiomqtt.Will(
                self.will.topic, self.will.payload, qos=self.will.qos, retain=self.will.retain
            )
        client = aiomqtt.Client(
            **self.url.client_options(),
            identifier=self.client_id,
            clean_session=self.clean_session,
            will=will,
            keepalive=self.keepalive,
            max_inflight_messages=MAX_INFLIGHT,
            timeout=30,
            # paho leaves Nagle on; with delayed ACKs every small QoS-1 exchange then waits
            # ~40 ms. Latency, not bandwidth, bounds a credit-based work loop.
            socket_options=((socket.IPPROTO_TCP, socket.TCP_NODELAY, 1),),
            logger=PAHO_LOG,
        )
        client.pending_calls_threshold = 1 << 30  # many in-flight publishes are normal here
        return client

    async def run(self, *, first_connect_timeout: float | None = None) -> None:
        """Connect, subscribe, call ``on_connect``, pump messages; reconnect forever.

        With ``first_connect_timeout``, failing to connect the first time within that many seconds
        raises :class:`nasd.errors.BrokerUnavailable` (so a CLI can say so instead of hanging).
        """
        from nasd.errors import BrokerUnavailable

        backoff = 0.2
        loop = asyncio.get_running_loop()
        started = loop.time()
        ever_connected = False
        while not self._closing:
            try:
                async with self._connection() as client:
                    self._client = client
                    for topic, qos in self.subscriptions:
                        await client.subscribe(topic, qos=qos)
                    self.connected.set()
                    ever_connected = True
                    backoff = 0.2
                    log.info("broker.connected", broker=str(self.url), client_id=self.client_id)
                    await self._serve_connection(client)
            except aiomqtt.MqttError as exc:
                self.connected.clear()
                self._client = None
                if self._closing:
                    return
                waited = loop.time() - started
                if (
                    not ever_connected
                    and first_connect_timeout is not None
                    and waited > first_connect_timeout
                ):
                    raise BrokerUnavailable(
                        f"cannot reach the MQTT broker at {self.url}: {exc}"
                    ) from None
                log.warning(
                    "broker.session_taken_over"
                    if session_taken_over(exc)
                    else "broker.disconnected",
                    broker=str(self.url),
                    client_id=self.client_id,
                    error=str(exc),
                    retry_in=round(backoff, 2),
                )
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)
            finally:
                self.connected.clear()
                self._client = None
                if self._lost is not None and not self._lost.done():
                    self._lost.set_result(None)

    @contextlib.asynccontextmanager
    async def _connection(self) -> AsyncIterator[aiomqtt.Client]:
        """A connected client (see :meth:`_enter`); leaving disconnects it as ``async with``
        an aiomqtt client would."""
        client = self._make_client()
        await self._enter(client)
        try:
            yield client
        finally:
            await client.__aexit__(None, None, None)

    async def _enter(self, client: aiomqtt.Client) -> None:
        """Connect ``client`` (its ``__aenter__``), failing at once if the broker drops the
        connection before its CONNACK.

        aiomqtt ignores a disconnection that comes before CONNACK and waits its whole timeout
        (30 s): a broker that accepts and then resets connections (restarting, at its connection
        limit, behind a proxy) would stall every reconnection that long. paho still reports the
        loss to its ``on_disconnect``, wrapped here to raise :class:`aiomqtt.MqttError` at once,
        so that :meth:`run` retries after its short back-off; the client is then discarded.
        A socket whose end the event loop did not report is found as :meth:`_watch_socket` does.
        """
        paho = paho_client(client)
        loop = asyncio.get_running_loop()
        lost = asyncio.Event()
        aiomqtt_handler = paho.on_disconnect

        def on_disconnect(*args: Any, **kwargs: Any) -> None:
            loop.call_soon_threadsafe(lost.set)
            if aiomqtt_handler is not None:
                aiomqtt_handler(*args, **kwargs)

        paho.on_disconnect = on_disconnect
        entering = asyncio.ensure_future(client.__aenter__())
        try:
            while not entering.done():
                await asyncio.wait([entering], timeout=SOCKET_CHECK_S)
                if entering.done():
                    break
                sock = paho.socket()
                if sock is not None and peer_gone(sock):
                    with contextlib.suppress(Exception):
                        paho.loop_read()  # paho closes its end and reports the loss
                if lost.is_set():
                    raise aiomqtt.MqttError("the broker closed the connection before its CONNACK")
            entering.result()  # the connection's own error, if any
        finally:
            paho.on_disconnect = aiomqtt_handler
            if not entering.done():
                entering.cancel()
                with contextlib.suppress(BaseException):
                    await entering

    async def _serve_connection(self, client: aiomqtt.Client) -> None:
        """Pump messages while ``on_connect`` and the socket watch run beside it.

        The three run in one task group scoped to this connection, which lasts as long as the
        pump. ``on_connect`` publishes (birth, re-sends); if the connection drops meanwhile, only
        the pump notices at once (aiomqtt's publish waits for its timeout), so the pump decides:
        its failure cancels the hook and the watch, and the link reconnects immediately. Any other
        failure (a bug in the hook, say) is not a lost connection: it ends :meth:`run`.
        """
        self._lost = asyncio.get_running_loop().create_future()
        try:
            async with asyncio.TaskGroup() as group:
                pump = group.create_task(self._pump(client), name=f"{self.client_id}-pump")
                others = [
                    group.create_task(self._watch_socket(client), name=f"{self.client_id}-watch")
                ]
                if self.on_connect is not None:
                    others.append(
                        group.create_task(self.on_connect(), name=f"{self.client_id}-on-connect")
                    )
                # A failing pump cancels this wait through the group; one that simply ends (the
                # message stream closed) ends this connection all the same.
                await asyncio.wait([pump])
                for task in others:
                    task.cancel()
        except* aiomqtt.MqttError as lost:
            # A lost connection is what run() reconnects on; it expects the MqttError itself.
            raise lost.exceptions[0] from None

    async def _watch_socket(self, client: aiomqtt.Client) -> None:
        """Make paho read a connection end the event loop did not report (module doc)."""
        paho = paho_client(client)
        while True:
            await asyncio.sleep(SOCKET_CHECK_S)
            sock = paho.socket()
            if sock is not None and peer_gone(sock):
                log.info("broker.connection_end_found", client_id=self.client_id)
                # paho's own read path sees EOF or the reset, closes the socket and reports the
                # disconnection, which ends the message pump; the link then reconnects.
                try:
                    paho.loop_read()
                except Exception as exc:  # paho's keep-alive remains the last resort
                    log.warning("broker.read_failed", client_id=self.client_id, error=repr(exc))

    async def _pump(self, client: aiomqtt.Client) -> None:
        async for message in client.messages:
            self.inbox.put_nowait(message)

    async def publish(self, message: Publication) -> bool:
        """Publish once connected; False (logged) if the connection dropped meanwhile."""
        await self.connected.wait()
        client, lost = self._client, self._lost
        if client is None or lost is None:
            return False
        sending = asyncio.ensure_future(
            client.publish(message.topic, message.payload, qos=message.qos, retain=message.retain)
        )
        # aiomqtt keeps waiting for a PUBACK after the connection is gone: stop at the loss.
        await asyncio.wait({sending, lost}, return_when=asyncio.FIRST_COMPLETED)
        if not sending.done():
            sending.cancel()
            log.warning("publish.failed", topic=message.topic, error="connection lost")
            return False
        if sending.exception() is not None:
            log.warning("publish.failed", topic=message.topic, error=str(sending.exception()))
            return False
        return True

    def publish_nowait(self, messages: Iterable[Publication]) -> bool:
        """Queue messages with the MQTT client without waiting for their PUBACKs.

        The daemon's hot path: waiting for every PUBACK before taking the next batch halves its
        throughput, and loss is already covered end to end (agents re-send unacknowledged
        results; assignments of active leases are re-sent after every reconnect). False when
        not connected (the messages are dropped; the same recovery applies).
        """
        client = self._client
        if client is None or not self.connected.is_set():
            return False
        paho = paho_client(client)  # aiomqtt has no fire-and-forget publish
        for message in messages:
            info = paho.publish(message.topic, message.payload, message.qos, message.retain)
            if info.rc != 0:
                log.warning("publish.failed", topic=message.topic, rc=info.rc)
                return False
        return True

    async def publish_many(self, messages: Iterable[Publication]) -> None:
        """Publish a batch concurrently (QoS-1 round trips overlap); order per topic is kept."""
        await asyncio.gather(*(self.publish(m) for m in messages))

    async def close(self, farewell: Iterable[Publication] = ()) -> None:
        """Publish ``farewell`` (e.g. a retained "offline" state) and stop reconnecting.

        The owner then cancels the task running :meth:`run`; leaving ``async with`` sends a clean
        DISCONNECT, so the broker does not publish the last will.
        """
        self._closing = True
        if self._client is not None and self.connected.is_set():
            for message in farewell:
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(self.publish(message), timeout=5)
