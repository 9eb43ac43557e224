"""The agent's hardware probe and device parsing."""

from __future__ import annotations

import pytest
import torch

import nasd
from agents.probe import parse_device, probe_hardware

FIELDS = {
    "host",
    "device",
    "device_name",
    "memory_bytes",
    "cpu_count",
    "gpu_count",
    "torch_version",
    "throughput",
    "slots",
    "nasd_version",
    "free_memory_bytes",
    "compute_capability",
    "samples_per_s",
}


def test_cpu_profile_has_exactly_the_fields_with_sane_values() -> None:
    profile = probe_hardware("cpu", benchmark_seconds=0.2)
    assert set(profile) == FIELDS
    assert profile["device"] == "cpu"
    assert isinstance(profile["host"], str) and profile["host"]
    assert isinstance(profile["device_name"], str) and profile["device_name"]
    assert isinstance(profile["memory_bytes"], int) and profile["memory_bytes"] > 2**26
    assert isinstance(profile["cpu_count"], int) and profile["cpu_count"] >= 1
    assert isinstance(profile["gpu_count"], int) and profile["gpu_count"] >= 0
    assert profile["torch_version"] == torch.__version__
    assert isinstance(profile["throughput"], float) and profile["throughput"] > 0
    assert profile["slots"] == 1 and profile["nasd_version"] == nasd.__version__


@pytest.mark.parametrize(
    ("text", "device"), [("cpu", "cpu"), (" CUDA ", "cuda"), ("cuda:3", "cuda:3")]
)
def test_parse_device_accepts_cpu_and_cuda(text: str, device: str) -> None:
    assert parse_device(text) == device


@pytest.mark.parametrize("text", ["gpu", "cuda:", "cuda:-1", "cuda:x", "mps", "", "cpu:0"])
def test_parse_device_refuses_anything_else(text: str) -> None:
    with pytest.raises(ValueError, match="'cpu', 'cuda' or 'cuda:N'"):
        parse_device(text)


def test_a_missing_gpu_is_a_clear_error() -> None:
    missing = f"cuda:{torch.cuda.device_count() if torch.cuda.is_available() else 0}"
    with pytest.raises(RuntimeError, match="CUDA GPU"):
        probe_hardware(missing, benchmark_seconds=0.0)
