"""Plain-text and file renderings of what the read side returns (``nasd status|best|export``).

The CLI fetches the data (from the database or the daemon) and prints what these functions build,
so the layouts live in one place and can be tested without a process.
"""

from __future__ import annotations

import csv
import json
import math
import time
from collections.abc import Iterable, Mapping
from typing import Any, TextIO

from nasd.core.space import SearchSpace
from nasd.store.queries import EXPORT_COLUMNS

__all__ = ["METRIC_PREFIX", "best_summary", "status_table", "write_export"]


MAX_DETAIL_SHOWN = 80
"""Characters of a refused input's last detail shown by ``nasd status``."""


def status_table(data: Mapping[str, Any], now: float | None = None) -> str:
    """The experiments table, a blank line, the agents table and, if any, the refused inputs.

    An experiment that waits for an agent offering its trainer gets a ``waiting:`` line under
    its row; a quarantined agent (compared with ``now``, the current time by default) says for
    how long and why. Refused inputs (``security.*`` events, :mod:`nasd.engine.security`) are
    counted per kind, with the last sender and detail.
    """
    now = time.time() if now is None else now
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
        if e.get("waiting"):
            lines.append(f"  waiting: {e['waiting']}")
    lines += ["", "AGENT                 ONLINE  BUSY  SLOTS  DEVICE        CURRENT JOBS"]
    for a in data["agents"]:
        jobs = ", ".join(a["jobs"]) or "-"
        if a.get("draining"):
            jobs += "  (draining: refused or handed back work; gets none until it sends ready)"
        quarantine = _quarantine(a, now)
        if quarantine:
            jobs += f"  ({quarantine})"
        lines.append(
            f"{a['name']:<21} {'yes' if a['online'] else 'no':<7} "
            f"{'yes' if a['busy'] else 'no':<5} {a['slots']:>5}  {a['device'] or '-'!s:<13} "
            f"{jobs}"
        )
    refused = data.get("security") or {}
    if refused:
        lines += ["", "REFUSED INPUT         COUNT  LAST FROM             LAST DETAIL"]
        for kind, seen in sorted(refused.items()):
            source = str(seen.get("last_source") or "-")[:21]
            detail = str(seen.get("last_detail") or "")[:MAX_DETAIL_SHOWN]
            lines.append(f"{kind:<21} {seen['count']:>5}  {source:<21} {detail}")
    return "\n".join(lines)


def _quarantine(agent: Mapping[str, Any], now: float) -> str:
    """``quarantined 4 min: 2 leases expired in a row``, or "" if the agent is not quarantined."""
    left = float(agent.get("quarantined_until") or 0.0) - now
    if left <= 0:
        return ""
    strikes = int(agent.get("strikes") or 0)
    minutes = max(1, math.ceil(left / 60))
    expired = f"{strikes} lease{'s' if strikes != 1 else ''} expired in a row"
    return f"quarantined {minutes} min: {expired}"


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


METRIC_PREFIX = "metric."
"""CSV column prefix of every metric (``metric.val_acc``): metrics never collide with columns."""


def write_export(rows: Iterable[Mapping[str, Any]], out: TextIO, fmt: str) -> None:
    """One row per evaluation as ``jsonl`` or ``csv``.

    ``rows`` are :func:`nasd.store.queries.export_rows`: the fixed ``EXPORT_COLUMNS`` and a
    ``metrics`` mapping. JSON lines keep that shape (``{"trial_id": ..., "metrics": {...}}``);
    CSV has the fixed columns, then one ``metric.<name>`` column per metric name, sorted, empty
    where a trial has no such metric. Metric names can therefore never replace a fixed column.
    """
    if fmt == "jsonl":
        for row in rows:
            out.write(json.dumps(row, sort_keys=True) + "\n")
        return
    rows = list(rows)
    metric_names = sorted({name for r in rows for name in r.get("metrics", {})})
    writer = csv.writer(out)
    writer.writerow([*EXPORT_COLUMNS, *(METRIC_PREFIX + name for name in metric_names)])
    for row in rows:
        metrics = row.get("metrics", {})
        writer.writerow(
            [
                *(row.get(column) for column in EXPORT_COLUMNS),
                *(metrics.get(name, "") for name in metric_names),
            ]
        )
