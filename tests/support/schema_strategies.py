"""Hypothesis strategies that generate instances of an exported tool schema.

hypothesis-jsonschema 0.23 cannot draw objects with the pinned Hypothesis (it
uses a removed internal API) and does not follow recursive `$ref`s, so this
module draws from the keyword subset `tool_registry.jsonschema` emits: type,
properties/required/additionalProperties, items, enum/const, numeric bounds,
pattern, length and size bounds, uniqueItems, propertyNames, anyOf/allOf/not
and `$ref` (recursion bounded by depth). Every leaf is filtered through a
validator of its own subschema, so what comes out is valid far more often than
not; callers still check the whole instance with the root validator.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

from hypothesis import strategies as st

from tests.support.schema_check import EcmaValidator, ecma_to_python

MAX_DEPTH = 3
_TEXT = st.text(st.characters(exclude_categories=("Cs",)), max_size=12)
_JSON_SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(10**6), 10**6),
    st.floats(allow_nan=False, allow_infinity=False),
    _TEXT,
)


def _equal_key(value: Any) -> str:
    return json.dumps(value, sort_keys=True)


class SchemaStrategies:
    def __init__(self, root: dict[str, Any]) -> None:
        self.root = root
        self.defs = root.get("$defs", {})
        self._validators: dict[str, Any] = {}
        self._strategies: dict[tuple[str, int], st.SearchStrategy[Any]] = {}

    def valid(self, schema: dict[str, Any], value: Any) -> bool:
        key = json.dumps(schema, sort_keys=True)
        validator = self._validators.get(key)
        if validator is None:
            validator = EcmaValidator({**schema, "$defs": self.defs} if "$defs" not in schema else schema)
            self._validators[key] = validator
        return bool(validator.is_valid(value))

    def resolve(self, ref: str) -> dict[str, Any]:
        if ref == "#":
            return self.root
        name = ref.removeprefix("#/$defs/")
        return dict(self.defs[name])

    def instances(self) -> st.SearchStrategy[Any]:
        return self.of(self.root, 0)

    # -- dispatch ------------------------------------------------------------------

    def of(self, schema: dict[str, Any] | bool, depth: int) -> st.SearchStrategy[Any]:
        key = (json.dumps(schema, sort_keys=True), depth)
        found = self._strategies.get(key)
        if found is None:
            found = self._strategies[key] = self._of(schema, depth)
        return found

    def _of(self, schema: dict[str, Any] | bool, depth: int) -> st.SearchStrategy[Any]:
        if schema is True or schema == {}:
            return _JSON_SCALARS
        assert isinstance(schema, dict)
        if "$ref" in schema:
            target = self.resolve(schema["$ref"])
            rest = {k: v for k, v in schema.items() if k not in ("$ref", "description")}
            merged = {**target, **rest} if rest else target
            return self.of(merged, depth + 1)
        base = self._base(schema, depth)
        return base.filter(lambda value: self.valid(schema, value))

    def _base(self, schema: dict[str, Any], depth: int) -> st.SearchStrategy[Any]:
        if "const" in schema:
            return st.just(schema["const"])
        if "enum" in schema:
            return st.sampled_from(schema["enum"])
        if "anyOf" in schema:
            rest = {k: v for k, v in schema.items() if k != "anyOf"}
            if all(set(option) == {"required"} for option in schema["anyOf"]):
                return st.one_of(
                    [
                        self._base(
                            {**rest, "required": [*rest.get("required", []), *option["required"]]}, depth
                        )
                        for option in schema["anyOf"]
                    ]
                )
            options = schema["anyOf"]
            if depth >= MAX_DEPTH:
                options = [o for o in options if "$ref" not in json.dumps(o)] or options[:1]
            return st.one_of([self.of(self._merge(rest, option), depth) for option in options])
        if "allOf" in schema:
            rest = {k: v for k, v in schema.items() if k != "allOf"}
            if rest.get("type") == "string":
                base = self._strings(schema)
            elif any(k in rest for k in ("type", "enum", "const", "anyOf")):
                base = self._base(rest, depth)
            else:
                base = self.of(schema["allOf"][0], depth)
            return base.filter(lambda value: all(self.valid(o, value) for o in schema["allOf"]))
        kind = schema.get("type")
        if isinstance(kind, list):
            return st.one_of([self._base({**schema, "type": k}, depth) for k in kind])
        if kind == "null":
            return st.none()
        if kind == "boolean":
            return st.booleans()
        if kind == "integer":
            return self._integers(schema)
        if kind == "number":
            return self._numbers(schema)
        if kind == "string":
            return self._strings(schema)
        if kind == "array":
            return self._arrays(schema, depth)
        if kind == "object":
            return self._objects(schema, depth)
        return _JSON_SCALARS

    @staticmethod
    def _merge(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
        if "$ref" in b:
            return {**a, "allOf": [b]} if a else b
        merged = dict(a)
        for key, value in b.items():
            if key in merged and key != "description":
                merged.setdefault("allOf", []).append({key: value})
            else:
                merged[key] = value
        return merged

    # -- leaves ----------------------------------------------------------------------

    @staticmethod
    def _integers(schema: dict[str, Any]) -> st.SearchStrategy[Any]:
        low = schema.get("minimum")
        high = schema.get("maximum")
        if "exclusiveMinimum" in schema:
            low = math.floor(schema["exclusiveMinimum"]) + 1
        if "exclusiveMaximum" in schema:
            high = math.ceil(schema["exclusiveMaximum"]) - 1
        near = [v for v in (low, high, 0, 1, -1) if v is not None]
        bounded = st.integers(min_value=low, max_value=high)
        edges = st.sampled_from(near).flatmap(lambda v: st.integers(v - 2, v + 2))
        return st.one_of(bounded, edges)

    @staticmethod
    def _numbers(schema: dict[str, Any]) -> st.SearchStrategy[Any]:
        low, exclude_low = schema.get("minimum"), False
        if "exclusiveMinimum" in schema and (low is None or schema["exclusiveMinimum"] >= low):
            low, exclude_low = schema["exclusiveMinimum"], True
        high, exclude_high = schema.get("maximum"), False
        if "exclusiveMaximum" in schema and (high is None or schema["exclusiveMaximum"] <= high):
            high, exclude_high = schema["exclusiveMaximum"], True
        floats = st.floats(
            min_value=low,
            max_value=high,
            exclude_min=exclude_low,
            exclude_max=exclude_high,
            allow_nan=False,
            allow_infinity=False,
        )
        near = [v for v in (low, high) if v is not None]
        edges = st.sampled_from(near).map(float) if near else st.nothing()
        return st.one_of(floats, edges, st.integers(-1000, 1000))

    def _strings(self, schema: dict[str, Any]) -> st.SearchStrategy[Any]:
        low = schema.get("minLength", 0)
        high = schema.get("maxLength")
        found = [schema["pattern"]] if "pattern" in schema else []
        found += [part["pattern"] for part in schema.get("allOf", []) if "pattern" in part]
        if found:
            # Several patterns (prefix, contains, suffix): concatenate a sample of each,
            # anchored-at-start first and anchored-at-end last.
            found.sort(key=lambda p: (not p.startswith("^"), p.endswith("$")))
            parts = [st.from_regex(re.compile(ecma_to_python(p)), fullmatch=False) for p in found]
            strategy = st.tuples(*parts).map("".join) if len(parts) > 1 else parts[0]
            return strategy.filter(lambda s: low <= len(s) and (high is None or len(s) <= high))
        return st.text(
            st.characters(exclude_categories=("Cs",)),
            min_size=low,
            max_size=high if high is not None else low + 16,
        )

    def _arrays(self, schema: dict[str, Any], depth: int) -> st.SearchStrategy[Any]:
        items = schema.get("items", {})
        low = schema.get("minItems", 0)
        high = schema.get("maxItems", low + 3)
        if depth >= MAX_DEPTH and "$ref" in json.dumps(items):
            high = low
        return st.lists(
            self.of(items, depth + 1),
            min_size=low,
            max_size=high,
            unique_by=_equal_key if schema.get("uniqueItems") else None,
        )

    def _objects(self, schema: dict[str, Any], depth: int) -> st.SearchStrategy[Any]:
        properties: dict[str, Any] = schema.get("properties", {})
        if not properties and isinstance(schema.get("additionalProperties"), dict):
            values = schema["additionalProperties"]
            keys = self.of({"type": "string", **schema.get("propertyNames", {})}, depth + 1)
            low = schema.get("minProperties", 0)
            high = schema.get("maxProperties", low + 3)
            if depth >= MAX_DEPTH and "$ref" in json.dumps(values):
                high = low
            return st.dictionaries(keys, self.of(values, depth + 1), min_size=low, max_size=high)
        required = schema.get("required", [])
        exclusive = self._exclusive_pairs(schema)
        optional = [name for name in properties if name not in required]
        if depth >= MAX_DEPTH:
            optional = []
        fixed = {name: self.of(properties[name], depth + 1) for name in required}
        maybe = {name: self.of(properties[name], depth + 1) for name in optional}

        def drop_conflicts(value: dict[str, Any]) -> dict[str, Any]:
            kept: dict[str, Any] = {}
            for key, item in value.items():
                if any((key, other) in exclusive for other in kept):
                    continue
                kept[key] = item
            return kept

        return st.fixed_dictionaries(fixed, optional=maybe).map(drop_conflicts)

    @staticmethod
    def _exclusive_pairs(schema: dict[str, Any]) -> set[tuple[str, str]]:
        pairs: set[tuple[str, str]] = set()
        negated = schema.get("not", {})
        for option in negated.get("anyOf", []):
            names = option.get("required", [])
            if len(names) == 2:
                pairs |= {(names[0], names[1]), (names[1], names[0])}
        return pairs


def instances(schema: dict[str, Any]) -> st.SearchStrategy[Any]:
    return SchemaStrategies(schema).instances()
