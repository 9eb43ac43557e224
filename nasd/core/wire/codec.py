"""The msgpack envelope: the only code in nasd that turns network bytes into values and back.

Every payload is a msgpack map ``{"v": 1, "type": str, "id": str, "sent_at": float,
"body": {...}}`` whose body must satisfy ``schemas/v1/<type>.json``. :func:`decode` treats its
input as hostile: whatever the bytes, it returns a valid :class:`Envelope` or raises
:class:`WireError` (which the caller logs and drops), never anything else. :func:`encode` applies
the same checks before sending, so nasd never publishes what its peers would refuse.

The checks come in two passes. One walk over the whole value refuses what JSON Schema cannot
see: nesting deeper than :data:`MAX_DEPTH`, NaN and Infinity, bytes, non-string map keys,
integers outside msgpack's range and foreign Python types (a ``StrEnum`` member or a tuple passes:
they pack as a string and an array). Then the envelope fields are checked and the body goes to
:func:`nasd.core.wire.schemas.validate` (fastjsonschema plus nasd's integer rule), which thus only
ever sees wire values.
"""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Any, NoReturn

import msgpack

from nasd.core.wire.messages import MESSAGE_TYPES, payload_limit
from nasd.core.wire.schemas import validate
from nasd.core.wire.topics import AGENT_ID_RE
from nasd.errors import WireError

PROTOCOL_VERSION = 1
"""The envelope ``v`` this code speaks; anything else is refused."""

MAX_PAYLOAD_BYTES = 262_144
"""Largest payload accepted, checked before any unpacking."""

MAX_DEPTH = 32
"""Deepest nesting of maps and arrays accepted, the envelope map itself counting as 1."""

MAX_CONTAINER_LEN = 65_536
"""Most entries one msgpack map or array may declare (before its contents are read)."""

MAX_ID_LEN = 64
"""Longest envelope ``id``; :func:`encode` fills a 32-character uuid4 hex."""

_CLIENT_ID = re.compile(AGENT_ID_RE)
_ENVELOPE_KEYS = frozenset({"v", "type", "id", "sent_at", "body"})
_INT_MIN = -(2**63)
_INT_MAX = 2**64 - 1  # msgpack's integer range


@dataclass(frozen=True, slots=True)
class Envelope:
    """A decoded, validated message: its type, unique id, send time (Unix seconds) and body."""

    type: str
    id: str
    sent_at: float
    body: dict[str, Any]
    v: int = PROTOCOL_VERSION


def _refuse_ext(code: int, data: bytes) -> NoReturn:
    raise WireError(f"msgpack extension type {code} refused")


def _check_tree(value: Any, depth: int) -> None:
    """Refuse what JSON Schema cannot see: deep nesting, NaN/Infinity, bytes, foreign types."""
    kind = type(value)
    if kind is str or kind is int or kind is bool or value is None:
        if kind is int and not _INT_MIN <= value <= _INT_MAX:
            raise WireError("integer out of msgpack range")
        return
    if kind is float:
        # value - value is 0.0 for finite floats and NaN for NaN and +-Infinity.
        if value - value != 0.0:
            raise WireError("non-finite float (NaN or Infinity) refused")
        return
    if kind is dict or kind is list or kind is tuple:
        if depth >= MAX_DEPTH:
            raise WireError(f"nesting deeper than {MAX_DEPTH} refused")
        if kind is dict:
            for key, item in value.items():
                if type(key) is not str:
                    raise WireError("non-string map key refused")
                _check_tree(item, depth + 1)
        else:
            for item in value:
                _check_tree(item, depth + 1)
        return
    if kind is bytes:
        raise WireError("binary values refused")
    if isinstance(value, str):  # a StrEnum member from our own code; msgpack packs it as str
        return
    raise WireError(f"value of type {kind.__name__} refused")


def encode(
    type: str,
    body: Mapping[str, Any],
    *,
    msg_id: str | None = None,
    sent_at: float | None = None,
    checked: bool = True,
) -> bytes:
    """Pack ``body`` in a v1 envelope of ``type``, after checking it as :func:`decode` would.

    Fills ``id`` with a fresh uuid4 hex and ``sent_at`` with ``time.time()`` unless given (pass
    them to re-send the same message, e.g. from an outbox). Raises :class:`WireError` if the
    body fails its schema, holds non-finite floats, bytes or foreign types, or if the packed
    message would be larger than :data:`MAX_PAYLOAD_BYTES`.

    ``checked=False`` skips the schema and value checks (never the size limit): only for bodies
    the daemon assembles itself from already validated parts, on its hot path. The receiving side
    still checks everything, and the tests decode every kind of message the daemon sends.
    """
    envelope = {
        "v": PROTOCOL_VERSION,
        "type": type,
        "id": uuid.uuid4().hex if msg_id is None else msg_id,
        "sent_at": time.time() if sent_at is None else sent_at,
        "body": dict(body) if isinstance(body, Mapping) else body,
    }
    if checked:
        _check_tree(envelope, 0)
        _check_envelope(envelope, None)
    try:
        payload: bytes = msgpack.packb(envelope, use_bin_type=True)
    except (TypeError, ValueError, OverflowError) as exc:  # pragma: no cover - tree was checked
        raise WireError(f"{type}: cannot pack: {exc}") from exc
    limit = min(MAX_PAYLOAD_BYTES, payload_limit(type))
    if len(payload) > limit:
        raise WireError(f"{type}: {len(payload)} bytes exceeds {limit}")
    return payload


def decode(payload: object, expect: str | Collection[str] | None = None) -> Envelope:
    """Unpack and validate one received payload.

    ``expect`` is the message type (or types) the topic may carry; see
    :func:`nasd.core.wire.messages.message_type_for_topic`. Raises :class:`WireError` with a short
    reason for anything not a valid v1 message of an expected type, and never anything else.
    ``payload`` is typed loosely because MQTT clients hand over ``bytes | str | int | None``:
    anything but bytes is refused here, so callers need no check of their own. The payload's
    size is checked first, against the limit of the expected type (the largest of them for
    several; :data:`MAX_PAYLOAD_BYTES` when ``expect`` is None).
    """
    value = _unpack(payload, _size_limit(expect))
    _check_tree(value, 0)
    _check_envelope(value, expect)
    return Envelope(
        type=value["type"], id=value["id"], sent_at=float(value["sent_at"]), body=value["body"]
    )


def reply_address(payload: object) -> tuple[str, str] | None:
    """``(client, correlation_id)`` of a control request that :func:`decode` refused, if usable.

    So that the daemon can tell a client why its request was refused instead of leaving it to
    time out. Only the two fields are looked at, with the same unpacking limits; None when they
    are missing or not what the schema requires (never an exception).
    """
    try:
        value = _unpack(payload, payload_limit("control.request"))
    except WireError:
        return None
    body = value.get("body") if type(value) is dict else None
    if type(body) is not dict:
        return None
    client, correlation_id = body.get("client"), body.get("correlation_id")
    if type(client) is not str or not _CLIENT_ID.fullmatch(client):
        return None
    if type(correlation_id) is not str or not 0 < len(correlation_id) <= MAX_ID_LEN:
        return None
    return client, correlation_id


def _unpack(payload: object, limit: int) -> Any:
    """msgpack-decode ``payload`` of at most ``limit`` bytes with every decoder limit on."""
    if not isinstance(payload, bytes | bytearray):
        raise WireError(f"payload must be bytes, not {type(payload).__name__}")
    if len(payload) > limit:
        raise WireError(f"payload of {len(payload)} bytes exceeds {limit}")
    try:
        return msgpack.unpackb(
            payload,
            raw=False,
            use_list=True,
            strict_map_key=True,
            ext_hook=_refuse_ext,
            max_str_len=MAX_PAYLOAD_BYTES,
            max_bin_len=MAX_PAYLOAD_BYTES,
            max_array_len=MAX_CONTAINER_LEN,
            max_map_len=MAX_CONTAINER_LEN,
            max_ext_len=MAX_PAYLOAD_BYTES,
        )
    except WireError:
        raise
    except Exception as exc:  # msgpack raises several unrelated types for malformed input
        raise WireError(f"not msgpack: {exc.__class__.__name__}: {exc!s:.120}") from None


def _size_limit(expect: str | Collection[str] | None) -> int:
    if expect is None:
        return MAX_PAYLOAD_BYTES
    if isinstance(expect, str):
        return min(MAX_PAYLOAD_BYTES, payload_limit(expect))
    return min(
        MAX_PAYLOAD_BYTES, max((payload_limit(t) for t in expect), default=MAX_PAYLOAD_BYTES)
    )


def _check_envelope(value: Any, expect: str | Collection[str] | None) -> None:
    if type(value) is not dict:
        raise WireError("payload is not a map")
    if value.keys() != _ENVELOPE_KEYS:
        missing = sorted(_ENVELOPE_KEYS - value.keys())
        extra = sorted(value.keys() - _ENVELOPE_KEYS)
        raise WireError(f"bad envelope fields: missing {missing}, unexpected {extra!s:.120}")
    if type(value["v"]) is not int or value["v"] != PROTOCOL_VERSION:
        raise WireError(f"unsupported protocol version {value['v']!r:.40}")
    message_type = value["type"]
    if type(message_type) is not str or message_type not in MESSAGE_TYPES:
        raise WireError(f"unknown message type {message_type!r:.80}")
    if expect is not None and (
        message_type != expect if isinstance(expect, str) else message_type not in expect
    ):
        raise WireError(f"message type {message_type!r} not expected here")
    msg_id = value["id"]
    if type(msg_id) is not str or not 0 < len(msg_id) <= MAX_ID_LEN:
        raise WireError("envelope id must be a string of 1 to 64 characters")
    if type(value["sent_at"]) not in (int, float):
        raise WireError("envelope sent_at must be a number")
    if type(value["body"]) is not dict:
        raise WireError("envelope body must be a map")
    validate(message_type, value["body"])
