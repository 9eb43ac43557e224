"""The msgpack envelope: round trips of every message type, and refusal of hostile payloads."""

from __future__ import annotations

import copy
import functools
import math
import struct
from enum import StrEnum
from pathlib import Path
from typing import Any

import msgpack
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from jsonschema import Draft202012Validator
from jsonschema.protocols import Validator
from jsonschema.validators import extend

from nasd.core.wire import (
    MAX_BYTES_BY_TYPE,
    MAX_DEPTH,
    MAX_PAYLOAD_BYTES,
    MESSAGE_TYPES,
    Envelope,
    decode,
    encode,
    schemas,
    validate,
)
from nasd.core.wire.schemas import load_schema as _load_schema
from nasd.errors import WireError

JOB = "mnist1d-cnn:7"

PROFILE = {
    "host": "gpu-box-01",
    "device": "cuda:0",
    "device_name": "NVIDIA H100 80GB HBM3",
    "memory_bytes": 85_000_000_000,
    "cpu_count": 16,
    "gpu_count": 1,
    "torch_version": "2.4.0+cu121",
    "throughput": 1234.5,
    "slots": 2,
    "nasd_version": "0.1.0",
    "trainers": ["mnist1d", "digits", "mypackage.trainers:train"],
    "free_memory_bytes": 80_000_000_000,
    "compute_capability": "9.0",
    "samples_per_s": 5000.0,
}

TOKEN = "0123456789abcdef0123456789abcdef"
"""A well-formed lease token (32 lowercase hex characters)."""

# One canonical valid body per message type, with every optional field present.
EXAMPLES: dict[str, dict[str, Any]] = {
    "daemon.state": {
        "state": "online",
        "instance": "9f2c" * 8,
        "host": "search-host",
        "pid": 4242,
        "started_at": 1.7e9,
        "born_at": 1.7e9 + 3,
        "version": "0.1.0",
    },
    "agent.state": {"state": "online", "profile": PROFILE},
    "agent.ready": {"slots": 2, "running": ["mnist1d-cnn:3"], "free_memory_bytes": 1_000_000_000},
    "trial.assign": {
        "job_id": JOB,
        "experiment": "mnist1d-cnn",
        "trial_id": 7,
        "epoch": 1,
        "token": TOKEN,
        "genotype": {"layers": [{"op": "conv3", "width": 32}, {"op": "pool"}]},
        "space": {"kind": "cnn", "max_layers": 8},
        "task": {"trainer": "mnist1d", "options": {"batch_size": 128}},
        "epochs": 20,
        "seed": 1234,
        "parent_id": 3,
        "morphisms": [{"op": "widen", "layer": 0, "factor": 2}],
    },
    "trial.cancel": {"job_id": JOB, "epoch": 2, "token": TOKEN},
    "trial.ack": {"job_id": JOB, "epoch": 2, "token": TOKEN},
    "trial.result": {
        "job_id": JOB,
        "epoch": 1,
        "token": TOKEN,
        "status": "ok",
        "metrics": {"val_acc": 0.91, "train_loss": 0.3, "params": 12345, "flops": 1e6},
        "error": None,
        "started_at": 1.7e9,
        "finished_at": 1.7e9 + 30.5,
        "checkpoint": None,
    },
    "trial.progress": {
        "job_id": JOB,
        "epoch": 1,
        "token": TOKEN,
        "step": 5,
        "total": 20,
        "metrics": {"train_loss": 0.4},
    },
    "control.request": {
        "client": "cli-9f2c",
        "correlation_id": "c0ffee",
        "command": "submit",
        "args": {"config": {"experiment": {"name": "x", "budget": 3}}},
    },
    "control.response": {
        "correlation_id": "c0ffee",
        "ok": True,
        "result": {"experiment": "mnist1d-cnn", "trials": [1, 2, 3]},
        "error": None,
    },
    "experiment.event": {
        "experiment": "mnist1d-cnn",
        "kind": "best",
        "trial_id": 7,
        "metrics": {"val_acc": 0.93},
        "genotype": {"layers": []},
    },
}


def raw(body: Any, type: Any = "trial.result", **envelope: Any) -> bytes:
    """An envelope packed without any checks, to craft hostile payloads."""
    fields: dict[Any, Any] = {"v": 1, "type": type, "id": "abc", "sent_at": 1.0, "body": body}
    fields.update(envelope)
    return msgpack.packb(fields, use_bin_type=True)


def refused(payload: bytes, match: str = "", **kwargs: Any) -> None:
    with pytest.raises(WireError, match=match):
        decode(payload, **kwargs)


def test_the_schemas_and_the_code_agree() -> None:
    files = {p.name.removesuffix(".json") for p in schemas.schema_dir().glob("*.json")}
    assert set(EXAMPLES) == MESSAGE_TYPES == files - {"experiment"}


@pytest.mark.parametrize("message_type", sorted(EXAMPLES))
def test_round_trip(message_type: str) -> None:
    body = EXAMPLES[message_type]
    payload = encode(message_type, body, msg_id="m-1", sent_at=12.5)
    assert decode(payload) == Envelope(type=message_type, id="m-1", sent_at=12.5, body=body)
    assert decode(payload, expect=message_type).body == body
    assert decode(payload, expect={message_type, "trial.ack"}).type == message_type


def test_encode_fills_id_and_time_and_is_deterministic_when_given_them() -> None:
    first = decode(encode("trial.ack", EXAMPLES["trial.ack"]))
    second = decode(encode("trial.ack", EXAMPLES["trial.ack"]))
    assert len(first.id) == 32 and first.id != second.id
    assert first.sent_at > 1.6e9 and first.v == 1
    fixed = encode("trial.ack", EXAMPLES["trial.ack"], msg_id="same", sent_at=1.0)
    assert fixed == encode("trial.ack", EXAMPLES["trial.ack"], msg_id="same", sent_at=1.0)


def test_encode_accepts_tuples_and_str_enums_and_decodes_plain_values() -> None:
    class Status(StrEnum):
        OK = "ok"

    body = dict(EXAMPLES["trial.result"], status=Status.OK)
    assert decode(encode("trial.result", body)).body["status"] == "ok"
    ready = decode(encode("agent.ready", {"slots": 2, "running": ("a:1", "b:2")}))
    assert ready.body["running"] == ["a:1", "b:2"]
    morphisms = ({"op": "widen"}, {"op": "deepen"})
    assign = decode(encode("trial.assign", dict(EXAMPLES["trial.assign"], morphisms=morphisms)))
    assert assign.body["morphisms"] == list(morphisms)


@pytest.mark.parametrize("epoch", [2.0, True, 2.5, "2"])
def test_integer_fields_refuse_floats_and_booleans_on_the_wire(epoch: Any) -> None:
    body = dict(EXAMPLES["trial.result"], epoch=epoch)
    packed = raw(body)
    assert msgpack.unpackb(packed)["body"]["epoch"] == epoch  # the value really crosses the wire
    refused(packed, r"^trial\.result: body\.epoch must be integer")
    with pytest.raises(WireError, match=r"body\.epoch must be integer"):
        encode("trial.result", body)
    nested = copy.deepcopy(EXAMPLES["agent.state"])
    nested["profile"]["slots"] = epoch
    refused(raw(nested, "agent.state"), r"body\.profile\.slots must be integer")


@pytest.mark.parametrize(
    ("message_type", "body", "match"),
    [
        ("trial.bogus", {}, "unknown message type"),
        ("experiment", {"experiment": {"name": "x", "budget": 1}}, "unknown message type"),
        (
            "trial.ack",
            {"job_id": JOB, "token": TOKEN},
            r"trial\.ack: body must contain \['epoch'\] properties",
        ),
        (
            "trial.ack",
            {"job_id": JOB, "epoch": 1.0, "token": TOKEN},
            r"body\.epoch must be integer, not 1\.0",
        ),
        (
            "trial.ack",
            {"job_id": JOB, "epoch": True, "token": TOKEN},
            r"body\.epoch must be integer",
        ),
        ("trial.ack", {"job_id": JOB + "\n", "epoch": 1, "token": TOKEN}, "body.job_id"),
        ("trial.ack", {"job_id": JOB, "epoch": 1, "token": TOKEN.upper()}, "body.token"),
        ("trial.result", dict(EXAMPLES["trial.result"], metrics={"a": math.nan}), "non-finite"),
        ("trial.result", dict(EXAMPLES["trial.result"], checkpoint=b"x"), "binary"),
        ("trial.result", dict(EXAMPLES["trial.result"], error=object()), "object refused"),
        ("control.response", dict(EXAMPLES["control.response"], result={1: 2}), "map key"),
        ("control.response", dict(EXAMPLES["control.response"], result="x" * 300_000), "exceeds"),
    ],
)
def test_encode_refuses_what_decode_would(message_type: str, body: Any, match: str) -> None:
    with pytest.raises(WireError, match=match):
        encode(message_type, body)


def test_validation_message_names_the_path() -> None:
    body = copy.deepcopy(EXAMPLES["trial.result"])
    body["metrics"]["val_acc"] = "x"
    with pytest.raises(WireError) as caught:
        decode(raw(body))
    assert str(caught.value) == "trial.result: body.metrics.val_acc must be number"


def test_refuses_oversize_before_unpacking() -> None:
    refused(b"\xc1" * (MAX_PAYLOAD_BYTES + 1), "exceeds")
    big = dict(EXAMPLES["control.response"], result="x" * MAX_PAYLOAD_BYTES)
    refused(raw(big, "control.response"), "exceeds")


WIDE = "\U0001f600"  # four bytes in UTF-8: the widest character a maxLength may count


def _widest_bodies() -> dict[str, dict[str, Any]]:
    """The largest body each inbound type's schema allows (strings at their maximum length)."""
    metrics = {f"{i:02d}" + WIDE * 62: -1.5e14 for i in range(64)}
    profile = {
        **PROFILE,
        **{key: WIDE * 255 for key in ("host", "device_name")},
        **{key: WIDE * 64 for key in ("device", "torch_version", "nasd_version")},
        "trainers": [f"t{i:03d}" + "m" * 124 + ":" + "f" * 63 for i in range(256)],
        "compute_capability": WIDE * 32,
        "free_memory_bytes": 2**63 - 1,
    }
    return {
        "trial.result": dict(
            EXAMPLES["trial.result"], metrics=metrics, error=WIDE * 4000, checkpoint=WIDE * 1024
        ),
        "trial.progress": dict(EXAMPLES["trial.progress"], metrics=metrics),
        "agent.ready": {
            "slots": 64,
            "running": [f"{'e' * 64}:{i:09d}" for i in range(64)],
            "free_memory_bytes": 2**63 - 1,
        },
        "agent.state": {"state": "online", "profile": profile},
        "control.request": dict(
            EXAMPLES["control.request"],
            client="c" * 64,
            correlation_id=WIDE * 64,
            command="pause",
            args={"experiment": WIDE * 64},
        ),
    }


@pytest.mark.parametrize("message_type", sorted(_widest_bodies()))
def test_every_legal_message_fits_its_type_limit(message_type: str) -> None:
    body = _widest_bodies()[message_type]
    payload = encode(message_type, body)
    assert decode(payload, expect=message_type).body == body
    assert len(payload) <= MAX_BYTES_BY_TYPE[message_type] < MAX_PAYLOAD_BYTES


def test_each_type_has_its_own_size_limit_checked_before_unpacking() -> None:
    limit = MAX_BYTES_BY_TYPE["trial.result"]
    refused(b"\xc1" * (limit + 1), f"exceeds {limit}", expect="trial.result")
    refused(b"\xc1" * (limit + 1), "not msgpack", expect=["trial.result", "agent.state"])
    body = dict(EXAMPLES["trial.result"], error="e" * 4000, checkpoint="c" * 1024)
    body["metrics"] = {f"m{i}" + "x" * 60: 1.0 for i in range(64)}
    assert len(encode("trial.result", body)) < limit  # an ASCII worst case is far below
    big_request = dict(EXAMPLES["control.request"], args={"config": {"x": "y" * 70_000}})
    with pytest.raises(WireError, match=r"exceeds 65536"):
        encode("control.request", big_request, checked=False)  # the limit holds unchecked too


@pytest.mark.parametrize(
    "payload",
    [
        b"",
        b"\xc1",
        b"\x92\x01",
        raw({})[:-1],
        raw(EXAMPLES["trial.result"]) + b"\x00",
        b"\xa2\xff\xfe",
    ],
    ids=["empty", "never-used-byte", "truncated", "truncated-envelope", "trailing", "bad-utf8"],
)
def test_refuses_non_msgpack(payload: bytes) -> None:
    refused(payload, "not msgpack")


def test_refuses_extension_types() -> None:
    body = dict(EXAMPLES["trial.result"], checkpoint=msgpack.ExtType(5, b"xy"))
    refused(raw(body), "extension type 5")
    stamped = dict(EXAMPLES["trial.result"], checkpoint=msgpack.Timestamp(1, 0))
    refused(raw(stamped), "Timestamp")


def test_refuses_non_string_map_keys() -> None:
    body = copy.deepcopy(EXAMPLES["trial.result"])
    body["metrics"][1] = 0.5
    refused(raw(body), "not msgpack.*map key")
    refused(raw(EXAMPLES["trial.result"], x=1), "bad envelope fields")
    bin_key = dict(EXAMPLES["control.response"], result={b"k": 1})
    refused(raw(bin_key, "control.response"), "map key")


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_refuses_non_finite_floats_anywhere(bad: float) -> None:
    body = copy.deepcopy(EXAMPLES["trial.result"])
    body["metrics"]["val_acc"] = bad
    refused(raw(body), "non-finite")
    refused(raw(EXAMPLES["trial.result"], sent_at=bad), "non-finite")
    nested = copy.deepcopy(EXAMPLES["trial.assign"])
    nested["genotype"]["layers"][0]["width"] = bad
    refused(raw(nested, "trial.assign"), "non-finite")


def test_refuses_float32_nan() -> None:
    body = copy.deepcopy(EXAMPLES["trial.result"])
    body["metrics"]["val_acc"] = 0.5
    packed = raw(body)
    float64_half = b"\xcb" + struct.pack(">d", 0.5)
    assert float64_half in packed
    refused(packed.replace(float64_half, b"\xca" + struct.pack(">f", math.nan)), "non-finite")


def _nested(levels: int) -> dict[str, Any]:
    value: dict[str, Any] = {}
    for _ in range(levels - 1):
        value = {"a": value}
    return value


def test_depth_limit_counts_the_envelope() -> None:
    # envelope (1) + body (2) + genotype and what it holds (MAX_DEPTH - 2 more) = MAX_DEPTH
    body = dict(EXAMPLES["trial.assign"], genotype=_nested(MAX_DEPTH - 2))
    assert decode(raw(body, "trial.assign")).body == body
    deeper = dict(EXAMPLES["trial.assign"], genotype=_nested(MAX_DEPTH - 1))
    refused(raw(deeper, "trial.assign"), "nesting")
    refused(raw(dict(EXAMPLES["trial.assign"], genotype=_nested(40)), "trial.assign"), "nesting")
    refused(b"\x91" * 5000 + b"\xc0", "not msgpack")  # msgpack's own stack limit


def test_refuses_binary_values() -> None:
    refused(raw(dict(EXAMPLES["trial.result"], checkpoint=b"")), "binary")
    refused(raw(EXAMPLES["trial.result"], id=b"abc"), "binary")


def test_refuses_topic_type_mismatch() -> None:
    payload = encode("trial.result", EXAMPLES["trial.result"])
    refused(payload, "not expected", expect="trial.assign")
    refused(payload, "not expected", expect=["trial.ack", "trial.progress"])
    refused(payload, "not expected", expect=())


@pytest.mark.parametrize(
    ("payload", "match"),
    [
        (msgpack.packb([1, 2]), "not a map"),
        (msgpack.packb("trial.result"), "not a map"),
        (msgpack.packb({"v": 1, "type": "trial.ack", "body": {}}), "missing"),
        (raw(EXAMPLES["trial.ack"], "trial.ack", extra=1), "unexpected"),
        (raw(EXAMPLES["trial.ack"], "trial.ack", v=2), "version"),
        (raw(EXAMPLES["trial.ack"], "trial.ack", v=True), "version"),
        (raw(EXAMPLES["trial.ack"], "trial.ack", v="1"), "version"),
        (raw(EXAMPLES["trial.ack"], "trial.bogus"), "unknown message type"),
        (raw(EXAMPLES["trial.ack"], "experiment"), "unknown message type"),
        (raw(EXAMPLES["trial.ack"], 7), "unknown message type"),
        (raw(EXAMPLES["trial.ack"], "trial.ack", id=""), "id"),
        (raw(EXAMPLES["trial.ack"], "trial.ack", id="x" * 65), "id"),
        (raw(EXAMPLES["trial.ack"], "trial.ack", sent_at="now"), "sent_at"),
        (raw(EXAMPLES["trial.ack"], "trial.ack", sent_at=False), "sent_at"),
        (raw([EXAMPLES["trial.ack"]], "trial.ack"), "body must be a map"),
        (raw({"job_id": JOB, "token": TOKEN}, "trial.ack"), r"body must contain \['epoch'\]"),
        (raw(dict(EXAMPLES["trial.ack"], more=1), "trial.ack"), "body must not contain {'more'}"),
    ],
    ids=lambda value: value if isinstance(value, str) else "payload",
)
def test_refuses_bad_envelopes(payload: bytes, match: str) -> None:
    refused(payload, match)


def test_accepts_bytearray_but_not_text() -> None:
    payload = encode("trial.ack", EXAMPLES["trial.ack"])
    assert decode(bytearray(payload)).body == EXAMPLES["trial.ack"]
    with pytest.raises(WireError):
        decode(payload.decode("latin-1"))


def test_decode_and_validate_are_fast() -> None:
    """A loose guard (measured: ~10 µs either way): accepting and refusing stay far below 1 ms."""
    import time

    payload = encode("trial.result", EXAMPLES["trial.result"])
    invalid = raw(dict(EXAMPLES["trial.result"], metrics={"val_acc": "x"}))
    for each in (payload, invalid):
        decode_or_wire_error(each)
        start = time.perf_counter()
        for _ in range(200):
            decode_or_wire_error(each)
        assert (time.perf_counter() - start) / 200 < 1e-3


# --- Hypothesis: hostile and near-valid input never escapes as anything but WireError ---

SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats()
    | st.text(max_size=12)
)
JSON = st.recursive(
    SCALARS,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)
TYPE_POOL: dict[str, Any] = {
    "string": "zz",
    "integer": 7,
    "number": 2.5,
    "boolean": True,
    "null": None,
    "object": {"k": 1},
    "array": [1],
}
SETTINGS = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])


# The reference for message validation: jsonschema, with nasd's type rules (integer is an int,
# array takes a tuple). Written out here, independently of nasd.core.wire.schemas.
_NASD_TYPES = Draft202012Validator.TYPE_CHECKER.redefine_many(
    {
        "integer": lambda _checker, value: type(value) is int,
        "array": lambda _checker, value: isinstance(value, list | tuple),
    }
)
ReferenceValidator = extend(Draft202012Validator, type_checker=_NASD_TYPES)


@functools.cache
def load_schema(name: str) -> dict[str, Any]:
    """The schema file, read once (Hypothesis asks for it on every example)."""
    return _load_schema(name)


@functools.cache
def reference(name: str) -> Validator:
    """The reference validator of one message type."""
    return ReferenceValidator(load_schema(name))


def decode_or_wire_error(payload: bytes) -> Envelope | None:
    try:
        return decode(payload)
    except WireError:
        return None


def assert_agrees_with_reference(message_type: str, body: Any) -> None:
    """:func:`validate` (fastjsonschema and nasd's integer rule) and the reference agree."""
    try:
        validate(message_type, body)
    except WireError:
        accepted = False
    else:
        accepted = True
    assert accepted == reference(message_type).is_valid(body), body


@SETTINGS
@given(st.binary(max_size=600))
def test_arbitrary_bytes_raise_only_wire_error(payload: bytes) -> None:
    decode_or_wire_error(payload)


@SETTINGS
@given(message_type=st.sampled_from(sorted(EXAMPLES)), data=st.data())
def test_corrupted_valid_payloads_raise_only_wire_error(message_type: str, data: Any) -> None:
    payload = bytearray(encode(message_type, EXAMPLES[message_type]))
    for _ in range(data.draw(st.integers(1, 4))):
        at = data.draw(st.integers(0, len(payload) - 1))
        payload[at] = data.draw(st.integers(0, 255))
    decode_or_wire_error(bytes(payload))


@SETTINGS
@given(
    message_type=st.sampled_from(sorted(EXAMPLES)),
    body=st.dictionaries(st.text(max_size=12), JSON, max_size=8) | JSON,
)
def test_arbitrary_bodies_give_a_valid_envelope_or_wire_error(message_type: str, body: Any) -> None:
    envelope = decode_or_wire_error(raw(body, message_type))
    assert_agrees_with_reference(message_type, body)
    if envelope is not None:
        assert envelope.body == body
        assert reference(message_type).is_valid(body)


def _int_leaves(value: Any, path: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    """Paths (through maps only) to every int in ``value``."""
    if type(value) is int:
        return [path]
    if isinstance(value, dict):
        return [found for key, item in value.items() for found in _int_leaves(item, (*path, key))]
    return []


INT_LEAVES = [
    (message_type, path)
    for message_type in sorted(EXAMPLES)
    for path in _int_leaves(EXAMPLES[message_type])
]


@pytest.mark.parametrize(("message_type", "path"), INT_LEAVES, ids=str)
def test_every_int_of_the_examples_as_float_or_bool_agrees_with_the_reference(
    message_type: str, path: tuple[str, ...]
) -> None:
    for replace in (float, bool):
        body = copy.deepcopy(EXAMPLES[message_type])
        parent = body
        for key in path[:-1]:
            parent = parent[key]
        parent[path[-1]] = replace(parent[path[-1]])
        assert_agrees_with_reference(message_type, body)


def test_int_leaves_cover_integer_and_number_fields() -> None:
    assert ("trial.result", ("epoch",)) in INT_LEAVES  # integer: 1.0 is refused
    assert ("trial.result", ("metrics", "params")) in INT_LEAVES  # number: 12345.0 is accepted
    assert ("agent.state", ("profile", "memory_bytes")) in INT_LEAVES


@SETTINGS
@given(message_type=st.sampled_from(sorted(EXAMPLES)), key_and_value=st.data())
def test_examples_with_one_arbitrary_value(message_type: str, key_and_value: Any) -> None:
    body = copy.deepcopy(EXAMPLES[message_type])
    key = key_and_value.draw(st.sampled_from(sorted(body)))
    body[key] = key_and_value.draw(JSON)
    assert_agrees_with_reference(message_type, body)
    envelope = decode_or_wire_error(raw(body, message_type))
    assert envelope is None or envelope.body == body


def _allowed_types(message_type: str, key: str) -> set[str] | None:
    """The JSON types the schema allows for top-level ``key``; None when it allows anything."""
    schema = load_schema(message_type)
    sub = schema["properties"][key]
    if sub is True:
        return None
    if "$ref" in sub:
        sub = schema["$defs"][Path(sub["$ref"]).name]
    if "enum" in sub or "const" in sub:
        return {"string"}
    declared = sub["type"]
    allowed = {declared} if isinstance(declared, str) else set(declared)
    return allowed | ({"integer"} if "number" in allowed else set())


@SETTINGS
@given(message_type=st.sampled_from(sorted(EXAMPLES)), data=st.data())
def test_near_valid_messages_are_refused(message_type: str, data: Any) -> None:
    body = copy.deepcopy(EXAMPLES[message_type])
    schema = load_schema(message_type)
    mutation = data.draw(st.sampled_from(["delete", "retype", "add"]))
    if mutation == "delete":
        del body[data.draw(st.sampled_from(schema["required"]))]
    elif mutation == "retype":
        key = data.draw(st.sampled_from(sorted(body)))
        allowed = _allowed_types(message_type, key)
        if allowed is None:
            return
        wrong = data.draw(st.sampled_from(sorted(set(TYPE_POOL) - allowed)))
        body[key] = TYPE_POOL[wrong]
    else:
        key = data.draw(st.text(min_size=1, max_size=10).filter(lambda k: k not in body))
        body[key] = data.draw(JSON.filter(lambda v: not isinstance(v, float) or math.isfinite(v)))
    assert_agrees_with_reference(message_type, body)
    with pytest.raises(WireError):
        decode(raw(body, message_type))
    with pytest.raises(WireError):
        encode(message_type, body)
