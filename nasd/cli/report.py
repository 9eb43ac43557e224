"""Plain-text and file renderings of what the read side returns (``nasd status|best|export``).

The CLI fetches the data (from the database or the daemon) and prints what these functions build,
so the layouts live in one place and can be tested without a process.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterable, Mapping
from typing import Any, TextIO

from nasd.core.space import SearchSpace
from nasd.store.queries import EXPORT_COLUMNS

__all__ = ["best_summary", "status_table", "write_export"]


def status_table(data: Mapping[str, Any]) -> str:
    """The experiments table, a blank line, then the agents table."""
    lines = [
        "EXPERIMENT            STATUS     DONE/BUDGET  RUNNING  PENDING  FAILED  CANCELLED  BEST"
    ]
    for e in data["experiments"]:
        best = (
            f"{e['best']['metric']}={e['best']['value']:.4f} (trial {e['best']['trial_id']})"
            if e["best"]
            else "-"
        )
        lines.append(
            f"{e['name']:<21} {e['status']:<10} {e['done']:>5}/{e['budget']:<6} "
            f"{e['running']:>7}  {e['pending']:>7}  {e['failed']:>6}  "
            f"{e.get('cancelled', 0):>9}  {best}"
        )
    lines += ["", "AGENT                 ONLINE  BUSY  SLOTS  DEVICE        CURRENT JOBS"]
    for a in data["agents"]:
        jobs = ", ".join(a["jobs"]) or "-"
        if a.get("draining"):
            jobs += "  (draining: refused or handed back work; gets none until it sends ready)"
        lines.append(
            f"{a['name']:<21} {'yes' if a['online'] else 'no':<7} "
            f"{'yes' if a['busy'] else 'no':<5} {a['slots']:>5}  {a['device'] or '-'!s:<13} "
            f"{jobs}"
        )
    return "\n".join(lines)


def best_summary(experiment: str, best: Mapping[str, Any], space: SearchSpace | None = None) -> str:
    """The best trial: its metric, architecture, every metric and its checkpoint.

    ``best`` is what :func:`nasd.store.queries.best_trial` returns. With the experiment's
    ``space``, the architecture is also described in words and its parameter count filled in
    when the trainer did not report one. ``nasd best`` and the end of ``nasd run`` both print this.
    """
    genotype = best["genotype"]
    metrics = dict(best["metrics"])
    lines = [
        f"{experiment}: best is trial {best['trial_id']}, {best['metric']} = {best['value']:.4f}"
    ]
    if space is not None:
        lines.append(f"architecture: {space.describe(genotype)}")
        params = space.cost(genotype).get("params")
        if "params" not in metrics and params is not None:
            metrics["params"] = float(params)
    lines.append(f"genotype: {json.dumps(genotype, sort_keys=True)}")
    lines += [f"  {key}: {_number(value)}" for key, value in sorted(metrics.items())]
    if best.get("checkpoint"):
        lines.append(f"checkpoint: {best['checkpoint']} (on agent {best['agent']})")
    return "\n".join(lines)


def _number(value: float) -> str:
    """Whole numbers with thousands separators (parameter counts), others to four places."""
    if float(value).is_integer():
        return f"{int(value):,}"
    return f"{value:.4f}"


def write_export(rows: Iterable[Mapping[str, Any]], out: TextIO, fmt: str) -> None:
    """One row per evaluation as ``jsonl`` or ``csv`` (fixed columns, then metrics by name)."""
    rows = list(rows)
    if fmt == "jsonl":
        for row in rows:
            out.write(json.dumps(row, sort_keys=True) + "\n")
        return
    metric_names = sorted({k for r in rows for k in r} - set(EXPORT_COLUMNS))
    writer = csv.DictWriter(out, fieldnames=[*EXPORT_COLUMNS, *metric_names])
    writer.writeheader()
    writer.writerows(rows)
