"""``nasd run``'s supervision (nasd.cli.runner.run_local) when its daemon fails or ends early.

The daemon runs in run_local's task group; whatever it raises must reach the caller as itself
(the CLI reports nasd's errors by type), with the embedded broker stopped. The daemon is replaced
by a stand-in so that each way of ending can be staged; no agent is started.
"""

from __future__ import annotations

import asyncio
import io
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from nasd.cli import runner
from nasd.config import load_experiments
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
    options = runner.RunOptions(tuple(load_experiments(EXAMPLE)), tmp_path / "x.db", agents=0)
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
    assert outcome == runner.RunOutcome(bests={"digits-cnn": None}, interrupted=False)
    assert not outcome.found
    assert RecordingBroker.stops == [True]


MULTI = """
[experiment]
name = "grp"
budget = 3
[task]
trainer = "zero"
[[model]]
name = "cells"
share = 2
[model.space]
kind = "nb201"
[model.strategy]
name = "random"
[[model]]
name = "convs"
[model.space]
kind = "cnn"
input_shape = [1, 8, 8]
num_classes = 10
[model.strategy]
name = "random"
"""


def test_a_multi_model_file_runs_every_model_to_completion(tmp_path: Path) -> None:
    """The real daemon, broker and one agent process; the zero trainer makes trials instant."""
    path = tmp_path / "multi.toml"
    path.write_text(MULTI)
    configs = tuple(load_experiments(path))
    assert runner.default_db(configs) == Path("runs") / "grp.db"
    options = runner.RunOptions(configs, tmp_path / "g.db", agents=1, benchmark_seconds=0.1)
    assert options.name == "grp"
    out = io.StringIO()
    outcome = asyncio.run(runner.run_local(options, out))
    assert outcome.found and not outcome.interrupted
    assert set(outcome.bests) == {"grp.cells", "grp.convs"}
    text = out.getvalue()
    assert "nasd: grp: 2 models, 3 evaluations (cells: 2, random; convs: 1, random)" in text
    assert "[   3/3]" in text and "cells 2/2" in text and "convs 1/1" in text
    assert "grp.cells: done" in text and "grp.convs: done" in text
    for name, best in outcome.bests.items():
        assert best is not None
        assert f"{name}: best is trial {best['trial_id']}" in text
    assert (tmp_path / "grp" / "daemon.log").parent.is_dir()  # the group's run folder

    # The progress line while the agent starts, then the latest result (plain lines: no tty).
    assert "| starting 1 local agent… |" in text and "agents busy 0/0" not in text
    assert "| latest " in text
    assert "next: nasd best grp --db" in text and "nasd export grp --db" in text

    # Run again: nothing to do, but the best results and the next steps are shown again.
    again = io.StringIO()
    assert asyncio.run(runner.run_local(options, again)).bests == outcome.bests
    shown = again.getvalue()
    assert "grp: already complete" in shown
    for name, best in outcome.bests.items():
        assert best is not None
        assert f"{name}: best is trial {best['trial_id']}" in shown
        assert f"{name}: done: " in shown  # no elapsed time: this run did nothing
    assert f"nasd best grp --db {tmp_path / 'g.db'}" in shown
    assert f"nasd export grp --db {tmp_path / 'g.db'} -o grp.csv" in shown
    assert "starting" not in shown  # no agent was started

    # --fresh: the finished run (database, logs, checkpoints) is moved aside, then run anew.
    (tmp_path / "grp" / "daemon.log").write_text("old log\n")
    fresh = io.StringIO()
    rerun = runner.RunOptions(configs, tmp_path / "g.db", agents=1, fresh=True)
    assert asyncio.run(runner.run_local(rerun, fresh)).found
    (aside,) = tmp_path.glob("grp.old-*")
    assert f"grp: --fresh: the previous run (database, logs, checkpoints) moved to {aside}" in (
        fresh.getvalue()
    )
    assert (aside / "daemon.log").read_text() == "old log\n"
    assert (aside / "g.db").is_file() and (aside / "agent-0.log").is_file()
    assert not (tmp_path / "grp" / "daemon.log").exists()  # the new run's folder starts empty
    assert (tmp_path / "grp" / "agent-0.log").is_file()
    assert "already complete" not in fresh.getvalue()
    assert "[   3/3]" in fresh.getvalue()


def test_set_aside_moves_the_database_and_the_run_folder_together(tmp_path: Path) -> None:
    db, run_dir = tmp_path / "x.db", tmp_path / "x"
    assert runner.set_aside(db, run_dir) is None  # nothing to move: a first run
    (run_dir / "checkpoints").mkdir(parents=True)
    (run_dir / "checkpoints" / "t1.pt").write_bytes(b"ckpt")
    (run_dir / "daemon.log").write_text("log")
    for suffix in ("", "-wal", "-shm"):
        Path(f"{db}{suffix}").write_bytes(b"db")
    aside = runner.set_aside(db, run_dir, stamp="20260101-120000")
    assert aside == tmp_path / "x.old-20260101-120000"
    assert sorted(p.name for p in aside.iterdir()) == [
        "checkpoints",
        "daemon.log",
        "x.db",
        "x.db-shm",
        "x.db-wal",
    ]
    assert (aside / "checkpoints" / "t1.pt").read_bytes() == b"ckpt"
    assert not db.exists() and not run_dir.exists()
    # A database without a run folder, set aside twice in the same second: a second folder.
    db.write_bytes(b"db2")
    again = runner.set_aside(db, run_dir, stamp="20260101-120000")
    assert again == tmp_path / "x.old-20260101-120000-2"
    assert (again / "x.db").read_bytes() == b"db2" and (aside / "x.db").read_bytes() == b"db"


def test_start_fresh_says_where_the_old_run_went_and_clears_the_flag(tmp_path: Path) -> None:
    configs = tuple(load_experiments(EXAMPLE))
    options = runner.RunOptions(configs, tmp_path / "d.db", fresh=True)
    out = io.StringIO()
    assert runner.start_fresh(options, out) == runner.RunOptions(configs, tmp_path / "d.db")
    assert out.getvalue() == ""  # nothing was there
    (tmp_path / "d.db").write_bytes(b"db")
    (tmp_path / "digits-cnn").mkdir()
    assert not runner.start_fresh(options, out).fresh
    (aside,) = tmp_path.glob("digits-cnn.old-*")
    assert out.getvalue().strip() == (
        f"digits-cnn: --fresh: the previous run (database, logs, checkpoints) moved to {aside}"
    )
    assert (aside / "d.db").read_bytes() == b"db"
    # Without --fresh nothing moves.
    (tmp_path / "d.db").write_bytes(b"db")
    unchanged = replace(options, fresh=False)
    assert runner.start_fresh(unchanged, out) is unchanged
    assert (tmp_path / "d.db").exists()


class FigureModule:
    """Stands in for agents.unet_figure (written with the agent); records its calls."""

    def __init__(self) -> None:
        self.calls: list[tuple[Any, ...]] = []

    def write_figure(
        self,
        data_dir: str,
        space: dict[str, Any],
        genotype: dict[str, Any],
        out_path: Path,
        *,
        options: dict[str, Any],
        seed: int = 0,
    ) -> Path:
        self.calls.append((data_dir, space, genotype, out_path, options))
        out_path.write_bytes(b"png")
        return out_path


def _unet_configs(tmp_path: Path, figure: str) -> list[Any]:
    text = MULTI.replace('trainer = "zero"', 'trainer = "unet_em"').replace(
        "[[model]]", f'[task.options]\ndata = "d"\nfigure = "{figure}"\n[[model]]', 1
    )
    path = tmp_path / "unet.toml"
    path.write_text(text)
    return load_experiments(path)


def test_figures_are_drawn_for_unet_models_that_ask(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    figure = FigureModule()
    monkeypatch.setitem(sys.modules, "agents.unet_figure", figure)
    configs = _unet_configs(tmp_path, str(tmp_path / "fig.png"))
    bests: dict[str, dict[str, Any] | None] = {
        c.name: {"genotype": {"g": c.model}} for c in configs
    }
    out = io.StringIO()
    written = runner.write_figures(configs, bests, out)
    # Both models asked for the same file: each gets its own, named after the model.
    assert written == [tmp_path / "fig.cells.png", tmp_path / "fig.convs.png"]
    data_dir, space, genotype, path, options = figure.calls[0]
    assert (data_dir, space, genotype, path) == ("d", configs[0].space, {"g": "cells"}, written[0])
    assert options["figure"] == str(tmp_path / "fig.png")
    assert f"grp.cells: figure written to {written[0]}" in out.getvalue()
    # A run found complete draws only what is missing; a model without a best draws nothing.
    written[0].unlink()
    again = io.StringIO()
    bests["grp.convs"] = None
    assert runner.write_figures(configs, bests, again, missing_only=True) == [written[0]]
    assert "grp.convs: no figure: no finished evaluation" in again.getvalue()
    # Other trainers never ask.
    assert runner.write_figures(list(load_experiments(EXAMPLE)), {}, io.StringIO()) == []


def test_a_figure_without_the_agent_extra_is_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "agents.unet_figure", None)  # import raises ImportError
    configs = _unet_configs(tmp_path, "fig.png")
    out = io.StringIO()
    bests: dict[str, Any] = {c.name: {"genotype": {}} for c in configs}
    assert runner.write_figures(configs, bests, out) == []
    (line,) = out.getvalue().splitlines()
    assert "needs the agent extra" in line
