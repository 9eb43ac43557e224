"""Schemas compiled to plain Python predicates: the fast path of message validation.

``jsonschema`` walks a schema through generic machinery (validator objects, reference
resolution) and costs about 150-250 µs for a ``trial.result`` body, too slow for the thousands of
messages per second the daemon must take. :func:`compile_predicate` turns a schema written in the
subset of draft 2020-12 that nasd's schema files use into nested closures answering the same
question — "is this valid?" — in a few microseconds. ``jsonschema`` stays the reference: it
explains every failure, and takes over for any schema using a keyword outside the subset
(:class:`UnsupportedSchema` at compile time) or any value the closures cannot decide
(:class:`Undecided` at check time). ``tests/unit/test_schemas.py`` checks that both agree.

Type rules are nasd's (see :mod:`nasd.wire.schemas`), shared with the jsonschema validator.
"""

from __future__ import annotations

import numbers
import re
from collections.abc import Callable, Mapping
from typing import Any

Predicate = Callable[[Any], bool]

_ANNOTATIONS = frozenset(
    {"$schema", "$id", "$defs", "$comment", "title", "description", "default", "examples"}
)
_STRING_KEYS = frozenset({"minLength", "maxLength", "pattern"})
_NUMBER_KEYS = frozenset({"minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum"})
_OBJECT_KEYS = frozenset(
    {"required", "properties", "additionalProperties", "maxProperties", "minProperties"}
    | {"propertyNames"}
)
_ARRAY_KEYS = frozenset({"items", "maxItems", "minItems", "uniqueItems"})
_OTHER_KEYS = frozenset({"type", "enum", "const", "$ref", "if", "then", "else"})
_SUPPORTED = _ANNOTATIONS | _STRING_KEYS | _NUMBER_KEYS | _OBJECT_KEYS | _ARRAY_KEYS | _OTHER_KEYS


class UnsupportedSchema(Exception):
    """The schema uses a keyword or form this compiler does not implement exactly."""


class Undecided(Exception):
    """The predicate cannot decide this value exactly; ask jsonschema instead."""


def is_integer(value: Any) -> bool:
    """nasd's ``integer``: a Python ``int`` only (not ``bool``, not ``1.0``)."""
    return type(value) is int


def is_array(value: Any) -> bool:
    """nasd's ``array``: a list or a tuple (msgpack packs both as arrays)."""
    return isinstance(value, list | tuple)


def is_number(value: Any) -> bool:
    """JSON Schema ``number``: any real or complex number except ``bool``, as jsonschema says."""
    kind = type(value)
    if kind is float or kind is int:
        return True
    return kind is not bool and isinstance(value, numbers.Number)


_TYPES: dict[str, Predicate] = {
    "string": lambda value: isinstance(value, str),
    "integer": is_integer,
    "number": is_number,
    "object": lambda value: isinstance(value, dict),
    "array": is_array,
    "boolean": lambda value: isinstance(value, bool),
    "null": lambda value: value is None,
}


def _always(value: Any) -> bool:
    return True


def _never(value: Any) -> bool:
    return False


def compile_predicate(schema: Any) -> Predicate:
    """A predicate that is true exactly when ``schema`` (a whole schema file) accepts a value.

    Raises :class:`UnsupportedSchema` if the schema needs a keyword outside the subset.
    """
    return _Compiler(schema).compile(schema)


def _all_of(checks: list[Predicate]) -> Predicate:
    if not checks:
        return _always
    if len(checks) == 1:
        return checks[0]
    frozen = tuple(checks)

    def check(value: Any) -> bool:
        # Plain loops here and below: all()/any() over a generator is measurably slower.
        for each in frozen:  # noqa: SIM110
            if not each(value):
                return False
        return True

    return check


class _Compiler:
    def __init__(self, root: Any) -> None:
        self._root = root
        self._refs: dict[str, Predicate] = {}
        self._resolving: set[str] = set()

    def compile(self, schema: Any) -> Predicate:
        if schema is True:
            return _always
        if schema is False:
            return _never
        if not isinstance(schema, dict):
            raise UnsupportedSchema(f"schema must be an object or a boolean: {schema!r:.80}")
        unknown = schema.keys() - _SUPPORTED
        if unknown:
            raise UnsupportedSchema(f"keywords not compiled: {sorted(unknown)}")
        if "$id" in schema and schema is not self._root:
            raise UnsupportedSchema("nested $id changes reference resolution")
        checks: list[Predicate] = []
        if "type" in schema:
            checks.append(self._type(schema["type"]))
        if "enum" in schema:
            checks.append(_str_enum(schema["enum"]))
        if "const" in schema:
            checks.append(_str_enum([schema["const"]]))
        if "$ref" in schema:
            checks.append(self._ref(schema["$ref"]))
        if schema.keys() & _STRING_KEYS:
            checks.append(_string_check(schema))
        if schema.keys() & _NUMBER_KEYS:
            checks.append(_number_check(schema))
        if schema.keys() & _OBJECT_KEYS:
            checks.append(self._object_check(schema))
        if schema.keys() & _ARRAY_KEYS:
            checks.append(self._array_check(schema))
        if "if" in schema:
            checks.append(self._conditional(schema))
        return _all_of(checks)

    def _type(self, names: Any) -> Predicate:
        names = [names] if isinstance(names, str) else names
        try:
            tests = tuple(_TYPES[name] for name in names)
        except (KeyError, TypeError):
            raise UnsupportedSchema(f"type {names!r:.80}") from None
        if len(tests) == 1:
            return tests[0]

        def check(value: Any) -> bool:
            for test in tests:  # noqa: SIM110
                if test(value):
                    return True
            return False

        return check

    def _ref(self, ref: Any) -> Predicate:
        if not isinstance(ref, str) or not ref.startswith("#/$defs/") or set(ref) & {"~", "%"}:
            raise UnsupportedSchema(f"$ref {ref!r:.80}: only '#/$defs/<name>' is compiled")
        if ref not in self._refs:
            if ref in self._resolving:
                raise UnsupportedSchema(f"recursive $ref {ref!r}")
            self._resolving.add(ref)
            defs = self._root.get("$defs", {})
            name = ref[len("#/$defs/") :]
            if "/" in name or name not in defs:
                raise UnsupportedSchema(f"$ref {ref!r} does not resolve")
            self._refs[ref] = self.compile(defs[name])
            self._resolving.discard(ref)
        return self._refs[ref]

    def _conditional(self, schema: Mapping[str, Any]) -> Predicate:
        condition = self.compile(schema["if"])
        then = self.compile(schema.get("then", True))
        otherwise = self.compile(schema.get("else", True))
        return lambda value: then(value) if condition(value) else otherwise(value)

    def _object_check(self, schema: Mapping[str, Any]) -> Predicate:
        required = tuple(schema.get("required", ()))
        properties = {key: self.compile(sub) for key, sub in schema.get("properties", {}).items()}
        known = frozenset(properties)
        items = tuple(properties.items())
        additional = self.compile(schema.get("additionalProperties", True))
        names = self.compile(schema.get("propertyNames", True))
        max_props = schema.get("maxProperties")
        min_props = schema.get("minProperties", 0)

        def check(value: Any) -> bool:
            if not isinstance(value, dict):
                return True
            if len(value) < min_props or (max_props is not None and len(value) > max_props):
                return False
            for key in required:
                if key not in value:
                    return False
            for key, test in items:
                if key in value and not test(value[key]):
                    return False
            if additional is _never:
                if not value.keys() <= known:
                    return False
            elif additional is not _always:
                for key, item in value.items():
                    if key not in known and not additional(item):
                        return False
            if names is not _always:
                for key in value:
                    if not names(key):
                        return False
            return True

        return check

    def _array_check(self, schema: Mapping[str, Any]) -> Predicate:
        item_test = self.compile(schema.get("items", True))
        max_items = schema.get("maxItems")
        min_items = schema.get("minItems", 0)
        unique = bool(schema.get("uniqueItems", False))

        def check(value: Any) -> bool:
            if not is_array(value):
                return True
            if len(value) < min_items or (max_items is not None and len(value) > max_items):
                return False
            if unique and len(value) > 1:
                if not all(isinstance(item, str) for item in value):
                    raise Undecided("uniqueItems over non-strings")
                if len(set(value)) != len(value):
                    return False
            return item_test is _always or all(item_test(item) for item in value)

        return check


def _str_enum(options: Any) -> Predicate:
    if not isinstance(options, list) or not all(type(each) is str for each in options):
        raise UnsupportedSchema("only enums and consts of strings are compiled")
    allowed = frozenset(options)
    return lambda value: isinstance(value, str) and value in allowed


def _string_check(schema: Mapping[str, Any]) -> Predicate:
    min_len: int = schema.get("minLength", 0)
    max_len: int | None = schema.get("maxLength")
    search = re.compile(schema["pattern"]).search if "pattern" in schema else None

    def check(value: Any) -> bool:
        if not isinstance(value, str):
            return True
        if len(value) < min_len or (max_len is not None and len(value) > max_len):
            return False
        return search is None or search(value) is not None

    return check


def _number_check(schema: Mapping[str, Any]) -> Predicate:
    low = schema.get("minimum")
    high = schema.get("maximum")
    low_open = schema.get("exclusiveMinimum")
    high_open = schema.get("exclusiveMaximum")

    def check(value: Any) -> bool:
        if not is_number(value):
            return True
        return not (
            (low is not None and value < low)
            or (high is not None and value > high)
            or (low_open is not None and value <= low_open)
            or (high_open is not None and value >= high_open)
        )

    return check
