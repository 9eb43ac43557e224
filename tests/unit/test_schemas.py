"""The schema files, their lookup, message validation (fastjsonschema) and the experiment config."""

from __future__ import annotations

import copy
import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import fastjsonschema
import pytest
from jsonschema import Draft202012Validator

from nasd.core.wire import MESSAGE_TYPES, schemas, validate, validate_experiment_config
from nasd.core.wire.schemas import load_schema, preload, schema_dir
from nasd.errors import ConfigError, WireError
from tests.unit.test_wire_codec import JOB, PROFILE, TOKEN

REPO_SCHEMAS = Path(__file__).resolve().parents[2] / "schemas" / "v1"
SCHEMA_NAMES = sorted(p.stem for p in REPO_SCHEMAS.glob("*.json"))
# Objects that deliberately stay open: their other keys are checked by the space or strategy.
OPEN_OBJECTS = {
    ("experiment", "properties.space"),
    ("experiment", "properties.strategy"),
    ("trial.assign", "properties.space"),
    ("agent.state", "if"),
    # The per-command conditions only add to the closed object they apply to.
    *(("control.request", f"allOf[{i}].{part}") for i in range(3) for part in ("if", "then")),
}

MINIMAL_CONFIG: dict[str, Any] = {
    "experiment": {"name": "mnist1d-cnn", "budget": 30},
    "space": {"kind": "cnn"},
    "strategy": {"name": "aging-evolution"},
    "task": {"trainer": "mnist1d"},
}


# One valid body per message type holding only its required fields.
MINIMAL: dict[str, dict[str, Any]] = {
    "daemon.state": {"state": "offline"},
    "agent.state": {"state": "offline"},
    "agent.ready": {"slots": 1, "running": []},
    "trial.assign": {
        "job_id": JOB,
        "experiment": "mnist1d-cnn",
        "trial_id": 7,
        "epoch": 1,
        "token": TOKEN,
        "genotype": {},
        "space": {"kind": "cnn"},
        "task": {"trainer": "mnist1d", "options": {}},
        "epochs": None,
        "seed": 0,
        "parent_id": None,
        "morphisms": [],
    },
    "trial.cancel": {"job_id": JOB, "epoch": 1, "token": TOKEN},
    "trial.ack": {"job_id": JOB, "epoch": 1, "token": TOKEN},
    "trial.result": {
        "job_id": JOB,
        "epoch": 1,
        "token": TOKEN,
        "status": "failed",
        "metrics": {},
        "error": None,
        "started_at": 0,
        "finished_at": 0,
        "checkpoint": None,
    },
    "trial.progress": {
        "job_id": JOB,
        "epoch": 1,
        "token": TOKEN,
        "step": 0,
        "total": None,
        "metrics": {},
    },
    "control.request": {"client": "cli", "correlation_id": "c", "command": "status", "args": {}},
    "control.response": {"correlation_id": "c", "ok": True, "result": None, "error": None},
    "experiment.event": {
        "experiment": "mnist1d-cnn",
        "kind": "done",
        "trial_id": None,
        "metrics": {},
        "genotype": None,
    },
}
REQUIRED_FIELDS = [
    (message_type, field)
    for message_type in sorted(MINIMAL)
    for field in json.loads((REPO_SCHEMAS / f"{message_type}.json").read_text())["required"]
]


@pytest.fixture
def fresh_cache(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Empty schema caches for this test only, so other schema files can be loaded."""
    monkeypatch.setattr(schemas, "_cache", {})
    monkeypatch.setattr(schemas, "_config_validators", {})
    yield


def _subschemas(node: Any, path: str = "") -> Iterator[tuple[str, dict[str, Any]]]:
    if isinstance(node, dict):
        yield path, node
        for key, value in node.items():
            yield from _subschemas(value, f"{path}.{key}" if path else key)
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from _subschemas(value, f"{path}[{index}]")


def _replaced(body: dict[str, Any], dotted: str, value: Any) -> dict[str, Any]:
    """A deep copy of ``body`` with the field at ``dotted`` (e.g. ``"profile.slots"``) replaced."""
    copied = copy.deepcopy(body)
    *parents, leaf = dotted.split(".")
    node = copied
    for key in parents:
        node = node[key]
    node[leaf] = value
    return copied


def _refusal(message_type: str, body: Any) -> str:
    with pytest.raises(WireError) as caught:
        validate(message_type, body)
    return str(caught.value)


# --- the schema files and where they are found ---


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
def test_every_schema_file_compiles_with_fastjsonschema(name: str) -> None:
    check = fastjsonschema.compile(load_schema(name), use_default=False)
    with pytest.raises(fastjsonschema.JsonSchemaValueException, match="must be object"):
        check([])


def test_message_types_exclude_the_experiment_config() -> None:
    assert "experiment" not in MESSAGE_TYPES
    assert set(SCHEMA_NAMES) - {"experiment"} == MESSAGE_TYPES == set(MINIMAL)
    with pytest.raises(WireError, match="unknown message type"):
        validate("experiment", MINIMAL_CONFIG)
    with pytest.raises(WireError, match="unknown message type"):
        validate("../experiment", MINIMAL_CONFIG)


@pytest.mark.parametrize("message_type", ["trial.bogus", "", "Trial.Result", "x" * 500])
def test_unknown_message_types_are_refused(message_type: str) -> None:
    message = _refusal(message_type, MINIMAL["trial.result"])
    assert message.startswith("unknown message type") and len(message) < 120


def test_preload_compiles_everything(fresh_cache: None) -> None:
    preload()
    assert set(schemas._cache) == MESSAGE_TYPES
    assert set(schemas._config_validators) == {"experiment"}


def test_broken_schema_file_is_a_config_error(
    fresh_cache: None, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    (tmp_path / "trial.ack.json").write_text('{"type": "object", "maxProperties": -1}')
    monkeypatch.setenv(schemas.SCHEMAS_DIR_ENV, str(tmp_path))
    with pytest.raises(ConfigError, match=r"trial\.ack\.json"):
        validate("trial.ack", {})
    with pytest.raises(ConfigError, match=r"trial\.cancel\.json"):
        validate("trial.cancel", {})


@pytest.mark.parametrize(
    ("schema", "match"),
    [
        ({"type": "object", "prefixItems": [{"type": "string"}]}, r"keywords \['prefixItems'\]"),
        ({"dependentRequired": {"a": ["b"]}}, "not checked by fastjsonschema"),
        ({"properties": {"a": {"items": {"type": "integer"}}}}, "only be required through"),
        ({"anyOf": [{"type": "integer"}, {"type": "string"}]}, "only be required through"),
        ({"$ref": "#/$defs/a", "$defs": {"a": {"$ref": "#/$defs/a"}}}, "recursive"),
        ({"$ref": "https://example.com/other.json"}, "not a local"),
        ({"$ref": "#/$defs/missing"}, "not a local"),
        ({"properties": {"a": {"$id": "urn:x", "type": "string"}}}, "nested"),
    ],
)
def test_schemas_the_message_path_cannot_check_exactly_are_refused(
    fresh_cache: None, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, schema: Any, match: str
) -> None:
    (tmp_path / "trial.ack.json").write_text(json.dumps(schema))
    monkeypatch.setenv(schemas.SCHEMAS_DIR_ENV, str(tmp_path))
    with pytest.raises(ConfigError, match=match):
        validate("trial.ack", {})


def test_applicators_without_integers_are_compiled(
    fresh_cache: None, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    schema = {
        "type": "object",
        "oneOf": [{"required": ["a"]}, {"maxProperties": 0}],
        "properties": {"n": {"$ref": "#/$defs/count"}, "x": {"type": ["integer", "number"]}},
        "$defs": {"count": {"type": "integer"}},
    }
    (tmp_path / "trial.ack.json").write_text(json.dumps(schema))
    monkeypatch.setenv(schemas.SCHEMAS_DIR_ENV, str(tmp_path))
    validate("trial.ack", {"a": 1, "n": 3, "x": 2.0})
    validate("trial.ack", {})
    assert "body must be valid exactly by one definition" in _refusal("trial.ack", {"b": 1})
    assert "body.n must be integer" in _refusal("trial.ack", {"a": 1, "n": 3.0})


# --- message bodies ---


@pytest.mark.parametrize("message_type", sorted(MINIMAL))
def test_minimal_bodies_pass(message_type: str) -> None:
    body = copy.deepcopy(MINIMAL[message_type])
    validate(message_type, body)
    assert body == MINIMAL[message_type]  # validation never fills in defaults


@pytest.mark.parametrize(("message_type", "field"), REQUIRED_FIELDS)
def test_a_missing_required_field_is_named(message_type: str, field: str) -> None:
    body = {key: value for key, value in MINIMAL[message_type].items() if key != field}
    expected = f"{message_type}: body must contain ['{field}'] properties"
    assert _refusal(message_type, body) == expected


def test_conditional_requirement_and_nested_paths() -> None:
    assert "body must contain ['profile']" in _refusal("agent.state", {"state": "online"})
    validate("agent.state", {"state": "online", "profile": PROFILE})
    bad_profile = {"state": "online", "profile": dict(PROFILE, device="")}
    message = _refusal("agent.state", bad_profile)
    assert message.startswith("agent.state: body.profile.device must be longer than")
    bad_item = {"slots": 2, "running": [JOB, 7]}
    assert _refusal("agent.ready", bad_item) == "agent.ready: body.running[1] must be string"
    bad_metric = _replaced(MINIMAL["trial.result"], "metrics", {"val_acc": "x"})
    assert _refusal("trial.result", bad_metric).endswith("body.metrics.val_acc must be number")
    assert "unique" in _refusal("agent.ready", {"slots": 2, "running": [JOB, JOB]})
    assert "must not contain {'more'}" in _refusal("trial.ack", dict(MINIMAL["trial.ack"], more=1))
    newline = {"job_id": JOB + "\n", "epoch": 1, "token": TOKEN}
    assert "body.job_id must match pattern" in _refusal("trial.ack", newline)


def test_long_error_messages_are_cut() -> None:
    message = _refusal("trial.ack", {**MINIMAL["trial.ack"], **{f"k{i}": 0 for i in range(99)}})
    assert len(message) == schemas._MAX_MESSAGE_CHARS and message.endswith("...")
    assert message.startswith("trial.ack: body must not contain")


# --- nasd's type rules: integer is a Python int, array takes a tuple ---

INTEGER_FIELDS = [
    ("trial.result", "epoch"),  # through a $ref
    ("trial.progress", "step"),
    ("trial.progress", "total"),  # integer or null
    ("trial.assign", "parent_id"),
    ("trial.assign", "seed"),
    ("agent.ready", "slots"),
    ("agent.state", "profile.cpu_count"),  # nested, through a $ref
    ("daemon.state", "pid"),  # optional
    ("experiment.event", "trial_id"),
]


def _with_integer(message_type: str, dotted: str, value: Any) -> dict[str, Any]:
    body = MINIMAL[message_type]
    if message_type == "agent.state":
        body = {"state": "online", "profile": PROFILE}
    return _replaced(body, dotted, value)


@pytest.mark.parametrize(("message_type", "dotted"), INTEGER_FIELDS)
def test_integer_fields_take_ints_only(message_type: str, dotted: str) -> None:
    validate(message_type, _with_integer(message_type, dotted, 3))
    for bad in (3.0, 3.5, True, "3"):
        message = _refusal(message_type, _with_integer(message_type, dotted, bad))
        assert message.startswith(f"{message_type}: body.{dotted} must be integer"), bad


def test_number_fields_take_ints_and_floats_but_not_booleans() -> None:
    for value in (2, 2.0, 2.5):
        body = dict(MINIMAL["trial.result"], started_at=value, metrics={"a": value})
        validate("trial.result", body)
    message = _refusal("trial.result", dict(MINIMAL["trial.result"], finished_at=True))
    assert message == "trial.result: body.finished_at must be number"


def test_arrays_take_tuples() -> None:
    validate("agent.ready", {"slots": 2, "running": (JOB, "other:1")})
    assert "unique" in _refusal("agent.ready", {"slots": 2, "running": (JOB, JOB)})
    validate("trial.assign", dict(MINIMAL["trial.assign"], morphisms=({"op": "widen"},)))


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


def test_config_arrays_take_tuples(
    fresh_cache: None, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    schema = {"type": "object", "properties": {"ops": {"type": "array", "maxItems": 2}}}
    (tmp_path / "experiment.json").write_text(json.dumps(schema))
    monkeypatch.setenv(schemas.SCHEMAS_DIR_ENV, str(tmp_path))
    validate_experiment_config({"ops": ("conv3", "conv5")})
    with pytest.raises(ConfigError, match=r"ops: \('a', 'b', 'c'\) is too long"):
        validate_experiment_config({"ops": ("a", "b", "c")})


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
