"""``nasd run``'s progress line (nasd.cli.progress.ProgressView) in each state of a run.

The line is composed from experiment summaries and online agents as the store's queries return
them; a fake clock makes elapsed time and the ETA exact. The summary at the end is read from a
real database filled by a real (zero-trainer) run in tests/unit/test_runner.py.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import pytest

from nasd.cli.progress import ProgressView, _clock, next_steps
from nasd.config import load_experiments
from tests.unit.test_runner import MULTI

pytestmark = pytest.mark.timeout(30)

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "digits.toml"


class Clock:
    """A monotonic clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def _summary(done: int, budget: int = 40, failed: int = 0, best: float | None = None) -> Any:
    return {
        "done": done,
        "failed": failed,
        "budget": budget,
        "best": None if best is None else {"metric": "val_acc", "value": best, "trial_id": 3},
    }


def _agents(online: int, busy: int = 0) -> list[dict[str, Any]]:
    return [{"name": f"local-{i}", "online": True, "busy": i < busy} for i in range(online)]


def _view(clock: Clock, configs: Any = None) -> ProgressView:
    view = ProgressView(
        configs or load_experiments(EXAMPLE), Path("x.db"), io.StringIO(), clock=clock, tty=False
    )
    view.start("mqtt://127.0.0.1:1", 2)
    return view


def test_while_agents_start_the_line_says_so_not_busy_0_of_0() -> None:
    clock = Clock()
    view = _view(clock)
    clock.now += 3
    line = view.line([_summary(0)], [], None, clock.now)
    assert line == "[   0/40] best - | starting 2 local agents… | 00:03"
    assert "agents busy" not in line
    # One of two online: the count, and the one still starting.
    line = view.line([_summary(0)], _agents(1), None, clock.now)
    assert "agents busy 0/1 (1 starting…)" in line
    line = view.line([_summary(0)], _agents(2, busy=2), None, clock.now)
    assert "agents busy 2/2 |" in line and "starting" not in line


def test_a_single_local_agent_is_singular() -> None:
    clock = Clock()
    view = ProgressView(load_experiments(EXAMPLE), Path("x.db"), io.StringIO(), clock=clock)
    view.start("mqtt://127.0.0.1:1", 1)
    assert "starting 1 local agent… |" in view.line([_summary(0)], [], None, clock.now)


def test_running_shows_the_latest_result_and_an_eta_once_two_have_finished() -> None:
    clock = Clock()
    view = _view(clock)
    view.line([_summary(0)], [], None, clock.now)  # start-up: nothing finished
    clock.now += 30  # agents took 30 s to start; the first evaluation then finishes
    first = view.line([_summary(1, best=0.9)], _agents(2, 2), ("digits-cnn", 0.9), clock.now)
    assert "latest 0.9000" in first
    assert "ETA" not in first  # one evaluation gives no rate
    clock.now += 10  # the next three take 10 s: 0.3 per second, start-up left out
    line = view.line([_summary(4, best=0.95)], _agents(2, 2), ("digits-cnn", 0.93), clock.now)
    assert line == (
        "[   4/40] best val_acc 0.9500 (trial 3) | latest 0.9300 | agents busy 2/2 | 00:40"
        " | ETA 02:00"
    )
    assert view.eta(36) == pytest.approx(120.0)
    # Finished: no time left to estimate.
    assert "ETA" not in view.line([_summary(40, best=0.95)], _agents(2), None, clock.now + 1)


def test_two_results_in_one_refresh_take_the_rate_from_the_start() -> None:
    clock = Clock()
    view = _view(clock)
    view.line([_summary(0)], [], None, clock.now)
    clock.now += 20
    line = view.line([_summary(2, best=0.9)], _agents(2, 2), ("digits-cnn", None), clock.now)
    assert "latest - |" in line  # the last result lacked the metric
    assert line.endswith("| ETA 06:20")  # 2 in 20 s; 38 left


def test_a_resumed_run_says_resuming_until_its_first_new_result() -> None:
    clock = Clock()
    view = _view(clock)
    line = view.line([_summary(6, best=0.9)], [], ("digits-cnn", 0.88), clock.now)
    assert line.startswith("[   6/40] resuming 6/40 | best val_acc 0.9000 (trial 3)")
    assert "starting 2 local agents…" in line
    clock.now += 5
    line = view.line([_summary(7, best=0.9)], _agents(2, 2), ("digits-cnn", 0.91), clock.now)
    assert "resuming" not in line and "latest 0.9100" in line
    assert "ETA" not in line  # the six earlier results say nothing about this run's rate
    clock.now += 5
    assert view.line([_summary(8, best=0.9)], _agents(2, 2), None, clock.now).endswith(
        "| ETA 02:40"  # 1 in 5 s since this run's first result; 32 left
    )


def test_failures_and_a_multi_model_run(tmp_path: Path) -> None:
    path = tmp_path / "multi.toml"
    path.write_text(MULTI)
    clock = Clock()
    view = _view(clock, load_experiments(path))
    view.line([_summary(0, budget=2), _summary(0, budget=1)], [], None, clock.now)
    summaries = [_summary(1, budget=2, failed=1, best=0.5), _summary(0, budget=1)]
    line = view.line(summaries, _agents(2, 1), ("grp.cells", 0.5), clock.now)
    assert line.startswith("[   2/3] (1 failed) best val_acc: cells 2/2 0.5000, convs 0/1 -")
    assert "latest cells 0.5000 | agents busy 1/2 | 00:00" in line


def test_clock_and_next_steps() -> None:
    assert _clock(83) == "01:23"
    assert _clock(3 * 3600 + 62) == "3:01:02"
    steps = next_steps("digits-cnn", Path("runs/digits-cnn.db"))
    assert "nasd best digits-cnn --db runs/digits-cnn.db" in steps
    assert "nasd export digits-cnn --db runs/digits-cnn.db -o digits-cnn.csv" in steps
