"""Control requests (``nasd submit``, ``status``, ``pause``, ``resume``, ``cancel``) over MQTT.

Each request carries a client id and a correlation id; the engine publishes the reply built here
to ``nasd/v1/control/response/<client>``. A bad request gets ``ok: false`` and an error message;
it never changes anything. This module only translates: the state changes themselves belong to
:class:`nasd.engine.lifecycle.Experiments`.

Every reply is built to fit the ``control.response`` schema whatever the request held: input
echoed in an error is cut to :data:`MAX_ECHO_CHARS`, the error itself to :data:`MAX_ERROR_CHARS`
(the schema allows 4,000), so a hostile request can never make the reply unsendable (defect 1 of
issue 6: one such reply used to take the daemon down, and a retained request every restart).
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

import structlog

from nasd.config import experiment_from_dict
from nasd.core.wire import is_valid_id
from nasd.errors import CommandError, ConfigError
from nasd.store import queries

if TYPE_CHECKING:
    from nasd.engine.core import Engine

log = structlog.get_logger("nasd.control")

Command = Callable[["Engine", sqlite3.Connection, dict[str, Any], float], Any]

MAX_ECHO_CHARS = 120
"""Longest piece of a request (an experiment name, say) repeated in an error message."""

MAX_ERROR_CHARS = 2000
"""Longest error text in a reply (the ``control.response`` schema allows 4,000)."""


def clip(text: str, limit: int) -> str:
    """``text`` cut to at most ``limit`` characters, saying how long it was when cut."""
    if len(text) <= limit:
        return text
    note = f"... ({len(text)} characters)"
    return text[: max(0, limit - len(note))] + note


def echo(value: object) -> str:
    """``repr(value)`` for an error message, never longer than :data:`MAX_ECHO_CHARS`."""
    if isinstance(value, str):
        return repr(clip(value, MAX_ECHO_CHARS))
    return clip(repr(value), MAX_ECHO_CHARS)


def refusal(correlation_id: str, error: str) -> dict[str, Any]:
    """A ``control.response`` body saying ``ok: false`` with ``error`` (clipped to fit)."""
    return {
        "correlation_id": correlation_id,
        "ok": False,
        "result": None,
        "error": clip(error, MAX_ERROR_CHARS),
    }


def handle(
    engine: Engine, conn: sqlite3.Connection, body: Mapping[str, Any], now: float
) -> dict[str, Any]:
    """Run one control request; the ``control.response`` body to send back (it always fits)."""
    command = str(body["command"])
    args = dict(body.get("args", {}))
    correlation_id = str(body["correlation_id"])
    try:
        result = _COMMANDS[command](engine, conn, args, now)
        return {"correlation_id": correlation_id, "ok": True, "result": result, "error": None}
    except (CommandError, ConfigError) as exc:
        error = clip(str(exc), MAX_ERROR_CHARS)
        log.info("control.refused", command=command, error=clip(error, 300))
        return refusal(correlation_id, error)
    except Exception as exc:  # a request must never take the daemon down (it would be redelivered)
        log.exception("control.failed", command=command)
        return refusal(correlation_id, f"internal error: {type(exc).__name__}: {exc}")


def _experiment_name(command: str, args: dict[str, Any]) -> str:
    """``args.experiment``; CommandError (echoing at most a short prefix) if it is not a name."""
    name = args.get("experiment")
    if not isinstance(name, str) or not name:
        raise CommandError(f"{command} needs args.experiment: an experiment name")
    if not is_valid_id(name):
        raise CommandError(f"no experiment named {echo(name)}")
    return name


def _submit(engine: Engine, conn: sqlite3.Connection, args: dict[str, Any], now: float) -> Any:
    data = args.get("config")
    if not isinstance(data, dict):
        raise CommandError("submit needs args.config: the experiment config as a mapping")
    config = experiment_from_dict(data, source="submitted config")
    # A trainer no online agent offers would leave the experiment waiting for nobody (agents run
    # only the trainers they list): say so now rather than after the user walks away.
    return engine.submit(conn, config, now, check_trainer=True)


def _status(engine: Engine, conn: sqlite3.Connection, args: dict[str, Any], now: float) -> Any:
    return status_page(
        queries.status(conn),
        agents=(int(args.get("agents_offset", 0)), int(args.get("agents_limit", STATUS_PAGE))),
        experiments=(
            int(args.get("experiments_offset", 0)),
            int(args.get("experiments_limit", STATUS_PAGE)),
        ),
    )


STATUS_PAGE = 500
"""Agents (and experiments) in one status reply unless the request asks for fewer."""

STATUS_BUDGET_BYTES = 192 * 1024
"""Most bytes of JSON a status reply may hold (msgpack is smaller; the wire allows 256 KiB)."""


def status_page(
    status: dict[str, Any],
    *,
    agents: tuple[int, int] = (0, STATUS_PAGE),
    experiments: tuple[int, int] = (0, STATUS_PAGE),
    budget: int = STATUS_BUDGET_BYTES,
) -> dict[str, Any]:
    """One page of :func:`nasd.store.queries.status`, small enough to send whatever the database.

    Agents and experiments are paged by ``(offset, limit)``; a page is halved until it fits in
    ``budget`` (defect 2 of issue 6: thousands of made-up agents made every reply too big to
    send). The result says the totals and offsets, so a client fetches the next pages until it
    has them all (``nasd status --broker`` does).
    """
    all_agents, all_experiments = status["agents"], status["experiments"]
    (agents_offset, agents_limit), (experiments_offset, experiments_limit) = agents, experiments
    while True:
        page = {
            **status,
            "agents": all_agents[agents_offset : agents_offset + agents_limit],
            "agents_offset": agents_offset,
            "agents_total": len(all_agents),
            "experiments": all_experiments[
                experiments_offset : experiments_offset + experiments_limit
            ],
            "experiments_offset": experiments_offset,
            "experiments_total": len(all_experiments),
        }
        if _json_size(page) <= budget:
            return page
        if len(page["agents"]) > 1:
            agents_limit = len(page["agents"]) // 2
        elif len(page["experiments"]) > 1:
            experiments_limit = len(page["experiments"]) // 2
        else:
            return page  # one agent and one experiment: nothing left to split


def _json_size(value: Any) -> int:
    return len(json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode())


def _pause(engine: Engine, conn: sqlite3.Connection, args: dict[str, Any], now: float) -> Any:
    return engine.experiments.pause(conn, _experiment_name("pause", args), now)


def _resume(engine: Engine, conn: sqlite3.Connection, args: dict[str, Any], now: float) -> Any:
    return engine.experiments.resume(conn, _experiment_name("resume", args), now)


def _cancel(engine: Engine, conn: sqlite3.Connection, args: dict[str, Any], now: float) -> Any:
    return engine.experiments.cancel(conn, _experiment_name("cancel", args), now)


_COMMANDS: dict[str, Command] = {
    "submit": _submit,
    "status": _status,
    "pause": _pause,
    "resume": _resume,
    "cancel": _cancel,
}
