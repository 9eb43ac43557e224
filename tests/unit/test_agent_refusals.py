"""What an agent refuses to run: trainers it does not offer (defect 9) and invalid genotypes.

An assignment is a message anyone on the broker may forge, so the trainer name in it must never
decide what the agent imports: only built-ins, installed entry points and the ``module:function``
paths in the agent's own configuration run, and any other name fails the job before anything is
imported. A genotype that is not a member of its space fails the job before the trainer sees it.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from agents.trainers import (
    BUILTIN_TRAINERS,
    TRAINERS_ENV,
    configured_trainers,
    installed_trainers,
    offered_trainers,
)
from agents.worker import Agent, AgentOptions
from nasd.core.wire import AgentLeaf
from nasd.errors import ConfigError
from nasd.mqtt import BrokerUrl
from tests.harness import ROOT, python_env
from tests.unit.test_worker import (
    GATE,
    PROFILE,
    Gate,
    assign,
    run,
    running_agent,
    until,
)

pytestmark = pytest.mark.timeout(60)

SIDE_EFFECT = "nasd_unit_side_effect"
"""A module whose import writes a marker file: proof of whether anything imported it."""


@pytest.fixture
def side_effect_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Put :data:`SIDE_EFFECT` on ``sys.path``; return the marker file its import would write."""
    marker = tmp_path / "imported"
    modules = tmp_path / "modules"
    modules.mkdir()
    (modules / f"{SIDE_EFFECT}.py").write_text(
        "from pathlib import Path\n"
        f"Path({str(marker)!r}).write_text('imported')\n"
        "from agents.trainers import zero\n"
        "train = zero.train\n"
    )
    monkeypatch.syspath_prepend(str(modules))
    monkeypatch.delitem(sys.modules, SIDE_EFFECT, raising=False)
    return marker


def test_an_assign_naming_a_trainer_not_offered_imports_nothing(
    tmp_path: Path, side_effect_module: Path
) -> None:
    async def main() -> None:
        async with running_agent(tmp_path, {}, real_loader=True) as (_, link, task):
            for name in (f"{SIDE_EFFECT}:train", "os:system"):
                link.deliver(AgentLeaf.ASSIGN, "trial.assign", assign("exp:1", trainer=name))
                await until(lambda: bool(link.sent(AgentLeaf.RESULT)), f"{name}'s refusal")
                (result,) = link.sent(AgentLeaf.RESULT)
                assert result.body["status"] == "failed"
                assert result.body["error"] == f"trainer {name!r} is not offered by this agent"
                link.published.clear()
                link.deliver(AgentLeaf.ACK, "trial.ack", {**_ack_of(result.body)})
            assert not side_effect_module.exists()
            assert SIDE_EFFECT not in sys.modules
            # A built-in is offered without any configuration, and runs.
            link.deliver(AgentLeaf.ASSIGN, "trial.assign", assign("exp:2", trainer="zero"))
            await until(lambda: bool(link.sent(AgentLeaf.RESULT)), "the zero trainer's result")
            assert link.sent(AgentLeaf.RESULT)[0].body["status"] == "ok"
            assert not task.done()

    run(main)


def _ack_of(result: dict[str, object]) -> dict[str, object]:
    return {key: result[key] for key in ("job_id", "epoch", "token")}


def test_a_configured_module_path_is_offered_and_runs(
    tmp_path: Path, side_effect_module: Path
) -> None:
    """The positive control of the test above: offered, the same module is imported and runs."""
    name = f"{SIDE_EFFECT}:train"

    async def main() -> None:
        async with running_agent(tmp_path, {}, offer=[name], real_loader=True) as (
            agent,
            link,
            _task,
        ):
            assert name in agent.offered
            (state,) = link.sent(AgentLeaf.STATE)
            assert state.body["profile"]["trainers"] == sorted([*installed_trainers(), name])
            link.deliver(AgentLeaf.ASSIGN, "trial.assign", assign("exp:1", trainer=name))
            await until(lambda: bool(link.sent(AgentLeaf.RESULT)), "the result")
            assert link.sent(AgentLeaf.RESULT)[0].body["status"] == "ok"
            assert side_effect_module.read_text() == "imported"

    run(main)


@pytest.mark.parametrize(
    ("change", "error"),
    [
        (
            {"genotype": {"ops": ["conv_9x9"] * 6}},
            "invalid genotype for space 'nb201': ops[0]: 'conv_9x9' is not one of",
        ),
        ({"genotype": {"layers": []}}, "invalid genotype for space 'nb201': expected exactly"),
        ({"space": {"kind": "toy"}}, "space.kind: unknown kind 'toy'"),
        ({"space": {"kind": "nb201", "depth": 3}}, "space.depth: unknown key for kind 'nb201'"),
    ],
)
def test_an_invalid_genotype_fails_the_job_before_the_trainer(
    tmp_path: Path, change: dict[str, object], error: str
) -> None:
    gate = Gate()
    gate.open.set()

    async def main() -> None:
        async with running_agent(tmp_path, {GATE: gate.train}) as (_, link, _task):
            link.deliver(AgentLeaf.ASSIGN, "trial.assign", {**assign("exp:1"), **change})
            await until(lambda: bool(link.sent(AgentLeaf.RESULT)), "the failed result")
            (result,) = link.sent(AgentLeaf.RESULT)
            assert result.body["status"] == "failed"
            assert str(result.body["error"]).startswith(error), result.body["error"]
            assert gate.calls == []
            link.deliver(AgentLeaf.ASSIGN, "trial.assign", assign("exp:2"))  # a valid one runs
            await until(lambda: len(link.sent(AgentLeaf.RESULT)) == 2, "the next result")
            assert link.sent(AgentLeaf.RESULT)[1].body["status"] == "ok"
            assert len(gate.calls) == 1

    run(main)


def test_offered_trainers_are_the_installed_ones_and_the_configured_paths() -> None:
    assert set(BUILTIN_TRAINERS) <= set(installed_trainers())
    assert offered_trainers() == tuple(sorted(installed_trainers()))
    assert offered_trainers(["b.mod:train", "zero", "a.mod:train", "b.mod:train"]) == tuple(
        sorted([*installed_trainers(), "a.mod:train", "b.mod:train"])
    )
    environ = {TRAINERS_ENV: " x.y:f , ,z:g"}
    assert configured_trainers(["a:b"], environ) == ["a:b", "x.y:f", "z:g"]
    assert configured_trainers([], {}) == []


@pytest.mark.parametrize(
    ("entry", "error"),
    [
        ("nosuch", "not a built-in"),
        ("pkg.mod:f; rm -rf /", "expected an installed trainer's name"),
        ("pkg.mod:", "expected an installed trainer's name"),
        ("", "expected an installed trainer's name"),
    ],
)
def test_a_bad_configured_trainer_is_a_config_error(entry: str, error: str) -> None:
    with pytest.raises(ConfigError, match=error):
        offered_trainers([entry])
    options = AgentOptions(
        broker=BrokerUrl.parse("mqtt://127.0.0.1:1"),
        name="unit",
        profile=PROFILE,
        spool_dir=Path("/nonexistent/never/created"),
        trainers=(entry,),
    )
    with pytest.raises(ConfigError, match=error):
        Agent(options)


def test_more_than_256_trainers_are_refused() -> None:
    paths = [f"m{i}:train" for i in range(256)]
    with pytest.raises(ConfigError, match="at most 256 trainers"):
        offered_trainers(paths)


def test_the_cli_refuses_a_bad_trainer_list_in_one_line() -> None:
    env = {**python_env(), TRAINERS_ENV: "tests.integration.trainers:sleepy,nosuch"}
    done = subprocess.run(
        [sys.executable, "-m", "agents.cli", "--broker", "mqtt://127.0.0.1:1", "--trainer", "a:b"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2, done.stderr
    assert done.stderr.startswith("nasd-agent: error: trainer 'nosuch': not a built-in")
    assert len(done.stderr.strip().splitlines()) == 1
