"""The agent's message handling (agents.worker.Agent), without a broker.

The agent gets an in-memory stand-in for its link (through its ``link_factory`` seam): messages
are put on the fake's inbox as the broker would deliver them, and everything the agent publishes
is captured and decoded with :func:`nasd.core.wire.decode`. Trainers are small functions run by the
agent in its worker thread, steered from the test through threading events.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import AsyncIterator, Callable, Coroutine, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import aiomqtt
import pytest

from agents.spool import Spool
from agents.trainers import BUILTIN_TRAINERS, installed_trainers
from agents.trainers._base import TrainContext, TrainingStopped, TrainRequest, TrainResult
from agents.worker import Agent, AgentOptions
from nasd.core.wire import AgentLeaf, Envelope, agent_topic, daemon_state_topic, decode, encode
from nasd.engine.security import lease_token
from nasd.mqtt import BrokerUrl, Publication

pytestmark = pytest.mark.timeout(60)

AGENT = "unit-agent"
WAIT_S = 10.0
PROFILE = {
    "host": "unit",
    "device": "cpu",
    "device_name": "test cpu",
    "memory_bytes": 1 << 30,
    "cpu_count": 2,
    "gpu_count": 0,
    "torch_version": "none",
    "throughput": 1.0,
    "nasd_version": "0",
}
SECRET = b"unit-test lease secret"
GATE, BROKEN = "unit:gate", "unit:broken"
"""Test trainers are offered as ``module:function``-style names (see running_agent)."""
GENOTYPE = {"ops": ["nor_conv_3x3", "skip_connect", "none", "avg_pool_3x3", "nor_conv_1x1", "none"]}


def token(job_id: str, epoch: int) -> str:
    """The daemon's token for lease ``(job_id, epoch)``."""
    return lease_token(SECRET, job_id, epoch)


class FakeLink:
    """An in-memory link: connects at once, captures what is published, delivers what is put."""

    def __init__(
        self,
        url: BrokerUrl,
        client_id: str,
        *,
        subscriptions: Sequence[tuple[str, int]],
        will: Publication | None,
        on_connect: Callable[[], Coroutine[Any, Any, None]] | None,
    ) -> None:
        self.client_id = client_id
        self.subscriptions = list(subscriptions)
        self.will = will
        self.on_connect = on_connect
        self.inbox: asyncio.Queue[aiomqtt.Message] = asyncio.Queue()
        self.connected = asyncio.Event()
        self.published: list[Publication] = []
        self.farewell: list[Publication] | None = None
        self.on_publish: Callable[[Publication], None] | None = None

    async def run(self) -> None:
        self.connected.set()
        if self.on_connect is not None:
            await self.on_connect()
        await asyncio.Event().wait()  # "connected" until cancelled

    async def publish(self, message: Publication) -> bool:
        if self.on_publish is not None:
            self.on_publish(message)
        self.published.append(message)
        return True

    async def publish_many(self, messages: Iterable[Publication]) -> None:
        for message in messages:
            await self.publish(message)

    async def close(self, farewell: Iterable[Publication] = ()) -> None:
        self.farewell = list(farewell)

    def deliver(self, leaf: AgentLeaf | None, type_: str, body: dict[str, Any]) -> None:
        """Queue a message as the broker would (``leaf`` None: the daemon's state topic)."""
        topic = daemon_state_topic() if leaf is None else agent_topic(AGENT, leaf)
        payload = encode(type_, body)
        self.inbox.put_nowait(aiomqtt.Message(topic, payload, 1, False, 0, None))

    def sent(self, leaf: AgentLeaf) -> list[Envelope]:
        """Every message published so far on this agent's ``leaf`` topic, decoded."""
        topic = agent_topic(AGENT, leaf)
        return [decode(p.payload) for p in self.published if p.topic == topic]


class Gate:
    """Trainers that block until the test opens a gate, counting their calls."""

    def __init__(self) -> None:
        self.open = threading.Event()
        self.calls: list[TrainRequest] = []
        self.ignore_stop = False

    def train(self, request: TrainRequest, context: TrainContext) -> TrainResult:
        """Report one step, wait for the gate (or a stop), then score 0.5."""
        self.calls.append(request)
        context.progress(1, 3, {"loss": 0.25})
        while not self.open.wait(0.01):
            if context.should_stop() and not self.ignore_stop:
                raise TrainingStopped()
        if context.should_stop() and not self.ignore_stop:
            raise TrainingStopped()
        return TrainResult({"val_acc": 0.5, "test_acc": 0.25})


def assign(job_id: str, epoch: int = 1, trainer: str = GATE) -> dict[str, Any]:
    """A valid trial.assign body (an NB201 genotype), with its lease's token."""
    experiment, trial = job_id.split(":")
    return {
        "job_id": job_id,
        "experiment": experiment,
        "trial_id": int(trial),
        "epoch": epoch,
        "token": token(job_id, epoch),
        "genotype": GENOTYPE,
        "space": {"kind": "nb201", "num_classes": 10},
        "task": {"trainer": trainer, "options": {"seconds": 1}},
        "epochs": 2,
        "seed": 7,
        "parent_id": None,
        "morphisms": [],
    }


async def until(condition: Callable[[], bool], what: str, timeout: float = WAIT_S) -> None:
    """Wait for ``condition`` (polled), failing with ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.01)


@contextlib.asynccontextmanager
async def running_agent(
    tmp_path: Path,
    trainers: Mapping[str, Callable[[TrainRequest, TrainContext], TrainResult]],
    *,
    slots: int = 1,
    heartbeat_s: float = 3600.0,
    offer: Sequence[str] | None = None,
    real_loader: bool = False,
) -> AsyncIterator[tuple[Agent, FakeLink, asyncio.Task[None]]]:
    """An agent on a fake link, connected (its first ``ready`` sent); stopped on exit.

    The agent offers ``offer`` beyond the built-ins (its ``--trainer`` list; default: the names
    of ``trainers``) and loads trainers from ``trainers``, or with the real
    :func:`agents.trainers.load_trainer` when ``real_loader``.
    """
    options = AgentOptions(
        broker=BrokerUrl.parse("mqtt://127.0.0.1:1"),
        name=AGENT,
        profile=PROFILE,
        spool_dir=tmp_path / "spool",
        slots=slots,
        heartbeat_s=heartbeat_s,
        trainers=tuple(trainers if offer is None else offer),
    )
    loader = None if real_loader else trainers.__getitem__
    agent = Agent(options, load_trainer=loader, link_factory=FakeLink)
    task = asyncio.create_task(agent.run())
    await until(lambda: agent.link is not None, "the link")
    link = agent.link
    assert isinstance(link, FakeLink)
    await until(lambda: len(link.sent(AgentLeaf.READY)) == 1, "the first ready")
    try:
        yield agent, link, task
    finally:
        agent.stop()
        with contextlib.suppress(BaseException):
            await asyncio.wait_for(task, WAIT_S)


def run(main: Callable[[], Coroutine[Any, Any, None]]) -> None:
    """Run one async test body on a fresh loop."""
    asyncio.run(main())


def test_connect_announces_the_profile_and_free_slots(tmp_path: Path) -> None:
    async def main() -> None:
        async with running_agent(tmp_path, {}, slots=2) as (_, link, _task):
            (state,) = link.sent(AgentLeaf.STATE)
            offered = sorted(installed_trainers())  # nothing configured: built-ins, entry points
            assert set(BUILTIN_TRAINERS) <= set(offered)
            assert state.body == {
                "state": "online",
                "profile": {**PROFILE, "slots": 2, "trainers": offered},
            }
            assert [p.retain for p in link.published if p.topic.endswith("/state")] == [True]
            assert link.sent(AgentLeaf.READY)[0].body == {"slots": 2, "running": []}
            assert link.will is not None and decode(link.will.payload).body == {"state": "offline"}

    run(main)


def test_assign_is_trained_and_its_result_spooled_before_it_is_published(
    tmp_path: Path,
) -> None:
    gate = Gate()
    gate.open.set()

    async def main() -> None:
        async with running_agent(tmp_path, {GATE: gate.train}) as (agent, link, _task):
            spooled_when_published: list[bytes | None] = []
            result_topic = agent_topic(AGENT, AgentLeaf.RESULT)

            def check_spool(message: Publication) -> None:
                if message.topic == result_topic:
                    spooled_when_published.append(agent.spool.get("exp:3", 2))

            link.on_publish = check_spool
            link.deliver(AgentLeaf.ASSIGN, "trial.assign", assign("exp:3", epoch=2))
            await until(lambda: bool(link.sent(AgentLeaf.RESULT)), "the result")
            (result,) = link.sent(AgentLeaf.RESULT)
            assert result.body["job_id"] == "exp:3" and result.body["epoch"] == 2
            assert result.body["token"] == token("exp:3", 2)
            assert result.body["status"] == "ok" and result.body["error"] is None
            assert result.body["metrics"] == {"val_acc": 0.5, "test_acc": 0.25}
            published = [p.payload for p in link.published if p.topic == result_topic]
            assert spooled_when_published == published  # already on disk when sent
            (request,) = gate.calls
            assert (request.job_id, request.experiment, request.trial_id) == ("exp:3", "exp", 3)
            assert (request.seed, request.epochs, request.device) == (7, 2, "cpu")
            assert request.options == {"seconds": 1} and request.genotype == GENOTYPE
            assert agent.running == {}

    run(main)


def test_trainer_failure_fails_the_attempt_but_not_the_agent(tmp_path: Path) -> None:
    gate = Gate()
    gate.open.set()

    def broken(request: TrainRequest, context: TrainContext) -> TrainResult:
        raise ValueError("no such layer")

    async def main() -> None:
        trainers = {BROKEN: broken, GATE: gate.train}
        async with running_agent(tmp_path, trainers) as (_, link, task):
            link.deliver(AgentLeaf.ASSIGN, "trial.assign", assign("exp:1", trainer=BROKEN))
            await until(lambda: bool(link.sent(AgentLeaf.RESULT)), "the failed result")
            (failed,) = link.sent(AgentLeaf.RESULT)
            assert failed.body["status"] == "failed"
            assert failed.body["error"] == "ValueError: no such layer"
            assert failed.body["token"] == token("exp:1", 1)
            link.deliver(AgentLeaf.ASSIGN, "trial.assign", assign("exp:2"))
            await until(lambda: len(link.sent(AgentLeaf.RESULT)) == 2, "the next result")
            assert link.sent(AgentLeaf.RESULT)[1].body["status"] == "ok"
            assert not task.done()

    run(main)


def test_duplicate_assign_of_a_running_job_is_ignored_but_raises_its_epoch(
    tmp_path: Path,
) -> None:
    gate = Gate()

    async def main() -> None:
        async with running_agent(tmp_path, {GATE: gate.train}) as (_, link, _task):
            link.deliver(AgentLeaf.ASSIGN, "trial.assign", assign("exp:1", epoch=1))
            await until(lambda: len(gate.calls) == 1, "training to start")
            link.deliver(AgentLeaf.ASSIGN, "trial.assign", assign("exp:1", epoch=4))
            await until(lambda: link.inbox.empty(), "the duplicate to be read")
            await asyncio.sleep(0.05)
            assert link.sent(AgentLeaf.RESULT) == []  # neither refused nor trained twice
            gate.open.set()
            await until(lambda: bool(link.sent(AgentLeaf.RESULT)), "the result")
            (result,) = link.sent(AgentLeaf.RESULT)
            assert (result.body["status"], result.body["epoch"]) == ("ok", 4)
            assert result.body["token"] == token("exp:1", 4)  # the re-lease's token
            assert len(gate.calls) == 1

    run(main)


def test_assign_of_a_spooled_job_resends_its_result_without_training(tmp_path: Path) -> None:
    gate = Gate()
    gate.open.set()

    async def main() -> None:
        async with running_agent(tmp_path, {GATE: gate.train}) as (_, link, _task):
            link.deliver(AgentLeaf.ASSIGN, "trial.assign", assign("exp:1"))
            await until(lambda: bool(link.sent(AgentLeaf.RESULT)), "the result")
            link.deliver(AgentLeaf.ASSIGN, "trial.assign", assign("exp:1"))
            await until(lambda: len(link.sent(AgentLeaf.RESULT)) == 2, "the re-sent result")
            first, again = link.sent(AgentLeaf.RESULT)
            assert first == again
            assert len(gate.calls) == 1

    run(main)


def test_assign_beyond_the_slots_is_refused_with_a_released_result(tmp_path: Path) -> None:
    gate = Gate()

    async def main() -> None:
        async with running_agent(tmp_path, {GATE: gate.train}) as (agent, link, _task):
            link.deliver(AgentLeaf.ASSIGN, "trial.assign", assign("exp:1"))
            await until(lambda: len(gate.calls) == 1, "training to start")
            link.deliver(AgentLeaf.ASSIGN, "trial.assign", assign("exp:2", epoch=3))
            await until(lambda: bool(link.sent(AgentLeaf.RESULT)), "the refusal")
            (refusal,) = link.sent(AgentLeaf.RESULT)
            assert refusal.body["job_id"] == "exp:2" and refusal.body["epoch"] == 3
            assert refusal.body["status"] == "released" and refusal.body["metrics"] == {}
            assert refusal.body["token"] == token("exp:2", 3)  # the refused assign's token
            assert agent.spool.epochs("exp:2") == []  # a refusal is never spooled
            assert list(agent.running) == ["exp:1"] and len(gate.calls) == 1
            gate.open.set()

    run(main)


@pytest.mark.parametrize("ending", ["cancelled", "finished"])
def test_after_a_refusal_the_end_of_the_running_job_publishes_ready(
    tmp_path: Path, ending: str
) -> None:
    """The refusal drains the agent at the daemon; the slot freeing must undo that.

    A user's two experiments on one 1-slot agent: one was cancelled while the agent trained its
    trial, the daemon assigned the other's next trial at once, and the agent (still training)
    refused it. Without a ``ready`` once the cancelled trainer stopped, the daemon never assigned
    work to the idle agent again.
    """
    gate = Gate()

    async def main() -> None:
        async with running_agent(tmp_path, {GATE: gate.train}) as (_, link, _task):
            link.deliver(AgentLeaf.ASSIGN, "trial.assign", assign("one:1"))
            await until(lambda: len(gate.calls) == 1, "training to start")
            if ending == "cancelled":
                gate.ignore_stop = True  # the trainer notices only when the gate opens
                cancel = {"job_id": "one:1", "epoch": 1, "token": token("one:1", 1)}
                link.deliver(AgentLeaf.CANCEL, "trial.cancel", cancel)
            link.deliver(AgentLeaf.ASSIGN, "trial.assign", assign("two:1"))
            await until(lambda: bool(link.sent(AgentLeaf.RESULT)), "the refusal")
            assert [r.body["status"] for r in link.sent(AgentLeaf.RESULT)] == ["released"]
            assert len(link.sent(AgentLeaf.READY)) == 1  # only the one sent on connect
            gate.ignore_stop = False
            gate.open.set()
            await until(lambda: len(link.sent(AgentLeaf.READY)) == 2, "a fresh ready")
            assert link.sent(AgentLeaf.READY)[1].body == {"slots": 1, "running": []}
            results = [(r.body["job_id"], r.body["status"]) for r in link.sent(AgentLeaf.RESULT)]
            if ending == "cancelled":
                assert results == [("two:1", "released")]  # a cancelled job reports nothing
            else:
                assert results == [("two:1", "released"), ("one:1", "ok")]

    run(main)


def test_a_job_ending_without_a_prior_refusal_sends_no_ready(tmp_path: Path) -> None:
    gate = Gate()
    gate.open.set()

    async def main() -> None:
        async with running_agent(tmp_path, {GATE: gate.train}) as (_, link, _task):
            link.deliver(AgentLeaf.ASSIGN, "trial.assign", assign("exp:1"))
            await until(lambda: bool(link.sent(AgentLeaf.RESULT)), "the result")
            await asyncio.sleep(0.05)
            assert len(link.sent(AgentLeaf.READY)) == 1  # the result alone returns the credit

    run(main)


def test_cancel_of_an_older_epoch_leaves_the_job_running(tmp_path: Path) -> None:
    gate = Gate()

    async def main() -> None:
        async with running_agent(tmp_path, {GATE: gate.train}) as (_, link, _task):
            link.deliver(AgentLeaf.ASSIGN, "trial.assign", assign("exp:1", epoch=5))
            await until(lambda: len(gate.calls) == 1, "training to start")
            cancel = {"job_id": "exp:1", "epoch": 4, "token": token("exp:1", 4)}
            link.deliver(AgentLeaf.CANCEL, "trial.cancel", cancel)
            await until(lambda: link.inbox.empty(), "the cancel to be read")
            gate.open.set()
            await until(lambda: bool(link.sent(AgentLeaf.RESULT)), "the result")
            assert link.sent(AgentLeaf.RESULT)[0].body["status"] == "ok"

    run(main)


def test_ack_removes_the_spooled_result(tmp_path: Path) -> None:
    gate = Gate()
    gate.open.set()

    async def main() -> None:
        async with running_agent(tmp_path, {GATE: gate.train}) as (agent, link, _task):
            link.deliver(AgentLeaf.ASSIGN, "trial.assign", assign("exp:1"))
            await until(lambda: bool(link.sent(AgentLeaf.RESULT)), "the result")
            assert agent.spool.get("exp:1", 1) is not None
            ack = {"job_id": "exp:1", "epoch": 1, "token": token("exp:1", 1)}
            link.deliver(AgentLeaf.ACK, "trial.ack", ack)
            await until(lambda: agent.spool.get("exp:1", 1) is None, "the spool entry to go")
            assert len(agent.spool) == 0

    run(main)


def test_daemon_coming_online_gets_ready_and_the_spool_again(tmp_path: Path) -> None:
    left_over = encode(
        "trial.result",
        {
            "job_id": "old:9",
            "epoch": 1,
            "token": token("old:9", 1),
            "status": "ok",
            "metrics": {"val_acc": 0.75},
            "error": None,
            "started_at": 1.0,
            "finished_at": 2.0,
            "checkpoint": None,
        },
    )
    spool = Spool(tmp_path / "spool")  # a result left from before a restart, never acked
    spool.put("old:9", 1, token("old:9", 1), left_over)
    spool.close()

    async def main() -> None:
        async with running_agent(tmp_path, {}) as (_, link, _task):
            result_topic = agent_topic(AGENT, AgentLeaf.RESULT)
            resent = [p.payload for p in link.published if p.topic == result_topic]
            assert resent == [left_over]  # on connect
            link.deliver(None, "daemon.state", {"state": "offline"})
            link.deliver(None, "daemon.state", {"state": "online"})
            await until(lambda: len(link.sent(AgentLeaf.READY)) == 2, "ready after the restart")
            await until(
                lambda: (
                    [p.payload for p in link.published if p.topic == result_topic]
                    == [left_over, left_over]
                ),
                "the spool re-sent",
            )
            assert len(link.sent(AgentLeaf.READY)) == 2  # "offline" asked for nothing

    run(main)


def test_malformed_messages_are_dropped(tmp_path: Path) -> None:
    gate = Gate()
    gate.open.set()

    async def main() -> None:
        async with running_agent(tmp_path, {GATE: gate.train}) as (_, link, task):
            topic = agent_topic(AGENT, AgentLeaf.ASSIGN)
            link.inbox.put_nowait(aiomqtt.Message(topic, b"\xc1junk", 1, False, 0, None))
            ack = {"job_id": "exp:1", "epoch": 1, "token": token("exp:1", 1)}
            bad = encode("trial.ack", ack)  # the wrong type for the topic
            link.inbox.put_nowait(aiomqtt.Message(topic, bad, 1, False, 0, None))
            link.deliver(AgentLeaf.ASSIGN, "trial.assign", assign("exp:1"))
            await until(lambda: bool(link.sent(AgentLeaf.RESULT)), "the result")
            assert not task.done()

    run(main)


def test_heartbeats_carry_the_progress_of_running_jobs(tmp_path: Path) -> None:
    gate = Gate()

    async def main() -> None:
        async with running_agent(tmp_path, {GATE: gate.train}, heartbeat_s=0.02) as (
            _,
            link,
            _task,
        ):
            link.deliver(AgentLeaf.ASSIGN, "trial.assign", assign("exp:1", epoch=2))
            await until(
                lambda: any(b.body["step"] == 1 for b in link.sent(AgentLeaf.PROGRESS)),
                "a heartbeat with the trainer's progress",
            )
            beat = next(b for b in link.sent(AgentLeaf.PROGRESS) if b.body["step"] == 1)
            assert beat.body == {
                "job_id": "exp:1",
                "epoch": 2,
                "token": assign("exp:1", epoch=2)["token"],
                "step": 1,
                "total": 3,
                "metrics": {"loss": 0.25},
            }
            progress_topic = agent_topic(AGENT, AgentLeaf.PROGRESS)
            assert {p.qos for p in link.published if p.topic == progress_topic} == {0}
            gate.open.set()

    run(main)


def test_stop_hands_back_running_jobs_and_exits_without_waiting_for_the_trainer(
    tmp_path: Path,
) -> None:
    gate = Gate()
    gate.ignore_stop = True  # a trainer that would not notice the stop for a long time

    async def main() -> None:
        try:
            async with running_agent(tmp_path, {GATE: gate.train}) as (agent, link, task):
                link.deliver(AgentLeaf.ASSIGN, "trial.assign", assign("exp:1", epoch=2))
                await until(lambda: len(gate.calls) == 1, "training to start")
                agent.stop()
                await asyncio.wait_for(task, WAIT_S)
                (handed_back,) = link.sent(AgentLeaf.RESULT)
                assert (handed_back.body["job_id"], handed_back.body["epoch"]) == ("exp:1", 2)
                assert handed_back.body["status"] == "released"
                assert handed_back.body["token"] == token("exp:1", 2)
                assert len(link.sent(AgentLeaf.READY)) == 1  # stopping: no ready
                assert link.farewell is not None
                assert [decode(p.payload).body for p in link.farewell] == [{"state": "offline"}]
                assert not gate.open.is_set()  # it returned while the trainer still ran
        finally:
            gate.open.set()

    run(main)


def test_an_error_after_training_stops_the_agent_loudly(tmp_path: Path) -> None:
    """A failing spool must not vanish with its task: the agent's run() raises it."""
    gate = Gate()
    gate.open.set()

    class FullDisk(Spool):
        def put(self, job_id: str, epoch: int, token: str, payload: bytes) -> None:
            raise OSError(28, "No space left on device")

    async def main() -> None:
        async with running_agent(tmp_path, {GATE: gate.train}) as (agent, link, task):
            agent.spool = FullDisk(tmp_path / "full")
            link.deliver(AgentLeaf.ASSIGN, "trial.assign", assign("exp:1"))
            done, _ = await asyncio.wait([task], timeout=WAIT_S)
            assert done, "the agent kept running after its spool failed"
            error = task.exception()
            assert isinstance(error, BaseExceptionGroup)
            assert error.subgroup(OSError) is not None, error
            assert link.sent(AgentLeaf.RESULT) == []  # nothing published that is not spooled

    run(main)
