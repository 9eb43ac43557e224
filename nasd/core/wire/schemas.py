"""JSON Schema checks of message bodies and experiment configs (``schemas/v1/*.json``).

The schema files are the contract between daemon, agents and CLI; this module finds them, compiles
each once (lazily and cached, or all at :func:`preload`) and checks values against them.

Message bodies (:func:`validate`, on the hot path of every received message) are checked by
``fastjsonschema``, which turns a schema into generated Python code: a few µs for a valid
``trial.result``, and about as little for an invalid one, whose error names the failing path.
Hostile traffic is mostly invalid, so refusing must be as cheap as accepting.

The experiment config (:func:`validate_experiment_config`) is checked by ``jsonschema`` instead:
it is read once, by a person who mistyped something and deserves jsonschema's fuller wording.
jsonschema also checks every schema file against the draft 2020-12 meta-schema when it is loaded.

Two deliberate departures from plain draft 2020-12 type checking: ``integer`` means a Python
``int`` (not ``True``, not ``2.0``, so a value that passed is safe to use as an index or count),
and ``array`` also accepts a tuple (msgpack packs both the same way, and decoded data only ever
holds lists). fastjsonschema already refuses booleans and accepts tuples, but it takes an
integral float such as ``2.0`` for an integer. So compiling a message schema also lists the body
paths where it requires an integer, and :func:`validate` refuses a float found at one of them.
For that list to be complete, a message schema may only use keywords that fastjsonschema
implements with their 2020-12 meaning, only local ``#/$defs/<name>`` references, and may require
integers only through ``properties`` and ``$ref``; anything else is a :class:`ConfigError` when
the schema is compiled rather than a rule silently left unchecked.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import fastjsonschema
from fastjsonschema import JsonSchemaDefinitionException, JsonSchemaValueException
from jsonschema import Draft202012Validator, SchemaError
from jsonschema.protocols import Validator
from jsonschema.validators import extend

from nasd.core.wire.messages import MESSAGE_TYPES
from nasd.errors import ConfigError, WireError

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
        "integer": lambda _checker, value: type(value) is int,
        "array": lambda _checker, value: isinstance(value, list | tuple),
    }
)
_StrictValidator = extend(Draft202012Validator, type_checker=_TYPE_CHECKER)

_Path = tuple[str, ...]

# Keywords a message schema may use. fastjsonschema ignores keywords it does not know (such as
# 2020-12's prefixItems or dependentRequired), so any other keyword is refused at compile time.
_ANNOTATIONS = frozenset(
    {"$schema", "$id", "$defs", "$comment", "title", "description", "default", "examples"}
)
_ASSERTIONS = frozenset(
    {"type", "enum", "const", "required", "minProperties", "maxProperties", "minItems"}
    | {"maxItems", "uniqueItems", "minLength", "maxLength", "pattern", "minimum", "maximum"}
    | {"exclusiveMinimum", "exclusiveMaximum", "multipleOf"}
)
_APPLICATORS = frozenset(
    {"additionalProperties", "patternProperties", "propertyNames", "items", "contains"}
    | {"allOf", "anyOf", "oneOf", "not", "if", "then", "else"}
)
_KEYWORDS = _ANNOTATIONS | _ASSERTIONS | _APPLICATORS | {"properties", "$ref"}
_DEFS_REF = "#/$defs/"


@dataclass(frozen=True, slots=True)
class _MessageSchema:
    """One message schema compiled for :func:`validate`."""

    check: Callable[[Any], Any]
    """fastjsonschema's validator: raises JsonSchemaValueException for an invalid body."""
    integer_paths: tuple[_Path, ...]
    """Body paths where the schema requires an integer, so a float there must be refused."""


_cache: dict[str, _MessageSchema] = {}
_config_validators: dict[str, Validator] = {}


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
        Path(__file__).resolve().parents[3] / "schemas" / "v1",  # a checkout: nasd/core/wire
        Path(sys.prefix) / "share" / "nasd" / "schemas" / "v1",
    )
    for path in candidates:
        if path.is_dir():
            return path
    tried = ", ".join(str(p) for p in candidates)
    raise ConfigError(f"nasd message schemas not found (set {SCHEMAS_DIR_ENV}); tried {tried}")


def load_schema(name: str) -> dict[str, Any]:
    """The parsed schema file ``<schema_dir>/<name>.json``; :class:`ConfigError` if unusable.

    The file must be valid JSON and a valid draft 2020-12 schema (checked by jsonschema against
    the meta-schema), so that a broken install is reported with the file and the reason.
    """
    path = schema_dir() / f"{name}.json"
    try:
        schema = json.loads(path.read_text(encoding="utf-8"))
        _StrictValidator.check_schema(schema)
    except (OSError, ValueError, SchemaError) as exc:
        raise ConfigError(f"cannot load schema {path}: {exc}") from exc
    if not isinstance(schema, dict):
        raise ConfigError(f"schema {path} is not a JSON object")
    return schema


def _compile(message_type: str) -> _MessageSchema:
    schema = load_schema(message_type)
    try:
        # In this order: fastjsonschema rewrites the $ref strings of the schema in place.
        integer_paths = _IntegerSurvey(schema).paths()
        check = fastjsonschema.compile(schema, use_default=False)
    except (_Unsupported, JsonSchemaDefinitionException) as exc:
        where = schema_dir() / f"{message_type}.json"
        raise ConfigError(f"cannot compile schema {where}: {exc}") from exc
    compiled = _MessageSchema(check, integer_paths)
    _cache[message_type] = compiled
    return compiled


def _config_validator(name: str) -> Validator:
    validator = _config_validators.get(name)
    if validator is None:
        validator = _config_validators[name] = _StrictValidator(load_schema(name))
    return validator


def preload() -> None:
    """Compile every schema now, so a broken install fails at start-up and not on a message."""
    for name in sorted(MESSAGE_TYPES):
        if name not in _cache:
            _compile(name)
    _config_validator(EXPERIMENT_SCHEMA)


def validate(message_type: str, body: Any) -> None:
    """Check ``body`` against the schema of ``message_type``.

    Raises :class:`WireError` for an unknown type or an invalid body, naming the path of the
    first error: ``"trial.result: body.metrics.val_acc must be number"``. Finiteness of floats,
    nesting depth and foreign Python types are not schema matters: :mod:`nasd.core.wire.codec`
    refuses them before calling this, so ``body`` is expected to hold wire types only.
    """
    if message_type not in MESSAGE_TYPES:  # before the cache, so no other file is ever read
        raise WireError(f"unknown message type {message_type!r:.80}")
    compiled = _cache.get(message_type) or _compile(message_type)
    try:
        compiled.check(body)
    except JsonSchemaValueException as exc:
        # fastjsonschema calls the checked value "data" and starts its message with the path.
        text = exc.message
        if text.startswith("data"):
            text = "body" + text[len("data") :]
        raise WireError(_cut(f"{message_type}: {text}")) from None
    for path in compiled.integer_paths:
        value = body
        for key in path:
            if type(value) is not dict or key not in value:
                break  # an absent optional field, or a parent the schema allows to be null
            value = value[key]
        else:
            if isinstance(value, float):
                where = ".".join(("body", *path))
                raise WireError(_cut(f"{message_type}: {where} must be integer, not {value!r}"))


def _cut(text: str) -> str:
    return text if len(text) <= _MAX_MESSAGE_CHARS else text[: _MAX_MESSAGE_CHARS - 3] + "..."


def validate_experiment_config(config: Mapping[str, Any]) -> None:
    """Check a parsed experiment file against ``experiment.json``.

    Raises :class:`ConfigError` with the path of the first error in words, e.g.
    ``"experiment.budget: 0 is less than the minimum of 1"`` (``config`` names the top level).
    """
    if not isinstance(config, Mapping):
        raise ConfigError(f"config: expected a table, got {type(config).__name__}")
    validator = _config_validator(EXPERIMENT_SCHEMA)
    # The first error, not best_match: one is enough to fix, and the schema lists size limits
    # before item checks, so a huge bad value is not walked entirely.
    error = next(iter(validator.iter_errors(dict(config))), None)
    if error is None:
        return
    message = _cut(f"{_path_words('config', error.absolute_path)}: {error.message}")
    if message.startswith("config."):
        message = message[len("config.") :]
    raise ConfigError(message)


def _path_words(root: str, path: Iterable[str | int]) -> str:
    words = [root]
    for part in path:
        words.append(f"[{part}]" if isinstance(part, int) else f".{part}")
    return "".join(words)


class _Unsupported(Exception):
    """A message schema needs what fastjsonschema or nasd's integer rule cannot check exactly."""


class _IntegerSurvey:
    """Walks a message schema as fastjsonschema will apply it, listing where integers are required.

    Only ``properties`` and ``$ref`` lead to a listed path; an integer type reached through any
    other applicator (``items``, ``anyOf``, ``then``, ...) raises :class:`_Unsupported`, as does a
    keyword outside :data:`_KEYWORDS`, a non-local or recursive ``$ref``, or a nested ``$id``.
    """

    def __init__(self, root: dict[str, Any]) -> None:
        self._root = root
        self._found: list[_Path] = []
        self._resolving: list[str] = []

    def paths(self) -> tuple[_Path, ...]:
        """The body paths where the schema requires an integer and no other number."""
        self._walk(self._root, ())
        return tuple(dict.fromkeys(self._found))  # a path both typed and $ref-ed is listed once

    def _walk(self, node: Any, path: _Path | None) -> None:
        """Survey ``node`` found at body ``path``; None when reached through another applicator."""
        if isinstance(node, bool):
            return
        unknown = node.keys() - _KEYWORDS
        if unknown:
            raise _Unsupported(f"keywords {sorted(unknown)} are not checked by fastjsonschema")
        if "$id" in node and node is not self._root:
            raise _Unsupported("a nested $id changes what '#' references mean")
        types = node.get("type", ())
        types = [types] if isinstance(types, str) else types
        if "integer" in types and "number" not in types:
            if path is None:
                raise _Unsupported("integers may only be required through properties and $ref")
            self._found.append(path)
        if "$ref" in node:
            self._follow(node["$ref"], path)
        for name, sub in node.get("properties", {}).items():
            self._walk(sub, None if path is None else (*path, name))
        for keyword in node.keys() & _APPLICATORS:
            value = node[keyword]
            if keyword == "patternProperties":
                subs = list(value.values())
            elif isinstance(value, list):
                subs = value
            else:
                subs = [value]
            for sub in subs:
                self._walk(sub, None)

    def _follow(self, ref: str, path: _Path | None) -> None:
        name = ref[len(_DEFS_REF) :]
        defs = self._root.get("$defs", {})
        if not ref.startswith(_DEFS_REF) or name not in defs:
            raise _Unsupported(f"$ref {ref!r:.80} is not a local '#/$defs/<name>' reference")
        if ref in self._resolving:
            raise _Unsupported(f"recursive $ref {ref!r}")
        self._resolving.append(ref)
        self._walk(defs[name], path)
        self._resolving.pop()
