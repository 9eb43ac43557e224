"""``nasd bench scheduling``: the simulator conserves work, is deterministic, and the CLI reports.

Uses the shipped tables in ``../shared/data``; every test skips with a clear reason without them.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from nasd.bench import scheduling
from nasd.bench.sim import POLICIES, RunResult, Simulation, simulate
from nasd.bench.workload import (
    BATCH_SIZE,
    GIB,
    POOL,
    Workload,
    WorkloadDataError,
    load_workload,
    macro_cost,
)
from nasd.core.scheduler.heuristics import memory_estimate

DATA = Path(__file__).resolve().parents[3] / "shared" / "data"
BUDGET = 60
SEEDS = (0, 1)

needs_data = pytest.mark.skipif(
    not (DATA / "nb201.csv.gz").is_file() or not (DATA / "nas-bench-macro_cifar10.json").is_file(),
    reason=f"benchmark tables not found in {DATA}",
)


@pytest.fixture(scope="module")
def workload() -> Workload:
    return load_workload(DATA)


@pytest.fixture(scope="module")
def runs(workload: Workload) -> dict[tuple[str, int], RunResult]:
    return {(p, s): simulate(workload, p, s, BUDGET) for p in POLICIES for s in SEEDS}


@needs_data
@pytest.mark.parametrize("policy", POLICIES)
def test_every_evaluation_resolves_exactly_once(
    runs: dict[tuple[str, int], RunResult], policy: str
) -> None:
    for seed in SEEDS:
        result = runs[policy, seed]
        resolved = result.finished + result.failed
        assert len(resolved) == BUDGET
        assert len(set(resolved)) == BUDGET
        per_model = {
            m: sum(1 for j in resolved if j.startswith(m + ":")) for m in ("nb201", "macro")
        }
        assert per_model == {"nb201": BUDGET // 2, "macro": BUDGET // 2}


@needs_data
@pytest.mark.parametrize("policy", POLICIES)
def test_no_agent_ever_runs_more_jobs_than_its_slots(
    runs: dict[tuple[str, int], RunResult], workload: Workload, policy: str
) -> None:
    slots = {a.name: a.device.slots for a in workload.agents}
    for seed in SEEDS:
        peaks = runs[policy, seed].peak_running
        assert set(peaks) == set(slots)
        assert all(0 <= peaks[name] <= slots[name] for name in slots)
        # every GPU works; SHADHO may keep the CPU box idle when waiting for a GPU is faster
        assert all(peaks[name] >= 1 for name in slots if not name.startswith("gold"))


@needs_data
def test_shadho_never_places_a_job_where_it_runs_out_of_memory(
    runs: dict[tuple[str, int], RunResult],
) -> None:
    assert all(runs["shadho", s].oom_placements == 0 for s in SEEDS)
    assert all(not runs["shadho", s].failed for s in SEEDS)


@needs_data
def test_memory_binds_for_the_blind_policies(workload: Workload) -> None:
    """The workload makes the memory check matter: first-free runs out of memory at full size."""
    assert sum(simulate(workload, "first-free", s, 300).oom_placements for s in range(3)) > 0


@needs_data
@pytest.mark.parametrize("policy", POLICIES)
def test_same_seed_same_run(
    runs: dict[tuple[str, int], RunResult], workload: Workload, policy: str
) -> None:
    again = simulate(workload, policy, SEEDS[0], BUDGET)
    assert again == runs[policy, SEEDS[0]]
    assert runs[policy, SEEDS[0]].finished != runs[policy, SEEDS[1]].finished


@needs_data
def test_time_to_target_is_bounded_by_the_makespan(
    runs: dict[tuple[str, int], RunResult],
) -> None:
    for result in runs.values():
        assert 0 < result.time_to_target <= result.makespan
        if not result.reached:
            assert result.time_to_target == result.makespan
        assert all(0.0 <= u <= 1.0 for u in result.utilisation.values())


@needs_data
def test_macro_cost_matches_the_table(workload: Workload) -> None:
    table = json.loads((DATA / "nas-bench-macro_cifar10.json").read_text())
    for key in ("00000000", "22222222", "02012100", "11111221"):
        cost = macro_cost(key)
        assert (cost["params"], cost["flops"]) == (table[key]["params"], table[key]["flops"])


@needs_data
def test_memory_binds_on_the_small_cards_only(workload: Workload) -> None:
    small = min(d.memory for d in POOL)
    large = sorted(d.memory for d in POOL)[1]
    for model in workload.models:
        memories = [a.memory for a in model.archs.values()]
        assert max(memories) <= large  # every job fits somewhere
        assert any(m > small for m in memories)  # but not everywhere
    nb201 = workload.models[0]
    cost = nb201.space.cost({"ops": ["nor_conv_3x3"] * 6})
    assert nb201.archs["333333"].memory == memory_estimate(cost, BATCH_SIZE)
    assert nb201.archs["333333"].memory > 11 * GIB


@needs_data
def test_cli_json_keys(capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["--data", str(DATA), "--seeds", "2", "--budget", "40", "--json"]
    assert scheduling.main(argv) == 0
    result = json.loads(capsys.readouterr().out)
    assert set(result) == {
        "seeds",
        "budget",
        "wall_s",
        "workload",
        "policies",
        "ratios",
        "paired",
        "goal",
    }
    assert set(result["policies"]) == set(POLICIES)
    for figures in result["policies"].values():
        assert set(figures) >= {
            "time_to_target_s",
            "reached",
            "makespan_s",
            "utilisation",
            "oom_placements",
        }
        assert set(figures["time_to_target_s"]) == {"median", "q1", "q3"}
        assert set(figures["utilisation"]) == {d.name for d in POOL}
    assert set(result["ratios"]) == {"first-free/shadho", "spread/shadho"}
    paired = result["paired"]["first-free/shadho"]
    assert set(paired) == {"median", "shadho_faster", "seeds"}
    assert 0 <= paired["shadho_faster"] <= paired["seeds"]
    assert set(result["goal"]) == {"target_ratio", "ratio", "shadho_oom_placements", "met"}


@needs_data
def test_cli_table(capsys: pytest.CaptureFixture[str]) -> None:
    assert scheduling.main(["--data", str(DATA), "--seeds", "1", "--budget", "20"]) == 0
    out = capsys.readouterr().out
    assert "first-free/shadho" in out
    assert all(policy in out for policy in POLICIES)


def test_missing_tables_exit_2_with_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert scheduling.main(["--data", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1
    assert "nb201.csv.gz" in err[0]


def test_missing_tables_raise_a_nasd_error(tmp_path: Path) -> None:
    with pytest.raises(WorkloadDataError, match="missing"):
        load_workload(tmp_path)


def test_unknown_policy_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown policy"):
        Simulation(Workload((), (), {}), "round-robin", 0, 10)
