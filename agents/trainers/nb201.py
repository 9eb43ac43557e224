"""The NAS-Bench-201 trainer: a table lookup instead of training (Dong & Yang, ICLR 2020).

Every one of the 15,625 cells was trained by the benchmark's authors; this trainer reads their
numbers from ``nb201.csv.gz`` so a whole NB201 search runs in seconds and can be compared with the
published protocol. Metrics, for the data set ``d`` chosen by the ``dataset`` option:

- ``val_acc``: the 12-epoch validation accuracy ``d_val12`` (the NB201 search fitness);
- ``test_acc``: the 200-epoch validation accuracy ``d_val200_mean``, which is what the NB201
  protocol reports for the cell a search selects (also given as ``val200``); ``test12`` too;
- ``params`` from the table; ``flops`` (multiply-adds) from
  :func:`nasd.core.space.nb201.network_cost` for the CIFAR data sets, 0.0 for ImageNet16-120 whose
  network the cost model does not describe;
- ``train_seconds`` = ``sim_train_seconds`` = the simulated 12-epoch cost,
  ``d_train_time200_s * 12 / 200`` (what NB201 search budgets are counted in);
- ``latency_ms``: the column ``lat_<latency_device>`` when that option is set.

Options: ``data`` (required: the path to ``nb201.csv.gz``), ``dataset`` (``c10``, ``c100`` or
``in16``; default ``c10``), ``latency_device`` (e.g. ``pixel3``, ``gold_6226``) and ``sleep``: real
seconds that a cell of average cost sleeps, each cell in proportion to its simulated training time
(default 0, no sleeping; for demos where evaluations should take visible time).
"""

from __future__ import annotations

import csv
import functools
import gzip
import math
import threading
import time
from collections.abc import Mapping
from pathlib import Path

from agents.trainers._base import TrainContext, TrainingStopped, TrainRequest, TrainResult
from nasd.core.space.nb201 import NB201Space, network_cost, op_code

__all__ = ["DATASETS", "NB201Table", "load_table", "train"]

DATASETS: dict[str, int] = {"c10": 10, "c100": 100, "in16": 120}
"""Data set names in the table, with their class counts."""
SEARCH_EPOCHS = 12
_TABLE_LOCK = threading.Lock()
_SLEEP_SLICE = 0.1  # seconds between should_stop() checks while sleeping


class NB201Table:
    """The benchmark rows by 6-digit op code (a string: codes have leading zeros)."""

    def __init__(self, rows: dict[str, dict[str, float]]) -> None:
        self.rows = rows
        columns = next(iter(rows.values())).keys() if rows else ()
        self.latency_devices = sorted(
            c.removeprefix("lat_") for c in columns if c.startswith("lat_")
        )
        self.mean_sim_seconds = {
            ds: sum(r[f"{ds}_train_time200_s"] for r in rows.values())
            * SEARCH_EPOCHS
            / 200
            / max(1, len(rows))
            for ds in DATASETS
        }


def _parse_row(row: Mapping[str, str]) -> dict[str, float]:
    """The numeric columns of a table row (text columns such as ``arch_str`` are left out)."""
    values: dict[str, float] = {}
    for column, text in row.items():
        if column in ("arch_str", "op_code", "index") or column.endswith("_seeds"):
            continue
        try:
            values[column] = float(text)
        except (TypeError, ValueError):
            continue
    return values


@functools.lru_cache(maxsize=2)
def _load_resolved(path: Path) -> NB201Table:
    try:
        with gzip.open(path, "rt", newline="") as stream:
            rows = {row["op_code"]: _parse_row(row) for row in csv.DictReader(stream)}
    except (OSError, EOFError, KeyError, csv.Error) as error:
        raise ValueError(f"nb201: cannot read the table {str(path)!r}: {error}") from error
    if len(rows) != 15_625:
        raise ValueError(f"nb201: {str(path)!r} holds {len(rows)} cells, expected 15,625")
    return NB201Table(rows)


def load_table(path: str | Path) -> NB201Table:
    """The NB201 table at ``path`` (``nb201.csv.gz``), read once per process and path."""
    resolved = Path(path).expanduser().resolve()
    if not resolved.is_file():
        raise ValueError(f"nb201: option 'data' points at {str(path)!r}, which is not a file")
    with _TABLE_LOCK:
        return _load_resolved(resolved)


def _sleep(seconds: float, context: TrainContext) -> None:
    """Sleep ``seconds`` in slices, raising :class:`TrainingStopped` if asked to stop."""
    deadline = time.monotonic() + seconds
    while (left := deadline - time.monotonic()) > 0:
        if context.should_stop():
            raise TrainingStopped("stopped while simulating training")
        time.sleep(min(_SLEEP_SLICE, left))


def train(request: TrainRequest, context: TrainContext) -> TrainResult:
    """Look the genotype's cell up in the NB201 table (see the module docstring)."""
    options = request.options
    if not options.get("data"):
        raise ValueError("nb201: the option 'data' (the path to nb201.csv.gz) is required")
    dataset = options.get("dataset", "c10")
    if dataset not in DATASETS:
        raise ValueError(
            f"nb201: option 'dataset' must be one of {list(DATASETS)}, got {dataset!r}"
        )
    NB201Space().validate(request.genotype)
    table = load_table(str(options["data"]))
    row = table.rows.get(op_code(request.genotype))
    if row is None:
        raise ValueError(f"nb201: cell {op_code(request.genotype)} is not in the table")
    sim_seconds = row[f"{dataset}_train_time200_s"] * SEARCH_EPOCHS / 200
    metrics = {
        "val_acc": row[f"{dataset}_val12"] / 100,
        "test_acc": row[f"{dataset}_val200_mean"] / 100,
        "val200": row[f"{dataset}_val200_mean"] / 100,
        "test12": row[f"{dataset}_test12"] / 100,
        "params": row[f"{dataset}_params_MB"] * 1e6,
        "flops": 0.0,
        "epochs": float(SEARCH_EPOCHS),
        "sim_train_seconds": sim_seconds,
        "train_seconds": sim_seconds,
    }
    if dataset != "in16":
        metrics["flops"] = network_cost(request.genotype["ops"], DATASETS[dataset])["flops"]
    device = options.get("latency_device")
    if device:
        if f"lat_{device}" not in row:
            raise ValueError(
                f"nb201: unknown latency_device {device!r}; one of {table.latency_devices}"
            )
        metrics["latency_ms"] = row[f"lat_{device}"]
    if not all(math.isfinite(v) for v in metrics.values()):
        raise ValueError(
            f"nb201: cell {op_code(request.genotype)} has non-finite values: {metrics}"
        )
    sleep = float(options.get("sleep", 0.0))
    if sleep > 0:
        _sleep(sleep * sim_seconds / table.mean_sim_seconds[dataset], context)
    context.progress(SEARCH_EPOCHS, SEARCH_EPOCHS, {"val_acc": metrics["val_acc"]})
    return TrainResult(metrics=metrics)
