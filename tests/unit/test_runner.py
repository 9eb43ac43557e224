"""``nasd run``'s supervision (nasd.cli.runner.run_local) when its daemon fails or ends early.

The daemon runs in run_local's task group; whatever it raises must reach the caller as itself
(the CLI reports nasd's errors by type), with the embedded broker stopped. The daemon is replaced
by a stand-in so that each way of ending can be staged; no agent is started.
"""

from __future__ import annotations

import asyncio
import io
from pathlib import Path
from typing import Any

import pytest

from nasd.cli import runner
from nasd.config import load_experiment
from nasd.errors import BrokerUnavailable, ConfigError
from nasd.mqtt.broker import EmbeddedBroker
from nasd.store.connection import open_writer

pytestmark = pytest.mark.timeout(60)

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "digits.toml"


class StagedDaemon:
    """Stands in for nasd.service.daemon.Daemon; ``script`` decides how its run() ends."""

    script: Any = None
    instances: list[StagedDaemon] = []

    def __init__(self, options: object, experiments: object) -> None:
        self.ready = asyncio.Event()
        self.stopped = asyncio.Event()
        StagedDaemon.instances.append(self)

    def stop(self) -> None:
        self.stopped.set()

    async def run(self, *, install_signals: bool = True) -> None:
        assert not install_signals
        await StagedDaemon.script(self)


class RecordingBroker(EmbeddedBroker):
    """The real embedded broker, remembering whether it was stopped."""

    stops: list[bool] = []

    async def stop(self) -> None:
        await super().stop()
        RecordingBroker.stops.append(True)


@pytest.fixture
def staged(monkeypatch: pytest.MonkeyPatch) -> type[StagedDaemon]:
    StagedDaemon.instances = []
    RecordingBroker.stops = []
    monkeypatch.setattr(runner, "Daemon", StagedDaemon)
    monkeypatch.setattr(runner, "EmbeddedBroker", RecordingBroker)
    return StagedDaemon


def _run_local(tmp_path: Path) -> runner.RunOutcome:
    options = runner.RunOptions(load_experiment(EXAMPLE), tmp_path / "x.db", agents=0)
    return asyncio.run(runner.run_local(options, io.StringIO()))


def test_a_daemon_error_before_ready_is_raised_as_itself(
    tmp_path: Path, staged: type[StagedDaemon]
) -> None:
    async def fail(daemon: StagedDaemon) -> None:
        raise ConfigError("experiment differs from the database")

    staged.script = fail
    with pytest.raises(ConfigError, match="experiment differs"):
        _run_local(tmp_path)
    assert RecordingBroker.stops == [True]


def test_an_error_from_the_daemons_own_task_group_is_unwrapped(
    tmp_path: Path, staged: type[StagedDaemon]
) -> None:
    async def fail(daemon: StagedDaemon) -> None:
        async def link() -> None:
            raise BrokerUnavailable("cannot reach the MQTT broker")

        async with asyncio.TaskGroup() as group:
            group.create_task(link())

    staged.script = fail
    with pytest.raises(BrokerUnavailable):
        _run_local(tmp_path)
    assert RecordingBroker.stops == [True]


def test_a_daemon_that_ends_before_ready_is_a_config_error(
    tmp_path: Path, staged: type[StagedDaemon]
) -> None:
    async def end(daemon: StagedDaemon) -> None:
        return None

    staged.script = end
    with pytest.raises(ConfigError, match="stopped before it was ready"):
        _run_local(tmp_path)
    assert RecordingBroker.stops == [True]


def test_a_daemon_failing_while_serving_stops_the_run_with_its_error(
    tmp_path: Path, staged: type[StagedDaemon]
) -> None:
    async def serve_then_fail(daemon: StagedDaemon) -> None:
        daemon.ready.set()
        await asyncio.sleep(0.3)
        raise RuntimeError("writer thread died")

    staged.script = serve_then_fail
    with pytest.raises(RuntimeError, match="writer thread died"):
        _run_local(tmp_path)
    (daemon,) = staged.instances
    assert daemon.stopped.is_set()  # the cleanup ran
    assert RecordingBroker.stops == [True]


def test_a_daemon_that_finishes_ends_the_run_normally(
    tmp_path: Path, staged: type[StagedDaemon]
) -> None:
    async def serve_then_finish(daemon: StagedDaemon) -> None:
        daemon.ready.set()
        await asyncio.sleep(0.2)

    staged.script = serve_then_finish
    open_writer(tmp_path / "x.db").close()  # what a real daemon would have left: a database
    outcome = _run_local(tmp_path)
    assert outcome == runner.RunOutcome(best=None, interrupted=False)
    assert RecordingBroker.stops == [True]
