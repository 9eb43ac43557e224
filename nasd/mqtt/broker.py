"""The embedded MQTT 3.1.1 broker behind `nasd run` and `nasd broker`: zero setup, one process.

It wraps amqtt's broker so that a first try needs no Mosquitto. Production deployments use
Mosquitto (see ``systemd/``); nothing in nasd may depend on this broker's quirks, and the broker is
never the source of truth (it keeps everything in memory and forgets it all on restart).

What this module adds to amqtt, and why:

- **Persistent sessions for every client.** amqtt's stock anonymous-auth plugin marks sessions
  "anonymous", and amqtt then neither queues QoS 1 messages for them while they are offline nor
  keeps their subscriptions. Agents and the daemon reconnect with ``clean_session=False``, so an
  auth plugin that admits everyone without that mark is installed instead.
- **Keep-alive enforcement.** amqtt never drops a silent client, so a frozen (SIGSTOPped) agent
  would never get its last will published. Here a client that sends nothing for 1.5 times its
  keep-alive is disconnected, as MQTT 3.1.1 section 3.1.2.10 asks, and its will is published.
- **Retained messages only for one's own subscriptions.** On (re)connect amqtt replays retained
  messages matching *any* client's subscriptions; here a client only gets those matching its own.
- **Quiet logs.** amqtt logs every connection at INFO and prints tracebacks when a client vanishes
  mid-flight; its loggers are set to WARNING and expected disconnect errors lose their traceback.

Known limits (measured or read from amqtt 0.12): a QoS 1 message whose PUBACK does not arrive within
5 s is dropped by amqtt rather than retried while the client stays connected, and queued messages
are held in memory without a bound (sessions expire after ``session_expiry_s``). nasd's
application-level ack and resend cover both.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import signal
import socket
import sys
from collections.abc import Callable
from types import TracebackType
from typing import Any, Self

from amqtt.adapters import ReaderAdapter, WriterAdapter
from amqtt.broker import Broker
from amqtt.errors import AMQTTError, BrokerError, MQTTError, NoDataError
from amqtt.mqtt.protocol.broker_handler import BrokerProtocolHandler
from amqtt.plugins.base import BaseAuthPlugin
from amqtt.session import Session

from nasd.errors import ConfigError

__all__ = ["EmbeddedBroker", "free_port", "run_broker", "serve_forever"]

_log = logging.getLogger(__name__)

#: How long a disconnected persistent session (its subscriptions and queued messages) is kept.
DEFAULT_SESSION_EXPIRY_S = 24 * 3600
#: Upper bound on a clean shutdown; past it the remaining connections are simply dropped.
_SHUTDOWN_TIMEOUT_S = 10.0
#: MQTT 3.1.1 section 3.1.2.10: the server may wait one and a half keep-alive periods.
_KEEPALIVE_GRACE = 1.5
#: Loggers of amqtt and of the state-machine library it uses; both are chatty at INFO.
_CHATTY_LOGGERS = ("amqtt", "transitions")
#: Exceptions that mean "a client went away"; logged without a traceback.
_DISCONNECT_ERRORS: tuple[type[BaseException], ...] = (
    ConnectionError,
    TimeoutError,
    asyncio.CancelledError,
    asyncio.IncompleteReadError,
    AMQTTError,
    MQTTError,
    NoDataError,
)

#: amqtt's messages for connections that closed before sending CONNECT.
_PROBE_PREFIXES = ("No data from", "Failed to initialize client session")


def free_port(host: str = "127.0.0.1") -> int:
    """Return a TCP port on ``host`` that was free a moment ago.

    The port is not reserved: another process may take it before the caller binds it. Prefer
    ``EmbeddedBroker(port=0)``, which binds first and reports the port, where that is possible.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.bind((host, 0))
        port: int = probe.getsockname()[1]
    return port


class _TracebackFilter(logging.Filter):
    """Quiet the log records amqtt writes when clients go away, which is routine for a broker.

    Records with the traceback of a disconnect error (an agent killed with SIGKILL) keep their
    one-line message at WARNING; "no data" records from connections closed before CONNECT (port
    probes such as ``wait_port``) are dropped.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if message.startswith(_PROBE_PREFIXES) and (
            "No data" in message or "No more data" in message
        ):
            return False
        if record.exc_info and isinstance(record.exc_info[1], _DISCONNECT_ERRORS):
            record.msg = f"{message} ({record.exc_info[1]!r})"
            record.args = None
            record.exc_info = None
            record.exc_text = None
            record.levelno = logging.WARNING
            record.levelname = logging.getLevelName(logging.WARNING)
        return True


_TRACEBACK_FILTER = _TracebackFilter()


def quiet_amqtt_logging() -> None:
    """Set amqtt's loggers to WARNING and drop tracebacks of routine disconnects (idempotent)."""
    for name in _CHATTY_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)
    for name in ("amqtt.broker", "amqtt.mqtt.protocol.handler"):
        logger = logging.getLogger(name)
        if _TRACEBACK_FILTER not in logger.filters:
            logger.addFilter(_TRACEBACK_FILTER)


class OpenAuthPlugin(BaseAuthPlugin):
    """Admit every client without marking its session anonymous.

    amqtt keeps no offline queue and no subscriptions for anonymous sessions, which would silently
    turn ``clean_session=False`` into a clean session. The embedded broker listens on loopback for a
    single user's run, so admitting everyone is the intended policy; ACLs belong to Mosquitto.
    """

    async def authenticate(self, *, session: Session) -> bool | None:
        """Accept the client (the broker requires at least one plugin to say True)."""
        del session
        return True


#: amqtt's private ``Broker`` coroutines that :class:`_NasdBroker` overrides, with the parameters
#: each override receives. amqtt may rename them in any release, and an override of a name amqtt
#: no longer calls is silently dead, so ``tests/unit/test_adapters.py`` checks every entry (and
#: that no other private name of ``Broker`` is overridden) against the installed amqtt.
AMQTT_OVERRIDES: dict[str, tuple[str, ...]] = {
    "_initialize_client_session": ("self", "reader", "writer", "remote_address", "remote_port"),
    "_publish_retained_messages_for_subscription": ("self", "subscription", "session"),
}


class _NasdBroker(Broker):
    """amqtt's broker plus keep-alive enforcement and per-client retained replay (module doc).

    Besides :data:`AMQTT_OVERRIDES`, it relies on amqtt's protocol handler calling its (empty)
    ``handle_read_timeout()`` when a read outlasts the session's keep-alive, and on the private
    ``_servers`` map for the bound port; the same test checks both.
    """

    def __init__(self, config: dict[str, Any]) -> None:
        super().__init__(config)
        self._timeout_tasks: set[asyncio.Task[None]] = set()

    def bound_port(self) -> int:
        """The TCP port the default listener actually bound (useful when it was asked for 0)."""
        server = self._servers["default"].instance  # amqtt has no public accessor for it
        sockets = getattr(server, "sockets", None)
        if not sockets:
            raise BrokerError("the broker has no listening socket")
        port: int = sockets[0].getsockname()[1]
        return port

    async def _initialize_client_session(
        self,
        reader: ReaderAdapter,
        writer: WriterAdapter,
        remote_address: str,
        remote_port: int,
    ) -> tuple[BrokerProtocolHandler, Session]:
        handler, session = await super()._initialize_client_session(
            reader, writer, remote_address, remote_port
        )
        # The handler reads with this timeout; on expiry it calls handle_read_timeout, which amqtt
        # leaves empty. Ours ends the connection so that the will is published.
        if session.keep_alive > 0:
            session.keep_alive = math.ceil(session.keep_alive * _KEEPALIVE_GRACE)
        handler.handle_read_timeout = lambda: self._on_keepalive_expired(handler)
        return handler, session

    def _on_keepalive_expired(self, handler: BrokerProtocolHandler) -> None:
        """Close a connection whose client stayed silent past its keep-alive grace."""
        client_id = handler.session.client_id if handler.session else None
        _log.warning("embedded_broker.keepalive_expired client_id=%s", client_id)
        task = asyncio.create_task(handler.handle_connection_closed(), name="keepalive-expired")
        self._timeout_tasks.add(task)
        task.add_done_callback(self._timeout_tasks.discard)

    async def _publish_retained_messages_for_subscription(
        self, subscription: tuple[str, int], session: Session
    ) -> None:
        topic_filter = subscription[0]
        subscribers = self.subscriptions.get(topic_filter, [])
        if any(sub.client_id == session.client_id for sub, _ in subscribers):
            await super()._publish_retained_messages_for_subscription(subscription, session)


class EmbeddedBroker:
    """An in-process MQTT 3.1.1 broker on ``host:port`` (``port=0`` picks a free port).

    Use it as an async context manager, or call :meth:`start` and :meth:`stop`. It supports what
    nasd relies on: retained messages, QoS 0/1 (and 2), last wills, ``clean_session=False``
    sessions that keep subscriptions and queue QoS 1 messages while the client is away, and
    payloads well above nasd's limit. Everything lives in memory: a restart forgets it all.
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        session_expiry_s: int = DEFAULT_SESSION_EXPIRY_S,
    ) -> None:
        self._host = host
        self._requested_port = port
        self._port: int | None = None
        self._session_expiry_s = session_expiry_s
        self._broker: _NasdBroker | None = None

    @property
    def host(self) -> str:
        """The address the broker listens on."""
        return self._host

    @property
    def port(self) -> int:
        """The TCP port the broker listens on (only known once started, when 0 was asked for)."""
        if self._port is None:
            raise RuntimeError("the embedded broker is not started")
        return self._port

    @property
    def url(self) -> str:
        """``mqtt://HOST:PORT``, with IPv6 literals in brackets."""
        host = f"[{self._host}]" if ":" in self._host else self._host
        return f"mqtt://{host}:{self.port}"

    @property
    def running(self) -> bool:
        """Whether :meth:`start` has succeeded and :meth:`stop` has not been called since."""
        return self._broker is not None

    def _config(self) -> dict[str, Any]:
        host = f"[{self._host}]" if ":" in self._host else self._host
        return {
            "listeners": {
                "default": {"type": "tcp", "bind": f"{host}:{self._requested_port}"},
            },
            "timeout_disconnect_delay": 0,
            "session_expiry_interval": self._session_expiry_s,
            # Only our auth plugin: no $SYS publisher, no per-packet event loggers.
            "plugins": {f"{__name__}.{OpenAuthPlugin.__name__}": {}},
        }

    async def start(self) -> None:
        """Bind the listener and start serving; raises ConfigError if the address is unusable."""
        if self._broker is not None:
            raise RuntimeError("the embedded broker is already started")
        quiet_amqtt_logging()
        broker = _NasdBroker(self._config())
        try:
            await broker.start()
        except BrokerError as exc:
            raise ConfigError(
                f"embedded broker cannot listen on {self._host}:{self._requested_port}: "
                f"{exc.__cause__ or exc}"
            ) from exc
        self._broker = broker
        self._port = broker.bound_port()
        _log.info("embedded_broker.started url=%s", self.url)

    async def stop(self) -> None:
        """Disconnect every client and close the listener (idempotent; bounded in time)."""
        broker, self._broker = self._broker, None
        if broker is None:
            return
        try:
            await asyncio.wait_for(broker.shutdown(), timeout=_SHUTDOWN_TIMEOUT_S)
        except TimeoutError:
            _log.warning("embedded_broker.stop_timeout seconds=%s", _SHUTDOWN_TIMEOUT_S)
        _log.info("embedded_broker.stopped")

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()


async def serve_forever(
    host: str,
    port: int,
    *,
    ready: Callable[[str], None] | None = None,
) -> None:
    """Run an embedded broker until this coroutine is cancelled, then stop it cleanly.

    ``ready`` is called with the broker's URL once it accepts connections (tests and
    `nasd broker` use it to learn a port picked with ``port=0``).
    """
    async with EmbeddedBroker(host, port) as broker:
        if ready is not None:
            ready(broker.url)
        await asyncio.Event().wait()


def _print_url(url: str) -> None:
    print(f"nasd embedded broker listening on {url}", flush=True)


def run_broker(
    host: str,
    port: int,
    *,
    ready: Callable[[str], None] | None = _print_url,
) -> None:
    """Serve an embedded broker in the foreground until SIGINT or SIGTERM (`nasd broker`)."""

    async def main() -> None:
        task = asyncio.current_task()
        assert task is not None
        loop = asyncio.get_running_loop()
        if sys.platform != "win32":
            loop.add_signal_handler(signal.SIGTERM, task.cancel)
        with contextlib.suppress(asyncio.CancelledError):
            await serve_forever(host, port, ready=ready)

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(main())
