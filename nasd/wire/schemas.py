"""JSON Schema validation of message bodies and experiment configs (``schemas/v1/*.json``).

The schema files are the contract between daemon, agents and CLI; this module finds them, compiles
each once (lazily, then cached) and checks values against them. Validation is on the hot path of
every message, so a value is first checked by the schema compiled to plain closures
(:mod:`nasd.wire._compiled`, a few µs); ``jsonschema`` — the reference — is only consulted when
that says no (to explain why, or to overrule it) or cannot decide.

Two deliberate departures from plain draft 2020-12 type checking: ``integer`` means a Python
``int`` (not ``1.0``, so a value that passed is safe to use as an index or count), and ``array``
also accepts a tuple (msgpack packs both the same way, and decoded data only ever holds lists).
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from jsonschema import Draft202012Validator, SchemaError
from jsonschema.protocols import Validator
from jsonschema.validators import extend

from nasd.errors import ConfigError, WireError
from nasd.wire._compiled import (
    Predicate,
    UnsupportedSchema,
    compile_predicate,
    is_array,
    is_integer,
)
from nasd.wire.messages import MESSAGE_TYPES

__all__ = [
    "EXPERIMENT_SCHEMA",
    "MESSAGE_TYPES",
    "SCHEMAS_DIR_ENV",
    "load_schema",
    "preload",
    "schema_dir",
    "validate",
    "validate_experiment_config",
]

SCHEMAS_DIR_ENV = "NASD_SCHEMAS_DIR"
"""Environment variable that overrides where the ``v1`` schema files are read from."""

EXPERIMENT_SCHEMA = "experiment"
"""Stem of the experiment-config schema file; deliberately not a message type."""

_MAX_MESSAGE_CHARS = 300

_TYPE_CHECKER = Draft202012Validator.TYPE_CHECKER.redefine_many(
    {
        "integer": lambda _checker, value: is_integer(value),
        "array": lambda _checker, value: is_array(value),
    }
)
_StrictValidator = extend(Draft202012Validator, type_checker=_TYPE_CHECKER)

_Compiled = tuple[Predicate | None, Validator]
_cache: dict[str, _Compiled] = {}


def schema_dir() -> Path:
    """The directory holding the v1 schema files.

    Looked up in order: ``$NASD_SCHEMAS_DIR`` (which, when set, must exist: a mistyped override
    should not silently fall back), the source checkout or editable install
    (``<repo>/schemas/v1``), then ``<sys.prefix>/share/nasd/schemas/v1`` (a wheel's data files).
    Raises :class:`ConfigError` naming every place tried when none exists.
    """
    override = os.environ.get(SCHEMAS_DIR_ENV)
    if override:
        path = Path(override)
        if not path.is_dir():
            raise ConfigError(f"{SCHEMAS_DIR_ENV}={override!r} is not a directory")
        return path
    candidates = (
        Path(__file__).resolve().parents[2] / "schemas" / "v1",
        Path(sys.prefix) / "share" / "nasd" / "schemas" / "v1",
    )
    for path in candidates:
        if path.is_dir():
            return path
    tried = ", ".join(str(p) for p in candidates)
    raise ConfigError(f"nasd message schemas not found (set {SCHEMAS_DIR_ENV}); tried {tried}")


def load_schema(name: str) -> dict[str, Any]:
    """The parsed schema file ``<schema_dir>/<name>.json``; :class:`ConfigError` if unusable."""
    path = schema_dir() / f"{name}.json"
    try:
        schema = json.loads(path.read_text(encoding="utf-8"))
        _StrictValidator.check_schema(schema)
    except (OSError, ValueError, SchemaError) as exc:
        raise ConfigError(f"cannot load schema {path}: {exc}") from exc
    if not isinstance(schema, dict):
        raise ConfigError(f"schema {path} is not a JSON object")
    return schema


def _compile(name: str) -> _Compiled:
    schema = load_schema(name)
    try:
        predicate: Predicate | None = compile_predicate(schema)
    except UnsupportedSchema:
        predicate = None  # correct but slow: jsonschema alone
    compiled = (predicate, _StrictValidator(schema))
    _cache[name] = compiled
    return compiled


def preload() -> None:
    """Compile every schema now, so a broken install fails at start-up and not on a message."""
    for name in (*sorted(MESSAGE_TYPES), EXPERIMENT_SCHEMA):
        if name not in _cache:
            _compile(name)


def _check(compiled: _Compiled, value: Any, root: str) -> str | None:
    """None if ``value`` is valid, else the first error in words."""
    predicate, validator = compiled
    if predicate is not None:
        try:
            if predicate(value):
                return None
        except Exception:  # Undecided, or a comparison jsonschema may judge differently
            pass  # jsonschema decides below
    # The first error, not best_match: iterating every error of a hostile 256 KiB body would
    # turn one bad message into seconds of work. Schemas list size limits before item checks.
    error = next(iter(validator.iter_errors(value)), None)
    if error is None:
        return None
    text = f"{_path_words(root, error.absolute_path)}: {error.message}"
    return text if len(text) <= _MAX_MESSAGE_CHARS else text[: _MAX_MESSAGE_CHARS - 3] + "..."


def _path_words(root: str, path: Iterable[str | int]) -> str:
    words = [root]
    for part in path:
        words.append(f"[{part}]" if isinstance(part, int) else f".{part}")
    return "".join(words)


def validate(message_type: str, body: Any) -> None:
    """Check ``body`` against the schema of ``message_type``.

    Raises :class:`WireError` for an unknown type or an invalid body, with the path of the first
    error: ``"trial.result: body.metrics.val_acc: 'x' is not of type 'number'"``. Finiteness of
    floats is not a schema matter: :mod:`nasd.wire.codec` checks it.
    """
    if message_type not in MESSAGE_TYPES:  # before the cache: it also holds experiment.json
        raise WireError(f"unknown message type {message_type!r:.80}")
    compiled = _cache.get(message_type) or _compile(message_type)
    error = _check(compiled, body, "body")
    if error is not None:
        raise WireError(f"{message_type}: {error}")


def validate_experiment_config(config: Mapping[str, Any]) -> None:
    """Check a parsed experiment file against ``experiment.json``.

    Raises :class:`ConfigError` with the path of the first error in words, e.g.
    ``"experiment.budget: 0 is less than the minimum of 1"`` (``config`` names the top level).
    """
    if not isinstance(config, Mapping):
        raise ConfigError(f"config: expected a table, got {type(config).__name__}")
    compiled = _cache.get(EXPERIMENT_SCHEMA) or _compile(EXPERIMENT_SCHEMA)
    message = _check(compiled, dict(config), "config")
    if message is None:
        return
    if message.startswith("config."):
        message = message[len("config.") :]
    raise ConfigError(message)
