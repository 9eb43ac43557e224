"""``nasd-agent``: attach one device of this machine to a nasd daemon through the broker.

For tests only, ``--profile-override KEY=VALUE`` (repeatable) and ``$NASD_AGENT_PROFILE_OVERRIDE``
(a JSON object) replace fields of the measured hardware profile, so that agents on one machine can
pose as different devices; see :mod:`agents.profile` for the keys. A bad override, like every other
user mistake here, is one ``nasd-agent: error: ...`` line on stderr and exit status 2.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import socket
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from nasd.errors import ConfigError, NasdError


def build_parser() -> argparse.ArgumentParser:
    """The command-line interface (also documented in the README)."""
    parser = argparse.ArgumentParser(
        prog="nasd-agent",
        description="Attach a training agent (one device) to a nasd daemon via an MQTT broker.",
    )
    parser.add_argument(
        "--broker",
        default=os.environ.get("NASD_BROKER"),
        help="broker URL, e.g. mqtt://user:pass@host:1883 or mqtts://host (default: $NASD_BROKER)",
    )
    parser.add_argument(
        "--name", default=None, help="agent id, unique per device (default: <hostname>-<device>)"
    )
    parser.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (default: cpu)")
    parser.add_argument(
        "--slots", type=int, default=1, help="jobs trained at once on this device (default: 1)"
    )
    parser.add_argument(
        "--spool",
        type=Path,
        default=None,
        help="directory for unacknowledged results (default: ~/.local/state/nasd-agent/<name>)",
    )
    parser.add_argument(
        "--checkpoints",
        type=Path,
        default=None,
        help="directory for trained weights (default: <spool>/../checkpoints)",
    )
    parser.add_argument(
        "--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)"
    )
    parser.add_argument(
        "--benchmark-seconds",
        type=float,
        default=2.0,
        help="length of the start-up micro-benchmark (default: 2)",
    )
    parser.add_argument(
        "--heartbeat",
        type=float,
        default=2.0,
        help="seconds between progress heartbeats (default: 2)",
    )
    parser.add_argument(
        "--trainer",
        action="append",
        default=[],
        dest="trainers",
        metavar="PATH_OR_NAME",
        help="also offer this trainer, a 'package.module:function' path (repeatable; also"
        " $NASD_AGENT_TRAINERS, comma-separated). Built-ins and installed 'nasd.trainers' entry"
        " points are always offered; nothing else is ever imported",
    )
    parser.add_argument(
        "--profile-override",
        action="append",
        default=[],
        dest="profile_overrides",
        metavar="KEY=VALUE",
        help="FOR TESTS ONLY: announce VALUE instead of the measured KEY, one of"
        " device_name, compute_capability, memory_bytes, free_memory_bytes, samples_per_s,"
        " throughput (repeatable; applied over $NASD_AGENT_PROFILE_OVERRIDE, a JSON object of the"
        " same keys). An overridden free_memory_bytes is also what every ready reports",
    )
    parser.add_argument("--log-level", default="info", choices=["debug", "info", "warning"])
    return parser


def _default_name(device: str) -> str:
    host = "".join(c if c.isalnum() or c in "-_." else "-" for c in socket.gethostname())
    return f"{host or 'agent'}-{device.replace(':', '')}"[:64]


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the process exit code."""
    args = build_parser().parse_args(argv)
    from nasd.logs import configure

    configure(args.log_level)
    try:
        from agents.profile import profile_overrides
        from nasd.aio import run

        # Checked before torch loads: a mistyped override fails in a blink, not after seconds.
        overrides = profile_overrides(args.profile_overrides, os.environ)
        return run(_run(args, overrides))
    except (ConfigError, NasdError) as exc:
        print(f"nasd-agent: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


async def _run(args: argparse.Namespace, overrides: Mapping[str, Any]) -> int:
    from agents.probe import parse_device, probe_hardware
    from agents.profile import apply_overrides, ready_free_memory
    from agents.trainers import configured_trainers, offered_trainers
    from agents.worker import Agent, AgentOptions
    from nasd.core.wire import check_agent_id, preload
    from nasd.mqtt import BrokerUrl

    preload()  # a broken install (missing or invalid schema files) fails here, not on a message
    if not args.broker:
        raise ConfigError("no broker: pass --broker mqtt://HOST:1883 or set NASD_BROKER")
    broker = BrokerUrl.parse(args.broker)
    try:
        device = parse_device(args.device)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    name = args.name or _default_name(device)
    try:
        check_agent_id(name)
    except NasdError as exc:
        raise ConfigError(f"--name {name!r}: {exc}") from None
    if not 1 <= args.slots <= 64:
        raise ConfigError(f"--slots must be between 1 and 64, got {args.slots}")
    if args.threads is not None:
        if args.threads < 1:
            raise ConfigError(f"--threads must be >= 1, got {args.threads}")
        import torch

        torch.set_num_threads(args.threads)
    trainers = tuple(configured_trainers(args.trainers, os.environ))
    offered_trainers(trainers)  # a bad entry is reported now, not after the benchmark
    spool = args.spool or Path.home() / ".local" / "state" / "nasd-agent" / name
    checkpoints = args.checkpoints or spool.parent / "checkpoints" / name
    profile = await asyncio.to_thread(
        probe_hardware, device, benchmark_seconds=args.benchmark_seconds
    )
    profile = apply_overrides(profile, overrides)
    agent = Agent(
        AgentOptions(
            broker=broker,
            name=name,
            profile=profile,
            spool_dir=spool,
            device=device,
            slots=args.slots,
            checkpoint_dir=checkpoints,
            heartbeat_s=args.heartbeat,
            trainers=trainers,
            free_memory=ready_free_memory(str(profile["device"]), overrides),
        )
    )
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, agent.stop)
    await agent.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
