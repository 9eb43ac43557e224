"""Several nasd agents in one process, for the throughput benchmark.

A real ``nasd-agent`` process imports torch and runs a micro-benchmark at start-up (about 150 MB
and a second or two each). For a zero-cost trainer none of that matters, so this module runs K
:class:`agents.worker.Agent` instances on one asyncio loop: each keeps its own MQTT connection,
spool, credits (``slots``) and topics, exactly as separate processes would, but they share the
interpreter. The hardware profile is built by hand (no torch import, no probe).

Usage (from the repository root)::

    python -m benchmarks.bench_agents --broker mqtt://127.0.0.1:1883 \\
        --names bench-0,bench-1,bench-2,bench-3 --slots 16 --spool-root /tmp/spools

SIGTERM or SIGINT stops every agent gracefully (running jobs are handed back).
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import importlib.metadata
import os
import signal
import socket
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import nasd
from agents.trainers._base import TrainFn
from agents.worker import Agent, AgentOptions
from nasd.mqtt import BrokerUrl


def resolve_trainer(name: str) -> tuple[TrainFn, str]:
    """The trainer the agents run (``agents.trainers.<name>.train``) and its path, for the log."""
    module_name = f"agents.trainers.{name}"
    train: TrainFn = importlib.import_module(module_name).train
    return train, f"{module_name}.train"


def _torch_version() -> str:
    try:
        return importlib.metadata.version("torch")[:64]
    except importlib.metadata.PackageNotFoundError:
        return "none"


def _memory_bytes() -> int:
    try:
        return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
    except (ValueError, OSError, AttributeError):
        return 0


def bench_profile(slots: int) -> dict[str, Any]:
    """A hardware profile with every field of ``schemas/v1/agent.state.json`` (CPU, no probe)."""
    return {
        "host": socket.gethostname()[:255],
        "device": "cpu",
        "device_name": "benchmark zero-cost agent",
        "memory_bytes": _memory_bytes(),
        "cpu_count": os.cpu_count() or 1,
        "gpu_count": 0,
        "torch_version": _torch_version(),
        "throughput": 1.0,
        "slots": slots,
        "nasd_version": nasd.__version__,
    }


def build_agents(
    broker: BrokerUrl,
    names: list[str],
    slots: int,
    spool_root: Path,
    trainer: TrainFn,
    profile: Mapping[str, Any],
) -> list[Agent]:
    """One agent per name, each with its own spool directory under ``spool_root``."""
    return [
        Agent(
            AgentOptions(
                broker=broker,
                name=name,
                profile=profile,
                spool_dir=spool_root / name,
                device="cpu",
                slots=slots,
                checkpoint_dir=None,
            ),
            load_trainer=lambda _name: trainer,
        )
        for name in names
    ]


async def run_agents(agents: list[Agent]) -> None:
    """Run every agent until SIGTERM/SIGINT, then stop them all and wait for them."""
    loop = asyncio.get_running_loop()

    def stop_all() -> None:
        for agent in agents:
            agent.stop()

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop_all)
    async with asyncio.TaskGroup() as group:
        for agent in agents:
            group.create_task(agent.run(), name=f"agent-{agent.options.name}")


def build_parser() -> argparse.ArgumentParser:
    """Command-line options."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--broker", required=True, help="broker URL, e.g. mqtt://127.0.0.1:1883")
    parser.add_argument("--names", required=True, help="comma-separated agent ids")
    parser.add_argument("--slots", type=int, default=16, help="credits per agent (default: 16)")
    parser.add_argument(
        "--spool-root",
        type=Path,
        required=True,
        help="directory holding one spool directory per agent",
    )
    parser.add_argument("--trainer", default="zero", help="trainer name (default: zero)")
    parser.add_argument("--log-level", default="warning", choices=["debug", "info", "warning"])
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the exit status."""
    args = build_parser().parse_args(argv)
    from nasd.aio import run
    from nasd.logs import configure

    configure(args.log_level)
    names = [n.strip() for n in args.names.split(",") if n.strip()]
    if not names:
        print("bench_agents: --names is empty", file=sys.stderr)
        return 2
    trainer, origin = resolve_trainer(args.trainer)
    print(
        f"bench_agents: {len(names)} agents, {args.slots} slots each, trainer {origin}",
        file=sys.stderr,
        flush=True,
    )
    agents = build_agents(
        BrokerUrl.parse(args.broker),
        names,
        args.slots,
        args.spool_root,
        trainer,
        bench_profile(args.slots),
    )
    run(run_agents(agents))
    return 0


if __name__ == "__main__":
    sys.exit(main())
