"""Control requests (``nasd submit``, ``status``, ``pause``, ``resume``, ``cancel``) over MQTT.

Each request carries a client id and a correlation id; the engine publishes the reply built here
to ``nasd/v1/control/response/<client>``. A bad request gets ``ok: false`` and an error message;
it never changes anything. This module only translates: the state changes themselves belong to
:class:`nasd.engine.lifecycle.Experiments`.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

import structlog

from nasd.config import experiment_from_dict
from nasd.errors import CommandError, ConfigError
from nasd.store import queries

if TYPE_CHECKING:
    from nasd.engine.core import Engine

log = structlog.get_logger("nasd.control")

Command = Callable[["Engine", sqlite3.Connection, dict[str, Any], float], Any]


def handle(
    engine: Engine, conn: sqlite3.Connection, body: Mapping[str, Any], now: float
) -> dict[str, Any]:
    """Run one control request; the ``control.response`` body to send back."""
    command = str(body["command"])
    args = dict(body.get("args", {}))
    reply: dict[str, Any] = {"correlation_id": body["correlation_id"], "ok": False}
    try:
        result = _COMMANDS[command](engine, conn, args, now)
        return {**reply, "ok": True, "result": result, "error": None}
    except (CommandError, ConfigError) as exc:
        log.info("control.refused", command=command, error=str(exc))
        return {**reply, "result": None, "error": str(exc)}
    except Exception as exc:  # a request must never take the daemon down (it would be redelivered)
        log.exception("control.failed", command=command)
        return {**reply, "result": None, "error": f"internal error: {type(exc).__name__}: {exc}"}


def _submit(engine: Engine, conn: sqlite3.Connection, args: dict[str, Any], now: float) -> Any:
    data = args.get("config")
    if not isinstance(data, dict):
        raise CommandError("submit needs args.config: the experiment config as a mapping")
    return engine.submit(conn, experiment_from_dict(data, source="submitted config"), now)


def _status(engine: Engine, conn: sqlite3.Connection, args: dict[str, Any], now: float) -> Any:
    return queries.status(conn)


def _pause(engine: Engine, conn: sqlite3.Connection, args: dict[str, Any], now: float) -> Any:
    return engine.experiments.pause(conn, args.get("experiment"), now)


def _resume(engine: Engine, conn: sqlite3.Connection, args: dict[str, Any], now: float) -> Any:
    return engine.experiments.resume(conn, args.get("experiment"), now)


def _cancel(engine: Engine, conn: sqlite3.Connection, args: dict[str, Any], now: float) -> Any:
    return engine.experiments.cancel(conn, args.get("experiment"), now)


_COMMANDS: dict[str, Command] = {
    "submit": _submit,
    "status": _status,
    "pause": _pause,
    "resume": _resume,
    "cancel": _cancel,
}
