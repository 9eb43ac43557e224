"""The agent's hardware profile: what it announces on its retained state topic at birth.

The daemon's scheduler (SHADHO-style compute classes) matches work to agents with this profile,
so it must describe the device the agent will actually train on: its name, total and free memory,
its CUDA compute capability (``"cpu"`` on a CPU), and two measured speeds, both run with the torch
thread count the agent has already set, so two agents sharing one CPU each report their share:

- ``throughput``: a short float32 matrix-multiply benchmark in GFLOP/s (peak arithmetic);
- ``samples_per_s``: training samples per second of the reference network
  (:mod:`nasd.core.scheduler.reference`, built by :func:`agents.models.cnn.build_cnn`), which is
  what a small child's training speed actually depends on: convolutions, BatchNorm, the optimiser
  step and launch overhead, not peak FLOP/s.

The two benchmarks share ``benchmark_seconds``; with 0 each runs only its warm-up and one timed
burst. :func:`free_memory_bytes` is cheap (no benchmark) and is measured again at each ``ready``.
"""

from __future__ import annotations

import os
import platform
import re
import socket
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import nasd

__all__ = ["free_memory_bytes", "parse_device", "probe_hardware"]

_DEVICE = re.compile(r"cpu|cuda(?::(\d+))?")
_CPU_MATRIX = 512
_CUDA_MATRIX = 2048  # big enough to keep a GPU busy; 512 would measure launch overhead
_CUDA_BURST = 8  # matmuls (or reference training steps) queued between synchronisations
_REFERENCE_SHARE = 0.5
"""The part of ``benchmark_seconds`` spent training the reference network (the rest: matmul)."""
_REFERENCE_LR = 0.01
"""Learning rate of the reference network's SGD steps (its weights are thrown away after)."""
_CPU_CAPABILITY = "cpu"
"""The ``compute_capability`` of a CPU device (its model is in ``device_name``)."""


def parse_device(text: str) -> str:
    """``text`` as a device name: ``cpu``, ``cuda`` or ``cuda:N``; ValueError for anything else."""
    device = text.strip().lower() if isinstance(text, str) else ""
    if not _DEVICE.fullmatch(device):
        raise ValueError(f"device: expected 'cpu', 'cuda' or 'cuda:N' (N >= 0), got {text!r}")
    return device


def _cpu_name() -> str:
    """The CPU model from /proc/cpuinfo where there is one, else what ``platform`` knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text(errors="replace").splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name" and value.strip():
                return value.strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown CPU"


def _physical_memory() -> int:
    """Physical RAM in bytes, or 0 where the platform does not say."""
    try:
        return int(os.sysconf("SC_PAGE_SIZE")) * int(os.sysconf("SC_PHYS_PAGES"))
    except (AttributeError, ValueError, OSError):
        return 0


def _available_memory() -> int:
    """RAM available to new work (MemAvailable in /proc/meminfo), else physical RAM."""
    try:
        for line in Path("/proc/meminfo").read_text(errors="replace").splitlines():
            key, _, value = line.partition(":")
            if key == "MemAvailable":
                amount, _, unit = value.strip().partition(" ")
                return int(amount) * (1024 if unit.strip().lower() == "kb" else 1)
    except (OSError, ValueError):
        pass
    return _physical_memory()


def _cpu_count() -> int:
    """The CPUs this process may run on (its affinity mask), else the machine's count."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def free_memory_bytes(device: str) -> int | None:
    """Memory of ``device`` free for new work now, in bytes; None when it cannot be read.

    CUDA: what the driver reports free (other processes' use counts) plus what this process's
    caching allocator holds but does not use (its own next job can have that). CPU: MemAvailable,
    else physical RAM, never above physical RAM. Cheap enough to call at every ``ready``.
    """
    if device.startswith("cuda"):
        import torch

        try:
            free, _total = torch.cuda.mem_get_info(device)
            cached = torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device)
        except (RuntimeError, AssertionError, ValueError):
            return None
        return int(free) + max(0, int(cached))
    physical, available = _physical_memory(), _available_memory()
    return min(available, physical) if physical > 0 else available


def _synchroniser(device: str) -> Callable[[], None]:
    """Waits for ``device``'s queued work (CUDA runs asynchronously; a CPU has nothing queued)."""
    import torch

    def sync() -> None:
        if device.startswith("cuda"):
            torch.cuda.synchronize(device)

    return sync


def _timed(step: Callable[[], object], device: str, seconds: float) -> float:
    """Calls of ``step`` per second on ``device``, for about ``seconds`` after one warm-up call.

    On CUDA, bursts of :data:`_CUDA_BURST` calls run between synchronisations; at least one burst
    (one call on a CPU) is always timed, so ``seconds=0`` still gives a positive rate.
    """
    burst = _CUDA_BURST if device.startswith("cuda") else 1
    sync = _synchroniser(device)
    step()  # warm-up: kernel selection, allocator, thread pool
    sync()
    count = 0
    started = time.perf_counter()
    while True:
        for _ in range(burst):
            step()
        sync()
        count += burst
        elapsed = time.perf_counter() - started
        if elapsed >= seconds:
            return count / max(elapsed, 1e-9)


def _matmul_gflops(device: str, seconds: float) -> float:
    """Sustained float32 matmul GFLOP/s on ``device``, measured for about ``seconds``."""
    import torch

    size = _CUDA_MATRIX if device.startswith("cuda") else _CPU_MATRIX
    generator = torch.Generator().manual_seed(0)
    a = torch.randn(size, size, generator=generator).to(device)
    b = torch.randn(size, size, generator=generator).to(device)
    return 2.0 * size**3 * _timed(lambda: torch.mm(a, b), device, seconds) / 1e9


def _reference_samples_per_s(device: str, seconds: float) -> float:
    """Training samples per second of the reference network on ``device`` (SGD steps)."""
    import torch
    from torch import nn

    from agents.models.cnn import build_cnn
    from nasd.core.scheduler.reference import (
        REFERENCE_BATCH,
        REFERENCE_GENOTYPE,
        REFERENCE_SPACE,
    )

    with torch.random.fork_rng(devices=[]):  # the agent's own RNG stream stays untouched
        torch.manual_seed(0)
        model = build_cnn(REFERENCE_SPACE, REFERENCE_GENOTYPE).to(device).train()
    generator = torch.Generator().manual_seed(0)
    shape = (REFERENCE_BATCH, *REFERENCE_SPACE["input_shape"])
    inputs = torch.randn(shape, generator=generator).to(device)
    labels = torch.randint(
        REFERENCE_SPACE["num_classes"], (REFERENCE_BATCH,), generator=generator
    ).to(device)
    parameters = list(model.parameters())
    loss_function = nn.CrossEntropyLoss()

    # A plain SGD update written out: the first torch.optim optimiser imports torch._dynamo
    # (about 2 s of CPU), which would double a short probe; the job's trainer pays that anyway.
    def step() -> None:
        for parameter in parameters:
            parameter.grad = None
        loss_function(model(inputs), labels).backward()
        with torch.no_grad():
            for parameter in parameters:
                if parameter.grad is not None:
                    parameter.add_(parameter.grad, alpha=-_REFERENCE_LR)

    return REFERENCE_BATCH * _timed(step, device, seconds)


def probe_hardware(device: str, *, benchmark_seconds: float = 2.0) -> dict[str, Any]:
    """The hardware profile of ``device`` on this host (the agent's birth message body).

    Fields: ``host``, ``device``, ``device_name``, ``memory_bytes`` (GPU memory for CUDA, else
    physical RAM), ``free_memory_bytes`` (see :func:`free_memory_bytes`, measured after the
    benchmarks released their memory; absent if unreadable), ``compute_capability`` (CUDA
    ``"major.minor"``, e.g. ``"9.0"``; ``"cpu"`` on a CPU), ``cpu_count``, ``gpu_count``,
    ``torch_version``, ``throughput`` (matmul GFLOP/s), ``samples_per_s`` (reference network
    training speed), ``slots`` (1 here; the caller sets its concurrency) and ``nasd_version``.
    Raises ValueError for a malformed device and RuntimeError for a CUDA device this machine
    does not have.
    """
    import torch

    device = parse_device(device)
    gpu_count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if device.startswith("cuda"):
        number = device.partition(":")[2]
        index = int(number) if number else (torch.cuda.current_device() if gpu_count else 0)
        if index >= gpu_count:
            raise RuntimeError(
                f"device {device!r} requested but torch sees {gpu_count} CUDA GPU(s) here"
            )
        properties = torch.cuda.get_device_properties(index)
        device_name, memory_bytes = str(properties.name), int(properties.total_memory)
        capability = f"{properties.major}.{properties.minor}"
        device = f"cuda:{index}"
    else:
        device_name, memory_bytes, capability = _cpu_name(), _physical_memory(), _CPU_CAPABILITY
    seconds = max(0.0, benchmark_seconds)
    throughput = _matmul_gflops(device, seconds * (1.0 - _REFERENCE_SHARE))
    samples_per_s = _reference_samples_per_s(device, seconds * _REFERENCE_SHARE)
    if device.startswith("cuda"):
        torch.cuda.empty_cache()  # the benchmarks' tensors are not the agent's to keep
    profile: dict[str, Any] = {
        "host": socket.gethostname(),
        "device": device,
        "device_name": device_name,
        "memory_bytes": memory_bytes,
        "compute_capability": capability,
        "cpu_count": _cpu_count(),
        "gpu_count": gpu_count,
        "torch_version": str(torch.__version__),
        "throughput": throughput,
        "samples_per_s": samples_per_s,
        "slots": 1,
        "nasd_version": nasd.__version__,
    }
    free = free_memory_bytes(device)
    if free is not None:
        profile["free_memory_bytes"] = free
    return profile
