"""Plain-text and file renderings of what the read side returns (``nasd status|best|export``).

The CLI fetches the data (from the database or the daemon) and prints what these functions build,
so the layouts live in one place and can be tested without a process.
"""

from __future__ import annotations

import csv
import json
import math
import time
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, TextIO

from nasd.core.space import SearchSpace
from nasd.errors import InvalidGenotype
from nasd.store.queries import EXPORT_COLUMNS

__all__ = [
    "METRIC_PREFIX",
    "NOTATION_LEGENDS",
    "best_summary",
    "group_best_summary",
    "scheduling_lines",
    "status_table",
    "submit_line",
    "write_export",
]


MAX_DETAIL_SHOWN = 80
"""Characters of a refused input's last detail shown by ``nasd status``."""

ATTACH_HINT = "no agent online: attach one with `nasd-agent --broker {broker} --name NAME`"
"""What ``nasd status`` says when no agent is online (``{broker}``: the URL, or ``URL``)."""


def status_table(
    data: Mapping[str, Any], now: float | None = None, *, broker: str | None = None
) -> str:
    """The experiments table, a blank line, the agents table, the scheduler's view (if the status
    has one) and, if any, the refused inputs.

    An experiment that waits for an agent offering its trainer gets a ``waiting:`` line under
    its row; a quarantined agent (compared with ``now``, the current time by default) says for
    how long and why. Refused inputs (``security.*`` events, :mod:`nasd.engine.security`) are
    counted per kind, with the last sender and detail. ``data["scheduling"]`` (absent for older
    databases and daemons) adds the compute classes and each experiment's complexity, priority
    and assigned classes (:func:`scheduling_lines`). With no agent online, a line under the
    agents table says how to attach one (``broker``: the URL to show in it, when known), as a new
    user otherwise sees an empty table and a search that never starts.
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
    if not any(a.get("online") for a in data["agents"]):
        lines.append(ATTACH_HINT.format(broker=broker or "URL"))
    lines += scheduling_lines(data.get("scheduling"), [e["name"] for e in data["experiments"]])
    refused = data.get("security") or {}
    if refused:
        lines += ["", "REFUSED INPUT         COUNT  LAST FROM             LAST DETAIL"]
        for kind, seen in sorted(refused.items()):
            source = str(seen.get("last_source") or "-")[:21]
            detail = str(seen.get("last_detail") or "")[:MAX_DETAIL_SHOWN]
            lines.append(f"{kind:<21} {seen['count']:>5}  {source:<21} {detail}")
    return "\n".join(lines)


def scheduling_lines(scheduling: object, order: Sequence[str] = ()) -> list[str]:
    """The compute classes and the models as the hardware-aware scheduler sees them.

    ``scheduling`` is ``status["scheduling"]``: ``{"classes": [{name, speed, agents, free}],
    "models": {experiment: {complexity, priority, classes, group, model}}}``. The models come in
    ``order`` (the experiments table's), then any others by name. Each section starts with a blank
    line; nothing at all when there is no such mapping.
    """
    if not isinstance(scheduling, Mapping):
        return []
    lines: list[str] = []
    classes = [c for c in scheduling.get("classes") or [] if isinstance(c, Mapping)]
    if classes:
        lines += ["", "COMPUTE CLASS         SAMPLES/S   FREE  AGENTS"]
        for cls in classes:
            agents = ", ".join(str(a) for a in cls.get("agents") or []) or "-"
            lines.append(
                f"{cls.get('name', '-')!s:<21} {_speed(cls.get('speed')):>9}  "
                f"{cls.get('free', '-')!s:>5}  {agents}"
            )
    models = scheduling.get("models")
    if isinstance(models, Mapping) and models:
        names = [n for n in order if n in models] + sorted(set(models) - set(order))
        lines += ["", "MODEL                 COMPLEXITY  PRIORITY  CLASSES"]
        for name in names:
            model = models[name] if isinstance(models[name], Mapping) else {}
            lines.append(
                f"{name:<21} {_significant(model.get('complexity')):>10}  "
                f"{_significant(model.get('priority')):>8}  {_classes(model)}"
            )
    return lines


def _significant(value: object) -> str:
    """Three significant digits (``1.23e+03``, ``0.0421``), or ``-`` for no number."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return "-"
    return f"{value:.3g}"


def _speed(value: object) -> str:
    """Samples per second: whole numbers from 100 up (``1,234``), else three significant digits."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return "-"
    return f"{value:,.0f}" if value >= 100 else f"{value:.3g}"


def _classes(model: Mapping[str, Any]) -> str:
    return ", ".join(str(c) for c in model.get("classes") or []) or "-"


def _quarantine(agent: Mapping[str, Any], now: float) -> str:
    """``quarantined 4 min: 2 leases expired in a row``, or "" if the agent is not quarantined."""
    left = float(agent.get("quarantined_until") or 0.0) - now
    if left <= 0:
        return ""
    strikes = int(agent.get("strikes") or 0)
    minutes = max(1, math.ceil(left / 60))
    expired = f"{strikes} lease{'s' if strikes != 1 else ''} expired in a row"
    return f"quarantined {minutes} min: {expired}"


NOTATION_LEGENDS: dict[str, str] = {
    "cnn": (
        "legend: one group per layer, first is layer 0; k kernel size, f filters, s stride, "
        "then pooling (none, max, avg); +j: also takes layer j's output (a skip)"
    ),
}
"""Per space kind, the one line that explains its compact ``architecture:`` form."""


def best_summary(experiment: str, best: Mapping[str, Any], space: SearchSpace | None = None) -> str:
    """The best trial: its metric, architecture, every metric and its checkpoint.

    ``best`` is what :func:`nasd.store.queries.best_trial` returns. With the experiment's
    ``space``, the architecture is also described in its compact form (with a legend line for the
    kinds in :data:`NOTATION_LEGENDS`, as the notation is not obvious) and its parameter count
    filled in when the trainer did not report one; a genotype the space does not accept (a
    database from another version) is shown as JSON only. ``nasd best`` and the end of ``nasd
    run`` both print this.
    """
    genotype = best["genotype"]
    metrics = dict(best["metrics"])
    lines = [
        f"{experiment}: best is trial {best['trial_id']}, {best['metric']} = {best['value']:.4f}"
    ]
    if space is not None and _fits(space, genotype):
        lines.append(f"architecture: {space.describe(genotype)}")
        legend = NOTATION_LEGENDS.get(space.kind)
        if legend is not None:
            lines.append(f"  {legend}")
        params = space.cost(genotype).get("params")
        if "params" not in metrics and params is not None:
            metrics["params"] = float(params)
    lines.append(f"genotype: {json.dumps(genotype, sort_keys=True)}")
    lines += [f"  {key}: {_number(value)}" for key, value in sorted(metrics.items())]
    if best.get("checkpoint"):
        lines.append(f"checkpoint: {best['checkpoint']} (on agent {best['agent']})")
    return "\n".join(lines)


def _fits(space: SearchSpace, genotype: object) -> bool:
    """Whether ``space`` accepts ``genotype`` (:meth:`SearchSpace.validate` raises otherwise)."""
    try:
        space.validate(genotype)
    except InvalidGenotype:
        return False
    return True


def group_best_summary(
    group: str,
    bests: Mapping[str, Mapping[str, Any] | None],
    scheduling: Mapping[str, Any] | None = None,
    spaces: Mapping[str, SearchSpace | None] | None = None,
) -> str:
    """``nasd best GROUP``: each model's best trial (:func:`best_summary`), one block per model.

    ``bests`` maps each experiment of the group to its best trial (None: none finished yet);
    ``scheduling`` is ``status["scheduling"]["models"]`` where known, adding each model's
    complexity, priority and compute classes to its block; ``spaces`` (by experiment) adds each
    model's architecture in words.
    """
    blocks = [f"{group}: {len(bests)} models"]
    for experiment, best in bests.items():
        block = []
        seen = (scheduling or {}).get(experiment)
        if isinstance(seen, Mapping):
            block.append(
                f"{experiment}: complexity {_significant(seen.get('complexity'))}, priority "
                f"{_significant(seen.get('priority'))}, classes {_classes(seen)}"
            )
        if best is None:
            block.append(f"{experiment}: no finished evaluation yet")
        else:
            block.append(best_summary(experiment, best, (spaces or {}).get(experiment)))
        blocks.append("\n".join(block))
    return "\n\n".join(blocks)


def submit_line(result: Mapping[str, Any]) -> str:
    """``nasd submit``'s line for one experiment: what the daemon did with it.

    ``exp: submitted (running)``, ``exp: already present, unchanged (done)`` or, when only the
    budget differed, ``exp: budget 40 -> 60: reopened (running)``: extending a finished search
    is never silent. A daemon that does not say what changed gets ``already present``.
    """
    if result.get("created"):
        what = "submitted"
    else:
        changed = result.get("changed")
        if changed == "unchanged":
            what = "already present, unchanged"
        elif isinstance(changed, str) and changed:
            what = changed
        else:
            what = "already present"
    return f"{result['experiment']}: {what} ({result['status']})"


def _number(value: float) -> str:
    """Whole numbers with thousands separators (parameter counts), others to four places."""
    if float(value).is_integer():
        return f"{int(value):,}"
    return f"{value:.4f}"


METRIC_PREFIX = "metric."
"""CSV column prefix of every metric (``metric.val_acc``): metrics never collide with columns."""


def write_export(
    rows: Iterable[Mapping[str, Any]], out: TextIO, fmt: str, *, leading: Sequence[str] = ()
) -> None:
    """One row per evaluation as ``jsonl`` or ``csv``.

    ``rows`` are :func:`nasd.store.queries.export_rows`: the fixed ``EXPORT_COLUMNS`` and a
    ``metrics`` mapping. JSON lines keep that shape (``{"trial_id": ..., "metrics": {...}}``);
    CSV has the fixed columns, then one ``metric.<name>`` column per metric name, sorted, empty
    where a trial has no such metric. Metric names can therefore never replace a fixed column.
    ``leading`` columns (``model`` for a multi-model group) come first in CSV; JSON lines carry
    them as the rows do. The genotype is a JSON object in JSON lines and its canonical JSON text
    in CSV (a cell holds text).
    """
    if fmt == "jsonl":
        for row in rows:
            out.write(json.dumps(row, sort_keys=True) + "\n")
        return
    rows = list(rows)
    metric_names = sorted({name for r in rows for name in r.get("metrics", {})})
    writer = csv.writer(out)
    columns = [*leading, *EXPORT_COLUMNS]
    writer.writerow([*columns, *(METRIC_PREFIX + name for name in metric_names)])
    for row in rows:
        metrics = row.get("metrics", {})
        writer.writerow(
            [
                *(_cell(row.get(column)) for column in columns),
                *(metrics.get(name, "") for name in metric_names),
            ]
        )


def _cell(value: object) -> object:
    """A CSV cell: mappings and lists as canonical JSON text (sorted keys, no spaces)."""
    if isinstance(value, Mapping | list):
        return json.dumps(value, sort_keys=True, separators=(",", ":"))
    return value
