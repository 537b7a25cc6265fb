"""Model arguments (JSON) -> request message, or a clear list of what is wrong.

    converter = ArgumentConverter(schema)
    request = converter.convert('{"order_id": "ORD-1", "qty": 2}')   # or a dict
    # bad input raises InvalidArgument whose .violations name each field;
    # violations_observation(error.violations) is what the model is shown.

Three stages, each of which turns every problem into a FieldViolation and none
of which can crash on any input:

1. **JSON**: size cap before parsing, syntax, no NaN/Infinity literals, no
   duplicate keys, nesting depth cap.
2. **Shape**: the walk the JSON Schema (`tool_registry.jsonschema`) states:
   proto field names only, no unknown fields, `null` only where it means
   something, the JSON form of every type (canonical 64-bit strings, base64,
   enum names, RFC 3339 …), at most one member per oneof. json_format.ParseDict
   alone is far looser (it takes "1_0" for an int, lowerCamel names, `null`
   anywhere, and overflows on 1e400), which the schema could not describe.
3. **Rules**: json_format.ParseDict builds the message, then protovalidate
   checks its rules; `protovalidate_violations` is the one place its findings
   become google.rpc.BadRequest field violations.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from google.protobuf import descriptor, json_format
from google.protobuf.message import Message

from agentmesh.kit.errors import FieldViolation, InvalidArgument
from agentmesh.v1 import errors_pb2
from tool_registry import field_rules, patterns
from tool_registry.descriptors import ToolSchema

if TYPE_CHECKING:
    import protovalidate

FD = descriptor.FieldDescriptor

# Singular scalar kinds whose JSON value (of exactly these Python types) is the proto value
# itself. A request made only of such fields is built by the message constructor instead of
# json_format.ParseDict, which re-checks what the shape walk already checked (~10 µs a call,
# most of the converter's cost for the usual flat tool request). Anything else (enums, 64-bit
# integers as strings, float32, bytes, messages, lists, maps, nulls) goes through ParseDict.
_DIRECT_TYPES: dict[int, tuple[type, ...]] = {
    FD.TYPE_STRING: (str,),
    FD.TYPE_BOOL: (bool,),
    FD.TYPE_INT32: (int,),
    FD.TYPE_SINT32: (int,),
    FD.TYPE_SFIXED32: (int,),
    FD.TYPE_UINT32: (int,),
    FD.TYPE_FIXED32: (int,),
    FD.TYPE_DOUBLE: (float,),
}
MAX_ARGUMENT_BYTES = 256 * 1024
MAX_DEPTH = 32
MAX_VIOLATIONS = 50

_INT = patterns.CANONICAL_INT
_BASE64 = re.compile(patterns.base64_pattern())
_WKT_PATTERNS = {name: re.compile(p) for name, p in field_rules.JSON_STRING_WKTS.items()}
_WKT_HINTS = {
    field_rules.TIMESTAMP: "an RFC 3339 timestamp like 2024-05-01T12:00:00Z",
    field_rules.DURATION: "a duration like 1.5s",
    field_rules.FIELD_MASK: "comma-separated lowerCamel paths like displayName,address.city",
}


class _TooMany(Exception):
    pass


@dataclass
class _Walk:
    violations: list[FieldViolation] = field(default_factory=list)

    def add(self, path: str, problem: str, reason: str = "") -> None:
        self.violations.append(FieldViolation(path, problem, reason))
        if len(self.violations) >= MAX_VIOLATIONS:
            raise _TooMany


def _join(path: str, name: str) -> str:
    return f"{path}.{name}" if path else name


def _kind_name(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__


def _short(value: Any) -> str:
    text = json.dumps(value, ensure_ascii=False, default=str) if not isinstance(value, str) else repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _is_surrogate_free(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


class ArgumentConverter:
    """Converts JSON arguments to a tool's request message; one per tool version (caches its rules)."""

    def __init__(
        self, schema: ToolSchema, *, max_bytes: int = MAX_ARGUMENT_BYTES, max_depth: int = MAX_DEPTH
    ) -> None:
        self.schema = schema
        self.max_bytes = max_bytes
        self.max_depth = max_depth
        self._rules = field_rules.RuleReader(schema.pool)
        self._numbers_only: dict[str, bool] = {}
        self._direct = {
            fd.name: _DIRECT_TYPES[fd.type]
            for fd in schema.input_type.fields
            if fd.type in _DIRECT_TYPES and not fd.is_repeated
        }

    # -- public ---------------------------------------------------------------------

    def convert(self, arguments: str | bytes | Mapping[str, Any] | None) -> Message:
        """The request message, or InvalidArgument listing every violation (never another exception)."""
        value = self.load(arguments)
        walk = _Walk()
        try:
            self._message(self.schema.input_type, value, "", 0, walk)
        except _TooMany:
            pass
        except RecursionError:
            walk.violations.append(FieldViolation("", "nested too deeply", "TOO_DEEP"))
        if walk.violations:
            raise _invalid(walk.violations)
        try:
            request = self._build(value)
        except (json_format.ParseError, ValueError, TypeError, OverflowError, RecursionError) as exc:
            # The shape walk should have caught it; never let it escape as a crash.
            raise _invalid(
                [FieldViolation("", f"does not convert: {str(exc)[:200]}", "INVALID_JSON")]
            ) from None
        violations = validate_request(request, self.schema)
        if violations:
            raise _invalid(violations)
        return request

    def _build(self, value: dict[str, Any]) -> Message:
        """The message for a value the shape walk accepted: directly when every field allows it."""
        direct = self._direct
        if all(type(item) in direct.get(key, ()) for key, item in value.items()):
            return self.schema.request_class(**value)
        request = self.schema.request_class()
        json_format.ParseDict(
            value, request, descriptor_pool=self.schema.pool, max_recursion_depth=self.max_depth + 8
        )
        return request

    def load(self, arguments: str | bytes | Mapping[str, Any] | None) -> Any:
        """Parse JSON text (or take a mapping) with the size, syntax and depth caps."""
        if arguments is None:
            return {}
        if isinstance(arguments, Mapping):
            return dict(arguments)
        size = len(arguments) if isinstance(arguments, bytes) else len(arguments.encode("utf-8", "replace"))
        if size > self.max_bytes:
            raise _invalid(
                [
                    FieldViolation(
                        "", f"arguments are {size} bytes; at most {self.max_bytes} allowed", "TOO_LARGE"
                    )
                ]
            )
        text = arguments.decode("utf-8", "replace") if isinstance(arguments, bytes) else arguments
        if not text.strip():
            return {}  # "no arguments", as some models send for parameterless tools
        try:
            value = json.loads(text, parse_constant=_refuse_constant, object_pairs_hook=_unique_keys)
        except RecursionError:
            raise _invalid([FieldViolation("", "JSON is nested too deeply", "TOO_DEEP")]) from None
        except ValueError as exc:  # JSONDecodeError, duplicate keys, NaN literals, huge integers
            raise _invalid(
                [FieldViolation("", f"not valid JSON: {str(exc)[:200]}", "INVALID_JSON")]
            ) from None
        return value

    # -- the shape walk (mirrors tool_registry.jsonschema and scalar_schema) -----------------------------

    def _message(
        self, message: descriptor.Descriptor, value: Any, path: str, depth: int, walk: _Walk
    ) -> None:
        name = message.full_name
        if name in field_rules.WELL_KNOWN:
            self._well_known(name, value, path, depth, walk, nullable=False)
            return
        if not isinstance(value, dict):
            walk.add(path, f"must be an object, not {_kind_name(value)}", "TYPE")
            return
        if depth > self.max_depth:
            walk.add(path, f"nested deeper than {self.max_depth} levels", "TOO_DEEP")
            return
        fields = message.fields_by_name
        for key, item in value.items():
            fd = fields.get(key)
            if fd is None:
                walk.add(_join(path, str(key)), _unknown_field(message, str(key)), "UNKNOWN_FIELD")
                continue
            self._field(fd, item, _join(path, key), depth + 1, walk)
        for oneof in field_rules.real_oneofs(message):
            present = [fd.name for fd in oneof.fields if fd.name in value]
            if len(present) > 1:
                walk.add(
                    path or oneof.name,
                    f"at most one of {', '.join(present)} may be set (they are alternatives: {oneof.name})",
                    "ONEOF",
                )

    def _field(self, fd: descriptor.FieldDescriptor, value: Any, path: str, depth: int, walk: _Walk) -> None:
        if field_rules.is_map(fd):
            self._map(fd, value, path, depth, walk)
        elif fd.is_repeated:
            if not isinstance(value, list):
                walk.add(path, f"must be an array, not {_kind_name(value)}", "TYPE")
                return
            if depth > self.max_depth:
                walk.add(path, f"nested deeper than {self.max_depth} levels", "TOO_DEEP")
                return
            numbers_only = self._unique(fd)
            for index, item in enumerate(value):
                self._single(fd, item, f"{path}[{index}]", depth + 1, walk, False, numbers_only)
        else:
            self._single(fd, value, path, depth, walk, True, False)

    def _unique(self, fd: descriptor.FieldDescriptor) -> bool:
        cached = self._numbers_only.get(fd.full_name)
        if cached is None:
            cached = field_rules.unique_items(self._rules.field(fd))
            self._numbers_only[fd.full_name] = cached
        return cached

    def _map(self, fd: descriptor.FieldDescriptor, value: Any, path: str, depth: int, walk: _Walk) -> None:
        if not isinstance(value, dict):
            walk.add(path, f"must be an object, not {_kind_name(value)}", "TYPE")
            return
        if depth > self.max_depth:
            walk.add(path, f"nested deeper than {self.max_depth} levels", "TOO_DEEP")
            return
        assert fd.message_type is not None
        key_fd = fd.message_type.fields_by_name["key"]
        value_fd = fd.message_type.fields_by_name["value"]
        for key, item in value.items():
            where = f"{path}[{json.dumps(key, ensure_ascii=False)}]"
            self._map_key(key_fd, key, where, walk)
            self._single(value_fd, item, where, depth + 1, walk, False, False)

    @staticmethod
    def _map_key(fd: descriptor.FieldDescriptor, key: str, path: str, walk: _Walk) -> None:
        kind = fd.type
        if kind == FD.TYPE_STRING:
            if not _is_surrogate_free(key):
                walk.add(path, "key is not valid Unicode (unpaired surrogate)", "TYPE")
        elif kind == FD.TYPE_BOOL:
            if key not in ("true", "false"):
                walk.add(path, 'key must be "true" or "false"', "TYPE")
        else:
            low, high = field_rules.INT_RANGES[kind]
            if not _INT.fullmatch(key) or not low <= int(key) <= high:
                walk.add(path, f"key must be an integer between {low} and {high}, written in decimal", "TYPE")

    def _single(
        self,
        fd: descriptor.FieldDescriptor,
        value: Any,
        path: str,
        depth: int,
        walk: _Walk,
        nullable: bool,
        numbers_only: bool,
    ) -> None:
        kind = fd.type
        if kind in (FD.TYPE_MESSAGE, FD.TYPE_GROUP):
            assert fd.message_type is not None
            name = fd.message_type.full_name
            if name in field_rules.WELL_KNOWN:
                self._well_known(name, value, path, depth, walk, nullable=nullable)
            elif value is None:
                walk.add(path, "must not be null (leave the field out instead)", "NULL")
            else:
                self._message(fd.message_type, value, path, depth, walk)
            return
        if value is None:
            walk.add(path, "must not be null (leave the field out instead)", "NULL")
            return
        if kind == FD.TYPE_ENUM:
            assert fd.enum_type is not None
            if not isinstance(value, str) or value not in fd.enum_type.values_by_name:
                names = ", ".join(v.name for v in fd.enum_type.values)
                walk.add(path, f"must be one of {names} (got {_short(value)})", "ENUM")
            return
        self._scalar(kind, value, path, walk, numbers_only)

    @staticmethod
    def _scalar(kind: int, value: Any, path: str, walk: _Walk, numbers_only: bool) -> None:
        if kind in field_rules.INTEGER_KINDS:
            low, high = field_rules.INT_RANGES[kind]
            wide = kind in field_rules.WIDE_KINDS
            number = _as_integer(value, allow_string=wide and not numbers_only)
            if number is None:
                form = "an integer or a decimal string" if wide and not numbers_only else "an integer"
                walk.add(path, f"must be {form} (got {_short(value)})", "TYPE")
            elif not low <= number <= high:
                walk.add(path, f"must be between {low} and {high} (got {_short(value)})", "OUT_OF_RANGE")
            return
        if kind in field_rules.FLOAT_KINDS:
            limit = field_rules.FLOAT_MAX if kind == FD.TYPE_FLOAT else field_rules.DOUBLE_MAX
            if isinstance(value, bool) or not isinstance(value, int | float | str):
                walk.add(path, f"must be a number (got {_short(value)})", "TYPE")
            elif isinstance(value, str):
                if numbers_only or value not in field_rules.SPECIAL_FLOATS:
                    extra = "" if numbers_only else ' or one of "NaN", "Infinity", "-Infinity"'
                    walk.add(path, f"must be a number{extra} (got {_short(value)})", "TYPE")
            elif isinstance(value, float) and not math.isfinite(value):
                walk.add(path, "must be a finite number", "TYPE")
            elif not -limit <= value <= limit:
                walk.add(path, f"must be between {-limit} and {limit}", "OUT_OF_RANGE")
            return
        if kind == FD.TYPE_BOOL:
            if not isinstance(value, bool):
                walk.add(path, f"must be true or false (got {_short(value)})", "TYPE")
            return
        if kind == FD.TYPE_STRING:
            if not isinstance(value, str):
                walk.add(path, f"must be a string (got {_short(value)})", "TYPE")
            elif not _is_surrogate_free(value):
                walk.add(path, "is not valid Unicode (unpaired surrogate)", "TYPE")
            return
        if kind == FD.TYPE_BYTES:
            if not isinstance(value, str) or not _BASE64.fullmatch(value):
                walk.add(path, "must be standard base64 with padding, e.g. aGVsbG8=", "TYPE")
            return
        walk.add(path, "has an unsupported type", "TYPE")  # pragma: no cover - every type is handled above

    def _well_known(
        self, name: str, value: Any, path: str, depth: int, walk: _Walk, *, nullable: bool
    ) -> None:
        if name in field_rules.WRAPPERS:
            if value is None:
                if not nullable:
                    walk.add(path, "must not be null", "NULL")
                return
            self._scalar(field_rules.WRAPPERS[name], value, path, walk, False)
            return
        if name in _WKT_PATTERNS:
            if not isinstance(value, str) or not _WKT_PATTERNS[name].fullmatch(value):
                walk.add(path, f"must be {_WKT_HINTS[name]} (got {_short(value)})", "TYPE")
            return
        if name == field_rules.VALUE:
            if value is None and not nullable:
                walk.add(path, "must not be null", "NULL")
                return
            self._json_value(value, path, depth, walk)
            return
        if name == field_rules.STRUCT:
            if not isinstance(value, dict):
                walk.add(path, f"must be an object, not {_kind_name(value)}", "TYPE")
                return
            self._json_value(value, path, depth, walk)
            return
        if name == field_rules.LIST_VALUE:
            if not isinstance(value, list):
                walk.add(path, f"must be an array, not {_kind_name(value)}", "TYPE")
                return
            self._json_value(value, path, depth, walk)
            return
        if name == field_rules.EMPTY:
            if not isinstance(value, dict):
                walk.add(path, f"must be an object, not {_kind_name(value)}", "TYPE")
            for key in value if isinstance(value, dict) else ():
                walk.add(
                    _join(path, str(key)), "unknown field (this object takes no fields)", "UNKNOWN_FIELD"
                )
            return
        walk.add(path, f"{name} is not supported in tool arguments", "TYPE")

    def _json_value(self, value: Any, path: str, depth: int, walk: _Walk) -> None:
        """Free-form JSON (Struct/Value/ListValue): finite numbers within double range, valid Unicode."""
        if depth > self.max_depth:
            walk.add(path, f"nested deeper than {self.max_depth} levels", "TOO_DEEP")
            return
        if isinstance(value, dict):
            for key, item in value.items():
                where = f"{path}[{json.dumps(key, ensure_ascii=False)}]"
                if not _is_surrogate_free(key):
                    walk.add(where, "key is not valid Unicode (unpaired surrogate)", "TYPE")
                self._json_value(item, where, depth + 1, walk)
        elif isinstance(value, list):
            for index, item in enumerate(value):
                self._json_value(item, f"{path}[{index}]", depth + 1, walk)
        elif isinstance(value, str):
            if not _is_surrogate_free(value):
                walk.add(path, "is not valid Unicode (unpaired surrogate)", "TYPE")
        elif isinstance(value, bool) or value is None:
            return
        elif isinstance(value, int | float):
            if isinstance(value, float) and not math.isfinite(value):
                walk.add(path, "must be a finite number", "TYPE")
            elif not -field_rules.DOUBLE_MAX <= value <= field_rules.DOUBLE_MAX:
                walk.add(path, "is outside the range of a double", "OUT_OF_RANGE")
        else:
            walk.add(path, f"is not JSON ({type(value).__name__})", "TYPE")


# -- helpers ------------------------------------------------------------------------------


def _as_integer(value: Any, *, allow_string: bool) -> int | None:
    """The integer a JSON value stands for: ints, integral floats, canonical strings (if allowed)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        return int(value) if math.isfinite(value) and value.is_integer() else None
    if allow_string and isinstance(value, str) and _INT.fullmatch(value):
        return int(value)
    return None


def _refuse_constant(name: str) -> Any:
    raise ValueError(f'{name} is not JSON (write it as a string: "{name}")')


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise ValueError(f"duplicate key {key!r}")
        out[key] = value
    return out


def _unknown_field(message: descriptor.Descriptor, key: str) -> str:
    for fd in message.fields:
        if fd.json_name == key and fd.json_name != fd.name:
            return f"unknown field; write it as {fd.name!r}"
    known = ", ".join(fd.name for fd in message.fields)
    return (
        f"unknown field (known fields: {known})" if known else "unknown field (this object takes no fields)"
    )


def _invalid(violations: list[FieldViolation]) -> InvalidArgument:
    fields = ", ".join(v.field or "(arguments)" for v in violations[:5])
    return InvalidArgument(
        f"invalid arguments: {fields}",
        reason=errors_pb2.ERROR_REASON_INVALID_REQUEST,
        violations=violations[:MAX_VIOLATIONS],
    )


def field_path(path: Any) -> str:
    """buf.validate.FieldPath -> `items[0].qty` / `labels["k"]`."""
    out = ""
    for element in path.elements:
        if element.field_name:
            out = _join(out, element.field_name)
        subscript = element.subscript
        if subscript is None:
            continue
        if subscript.field == "index":
            out += f"[{subscript.value}]"
        elif subscript.field == "string_key":
            out += f"[{json.dumps(subscript.value, ensure_ascii=False)}]"
        elif subscript.field == "bool_key":
            out += f'["{str(subscript.value).lower()}"]'
        else:
            out += f'["{subscript.value}"]'
    return out


def protovalidate_violations(violations: list[protovalidate.Violation]) -> list[FieldViolation]:
    """THE mapping from protovalidate findings to google.rpc.BadRequest field violations."""
    out = []
    for violation in violations:
        proto = violation.proto
        where = field_path(proto.field) if proto.field is not None else ""
        if proto.for_key:
            where += " (key)"
        out.append(FieldViolation(where, proto.message or proto.rule_id, proto.rule_id))
    return out


def validate_request(message: Message, schema: ToolSchema) -> list[FieldViolation]:
    """protovalidate a request of `schema`: nothing to check (and protovalidate is not loaded)
    when its descriptor set declares no rule."""
    if not schema.has_rules:
        return []
    return validate_message(message, schema.validator)


def validate_message(message: Message, validator: protovalidate.Validator) -> list[FieldViolation]:
    """protovalidate a message; violations (or one violation when its rules cannot be evaluated)."""
    import protovalidate  # loaded at the first validation (see ToolSchema.validator), then a dict lookup

    try:
        return protovalidate_violations(validator.collect_violations(message))
    except (protovalidate.CompilationError, protovalidate.EvaluationError) as exc:
        return [FieldViolation("", f"its validation rules could not be evaluated: {exc}", "RULES")]


def violations_observation(violations: list[FieldViolation] | tuple[FieldViolation, ...]) -> str:
    """What the model is shown for invalid arguments: compact JSON it can act on."""
    return json.dumps(
        {
            "error": "invalid_arguments",
            "violations": [
                {"field": v.field or "(arguments)", "problem": v.description[:300]} for v in violations[:20]
            ],
        },
        ensure_ascii=False,
        separators=(",", ":"),
    )
