"""The scheduling benchmark's workload and pool, built from the shipped tables only.

Two models share one heterogeneous pool:

* ``nb201``: the NAS-Bench-201 cell space (:class:`~nasd.core.space.NB201Space`). Fitness =
  ``c10_val12`` (12-epoch CIFAR-10 validation accuracy, %); base cost of an evaluation =
  ``c10_train_time200_s * 12 / 200`` seconds on the table's reference device.
* ``macro``: the NAS-Bench-Macro space as an ``hparams`` space of 8 categorical params
  ``l1..l8`` over ``{0, 1, 2}`` (the 8-character key of the table). Fitness = ``mean_acc`` (%);
  its table has FLOPs but no timings, so its base cost is NB201's least-squares line of 12-epoch
  time on FLOPs (``NB201Space.cost``) evaluated at the Macro network's FLOPs.

The table does not name the GPU its training times were measured on; we take the GTX 1080 Ti
(of the GPUs with latency columns its batch-256 latency correlates best with NB201's training
time) as the *reference device*. Duration of architecture ``a`` on device ``d`` =
``base(a) * lat_d(a) / lat_ref(a)``, with per-sample latencies: GPU columns measured at batch 256
(divided by 256), the CPU's ``lat_gold_6226`` taken as batch 1 (HELP's CPU setting). For Macro
(no latencies) each device's per-sample latency is its least-squares line on NB201 FLOPs.

The scheduler only sees what nasd would: per agent its device model, memory and a reference
speed (``samples_per_s`` = 1 / the device's median per-sample NB201 latency), per job its FLOPs and
:func:`~nasd.core.scheduler.heuristics.memory_estimate` of its cost at :data:`BATCH_SIZE`. The
true need of a job is that estimate times a per-architecture factor drawn in
:data:`MEMORY_NOISE` (the estimate is an upper bound).
"""

from __future__ import annotations

import csv
import gzip
import json
import random
import statistics
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nasd.core.events import Genotype
from nasd.core.scheduler.heuristics import memory_estimate
from nasd.core.space import NB201Space
from nasd.core.space._base import SearchSpace
from nasd.core.space.hparams import HparamsSpace
from nasd.core.space.nb201 import from_op_code, op_code
from nasd.errors import NasdError

GIB = 2**30
NB201_FILE = "nb201.csv.gz"
MACRO_FILE = "nas-bench-macro_cifar10.json"

BATCH_SIZE = 512
"""Samples per training step for the memory estimate of both models. NB201's protocol trains
at 256; at 256 every cell fits an 11 GiB card, at 512 the largest cells of both spaces do not."""

EVAL_EPOCHS, TABLE_EPOCHS = 12, 200
"""An evaluation trains 12 epochs; the table's training time is for 200."""

TARGET_QUANTILE = 0.99
"""A model reaches its target when it finds an architecture in its table's top 1 % by fitness."""

MEMORY_NOISE = (0.8, 1.0)
"""True memory need = estimate x a factor drawn uniformly in this range per architecture."""

OOM_FRACTION = 0.1
"""A job placed where it does not fit fails with out-of-memory after this share of its duration."""

MACRO_LAYERS = 8
MACRO_STAGES = (2, 3, 3)
MACRO_STEM, MACRO_HEAD = 32, 1280


class WorkloadDataError(NasdError):
    """A table the benchmark needs is missing or unreadable."""


@dataclass(frozen=True, slots=True)
class Device:
    """One kind of device in the pool: its latency column, memory, slots per agent and count."""

    name: str
    device_name: str
    kind: str
    latency_column: str
    latency_batch: int
    memory: int
    slots: int
    count: int


POOL: tuple[Device, ...] = (
    Device("titan_rtx", "NVIDIA TITAN RTX", "cuda", "lat_titan_rtx_256", 256, 24 * GIB, 1, 1),
    Device("1080ti", "NVIDIA GeForce GTX 1080 Ti", "cuda", "lat_1080ti_256", 256, 11 * GIB, 1, 2),
    Device("gold_6226", "Intel Xeon Gold 6226", "cpu", "lat_gold_6226", 1, 192 * GIB, 1, 1),
)
"""A new GPU, two old ones and a CPU box, one training slot each."""

REFERENCE_DEVICE = "1080ti"


@dataclass(frozen=True, slots=True)
class Agent:
    """One simulated agent: a device instance with the profile nasd would receive at birth."""

    name: str
    device: Device
    samples_per_s: float

    def profile(self) -> dict[str, Any]:
        """The fields of a birth profile the scheduler's class grouping reads."""
        return {
            "device_name": self.device.device_name,
            "device": self.device.kind,
            "memory_bytes": self.device.memory,
            "samples_per_s": self.samples_per_s,
        }


@dataclass(frozen=True, slots=True)
class Arch:
    """One architecture of a table: fitness (%), FLOPs, estimated memory, seconds per device."""

    accuracy: float
    flops: float
    memory: int
    durations: Mapping[str, float]


@dataclass(frozen=True, slots=True)
class Model:
    """A search space with its table: what the simulator needs to evaluate a genotype."""

    name: str
    space: SearchSpace
    threshold: float
    archs: Mapping[str, Arch]

    def key(self, genotype: Genotype) -> str:
        """The table key of ``genotype``: NB201 op code or the Macro 8-character string."""
        if isinstance(self.space, NB201Space):
            return op_code(genotype)
        return "".join(str(genotype[f"l{i + 1}"]) for i in range(MACRO_LAYERS))

    def arch(self, genotype: Genotype) -> Arch:
        """The table row of ``genotype``."""
        return self.archs[self.key(genotype)]

    def true_memory(self, genotype: Genotype, seed: int) -> int:
        """The memory the job really needs: the estimate times a per-(seed, arch) factor."""
        key = self.key(genotype)
        factor = random.Random(f"{seed}:{self.name}:{key}").uniform(*MEMORY_NOISE)
        return int(self.archs[key].memory * factor)


@dataclass(frozen=True, slots=True)
class Workload:
    """Both models, the pool's agents, and the fitted figures the README states."""

    models: tuple[Model, ...]
    agents: tuple[Agent, ...]
    notes: Mapping[str, Any]


def macro_space() -> HparamsSpace:
    """NAS-Bench-Macro as an ``hparams`` space: ``l1..l8`` categorical over ``{0, 1, 2}``."""
    params = {f"l{i + 1}": {"type": "categorical", "choices": [0, 1, 2]} for i in range(8)}
    return HparamsSpace(params)


def macro_cost(key: str, num_classes: int = 10) -> dict[str, float]:
    """Parameters, multiply-adds and activations (floats per sample kept for the backward pass)
    of the NAS-Bench-Macro CIFAR network for an 8-character key.

    The network: a 3x3 stem to 32 channels, 8 searchable layers in stages of 2, 3 and 3 (each
    stage's first layer halves the resolution and doubles the channels), each layer an identity
    (a 1x1 conv + BN when the shape changes), an inverted residual block with expansion 3 and a
    3x3 depthwise kernel, or one with expansion 6 and 5x5; then a 1x1 conv to 1280, BN, ReLU,
    global pooling and a linear classifier. Counted like :func:`nasd.core.space.nb201.
    network_cost`; parameters and FLOPs equal the table's for all 6,561 keys.
    """
    channels, size = MACRO_STEM, 32
    params = 27 * channels + 2 * channels
    flops = 27 * channels * size * size
    acts = 3 * size * size + 3 * channels * size * size  # input; stem conv, BN, ReLU
    layers = iter(int(c) for c in key)
    for stage in MACRO_STAGES:
        for index in range(stage):
            op = next(layers)
            stride = 2 if index == 0 else 1
            inp, oup = channels, 2 * channels if index == 0 else channels
            out = size // stride
            if op == 0:
                if stride != 1 or inp != oup:  # 1x1 conv + BN to the new shape
                    params += inp * oup + 2 * oup
                    flops += inp * oup * out * out
                    acts += 2 * oup * out * out
            else:
                expand, kernel = (3, 3) if op == 1 else (6, 5)
                hidden = inp * expand
                params += inp * hidden + hidden * kernel * kernel + hidden * oup
                params += 2 * hidden + 2 * hidden + 2 * oup
                flops += inp * hidden * size * size
                flops += (hidden * kernel * kernel + hidden * oup) * out * out
                acts += 3 * hidden * size * size + 3 * hidden * out * out + 2 * oup * out * out
                if inp == oup and stride == 1:
                    acts += oup * out * out  # residual sum
            channels, size = oup, out
    params += channels * MACRO_HEAD + 2 * MACRO_HEAD + MACRO_HEAD * num_classes + num_classes
    flops += channels * MACRO_HEAD * size * size + MACRO_HEAD * num_classes
    acts += 3 * MACRO_HEAD * size * size + MACRO_HEAD + num_classes
    return {"params": float(params), "flops": float(flops), "activations": float(acts)}


def top_quantile(values: list[float], quantile: float = TARGET_QUANTILE) -> float:
    """The least value among the top ``1 - quantile`` share of ``values`` (at least one)."""
    ranked = sorted(values, reverse=True)
    count = max(1, round(len(ranked) * (1.0 - quantile)))
    return ranked[count - 1]


def _per_sample(row: Mapping[str, str], device: Device) -> float:
    return float(row[device.latency_column]) / device.latency_batch


def _read_nb201(path: Path) -> list[dict[str, str]]:
    try:
        with gzip.open(path, "rt", newline="") as handle:
            rows = list(csv.DictReader(handle))
    except (OSError, EOFError, csv.Error) as exc:
        raise WorkloadDataError(f"cannot read {path}: {exc}") from None
    needed = {"op_code", "c10_val12", "c10_train_time200_s"} | {d.latency_column for d in POOL}
    if not rows or not needed <= set(rows[0]):
        raise WorkloadDataError(f"{path}: expected the NB201 table with columns {sorted(needed)}")
    return rows


def _read_macro(path: Path) -> dict[str, Any]:
    try:
        table = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise WorkloadDataError(f"cannot read {path}: {exc}") from None
    if not isinstance(table, dict) or not table:
        raise WorkloadDataError(f"{path}: expected the NAS-Bench-Macro table (a JSON object)")
    return table


def load_workload(data_dir: Path, *, gpus_only: bool = False) -> Workload:
    """Both models and the pool, from the tables in ``data_dir``.

    ``gpus_only``: leave the CPU box out of the pool (the same workload on the three GPUs).

    Raises :class:`WorkloadDataError` (one line) if a table is missing or unreadable.
    """
    missing = [name for name in (NB201_FILE, MACRO_FILE) if not (data_dir / name).is_file()]
    if missing:
        raise WorkloadDataError(
            f"missing {', '.join(missing)} in {data_dir} (see ../shared/data/README.md; "
            "pass --data DIR)"
        )
    rows = _read_nb201(data_dir / NB201_FILE)
    macro_table = _read_macro(data_dir / MACRO_FILE)
    ref = next(d for d in POOL if d.name == REFERENCE_DEVICE)
    space = NB201Space()
    costs = [space.cost(from_op_code(r["op_code"])) for r in rows]
    base = [float(r["c10_train_time200_s"]) * EVAL_EPOCHS / TABLE_EPOCHS for r in rows]
    flops = [c["flops"] for c in costs]
    time_fit = statistics.linear_regression(flops, base)
    lat_fits = {
        d.name: statistics.linear_regression(flops, [_per_sample(r, d) for r in rows]) for d in POOL
    }
    nb201_archs = {}
    for row, cost, seconds in zip(rows, costs, base, strict=True):
        ref_lat = _per_sample(row, ref)
        nb201_archs[row["op_code"]] = Arch(
            float(row["c10_val12"]),
            cost["flops"],
            memory_estimate(cost, BATCH_SIZE) or 0,
            {d.name: seconds * _per_sample(row, d) / ref_lat for d in POOL},
        )
    macro_archs = {}
    for key, entry in macro_table.items():
        cost = macro_cost(key)
        seconds = time_fit.intercept + time_fit.slope * cost["flops"]
        ref_lat = lat_fits[ref.name].intercept + lat_fits[ref.name].slope * cost["flops"]
        macro_archs[key] = Arch(
            float(entry["mean_acc"]),
            cost["flops"],
            memory_estimate(cost, BATCH_SIZE) or 0,
            {
                d.name: seconds * (fit.intercept + fit.slope * cost["flops"]) / ref_lat
                for d in POOL
                for fit in (lat_fits[d.name],)
            },
        )
    models = (
        Model(
            "nb201", space, top_quantile([a.accuracy for a in nb201_archs.values()]), nb201_archs
        ),
        Model(
            "macro",
            macro_space(),
            top_quantile([a.accuracy for a in macro_archs.values()]),
            macro_archs,
        ),
    )
    speeds = {
        d.name: 1.0 / (statistics.median(_per_sample(r, d) for r in rows) / 1000.0) for d in POOL
    }
    pool = [d for d in POOL if not (gpus_only and d.kind == "cpu")]
    agents = tuple(Agent(f"{d.name}-{i}", d, speeds[d.name]) for d in pool for i in range(d.count))
    notes = {
        "reference_device": REFERENCE_DEVICE,
        "batch_size": BATCH_SIZE,
        "target_quantile": TARGET_QUANTILE,
        "thresholds": {m.name: m.threshold for m in models},
        "macro_time_fit_s": {"intercept": time_fit.intercept, "per_mflop": time_fit.slope * 1e6},
        "samples_per_s": speeds,
        "pool": [
            {"device": d.name, "count": d.count, "slots": d.slots, "memory_gib": d.memory / GIB}
            for d in pool
        ],
    }
    return Workload(models, agents, notes)
