"""The schema files, their lookup, the experiment-config check, and the compiled fast path."""

from __future__ import annotations

import json
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from jsonschema import Draft202012Validator

from nasd.errors import ConfigError, WireError
from nasd.wire import MESSAGE_TYPES, schemas, validate, validate_experiment_config
from nasd.wire._compiled import Undecided, UnsupportedSchema, compile_predicate
from nasd.wire.schemas import load_schema, preload, schema_dir

REPO_SCHEMAS = Path(__file__).resolve().parents[2] / "schemas" / "v1"
SCHEMA_NAMES = sorted(p.stem for p in REPO_SCHEMAS.glob("*.json"))
# Objects that deliberately stay open: their other keys are checked by the space or strategy.
OPEN_OBJECTS = {
    ("experiment", "properties.space"),
    ("experiment", "properties.strategy"),
    ("trial.assign", "properties.space"),
    ("agent.state", "if"),
}

MINIMAL_CONFIG: dict[str, Any] = {
    "experiment": {"name": "mnist1d-cnn", "budget": 30},
    "space": {"kind": "cnn"},
    "strategy": {"name": "aging-evolution"},
    "task": {"trainer": "mnist1d"},
}


@pytest.fixture
def fresh_cache(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """An empty validator cache for this test only, so other schema files can be loaded."""
    monkeypatch.setattr(schemas, "_cache", {})
    yield


def _subschemas(node: Any, path: str = "") -> Iterator[tuple[str, dict[str, Any]]]:
    if isinstance(node, dict):
        yield path, node
        for key, value in node.items():
            yield from _subschemas(value, f"{path}.{key}" if path else key)
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from _subschemas(value, f"{path}[{index}]")


def test_default_schema_dir_is_the_checkout(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(schemas.SCHEMAS_DIR_ENV, raising=False)
    assert schema_dir() == REPO_SCHEMAS


def test_schema_dir_override(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv(schemas.SCHEMAS_DIR_ENV, str(tmp_path))
    assert schema_dir() == tmp_path
    monkeypatch.setenv(schemas.SCHEMAS_DIR_ENV, str(tmp_path / "missing"))
    with pytest.raises(ConfigError, match="NASD_SCHEMAS_DIR"):
        schema_dir()


def test_schema_dir_falls_back_to_share_then_fails(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.delenv(schemas.SCHEMAS_DIR_ENV, raising=False)
    monkeypatch.setattr(schemas, "__file__", str(tmp_path / "a" / "nasd" / "wire" / "schemas.py"))
    monkeypatch.setattr(sys, "prefix", str(tmp_path / "prefix"))
    with pytest.raises(ConfigError, match="schemas not found"):
        schema_dir()
    installed = tmp_path / "prefix" / "share" / "nasd" / "schemas" / "v1"
    installed.mkdir(parents=True)
    assert schema_dir() == installed


@pytest.mark.parametrize("name", SCHEMA_NAMES)
def test_schema_files_are_valid_and_named_after_their_type(name: str) -> None:
    schema = json.loads((REPO_SCHEMAS / f"{name}.json").read_text(encoding="utf-8"))
    Draft202012Validator.check_schema(schema)
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert schema["$id"] == f"urn:nasd:schema:v1:{name}"


@pytest.mark.parametrize("name", SCHEMA_NAMES)
def test_schema_objects_are_closed_and_sizes_bounded(name: str) -> None:
    for path, sub in _subschemas(load_schema(name)):
        types = sub.get("type", [])
        types = [types] if isinstance(types, str) else types
        if "properties" in sub and (name, path) not in OPEN_OBJECTS:
            assert sub.get("additionalProperties") is False, f"{name}: {path} is open"
        if "object" in types:
            closed = sub.get("additionalProperties") is False
            assert closed or "maxProperties" in sub, f"{name}: {path} unbounded"
        if "string" in types:
            assert "maxLength" in sub, f"{name}: {path} unbounded string"
        if "array" in types:
            assert "maxItems" in sub, f"{name}: {path} unbounded array"
        if "integer" in types:
            assert "minimum" in sub and "maximum" in sub, f"{name}: {path} unbounded integer"


@pytest.mark.parametrize("name", SCHEMA_NAMES)
def test_every_schema_has_a_compiled_fast_path(name: str) -> None:
    assert callable(compile_predicate(load_schema(name)))


def test_message_types_exclude_the_experiment_config() -> None:
    assert "experiment" not in MESSAGE_TYPES
    assert set(SCHEMA_NAMES) - {"experiment"} == MESSAGE_TYPES
    with pytest.raises(WireError, match="unknown message type"):
        validate("experiment", MINIMAL_CONFIG)
    with pytest.raises(WireError, match="unknown message type"):
        validate("../experiment", MINIMAL_CONFIG)


def test_preload_compiles_everything(fresh_cache: None) -> None:
    preload()
    assert set(schemas._cache) == MESSAGE_TYPES | {"experiment"}


def test_broken_schema_file_is_a_config_error(
    fresh_cache: None, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    (tmp_path / "trial.ack.json").write_text('{"type": "object", "maxProperties": -1}')
    monkeypatch.setenv(schemas.SCHEMAS_DIR_ENV, str(tmp_path))
    with pytest.raises(ConfigError, match=r"trial\.ack\.json"):
        validate("trial.ack", {})
    with pytest.raises(ConfigError, match=r"trial\.cancel\.json"):
        validate("trial.cancel", {})


def test_schema_outside_the_compiled_subset_still_validates(
    fresh_cache: None, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    for path in REPO_SCHEMAS.glob("*.json"):
        shutil.copy(path, tmp_path)
    (tmp_path / "trial.ack.json").write_text(
        json.dumps({"oneOf": [{"type": "object", "required": ["a"]}, {"maxProperties": 0}]})
    )
    monkeypatch.setenv(schemas.SCHEMAS_DIR_ENV, str(tmp_path))
    validate("trial.ack", {"a": 1})
    validate("trial.ack", {})
    with pytest.raises(WireError, match=r"trial\.ack: body: "):
        validate("trial.ack", {"b": 1})
    assert schemas._cache["trial.ack"][0] is None


def test_long_error_messages_are_cut() -> None:
    with pytest.raises(WireError) as caught:
        validate("trial.ack", {"job_id": "x" * 5000, "epoch": 1})
    assert len(str(caught.value)) <= 320
    assert str(caught.value).startswith("trial.ack: body.job_id: 'xxx")


# --- the experiment config ---


def test_minimal_and_full_configs_pass() -> None:
    validate_experiment_config(MINIMAL_CONFIG)
    full = {
        "experiment": {
            "name": "mnist1d-cnn",
            "budget": 1_000_000,
            "seed": 0,
            "max_attempts": 100,
            "lease_ttl_s": 0.5 + 59.5,
        },
        "space": {"kind": "cnn", "max_layers": 8, "ops": ["conv3", "conv5"]},
        "strategy": {"name": "aging-evolution", "population": 50, "sample": 10},
        "task": {"trainer": "mnist1d", "epochs": 20, "options": {"batch_size": 128}},
    }
    validate_experiment_config(full)


def _with(section: str, **changes: Any) -> dict[str, Any]:
    config = {key: dict(value) for key, value in MINIMAL_CONFIG.items()}
    config[section].update(changes)
    return config


@pytest.mark.parametrize(
    ("config", "message"),
    [
        (_with("experiment", budget=0), "experiment.budget: 0 is less than the minimum of 1"),
        (_with("experiment", budget=30.0), "experiment.budget: 30.0 is not of type 'integer'"),
        (_with("experiment", budget=True), "experiment.budget: True is not of type 'integer'"),
        (_with("experiment", name="my exp"), "experiment.name: 'my exp' does not match"),
        (_with("experiment", max_attempts=0), "experiment.max_attempts: 0 is less than"),
        (_with("experiment", lease_ttl_s=0.5), "experiment.lease_ttl_s: 0.5 is less than"),
        (_with("experiment", budgett=3), "experiment: Additional properties"),
        (_with("task", epochs=0), "task.epochs: 0 is less than the minimum of 1"),
        (_with("task", options=[1]), "task.options: [1] is not of type 'object'"),
        (_with("space", kind=3), "space.kind: 3 is not of type 'string'"),
        ({**MINIMAL_CONFIG, "foo": 1}, "config: Additional properties are not allowed ('foo'"),
        ({**MINIMAL_CONFIG, "task": {}}, "task: 'trainer' is a required property"),
    ],
)
def test_bad_configs_name_the_path(config: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        validate_experiment_config(config)
    assert str(caught.value).startswith(message)


def test_missing_sections_and_fields() -> None:
    config = _with("experiment")
    del config["experiment"]["budget"]
    with pytest.raises(ConfigError, match="experiment: 'budget' is a required property"):
        validate_experiment_config(config)
    without_space = {k: v for k, v in MINIMAL_CONFIG.items() if k != "space"}
    with pytest.raises(ConfigError, match="config: 'space' is a required property"):
        validate_experiment_config(without_space)
    with pytest.raises(ConfigError, match="config: expected a table"):
        validate_experiment_config([1, 2])  # type: ignore[arg-type]


# --- the compiled predicate against jsonschema, on the corners where they could differ ---


@pytest.mark.parametrize(
    ("schema", "value", "expected"),
    [
        ({"type": "integer"}, 1, True),
        ({"type": "integer"}, 1.0, False),
        ({"type": "integer"}, True, False),
        ({"type": "number"}, True, False),
        ({"type": "number"}, 3, True),
        ({"type": "array"}, (1, 2), True),
        ({"type": "object"}, [], False),
        ({"type": ["string", "null"], "maxLength": 2}, None, True),
        ({"type": ["string", "null"], "maxLength": 2}, "abc", False),
        ({"minimum": 1}, "not a number", True),
        ({"enum": ["a", "b"]}, "a", True),
        ({"enum": ["a", "b"]}, 1, False),
        ({"const": "online"}, "offline", False),
        ({"pattern": "^a(?![\\s\\S])"}, "a\n", False),
        ({"pattern": "^a$"}, "a\n", True),  # why the schemas use a lookahead, not $
        ({"uniqueItems": True}, ["a", "a"], False),
        ({"propertyNames": {"maxLength": 2}}, {"abc": 1}, False),
        ({"additionalProperties": {"type": "number"}}, {"a": 1, "b": "x"}, False),
        ({"exclusiveMaximum": 1}, 1, False),
        ({"minItems": 1, "items": {"type": "string"}}, ["a", 1], False),
        ({"if": {"properties": {"s": {"const": "on"}}}, "then": {"required": ["p"]}}, {}, False),
        (
            {"if": {"properties": {"s": {"const": "on"}}}, "then": {"required": ["p"]}},
            {"s": 1},
            True,
        ),
        ({"$ref": "#/$defs/x", "$defs": {"x": {"minimum": 2}}}, 1, False),
        (False, None, False),
    ],
)
def test_compiled_predicate_agrees_with_jsonschema(schema: Any, value: Any, expected: bool) -> None:
    preload()
    validator_class = type(schemas._cache["trial.ack"][1])
    assert validator_class(schema).is_valid(value) is expected
    assert compile_predicate(schema)(value) is expected


@pytest.mark.parametrize(
    "schema",
    [
        {"oneOf": [{"type": "string"}]},
        {"enum": [1, 2]},
        {"type": "decimal"},
        {"$ref": "other.json"},
        {"$ref": "#/$defs/a", "$defs": {"a": {"$ref": "#/$defs/a"}}},
        {"properties": {"a": {"$id": "urn:x"}}},
        {"items": [{"type": "string"}]},
    ],
)
def test_compiler_refuses_what_it_cannot_do_exactly(schema: Any) -> None:
    with pytest.raises(UnsupportedSchema):
        compile_predicate(schema)


def test_unique_items_over_non_strings_is_left_to_jsonschema() -> None:
    with pytest.raises(Undecided):
        compile_predicate({"uniqueItems": True})([1, True])
    validate("agent.ready", {"slots": 1, "running": []})
    with pytest.raises(WireError, match="non-unique"):
        validate("agent.ready", {"slots": 2, "running": ["a:1", "a:1"]})
    with pytest.raises(WireError, match=r"body.running\[0\]"):
        validate("agent.ready", {"slots": 2, "running": [1, True]})
