"""The composition root: store, engine, broker link and timers in one TaskGroup.

Data flow (DESIGN.md section 3): received messages are decoded and validated on the event loop;
batches of them go to :meth:`nasd.engine.Engine.apply` on the writer thread, inside one
transaction; only after it commits are the resulting acks and assignments published. While a batch
is being committed the next one accumulates, so commits group themselves under load.

Shutdown (SIGTERM/SIGINT): the batch in flight finishes and commits, strategy snapshots are saved,
the retained ``daemon/state`` becomes "offline", and :meth:`Daemon.run` returns normally.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sqlite3
import time
from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import aiomqtt
import structlog

import nasd
from nasd.config import ExperimentConfig
from nasd.core.wire import (
    AgentLeaf,
    agent_wildcard,
    control_request_wildcard,
    daemon_state_topic,
    decode,
    encode,
    message_type_for_topic,
    parse_agent_topic,
    parse_control_request_topic,
    preload,
)
from nasd.engine import Engine, Inbound, Outbound, rebuild
from nasd.errors import CommandError, ConfigError, WireError
from nasd.mqtt import BrokerUrl, Link, Publication
from nasd.service.systemd import Notifier
from nasd.store import Writer

log = structlog.get_logger("nasd.service.daemon")

MAX_BATCH = 4096
"""Most messages handled in one transaction."""

_INBOUND_LEAVES = (AgentLeaf.STATE, AgentLeaf.READY, AgentLeaf.RESULT, AgentLeaf.PROGRESS)


@dataclass(frozen=True, slots=True)
class DaemonOptions:
    """How to run: broker, database, client id, and the housekeeping period."""

    broker: BrokerUrl
    db: Path
    client_id: str = "nasd-daemon"
    tick_s: float = 0.5
    connect_timeout_s: float | None = None


_TRUSTED = frozenset({"trial.assign", "trial.ack", "experiment.event"})
"""Hot-path messages the engine assembles from validated parts: encoded without re-checking."""


def to_publication(message: Outbound) -> Publication:
    """Encode an engine message for the wire."""
    payload = encode(message.type, message.body, checked=message.type not in _TRUSTED)
    return Publication(message.topic, payload, message.qos, message.retain)


def parse_message(topic: str, payload: object) -> Inbound:
    """Turn a received MQTT message into an engine input; WireError if it must be dropped."""
    message_type = message_type_for_topic(topic)
    envelope = decode(payload, expect=message_type)
    agent: str | None = None
    if topic.startswith("nasd/v1/agents/"):
        agent, leaf = parse_agent_topic(topic)
        if leaf not in _INBOUND_LEAVES:
            raise WireError(f"the daemon does not accept {leaf} messages")
    elif envelope.type == "control.request":
        if parse_control_request_topic(topic) != envelope.body["command"]:
            raise WireError("control request topic and body command differ")
    else:
        raise WireError(f"the daemon does not accept {envelope.type} messages")
    return Inbound(envelope.type, agent, envelope.body)


class Daemon:
    """Runs the search service until :meth:`stop` (or a signal) is called."""

    def __init__(
        self, options: DaemonOptions, experiments: Sequence[ExperimentConfig] = ()
    ) -> None:
        self.options = options
        self.experiments = list(experiments)
        self.notifier = Notifier()
        self.writer: Writer | None = None
        self.engine: Engine | None = None
        self.link: Link | None = None
        self._stopping = asyncio.Event()
        self.ready = asyncio.Event()

    def stop(self) -> None:
        """Ask for a graceful shutdown (safe to call from a signal handler)."""
        self._stopping.set()

    async def run(self, *, install_signals: bool = True) -> None:
        """Open the store, rebuild, connect, and serve until stopped."""
        loop = asyncio.get_running_loop()
        if install_signals:
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(sig, self.stop)
        preload()  # a broken install (missing or invalid schema files) fails here, not on a message
        writer = self.writer = await asyncio.to_thread(Writer, self.options.db)
        try:
            engine = self.engine = await writer.run(lambda conn: rebuild(conn, time.time()))
            for config in self.experiments:
                await writer.run(partial(self._submit, engine, config))
            await self._serve(writer, engine)
        finally:
            await asyncio.to_thread(writer.close)

    @staticmethod
    def _submit(engine: Engine, config: ExperimentConfig, conn: sqlite3.Connection) -> None:
        try:
            engine.submit(conn, config, time.time())
        except CommandError as exc:
            raise ConfigError(f"{exc} (or start over with --fresh, or use another --db)") from None

    async def _serve(self, writer: Writer, engine: Engine) -> None:
        state = daemon_state_topic()
        birth = {
            "state": "online",
            "pid": os.getpid(),
            "started_at": time.time(),
            "version": nasd.__version__,
        }
        link = self.link = Link(
            self.options.broker,
            self.options.client_id,
            subscriptions=[(agent_wildcard(leaf), 1) for leaf in _INBOUND_LEAVES]
            + [(control_request_wildcard(), 1)],
            will=Publication(state, encode("daemon.state", {"state": "offline"}), 1, True),
            on_connect=partial(
                self._on_connect,
                writer,
                engine,
                Publication(state, encode("daemon.state", birth), 1, True),
            ),
        )
        async with asyncio.TaskGroup() as group:
            link_task = group.create_task(
                link.run(first_connect_timeout=self.options.connect_timeout_s), name="mqtt-link"
            )
            process_task = group.create_task(self._process(writer, engine, link), name="process")
            watchdog_task = group.create_task(self._watchdog(), name="watchdog")
            await self._stopping.wait()
            self.notifier.stopping()
            await process_task
            await writer.run(partial(self._snapshot_all, engine))
            await link.close(
                [Publication(state, encode("daemon.state", {"state": "offline"}), 1, True)]
            )
            link_task.cancel()
            watchdog_task.cancel()
        log.info("daemon.stopped")

    async def _on_connect(self, writer: Writer, engine: Engine, birth: Publication) -> None:
        assert self.link is not None
        await self.link.publish(birth)
        resend = await writer.run(lambda conn: engine.assignments_to_resend())
        await self.link.publish_many(to_publication(m) for m in resend)
        log.info("daemon.online", resent_assignments=len(resend), db=str(self.options.db))
        if not self.ready.is_set():
            self.ready.set()
            self.notifier.ready(f"serving, database {self.options.db}")

    @staticmethod
    def _snapshot_all(engine: Engine, conn: sqlite3.Connection) -> None:
        engine.snapshot_all(conn, time.time())

    async def _process(self, writer: Writer, engine: Engine, link: Link) -> None:
        inbox = link.inbox
        while not self._stopping.is_set():
            batch: list[aiomqtt.Message] = []
            with contextlib.suppress(TimeoutError):
                batch.append(await asyncio.wait_for(inbox.get(), timeout=self.options.tick_s))
            while batch and len(batch) < MAX_BATCH and not inbox.empty():
                batch.append(inbox.get_nowait())
            inputs = []
            for message in batch:
                try:
                    inputs.append(parse_message(str(message.topic), message.payload))
                except WireError as exc:
                    log.warning("message.dropped", topic=str(message.topic)[:200], reason=str(exc))
            outbound = await writer.run(partial(self._apply, engine, inputs))
            if outbound:
                link.publish_nowait([to_publication(m) for m in outbound])

    @staticmethod
    def _apply(engine: Engine, inputs: list[Inbound], conn: sqlite3.Connection) -> list[Outbound]:
        return engine.apply(conn, inputs, time.time())

    async def _watchdog(self) -> None:
        interval = self.notifier.watchdog_interval
        if interval is None:
            return
        while True:
            self.notifier.watchdog()
            await asyncio.sleep(interval)
