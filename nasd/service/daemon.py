"""The composition root: store, engine, broker link and timers in one TaskGroup.

Data flow (DESIGN.md section 3): received messages pass the intake (:mod:`nasd.service.intake`:
size and rate limits, decoding within a time budget per slice of the event loop); batches of them
go to :meth:`nasd.engine.Engine.apply` on the writer thread, inside one transaction; only after it
commits are the resulting acks and assignments published. While a batch is being committed the
next one accumulates, so commits group themselves under load. Nothing that fails to encode may
take the daemon down (:mod:`nasd.service.outgoing`).

One daemon per broker (:mod:`nasd.service.presence`): before opening the database the daemon
checks that no other one serves; while serving it re-publishes its retained state every few
seconds and stops (:class:`~nasd.service.presence.DaemonConflict`) if a newer one takes over.

The store can fail under it (a full disk, a read-only file): the batch is rolled back and nothing
from it is published (no ack: agents keep their spooled results), the engine is dropped (memory
must never outlive a lost commit), the daemon logs ``store.unavailable`` and stops assigning.
It probes with a small write every :attr:`DaemonOptions.store_probe_s`; when one commits it
rebuilds the engine from the database, logs ``store.available`` and announces itself anew, so
agents re-announce and re-send what they hold.

Signals: SIGTERM/SIGINT stop gracefully: no new batch (so no new assignment), the batch in flight
commits, strategy snapshots are saved, the retained ``daemon/state`` becomes "offline" and
:meth:`Daemon.run` returns normally. SIGHUP reloads the settings file (the experiment list, which
is submitted again, and ``log_level``); a settings file that does not load changes nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sqlite3
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import Any

import structlog

from nasd.config import (
    ExperimentConfig,
    SchedulingSettings,
    load_daemon_settings,
    load_experiments,
)
from nasd.core.wire import (
    agent_wildcard,
    control_request_wildcard,
    control_response_topic,
    daemon_state_topic,
    preload,
)
from nasd.engine import Engine, Outbound, rebuild
from nasd.engine.control import refusal
from nasd.errors import CommandError, ConfigError, NasdError, StoreError
from nasd.faults import crash_point
from nasd.mqtt import BrokerUrl, Link, Publication
from nasd.service.intake import INBOUND_LEAVES, Intake, Parsed, parse_message
from nasd.service.outgoing import to_publication, to_publications
from nasd.service.presence import REFRESH_S, Identity, Presence, check_alone
from nasd.service.systemd import Notifier
from nasd.store import Writer
from nasd.store.writer import outage_reason, probe_write

__all__ = ["MAX_BATCH", "Daemon", "DaemonOptions", "parse_message", "to_publication"]

log = structlog.get_logger("nasd.service.daemon")

MAX_BATCH = 4096
"""Most messages handled in one transaction."""


@dataclass(frozen=True, slots=True)
class DaemonOptions:
    """How to run: broker, database, client id, housekeeping periods, and the settings file.

    ``settings`` is the ``nasd.toml`` that SIGHUP reloads (None: SIGHUP only logs that nothing
    can be reloaded); ``log_level`` is applied at start when given.
    """

    broker: BrokerUrl
    db: Path
    client_id: str = "nasd-daemon"
    tick_s: float = 0.5
    connect_timeout_s: float | None = None
    settings: Path | None = None
    log_level: str | None = None
    refresh_s: float = REFRESH_S
    store_probe_s: float = 2.0
    scheduling: SchedulingSettings = field(default_factory=SchedulingSettings)


class Daemon:
    """Runs the search service until :meth:`stop` (or a signal) is called."""

    def __init__(
        self, options: DaemonOptions, experiments: Sequence[ExperimentConfig] = ()
    ) -> None:
        self.options = options
        self.experiments = list(experiments)
        self.notifier = Notifier()
        self.identity = Identity.new()
        self.presence = Presence(self.identity)
        self.intake = Intake()
        self.writer: Writer | None = None
        self.engine: Engine | None = None
        self.link: Link | None = None
        self.store_outage: str | None = None
        """Why the database cannot be written now, or None while it can."""
        self._born_at = 0.0
        self._stopping = asyncio.Event()
        self._reload = asyncio.Event()
        self.ready = asyncio.Event()

    def stop(self) -> None:
        """Ask for a graceful shutdown (safe to call from a signal handler)."""
        self._stopping.set()

    def reload(self) -> None:
        """Ask for the settings file to be read again (safe to call from a signal handler)."""
        self._reload.set()

    async def run(self, *, install_signals: bool = True) -> None:
        """Check that no other daemon serves, open the store, rebuild, connect, serve.

        Raises :class:`~nasd.service.presence.AnotherDaemon` (before touching the database) if
        another daemon serves on the broker, and :class:`~nasd.service.presence.DaemonConflict`
        after stopping if one took over meanwhile; both are :class:`nasd.errors.NasdError`.
        """
        loop = asyncio.get_running_loop()
        if install_signals:
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(sig, self.stop)
            loop.add_signal_handler(signal.SIGHUP, self.reload)
        if self.options.log_level is not None:
            _set_log_level(self.options.log_level)
        preload()  # a broken install (missing or invalid schema files) fails here, not on a message
        await check_alone(
            self.options.broker, self.identity, connect_timeout_s=self.options.connect_timeout_s
        )
        writer = self.writer = await asyncio.to_thread(Writer, self.options.db)
        try:
            try:
                engine = self.engine = await writer.run(lambda conn: rebuild(conn, time.time()))
                engine.placement.configure(self.options.scheduling)
                for config in self.experiments:
                    await writer.run(partial(self._submit, engine, config))
            except sqlite3.Error as exc:
                reason = outage_reason(exc)
                if reason is None:
                    raise
                raise StoreError(f"cannot start on {self.options.db}: {reason}") from None
            try:
                await self._serve(writer)
            except BaseExceptionGroup as group:
                raise _sole_nasd_error(group) from None
        finally:
            await asyncio.to_thread(writer.close)
        if self.presence.conflict is not None:
            raise self.presence.conflict

    @staticmethod
    def _submit(engine: Engine, config: ExperimentConfig, conn: sqlite3.Connection) -> None:
        try:
            engine.submit(conn, config, time.time())
        except CommandError as exc:
            raise ConfigError(f"{exc} (or start over with --fresh, or use another --db)") from None

    # -- serving -----------------------------------------------------------------------------

    async def _serve(self, writer: Writer) -> None:
        link = self.link = Link(
            self.options.broker,
            self.options.client_id,
            subscriptions=[(agent_wildcard(leaf), 1) for leaf in INBOUND_LEAVES]
            + [(control_request_wildcard(), 1), (daemon_state_topic(), 1)],
            will=self.identity.publication(self.identity.will()),
            on_connect=self._on_connect,
        )
        async with asyncio.TaskGroup() as group:
            link_task = group.create_task(
                link.run(first_connect_timeout=self.options.connect_timeout_s), name="mqtt-link"
            )
            process_task = group.create_task(self._process(writer, link), name="process")
            others = [
                group.create_task(self._watchdog(), name="watchdog"),
                group.create_task(self._refresh(link), name="state-refresh"),
            ]
            await self._stopping.wait()
            self.notifier.stopping()
            await process_task
            # After a takeover the database and the retained state are the other daemon's:
            # leave both alone (its engine would not know of a snapshot written now).
            if self.presence.conflict is None:
                await self._snapshot(writer)
            will = self.identity.publication(self.identity.will())
            farewell = [] if self.presence.conflict else [will]
            await link.close(farewell)
            link_task.cancel()
            for task in others:
                task.cancel()
        log.info("daemon.stopped", conflict=self.presence.conflict is not None)

    def _birth(self) -> Publication:
        return self.identity.publication(self.identity.birth(self._born_at))

    async def _on_connect(self) -> None:
        """After every (re)connection: a new birth, then re-send the active assignments."""
        await self._announce(new_birth=True)
        if not self.ready.is_set():
            self.ready.set()
            self.notifier.ready(f"serving, database {self.options.db}")

    async def _announce(self, *, new_birth: bool) -> None:
        link, writer, engine = self.link, self.writer, self.engine
        assert link is not None and writer is not None
        if new_birth:
            self._born_at = time.time()
        await link.publish(self._birth())
        resent = 0
        if engine is not None and self.store_outage is None:
            resend = await writer.call(engine.assignments_to_resend)
            resent = len(resend)
            await link.publish_many(to_publications(resend))
        log.info(
            "daemon.online",
            resent_assignments=resent,
            db=str(self.options.db),
            instance=self.identity.instance,
        )

    async def _refresh(self, link: Link) -> None:
        """Re-publish the retained state every ``refresh_s``: "alive" for other daemons."""
        while True:
            await asyncio.sleep(self.options.refresh_s)
            if link.connected.is_set() and self._born_at:
                link.publish_nowait([self._birth()])

    async def _snapshot(self, writer: Writer) -> None:
        engine = self.engine
        if engine is None or self.store_outage is not None:
            return
        try:
            await writer.run(partial(self._snapshot_all, engine))
        except sqlite3.Error as exc:
            if outage_reason(exc) is None:
                raise
            log.error("store.unavailable", reason=outage_reason(exc), during="snapshot")

    @staticmethod
    def _snapshot_all(engine: Engine, conn: sqlite3.Connection) -> None:
        engine.snapshot_all(conn, time.time())

    async def _process(self, writer: Writer, link: Link) -> None:
        """The main loop: take a batch, apply it in one transaction, publish after the commit."""
        next_probe = 0.0
        while not self._stopping.is_set():
            messages = await self._next_batch(link)
            if self.presence.conflict is not None:
                self.stop()
                break
            parsed = await self.intake.parse(messages)
            if self._reload.is_set():
                self._reload.clear()
                await self._reload_settings(writer)
            if self.store_outage is not None:
                self._answer_during_outage(parsed, link)
                if time.monotonic() >= next_probe:
                    next_probe = time.monotonic() + self.options.store_probe_s
                    await self._probe_store(writer)
                continue
            engine = self.engine
            assert engine is not None
            try:
                up = link.connected.is_set()
                outbound = await writer.run(partial(self._apply, engine, parsed, up))
            except sqlite3.Error as exc:
                reason = outage_reason(exc)
                if reason is None:
                    raise
                self._store_lost(reason)
                next_probe = time.monotonic() + self.options.store_probe_s
                continue
            crash_point("commit.after_before_publish")
            self._publish(link, [*outbound, *parsed.replies])

    async def _next_batch(self, link: Link) -> list[Any]:
        """Up to :data:`MAX_BATCH` received messages (waiting at most a tick for the first);
        daemon states go to :attr:`presence` instead (a takeover, or our state overwritten)."""
        inbox, state_topic = link.inbox, daemon_state_topic()
        batch = []
        with contextlib.suppress(TimeoutError):
            batch.append(await asyncio.wait_for(inbox.get(), timeout=self.options.tick_s))
        while batch and len(batch) < MAX_BATCH and not inbox.empty():
            batch.append(inbox.get_nowait())
        messages = []
        for message in batch:
            if str(message.topic) != state_topic:
                messages.append(message)
            elif self.presence.observe(message.payload) and self._born_at:
                link.publish_nowait([self._birth()])
        return messages

    @staticmethod
    def _apply(
        engine: Engine, parsed: Parsed, link_up: bool, conn: sqlite3.Connection
    ) -> list[Outbound]:
        now = time.time()
        engine.note_link(link_up, now)
        parsed.refusals.record(conn, now)
        return engine.apply(conn, parsed.inputs, now)

    @staticmethod
    def _publish(link: Link, outbound: list[Outbound]) -> None:
        publications = to_publications(outbound)
        if not publications:
            return
        link.publish_nowait(publications[:1])
        crash_point("publish.after_first")
        link.publish_nowait(publications[1:])

    # -- the store failing under us ---------------------------------------------------------------

    def _store_lost(self, reason: str) -> None:
        """A batch did not commit because the store is unavailable (module docstring)."""
        self.store_outage = reason
        self.engine = None  # memory must never outlive a lost commit: rebuilt on recovery
        log.error(
            "store.unavailable",
            reason=reason,
            db=str(self.options.db),
            action="no assignments and no acks until a probe write commits",
        )
        self.notifier.notify(f"STATUS=database unavailable: {reason}")

    def _answer_during_outage(self, parsed: Parsed, link: Link) -> None:
        """Tell control clients why nothing can be done; everything else waits (agents re-send)."""
        replies = list(parsed.replies)
        for inbound in parsed.inputs:
            if inbound.type == "control.request":
                body = refusal(
                    str(inbound.body["correlation_id"]),
                    f"the daemon's database is unavailable ({self.store_outage}); try later",
                )
                client = control_response_topic(str(inbound.body["client"]))
                replies.append(Outbound(client, "control.response", body))
        link.publish_nowait(to_publications(replies))

    async def _probe_store(self, writer: Writer) -> None:
        try:
            await writer.run(probe_write)
            engine = await writer.read(lambda conn: rebuild(conn, time.time()))
            engine.placement.configure(self.options.scheduling)
        except sqlite3.Error as exc:
            reason = outage_reason(exc)
            if reason is None:
                raise
            log.info("store.still_unavailable", reason=reason)
            return
        self.engine, self.store_outage = engine, None
        log.warning("store.available", db=str(self.options.db))
        self.notifier.notify(f"STATUS=serving, database {self.options.db}")
        if self.link is not None and self.link.connected.is_set():
            await self._announce(new_birth=True)  # agents re-announce and re-send their spools

    # -- SIGHUP ----------------------------------------------------------------------------------

    async def _reload_settings(self, writer: Writer) -> None:
        """Read the settings file again: log level and experiments; a bad file changes nothing."""
        path = self.options.settings
        if path is None:
            log.warning("reload.skipped", reason="the daemon was not started from a settings file")
            return
        try:
            settings = await asyncio.to_thread(load_daemon_settings, path)
            configs = [
                config
                for experiment in settings.experiments
                for config in await asyncio.to_thread(load_experiments, experiment)
            ]
        except ConfigError as exc:
            log.error("reload.failed", settings=str(path), error=str(exc)[:500])
            return
        if settings.log_level is not None:
            _set_log_level(settings.log_level)
        self.options = replace(self.options, scheduling=settings.scheduling)
        if self.engine is not None:
            self.engine.placement.configure(settings.scheduling)
        submitted = []
        for config in configs:
            engine = self.engine
            if engine is None:
                log.warning("reload.deferred", experiment=config.name, reason=self.store_outage)
                continue
            try:
                result = await writer.run(partial(engine.submit, config=config, now=time.time()))
            except CommandError as exc:
                log.error("reload.refused", experiment=config.name, error=str(exc)[:500])
                continue
            except sqlite3.Error as exc:
                reason = outage_reason(exc)
                if reason is None:
                    raise
                self._store_lost(reason)
                return
            submitted.append((config.name, bool(result.get("created"))))
        log.info(
            "reload.done", settings=str(path), log_level=settings.log_level, experiments=submitted
        )

    async def _watchdog(self) -> None:
        interval = self.notifier.watchdog_interval
        if interval is None:
            return
        while True:
            self.notifier.watchdog()
            await asyncio.sleep(interval)


def _set_log_level(level: str) -> None:
    from nasd.logs import configure

    configure(level)


def _sole_nasd_error(group: BaseExceptionGroup[BaseException]) -> BaseException:
    """The one :class:`NasdError` inside ``group`` (through nested groups), else ``group``."""
    error: BaseException = group
    while isinstance(error, BaseExceptionGroup) and len(error.exceptions) == 1:
        error = error.exceptions[0]
    return error if isinstance(error, NasdError) else group
