"""``nasd bench scheduling``: SHADHO against spread and first-free dispatch on a simulated pool.

Runs every policy of :mod:`nasd.bench.sim` with the same seeds and budget on the workload and
pool of :mod:`nasd.bench.workload` (both fixed, documented in ``benchmarks/README.md``), and
prints per policy the median and interquartile range of time-to-target and makespan, the
utilisation of each device class and the out-of-memory placements, then the ratios of median
time-to-target (first-free / shadho, spread / shadho) and whether the issue's goal is met
(>= 1.3x faster than first-free with zero OOM placements for shadho). A missed goal is a
measurement, not an error: the command exits 0; a missing table exits 2 with one line.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from nasd.errors import ConfigError, NasdError

if TYPE_CHECKING:  # the simulator is imported when a run starts: `nasd --help` stays light
    from nasd.bench.sim import RunResult
    from nasd.bench.workload import Workload

DEFAULT_DATA = Path("../shared/data")
GOAL_RATIO = 1.3
"""The issue's goal: SHADHO's median time-to-target at least this many times first-free's."""
EXIT_USAGE = 2


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The flags of ``nasd bench scheduling``."""
    parser.add_argument(
        "--data", type=Path, default=DEFAULT_DATA, help="folder with the tables (../shared/data)"
    )
    parser.add_argument("--seeds", type=int, default=20, help="runs per policy (default: 20)")
    parser.add_argument(
        "--budget", type=int, default=300, help="evaluations per run, split between the models"
    )
    parser.add_argument(
        "--experimental",
        action="store_true",
        help="also run the experimental policies (shadho-eager, shadho-mem)",
    )
    parser.add_argument(
        "--gpus-only",
        action="store_true",
        help="leave the CPU box out of the pool (same workload on the three GPUs)",
    )
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")


def _spread(values: Sequence[float]) -> dict[str, float]:
    """Median and quartiles (inclusive method: defined for a single value too)."""
    if len(values) == 1:
        return {"median": values[0], "q1": values[0], "q3": values[0]}
    q1, median, q3 = statistics.quantiles(values, n=4, method="inclusive")
    return {"median": median, "q1": q1, "q3": q3}


def summarise(runs: Sequence[RunResult], workload: Workload) -> dict[str, Any]:
    """One policy's figures over its runs (see the module docstring)."""
    short = {a.device.device_name: a.device.name for a in workload.agents}
    classes = sorted({k for r in runs for k in r.utilisation}, key=lambda k: short.get(k, k))
    return {
        "time_to_target_s": _spread([r.time_to_target for r in runs]),
        "reached": sum(r.reached for r in runs),
        "runs": len(runs),
        "makespan_s": _spread([r.makespan for r in runs]),
        "utilisation": {
            short.get(k, k): statistics.median(r.utilisation.get(k, 0.0) for r in runs)
            for k in classes
        },
        "oom_placements": sum(r.oom_placements for r in runs),
        "failed_evaluations": sum(len(r.failed) for r in runs),
        "placements": {
            short.get(k, k): {
                m: sum(r.placements.get(k, {}).get(m, 0) for r in runs)
                for m in sorted({m for r in runs for m in r.placements.get(k, {})})
            }
            for k in classes
        },
    }


def measure(workload: Workload, policies: Sequence[str], seeds: int, budget: int) -> dict[str, Any]:
    """Run every policy with seeds ``0..seeds-1``; the figures as a JSON-able mapping."""
    from nasd.bench.sim import simulate

    started = time.perf_counter()
    runs = {
        policy: [simulate(workload, policy, s, budget) for s in range(seeds)] for policy in policies
    }
    figures = {policy: summarise(results, workload) for policy, results in runs.items()}
    wall = time.perf_counter() - started
    base = figures["shadho"]["time_to_target_s"]["median"]
    ratios = {
        f"{other}/shadho": figures[other]["time_to_target_s"]["median"] / base if base else None
        for other in ("first-free", "spread")
    }
    paired = {}
    for other in ("first-free", "spread"):
        per_seed = [
            o.time_to_target / b.time_to_target
            for o, b in zip(runs[other], runs["shadho"], strict=True)
            if b.time_to_target > 0
        ]
        paired[f"{other}/shadho"] = {
            "median": statistics.median(per_seed) if per_seed else None,
            "shadho_faster": sum(1 for r in per_seed if r > 1.0),
            "seeds": len(per_seed),
        }
    speedup = ratios["first-free/shadho"]
    oom = figures["shadho"]["oom_placements"]
    return {
        "seeds": seeds,
        "budget": budget,
        "wall_s": wall,
        "workload": dict(workload.notes),
        "policies": figures,
        "ratios": ratios,
        "paired": paired,
        "goal": {
            "target_ratio": GOAL_RATIO,
            "ratio": speedup,
            "shadho_oom_placements": oom,
            "met": speedup is not None and speedup >= GOAL_RATIO and oom == 0,
        },
    }


def _hours(seconds: float) -> str:
    return f"{seconds / 3600:.2f} h"


def render(result: dict[str, Any]) -> str:
    """The human-readable report of :func:`measure`'s figures."""
    lines = [
        f"nasd bench scheduling: {result['seeds']} seeds x {len(result['policies'])} policies, "
        f"budget {result['budget']} evaluations, {result['wall_s']:.1f} s of real time",
        "",
    ]
    classes = sorted({c for p in result["policies"].values() for c in p["utilisation"]})
    table = [
        ["policy", "time-to-target", "IQR", "reached", "makespan", "IQR", "OOM", "failed"]
        + [f"util {c}" for c in classes]
    ]
    for name, p in result["policies"].items():
        ttt, span = p["time_to_target_s"], p["makespan_s"]
        table.append(
            [
                name,
                _hours(ttt["median"]),
                f"{_hours(ttt['q1'])} - {_hours(ttt['q3'])}",
                f"{p['reached']}/{p['runs']}",
                _hours(span["median"]),
                f"{_hours(span['q1'])} - {_hours(span['q3'])}",
                str(p["oom_placements"]),
                str(p["failed_evaluations"]),
            ]
            + [f"{p['utilisation'].get(c, 0.0):.0%}" for c in classes]
        )
    widths = [max(len(row[i]) for row in table) for i in range(len(table[0]))]
    for row in table:
        cells = [row[0].ljust(widths[0])]
        cells += [c.rjust(w) for c, w in zip(row[1:], widths[1:], strict=True)]
        lines.append("  ".join(cells))
    lines.append("")
    for key, value in result["ratios"].items():
        shown = "n/a" if value is None else f"{value:.2f}x"
        lines.append(f"median time-to-target {key}: {shown}")
    for key, value in result["paired"].items():
        shown = "n/a" if value["median"] is None else f"{value['median']:.2f}x"
        lines.append(
            f"per-seed time-to-target {key}: median {shown}, shadho faster in "
            f"{value['shadho_faster']} of {value['seeds']} seeds"
        )
    goal = result["goal"]
    verdict = "met" if goal["met"] else "NOT met"
    ratio = "n/a" if goal["ratio"] is None else f"{goal['ratio']:.2f}x"
    lines.append(
        f"goal (>= {goal['target_ratio']}x faster than first-free, zero OOM placements for "
        f"shadho): {verdict} ({ratio}, {goal['shadho_oom_placements']} OOM placements)"
    )
    thresholds = ", ".join(f"{m} >= {t:.2f} %" for m, t in result["workload"]["thresholds"].items())
    lines.append(f"target: every model finds a top-1 % architecture of its table ({thresholds})")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    """Carry out ``nasd bench scheduling`` with parsed ``args``.

    A missing table (:class:`~nasd.bench.workload.WorkloadDataError`) or a bad option
    (:class:`ConfigError`) propagates: both are :class:`NasdError`, which ``nasd`` turns into one
    line on stderr and exit status 2.
    """
    if args.seeds < 1 or args.budget < 2:
        raise ConfigError("--seeds must be >= 1 and --budget >= 2")
    from nasd.bench.sim import EXPERIMENTAL_POLICIES, POLICIES
    from nasd.bench.workload import load_workload

    workload = load_workload(args.data, gpus_only=args.gpus_only)
    policies = POLICIES + (EXPERIMENTAL_POLICIES if args.experimental else ())
    result = measure(workload, policies, args.seeds, args.budget)
    print(json.dumps(result, indent=2, sort_keys=True) if args.json else render(result))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Stand-alone entry point (``python -m nasd.bench.scheduling``); returns the exit status."""
    parser = argparse.ArgumentParser(
        prog="nasd bench scheduling", description=__doc__.split("\n")[0]
    )
    add_arguments(parser)
    args = parser.parse_args(argv)
    try:
        return run(args)
    except NasdError as exc:
        print(f"nasd bench scheduling: error: {exc}", file=sys.stderr)
        return EXIT_USAGE


if __name__ == "__main__":
    sys.exit(main())
