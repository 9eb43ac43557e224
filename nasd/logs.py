"""structlog set-up: events with key-value fields; pretty on a terminal, JSON lines otherwise.

JSON lines are what journald and log shippers want; the console renderer is for people. ``fmt``
``"auto"`` (the default) picks the console renderer only when the stream is a terminal, so a
service (systemd, a container), a pipe, a file and a test all get JSON; either can be forced with
``fmt``. Colours follow the terminal too, and are off when ``NO_COLOR`` is set
(https://no-color.org). Logs go to stderr (or a file), never to stdout, which the CLI keeps for
results (``--json`` output, progress).
"""

from __future__ import annotations

import logging
import os
import sys
from typing import Any, TextIO

import structlog

LEVELS = ("debug", "info", "warning", "error")
FORMATS = ("auto", "console", "json")


def is_terminal(stream: TextIO) -> bool:
    """Whether ``stream`` is an interactive terminal (False for files, pipes, closed streams)."""
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError, OSError):  # no isatty, or a closed stream
        return False


def configure(level: str = "info", *, fmt: str = "auto", stream: TextIO | None = None) -> None:
    """Configure structlog (and the stdlib loggers of libraries) once per process."""
    if level not in LEVELS:
        from nasd.errors import ConfigError

        raise ConfigError(f"log level must be one of {', '.join(LEVELS)}, not {level!r}")
    if fmt not in FORMATS:
        from nasd.errors import ConfigError

        raise ConfigError(f"log format must be one of {', '.join(FORMATS)}, not {fmt!r}")
    out = stream if stream is not None else sys.stderr
    terminal = is_terminal(out)
    if fmt == "auto":
        fmt = "console" if terminal else "json"
    renderer: Any = (
        structlog.dev.ConsoleRenderer(colors=terminal and not os.environ.get("NO_COLOR"))
        if fmt == "console"
        else structlog.processors.JSONRenderer()
    )
    numeric = getattr(logging, level.upper())
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=structlog.PrintLoggerFactory(file=out),
        cache_logger_on_first_use=False,
    )
    logging.basicConfig(level=max(numeric, logging.WARNING), stream=out, force=True)
    for noisy in ("amqtt", "transitions", "paho", "asyncio", "mqtt"):
        logging.getLogger(noisy).setLevel(logging.ERROR)
