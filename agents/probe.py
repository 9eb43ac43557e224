"""The agent's hardware profile: what it announces on its retained state topic at birth.

The daemon's scheduler (SHADHO-style compute classes) matches work to agents with this profile,
so it must describe the device the agent will actually train on: its name and memory, and a
measured ``throughput`` — a short float32 matrix-multiply benchmark in GFLOP/s, run with the torch
thread count the agent has already set, so two agents sharing one CPU each report their share.
"""

from __future__ import annotations

import os
import platform
import re
import socket
import time
from pathlib import Path
from typing import Any

import nasd

__all__ = ["parse_device", "probe_hardware"]

_DEVICE = re.compile(r"cpu|cuda(?::(\d+))?")
_CPU_MATRIX = 512
_CUDA_MATRIX = 2048  # big enough to keep a GPU busy; 512 would measure launch overhead
_CUDA_BURST = 8  # matmuls queued between synchronisations


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


def _cpu_count() -> int:
    """The CPUs this process may run on (its affinity mask), else the machine's count."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def _matmul_gflops(device: str, seconds: float) -> float:
    """Sustained float32 matmul GFLOP/s on ``device``, measured for about ``seconds``."""
    import torch

    size = _CUDA_MATRIX if device.startswith("cuda") else _CPU_MATRIX
    burst = _CUDA_BURST if device.startswith("cuda") else 1
    generator = torch.Generator().manual_seed(0)
    a = torch.randn(size, size, generator=generator).to(device)
    b = torch.randn(size, size, generator=generator).to(device)

    def sync() -> None:
        if device.startswith("cuda"):
            torch.cuda.synchronize(device)

    torch.mm(a, b)  # warm-up: kernel selection, allocator, thread pool
    sync()
    count = 0
    started = time.perf_counter()
    while True:
        for _ in range(burst):
            torch.mm(a, b)
        sync()
        count += burst
        elapsed = time.perf_counter() - started
        if elapsed >= seconds and count >= 2:
            break
    return 2.0 * size**3 * count / elapsed / 1e9


def probe_hardware(device: str, *, benchmark_seconds: float = 2.0) -> dict[str, Any]:
    """The hardware profile of ``device`` on this host (the agent's birth message body).

    Fields: ``host``, ``device``, ``device_name``, ``memory_bytes`` (GPU memory for CUDA, else
    physical RAM), ``cpu_count``, ``gpu_count``, ``torch_version``, ``throughput`` (GFLOP/s),
    ``slots`` (1 here; the caller sets its concurrency) and ``nasd_version``. Raises ValueError
    for a malformed device and RuntimeError for a CUDA device this machine does not have.
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
        device = f"cuda:{index}"
    else:
        device_name, memory_bytes = _cpu_name(), _physical_memory()
    return {
        "host": socket.gethostname(),
        "device": device,
        "device_name": device_name,
        "memory_bytes": memory_bytes,
        "cpu_count": _cpu_count(),
        "gpu_count": gpu_count,
        "torch_version": str(torch.__version__),
        "throughput": _matmul_gflops(device, max(0.0, benchmark_seconds)),
        "slots": 1,
        "nasd_version": nasd.__version__,
    }
