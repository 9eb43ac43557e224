"""The agent's work loop: announce hardware, take assignments, train off the loop, report back.

Protocol (DESIGN.md sections 3-4): the agent's retained ``state`` topic carries its hardware profile
(birth) and "offline" (last will); ``ready`` tells the daemon how many slots it has and which jobs
it holds. Each ``trial.assign`` is trained in a worker thread while heartbeats (``trial.progress``,
QoS 0) keep the lease alive. The result is spooled to disk *before* it is published and deleted
only when the daemon's ``trial.ack`` arrives; every reconnect and every daemon restart re-sends the
spool. Assignments are deduplicated by job id, so re-sent assignments are harmless.

Leases carry tokens (``nasd.engine.security``): each assignment's ``token`` is kept with its job and
echoed by every result published for it (ok, failed, released, and the refusal of an assignment).
The spool is keyed by ``(job_id, epoch)``: an assignment of the same epoch as a spooled result gets
that result again, a newer epoch is trained (the older result stays spooled, and re-sent, until it
is acknowledged: the daemon's late-result policy decides what it is worth). A ``trial.ack`` removes
a spooled result only if job, epoch and token all match, and a ``trial.cancel`` stops a job only if
its token is the job's; anything else is logged (``security.forged_ack``,
``security.forged_cancel``) and changes nothing.

Only offered trainers run (:func:`agents.trainers.offered_trainers`, announced in the profile as
``trainers``): any other name fails its job before anything is imported. A genotype that is not a
member of its assignment's space fails the job before the trainer sees it.

An assignment beyond the free slots is refused with a ``released`` result; that (like a job handed
back) makes the daemon treat the agent as draining until its next ``ready``. So whenever a slot
frees afterwards, whatever ended the job (finished, failed, cancelled, handed back), the agent
publishes ``ready`` again, unless it is stopping.

Training tasks run in the task group of :meth:`Agent.run`: a trainer's own exception fails only
that attempt, but anything failing around it (the spool, say) stops the agent loudly. However
:meth:`Agent.run` ends, it publishes the retained "offline" state first (best effort, within
:data:`OFFLINE_TIMEOUT_S`): a clean disconnect suppresses the broker's last will, so without it the
daemon would only notice the agent gone when its leases expired.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import structlog

from agents.jobs import JobContext, RunningJob
from agents.options import AgentLink, AgentOptions, LinkFactory
from agents.preparation import Preparation
from agents.spool import Spool
from agents.trainers import offered_trainers
from agents.trainers._base import TrainFn, TrainingStopped, TrainResult
from nasd.core.wire import (
    AgentLeaf,
    agent_topic,
    daemon_state_topic,
    decode,
    encode,
    message_type_for_topic,
)
from nasd.errors import NasdError, WireError
from nasd.mqtt import Link, Publication

log = structlog.get_logger("nasd.agent")

OFFLINE_TIMEOUT_S = 3.0
"""How long :meth:`Agent.run` tries to publish its "offline" state on the way out."""


class Agent:
    """One agent (one device). Several may share a process (the benchmark does).

    ``load_trainer`` maps a task's trainer name to its function and ``link_factory`` builds the
    connection; both default to the real thing and exist so that tests can substitute them.
    ``load_trainer`` is only ever asked for a name in :attr:`offered`. Raises
    :class:`nasd.errors.ConfigError` when ``options.trainers`` is not a valid list.
    """

    def __init__(
        self,
        options: AgentOptions,
        load_trainer: Callable[[str], TrainFn] | None = None,
        *,
        link_factory: LinkFactory = Link,
    ) -> None:
        if load_trainer is None:
            from agents.trainers import load_trainer as default_loader

            load_trainer = default_loader
        self.options = options
        self.offered: tuple[str, ...] = offered_trainers(options.trainers)
        self.spool = Spool(options.spool_dir)
        self._link_factory = link_factory
        self._preparation = Preparation(
            self.offered,
            load_trainer,
            device=options.device,
            checkpoint_dir=options.checkpoint_dir,
        )
        self.running: dict[str, RunningJob] = {}
        self._executor = ThreadPoolExecutor(
            max_workers=options.slots, thread_name_prefix=f"train-{options.name}"
        )
        self._stopping = asyncio.Event()
        # Work was refused or handed back: the daemon treats us as draining until a `ready`.
        self._drained = False
        # The (instance, born_at) of the daemon life we last announced ourselves to.
        self._daemon_life: tuple[object, object] | None = None
        self.link: AgentLink | None = None
        self._group: asyncio.TaskGroup | None = None  # run()'s; training tasks join it

    def topic(self, leaf: AgentLeaf) -> str:
        """This agent's own topic for ``leaf``."""
        return agent_topic(self.options.name, leaf)

    def stop(self) -> None:
        """Hand back running jobs, publish "offline" and exit :meth:`run` (signal-safe)."""
        self._stopping.set()

    async def run(self) -> None:
        """Serve until :meth:`stop`; an unexpected error in any of its tasks ends it, raised.

        The link runs in an outer task group and the agent's own work (inbox, heartbeats,
        training) in an inner one, so that when the work fails the connection is still up to
        publish "offline" (see the module doc) before it is closed.
        """
        offline = self._offline()
        link = self.link = self._link_factory(
            self.options.broker,
            self._client_id(),
            subscriptions=[
                (self.topic(AgentLeaf.ASSIGN), 1),
                (self.topic(AgentLeaf.CANCEL), 1),
                (self.topic(AgentLeaf.ACK), 1),
                (daemon_state_topic(), 1),
            ],
            will=offline,
            on_connect=self._on_connect,
        )
        name = self.options.name
        try:
            async with asyncio.TaskGroup() as outer:
                link_task = outer.create_task(link.run(), name=f"{name}-link")
                try:
                    async with asyncio.TaskGroup() as group:
                        self._group = group
                        inbox_task = group.create_task(self._inbox(link), name=f"{name}-inbox")
                        beat_task = group.create_task(self._heartbeat(link), name=f"{name}-beat")
                        await self._stopping.wait()
                        inbox_task.cancel()
                        beat_task.cancel()
                        await self._hand_back(link)
                finally:
                    self._group = None
                    await self._say_offline(link, offline, link_task)
                    link_task.cancel()
        finally:
            self._executor.shutdown(wait=False, cancel_futures=True)
        log.info("agent.stopped", agent=name)

    def _client_id(self) -> str:
        return f"nasd-agent-{self.options.name}"

    def _offline(self) -> Publication:
        """The retained "offline" state: the last will, and the farewell on every exit."""
        payload = encode("agent.state", {"state": "offline"})
        return Publication(self.topic(AgentLeaf.STATE), payload, 1, True)

    async def _say_offline(
        self, link: AgentLink, offline: Publication, link_task: asyncio.Task[None]
    ) -> None:
        """Publish ``offline`` within :data:`OFFLINE_TIMEOUT_S`, whatever is ending :meth:`run`.

        Through ``link`` while it is still up; when the link itself has failed, through a
        short-lived connection of its own. Never raises: failing to say goodbye must not hide
        why the agent stops (the broker's last will remains for an unclean disconnect).
        """
        try:
            async with asyncio.timeout(OFFLINE_TIMEOUT_S):
                if not link_task.done():
                    await link.close([offline])
                    return
                farewell = self._link_factory(
                    self.options.broker,
                    self._client_id(),
                    subscriptions=[],
                    will=offline,
                    on_connect=None,
                )
                task = asyncio.create_task(farewell.run(), name=f"{self.options.name}-farewell")
                try:
                    await farewell.connected.wait()
                    await farewell.close([offline])
                finally:
                    task.cancel()
                    with contextlib.suppress(BaseException):
                        await task
        except Exception as exc:  # best effort: the reason run() ends matters more
            log.warning("agent.offline_not_sent", agent=self.options.name, error=repr(exc))

    async def _on_connect(self) -> None:
        assert self.link is not None
        profile = {
            **self.options.profile,
            "slots": self.options.slots,
            "trainers": list(self.offered),
        }
        await self.link.publish(
            Publication(
                self.topic(AgentLeaf.STATE),
                encode("agent.state", {"state": "online", "profile": profile}),
                1,
                True,
            )
        )
        await self._announce()

    async def _announce(self) -> None:
        """Publish ``ready`` and re-send every spooled result."""
        assert self.link is not None
        await self._ready()
        resend = [Publication(self.topic(AgentLeaf.RESULT), p) for p in self.spool.items()]
        if resend:
            log.info("spool.resend", agent=self.options.name, results=len(resend))
            await self.link.publish_many(resend)

    async def _ready(self) -> None:
        """Tell the daemon our slots and jobs; this also ends a drain (see the module doc)."""
        assert self.link is not None
        self._drained = False
        body: dict[str, Any] = {"slots": self.options.slots, "running": sorted(self.running)}
        free = self.options.free_memory() if self.options.free_memory is not None else None
        if free is not None:
            body["free_memory_bytes"] = free
        await self.link.publish(
            Publication(self.topic(AgentLeaf.READY), encode("agent.ready", body))
        )

    async def _inbox(self, link: AgentLink) -> None:
        while True:
            message = await link.inbox.get()
            topic = str(message.topic)
            try:
                envelope = decode(message.payload, expect=message_type_for_topic(topic))
            except WireError as exc:
                log.warning("message.dropped", topic=topic[:200], reason=str(exc))
                continue
            body = envelope.body
            if envelope.type == "trial.assign":
                await self._on_assign(body)
            elif envelope.type == "trial.ack":
                self._on_ack(body)
            elif envelope.type == "trial.cancel":
                self._on_cancel(body)
            elif envelope.type == "daemon.state":
                await self._on_daemon_state(body)

    async def _on_daemon_state(self, body: Mapping[str, Any]) -> None:
        """Re-announce to each new daemon life, not to every refresh of the same one.

        A serving daemon re-publishes its retained state every few seconds; a new ``born_at``
        (a restart, or the end of a store outage) or a new instance is what asks for our
        birth, ``ready`` and spool again. The birth is needed: a daemon that rebuilt itself
        after a store outage keeps its subscriptions, so the broker does not hand it our
        retained state again, and it takes no ``ready`` from an agent it has not seen born.
        """
        if body["state"] != "online":
            self._daemon_life = None
            return
        life = (body.get("instance"), body.get("born_at"))
        if life != self._daemon_life:
            self._daemon_life = life
            await self._on_connect()

    async def _on_assign(self, body: Mapping[str, Any]) -> None:
        assert self.link is not None and self._group is not None
        job_id, epoch, token = str(body["job_id"]), int(body["epoch"]), str(body["token"])
        job = self.running.get(job_id)
        if job is not None:
            if epoch > job.epoch:  # a re-lease of what we already train: report under it
                job.epoch, job.token = epoch, token
            return
        spooled = self.spool.get(job_id, epoch)
        if spooled is not None:  # the same lease again: its result, not a second training
            await self.link.publish(Publication(self.topic(AgentLeaf.RESULT), spooled))
            return
        newer = [e for e in self.spool.epochs(job_id) if e > epoch]
        if newer:  # an out-of-date re-send: the daemon has leased the job again since
            log.info("assign.stale", job_id=job_id, epoch=epoch, spooled_epoch=max(newer))
            return
        if len(self.running) >= self.options.slots or self._stopping.is_set():
            log.warning("assign.refused", job_id=job_id, reason="no free slot")
            await self._publish_result(job_id, epoch, token, "released", {}, None, time.time())
            return
        job = self.running[job_id] = RunningJob(job_id, epoch, token, time.time())
        job.task = self._group.create_task(self._train(job, body), name=job_id)

    def _on_ack(self, body: Mapping[str, Any]) -> None:
        """Drop the acknowledged result, only if job, epoch and token all match it."""
        job_id, epoch, token = str(body["job_id"]), int(body["epoch"]), str(body["token"])
        if self.spool.remove(job_id, epoch, token):
            return
        if self.spool.token(job_id, epoch) is not None:  # spooled, under another token
            log.warning("security.forged_ack", agent=self.options.name, job_id=job_id, epoch=epoch)
        # Otherwise a duplicate ack, or the ack of a result never spooled (released): nothing.

    def _on_cancel(self, body: Mapping[str, Any]) -> None:
        """Stop the job if the cancel is for its current lease (or a later one) and its token."""
        job_id, epoch, token = str(body["job_id"]), int(body["epoch"]), str(body["token"])
        job = self.running.get(job_id)
        if job is None:
            return
        if epoch < job.epoch:
            log.info("cancel.stale", job_id=job_id, epoch=epoch, running_epoch=job.epoch)
            return
        if not hmac.compare_digest(token.encode(), job.token.encode()):
            log.warning(
                "security.forged_cancel", agent=self.options.name, job_id=job_id, epoch=epoch
            )
            return
        job.cancelled = True
        job.stop.set()
        log.info("job.cancelled", job_id=job_id)

    async def _train(self, job: RunningJob, body: Mapping[str, Any]) -> None:
        """Train ``job`` off the loop and report it; only the trainer's own errors are caught."""
        loop = asyncio.get_running_loop()
        options = self.options
        request = self._preparation.request(job.job_id, body)
        log.info("job.started", agent=options.name, job_id=job.job_id, epoch=job.epoch)
        status, error, result = "ok", None, TrainResult({})
        try:
            trainer = self._preparation.trainer(body)  # refuses what we must not run
            context = JobContext(job, loop)
            result = await loop.run_in_executor(self._executor, trainer, request, context)
        except TrainingStopped:
            status = "released"
        except NasdError as exc:  # refused before training, or a trainer's own clear error
            status, error = "failed", str(exc)[:4000]
            log.warning("job.failed", job_id=job.job_id, error=error)
        except Exception as exc:  # a trainer's failure fails this attempt, never the agent
            status, error = "failed", f"{type(exc).__name__}: {exc}"[:4000]
            log.warning("job.failed", job_id=job.job_id, error=error)
        finally:
            self.running.pop(job.job_id, None)
        # A cancelled job's credit is already back with the daemon; one stopped by our shutdown
        # was handed back by _hand_back.
        if not job.cancelled and not (status == "released" and self._stopping.is_set()):
            await self._publish_result(
                job.job_id,
                job.epoch,
                job.token,
                status,
                result.metrics,
                error,
                job.started_at,
                result.checkpoint,
            )
        # A result frees its credit by itself; `ready` is only needed to end a drain.
        if self._drained and not self._stopping.is_set():
            log.info("agent.undrained", agent=options.name, freed_by=job.job_id)
            await self._ready()

    async def _publish_result(
        self,
        job_id: str,
        epoch: int,
        token: str,
        status: str,
        metrics: Mapping[str, float],
        error: str | None,
        started_at: float,
        checkpoint: str | None = None,
    ) -> None:
        assert self.link is not None
        body: dict[str, Any] = {
            "job_id": job_id,
            "epoch": epoch,
            "token": token,
            "status": status,
            "metrics": {k: float(v) for k, v in metrics.items()},
            "error": error,
            "started_at": started_at,
            "finished_at": time.time(),
            "checkpoint": checkpoint,
        }
        try:
            payload = encode("trial.result", body)
        except WireError as exc:
            body.update(status="failed", metrics={}, error=f"invalid metrics: {exc}"[:4000])
            payload = encode("trial.result", body)
        if status == "released":
            self._drained = True
        else:
            self.spool.put(job_id, epoch, token, payload)
        log.info(
            "job.finished",
            agent=self.options.name,
            job_id=job_id,
            status=status,
            val_acc=metrics.get("val_acc"),
        )
        await self.link.publish(Publication(self.topic(AgentLeaf.RESULT), payload))

    async def _heartbeat(self, link: AgentLink) -> None:
        while True:
            await asyncio.sleep(self.options.heartbeat_s)
            beats = []
            for job in list(self.running.values()):
                body = {
                    "job_id": job.job_id,
                    "epoch": job.epoch,
                    "token": job.token,
                    "step": job.step,
                    "total": job.total,
                    "metrics": job.metrics,
                }
                try:
                    payload = encode("trial.progress", body)
                except WireError:  # e.g. a NaN loss in the progress metrics: beat without them
                    payload = encode("trial.progress", {**body, "metrics": {}})
                beats.append(Publication(self.topic(AgentLeaf.PROGRESS), payload, qos=0))
            if beats and link.connected.is_set():
                await link.publish_many(beats)

    async def _hand_back(self, link: AgentLink) -> None:
        """On shutdown: stop trainers and tell the daemon their jobs are free again.

        Their tasks are then cancelled so that the agent exits without waiting for each trainer
        to notice its stop switch (its thread finishes on its own; its result is not wanted).
        """
        jobs = list(self.running.values())
        for job in jobs:
            job.stop.set()
        for job in jobs:
            if link.connected.is_set():
                await self._publish_result(
                    job.job_id, job.epoch, job.token, "released", {}, None, job.started_at
                )
        for job in jobs:
            if job.task is not None:
                job.task.cancel()
        if jobs:
            log.info("agent.handed_back", jobs=[j.job_id for j in jobs])
