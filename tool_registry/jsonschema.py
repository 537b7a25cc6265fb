"""JSON Schema (2020-12) for a tool's request and response: what the model reads.

    input_schema, output_schema = tool_json_schemas(schema)
    function_definition("payments_refund", "Refunds a charge.", input_schema)

The input schema describes **exactly** what the argument converter
(`tool_registry.arguments`) accepts, protovalidate rules included: an instance
the schema accepts converts and validates; one it refuses is refused by the
converter too. The tests check both directions with generated instances. The
choices that make that possible (docs/decisions.md, "Tools at run time"):

- field names are the proto names (`order_id`), as the runtime also prints them;
  lowerCamel JSON names are refused, so there is one spelling;
- 32-bit integers are JSON integers; 64-bit integers are JSON integers **or**
  canonical decimal strings (what protobuf JSON emits), the range expressed for
  both forms (a generated regex for the strings);
- floats are numbers, or the strings "NaN", "Infinity", "-Infinity" where the
  rules let them through; `float` bounds account for rounding to 32 bits;
- bytes are canonical padded standard base64 (with exact decoded-length ranges);
- enums are names only; `null` only where it means something (wrappers,
  google.protobuf.Value); unknown fields are refused (`additionalProperties: false`);
- oneofs: at most one member present (`not` + pairwise `required`);
- messages that repeat or recurse live in `$defs` at the root (`#` for the root);
- Timestamp, Duration and FieldMask as strings with exact patterns; Struct,
  Value, ListValue as JSON; wrappers as nullable scalars; Empty as `{}`;
  `google.protobuf.Any` is refused in requests (the model cannot know which
  types the tool takes; use a oneof) and described in responses;
- protovalidate rules become keywords; the few that JSON Schema cannot state
  (CEL, UTF-8 byte lengths, time-relative bounds, some string formats, RE2
  patterns outside the common subset) are spelled out in the description and
  still enforced by the converter.

Only keywords the common model APIs take are emitted (no `dependentSchemas`,
`if`/`then`, `unevaluated*`); `$defs` stays at the root.
"""

from __future__ import annotations

import itertools
import json
import math
import struct
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from google.protobuf import descriptor, descriptor_pool, message_factory
from google.protobuf.message import Message

from agentmesh.kit.errors import FieldViolation, InvalidArgument
from agentmesh.v1 import errors_pb2
from tool_registry import patterns
from tool_registry.descriptors import ToolSchema

if TYPE_CHECKING:
    pass

DIALECT = "https://json-schema.org/draft/2020-12/schema"
FD = descriptor.FieldDescriptor

INT32_KINDS = {FD.TYPE_INT32, FD.TYPE_SINT32, FD.TYPE_SFIXED32}
UINT32_KINDS = {FD.TYPE_UINT32, FD.TYPE_FIXED32}
INT64_KINDS = {FD.TYPE_INT64, FD.TYPE_SINT64, FD.TYPE_SFIXED64}
UINT64_KINDS = {FD.TYPE_UINT64, FD.TYPE_FIXED64}
INTEGER_KINDS = INT32_KINDS | UINT32_KINDS | INT64_KINDS | UINT64_KINDS
WIDE_KINDS = INT64_KINDS | UINT64_KINDS
FLOAT_KINDS = {FD.TYPE_FLOAT, FD.TYPE_DOUBLE}

INT_RANGES: dict[int, tuple[int, int]] = {
    **dict.fromkeys(INT32_KINDS, (-(2**31), 2**31 - 1)),
    **dict.fromkeys(UINT32_KINDS, (0, 2**32 - 1)),
    **dict.fromkeys(INT64_KINDS, (-(2**63), 2**63 - 1)),
    **dict.fromkeys(UINT64_KINDS, (0, 2**64 - 1)),
}
DOUBLE_MAX = 1.7976931348623157e308
FLOAT_MAX = 3.4028234663852886e38
SPECIAL_FLOATS = {"NaN": math.nan, "Infinity": math.inf, "-Infinity": -math.inf}

# protovalidate rule group (FieldRules.type) per field type.
RULE_GROUP: dict[int, str] = {
    FD.TYPE_FLOAT: "float",
    FD.TYPE_DOUBLE: "double",
    FD.TYPE_INT32: "int32",
    FD.TYPE_INT64: "int64",
    FD.TYPE_UINT32: "uint32",
    FD.TYPE_UINT64: "uint64",
    FD.TYPE_SINT32: "sint32",
    FD.TYPE_SINT64: "sint64",
    FD.TYPE_FIXED32: "fixed32",
    FD.TYPE_FIXED64: "fixed64",
    FD.TYPE_SFIXED32: "sfixed32",
    FD.TYPE_SFIXED64: "sfixed64",
    FD.TYPE_BOOL: "bool",
    FD.TYPE_STRING: "string",
    FD.TYPE_BYTES: "bytes",
    FD.TYPE_ENUM: "enum",
}

TIMESTAMP = "google.protobuf.Timestamp"
DURATION = "google.protobuf.Duration"
FIELD_MASK = "google.protobuf.FieldMask"
STRUCT = "google.protobuf.Struct"
VALUE = "google.protobuf.Value"
LIST_VALUE = "google.protobuf.ListValue"
EMPTY = "google.protobuf.Empty"
ANY = "google.protobuf.Any"
WRAPPERS: dict[str, int] = {
    "google.protobuf.DoubleValue": FD.TYPE_DOUBLE,
    "google.protobuf.FloatValue": FD.TYPE_FLOAT,
    "google.protobuf.Int64Value": FD.TYPE_INT64,
    "google.protobuf.UInt64Value": FD.TYPE_UINT64,
    "google.protobuf.Int32Value": FD.TYPE_INT32,
    "google.protobuf.UInt32Value": FD.TYPE_UINT32,
    "google.protobuf.BoolValue": FD.TYPE_BOOL,
    "google.protobuf.StringValue": FD.TYPE_STRING,
    "google.protobuf.BytesValue": FD.TYPE_BYTES,
}
JSON_STRING_WKTS = {
    TIMESTAMP: patterns.TIMESTAMP,
    DURATION: patterns.DURATION,
    FIELD_MASK: patterns.FIELD_MASK,
}
WELL_KNOWN = {TIMESTAMP, DURATION, FIELD_MASK, STRUCT, VALUE, LIST_VALUE, EMPTY, ANY, *WRAPPERS}

IGNORE_IF_ZERO_VALUE = 1
IGNORE_ALWAYS = 3


def is_synthetic_oneof(oneof: descriptor.OneofDescriptor) -> bool:
    """The hidden oneof protoc makes for a proto3 `optional` field."""
    return len(oneof.fields) == 1 and oneof.name == f"_{oneof.fields[0].name}"


def real_oneofs(message: descriptor.Descriptor) -> list[descriptor.OneofDescriptor]:
    return [o for o in message.oneofs if not is_synthetic_oneof(o)]


def is_map(field_descriptor: descriptor.FieldDescriptor) -> bool:
    message_type = field_descriptor.message_type
    return bool(
        field_descriptor.is_repeated and message_type is not None and message_type.GetOptions().map_entry
    )


# -- protovalidate rules ----------------------------------------------------------


class RuleReader:
    """Reads buf.validate options from descriptors of one tool pool."""

    def __init__(self, pool: descriptor_pool.DescriptorPool) -> None:
        self._field_ext: Any = None
        self._oneof_ext: Any = None
        self._message_ext: Any = None
        try:
            self._field_ext = pool.FindExtensionByName("buf.validate.field")
            self._oneof_ext = pool.FindExtensionByName("buf.validate.oneof")
            self._message_ext = pool.FindExtensionByName("buf.validate.message")
        except KeyError:
            return
        self._classes = {
            name: message_factory.GetMessageClass(pool.FindMessageTypeByName(f"google.protobuf.{name}"))
            for name in ("FieldOptions", "OneofOptions", "MessageOptions")
        }

    def _read(self, kind: str, options: Message, extension: Any) -> Any:
        if extension is None:
            return None
        parsed = self._classes[kind].FromString(options.SerializeToString())
        return parsed.Extensions[extension] if parsed.HasExtension(extension) else None

    def field(self, fd: descriptor.FieldDescriptor) -> Any:
        """buf.validate.FieldRules of a field, or None."""
        return self._read("FieldOptions", fd.GetOptions(), self._field_ext)

    def oneof_required(self, od: descriptor.OneofDescriptor) -> bool:
        rules = self._read("OneofOptions", od.GetOptions(), self._oneof_ext)
        return bool(rules is not None and rules.required)

    def message(self, md: descriptor.Descriptor) -> Any:
        return self._read("MessageOptions", md.GetOptions(), self._message_ext)


def has(rules: Any, name: str) -> bool:
    try:
        return bool(rules.HasField(name))
    except ValueError:  # repeated field
        return bool(len(getattr(rules, name)))


def rule_group(rules: Any, kind: int) -> Any:
    """The type-specific rules (e.g. Int32Rules) of FieldRules, if they are the ones for `kind`."""
    if rules is None:
        return None
    group = RULE_GROUP.get(kind)
    if group is None or rules.WhichOneof("type") != group:
        return None
    return getattr(rules, group)


def unique_items(rules: Any) -> bool:
    return bool(rules is not None and rules.WhichOneof("type") == "repeated" and rules.repeated.unique)


# -- 32-bit floats ------------------------------------------------------------------


def _f32_bits(value: float) -> int:
    return int(struct.unpack("<I", struct.pack("<f", value))[0])


def _f32_from_bits(bits: int) -> float:
    return float(struct.unpack("<f", struct.pack("<I", bits))[0])


def _f32_step(value: float, up: bool) -> float:
    if value == 0:
        tiny = _f32_from_bits(1)
        return tiny if up else -tiny
    bits = _f32_bits(value)
    return _f32_from_bits(bits + 1 if (value > 0) == up else bits - 1)


@dataclass(frozen=True)
class Cell:
    """The doubles that round to one float32 value: lo..hi, each end inclusive or not."""

    lo: float
    lo_inclusive: bool
    hi: float
    hi_inclusive: bool


def f32_cell(value: float) -> Cell:
    even = _f32_bits(value) % 2 == 0  # ties round to the even neighbour
    down, up = _f32_step(value, False), _f32_step(value, True)
    lo = -FLOAT_MAX if math.isinf(down) else (down + value) / 2
    hi = FLOAT_MAX if math.isinf(up) else (value + up) / 2
    return Cell(lo, even or math.isinf(down), hi, even or math.isinf(up))


# -- numbers --------------------------------------------------------------------------


@dataclass
class Bound:
    value: float
    inclusive: bool


def _lower_upper(group: Any) -> tuple[tuple[str, Any] | None, tuple[str, Any] | None]:
    lower = ("gt", group.gt) if has(group, "gt") else ("gte", group.gte) if has(group, "gte") else None
    upper = ("lt", group.lt) if has(group, "lt") else ("lte", group.lte) if has(group, "lte") else None
    return lower, upper


def _reversed(lower: tuple[str, Any] | None, upper: tuple[str, Any] | None) -> bool:
    """protovalidate reads gt > lt (or similar) as "outside the range"."""
    return lower is not None and upper is not None and upper[1] < lower[1]


def integer_intervals(kind: int, group: Any) -> list[tuple[int, int]]:
    """The integers the type and its gt/gte/lt/lte rules allow, as closed intervals."""
    tmin, tmax = INT_RANGES[kind]
    if group is None:
        return [(tmin, tmax)]
    lower, upper = _lower_upper(group)
    lo = tmin if lower is None else int(lower[1]) + (1 if lower[0] == "gt" else 0)
    hi = tmax if upper is None else int(upper[1]) - (1 if upper[0] == "lt" else 0)
    if _reversed(lower, upper):
        intervals = [(max(lo, tmin), tmax), (tmin, min(hi, tmax))]
    else:
        intervals = [(max(lo, tmin), min(hi, tmax))]
    return [(a, b) for a, b in intervals if a <= b]


def _float_bounds(kind: int, group: Any) -> tuple[list[tuple[Bound | None, Bound | None]], bool]:
    """Number intervals for float/double rules, and whether a rule needs a finite value."""
    is32 = kind == FD.TYPE_FLOAT
    limit = FLOAT_MAX if is32 else DOUBLE_MAX
    type_lo, type_hi = Bound(-limit, True), Bound(limit, True)
    if group is None:
        return [(type_lo, type_hi)], False
    lower, upper = _lower_upper(group)

    def low(rule: tuple[str, Any]) -> Bound:
        name, value = rule
        if not is32:
            return Bound(value, name == "gte")
        cell = f32_cell(value)
        if name == "gt":
            return Bound(cell.hi, not cell.hi_inclusive)
        return Bound(cell.lo, cell.lo_inclusive)

    def high(rule: tuple[str, Any]) -> Bound:
        name, value = rule
        if not is32:
            return Bound(value, name == "lte")
        cell = f32_cell(value)
        if name == "lt":
            return Bound(cell.lo, not cell.lo_inclusive)
        return Bound(cell.hi, cell.hi_inclusive)

    lo = type_lo if lower is None else low(lower)
    hi = type_hi if upper is None else high(upper)
    if _reversed(lower, upper):
        return [(lo, type_hi), (type_lo, hi)], True
    return [(lo, hi)], lower is not None or upper is not None


def _satisfies_float_rules(value: float, group: Any, kind: int) -> bool:
    """protovalidate's verdict for a special value (NaN, ±Infinity) under float/double rules."""
    if group is None:
        return True
    if group.finite and not math.isfinite(value):
        return False
    if has(group, "const") and value != group.const:
        return False
    if has(group, "in") and value not in list(getattr(group, "in")):
        return False
    if has(group, "not_in") and value in list(group.not_in):
        return False
    lower, upper = _lower_upper(group)
    checks: list[bool] = []
    if lower is not None:
        checks.append(value > lower[1] if lower[0] == "gt" else value >= lower[1])
    if upper is not None:
        checks.append(value < upper[1] if upper[0] == "lt" else value <= upper[1])
    if _reversed(lower, upper):
        return any(checks)
    return all(checks)


def _number_interval_schema(lo: Bound | None, hi: Bound | None) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if lo is not None:
        out["minimum" if lo.inclusive else "exclusiveMinimum"] = lo.value
    if hi is not None:
        out["maximum" if hi.inclusive else "exclusiveMaximum"] = hi.value
    return out


def _cell_schema(cell: Cell) -> dict[str, Any]:
    return _number_interval_schema(Bound(cell.lo, cell.lo_inclusive), Bound(cell.hi, cell.hi_inclusive))


# -- the builder ------------------------------------------------------------------------


def _merge_all(schema: dict[str, Any], parts: Iterable[dict[str, Any]]) -> dict[str, Any]:
    """AND `parts` into `schema`: merged where keys are free, else through allOf."""
    for part in parts:
        if any(key in schema for key in part):
            schema.setdefault("allOf", []).append(part)
        else:
            schema.update(part)
    return schema


def _with_notes(schema: dict[str, Any], description: str, notes: list[str]) -> dict[str, Any]:
    text = "\n".join(t for t in (description, *notes) if t)
    if text:
        if "$ref" in schema and len(schema) == 1:
            return {"$ref": schema["$ref"], "description": text}
        existing = schema.get("description")
        schema["description"] = f"{text}\n{existing}" if existing and existing != text else text
    return schema


@dataclass
class _Builder:
    schema: ToolSchema
    input: bool
    rules: RuleReader
    defs: dict[str, dict[str, Any]] = field(default_factory=dict)
    inline: set[str] = field(default_factory=set)
    root_name: str = ""

    # -- entry --------------------------------------------------------------------

    def root(self, message: descriptor.Descriptor) -> dict[str, Any]:
        self.root_name = message.full_name
        self._plan(message)
        body = self._message(message)
        out: dict[str, Any] = {"$schema": DIALECT, **body}
        if self.defs:
            out["$defs"] = dict(sorted(self.defs.items()))
        return out

    def _plan(self, root: descriptor.Descriptor) -> None:
        """Inline message types used once and not recursive; the rest go to $defs."""
        uses: dict[str, int] = {}
        edges: dict[str, set[str]] = {}
        by_name: dict[str, descriptor.Descriptor] = {}
        stack = [root]
        while stack:
            message = stack.pop()
            if message.full_name in edges:
                continue
            edges[message.full_name] = set()
            by_name[message.full_name] = message
            for fd in message.fields:
                target = fd.message_type
                if target is None:
                    continue
                if is_map(fd):
                    target = target.fields_by_name["value"].message_type
                    if target is None:
                        continue
                if target.full_name in WELL_KNOWN:
                    continue
                uses[target.full_name] = uses.get(target.full_name, 0) + 1
                edges[message.full_name].add(target.full_name)
                stack.append(target)

        def reaches(start: str, goal: str) -> bool:
            seen: set[str] = set()
            todo = list(edges.get(start, ()))
            while todo:
                name = todo.pop()
                if name == goal:
                    return True
                if name not in seen:
                    seen.add(name)
                    todo.extend(edges.get(name, ()))
            return False

        self.inline = {
            name
            for name, count in uses.items()
            if count == 1 and name != root.full_name and not reaches(name, name)
        }

    def _ref(self, message: descriptor.Descriptor) -> dict[str, Any]:
        name = message.full_name
        if name == self.root_name:
            return {"$ref": "#"}
        if name in self.inline:
            return self._message(message)
        if name not in self.defs:
            self.defs[name] = {}  # placeholder: recursion stops here
            self.defs[name] = self._message(message)
        return {"$ref": f"#/$defs/{name}"}

    def _comment(self, full_name: str) -> str:
        return self.schema.comments.get(full_name, "")

    # -- messages -----------------------------------------------------------------

    def _message(self, message: descriptor.Descriptor) -> dict[str, Any]:
        out: dict[str, Any] = {"type": "object"}
        notes: list[str] = []
        properties: dict[str, Any] = {}
        for fd in message.fields:
            properties[fd.name] = self._field(fd)
        if properties:
            out["properties"] = properties
        required = self._required(message) if self.input else []
        if required:
            out["required"] = required
        out["additionalProperties"] = False
        if self.input:
            _merge_all(out, self._choice_rules(message, notes))
        return _with_notes(out, self._comment(message.full_name), notes)

    def _required(self, message: descriptor.Descriptor) -> list[str]:
        """Fields that must be present: proto2 `required`, and fields whose absence protovalidate refuses."""
        names = {fd.name for fd in message.fields if getattr(fd, "is_required", False)}
        names |= set(zero_value_violations(self.schema, message))
        return [fd.name for fd in message.fields if fd.name in names]

    def _choice_rules(self, message: descriptor.Descriptor, notes: list[str]) -> list[dict[str, Any]]:
        """oneof (at most one present; `required` oneofs exactly one) and message-level rules."""
        groups: list[tuple[list[dict[str, Any]], bool]] = []
        for oneof in real_oneofs(message):
            members = [{"required": [fd.name]} for fd in oneof.fields]
            groups.append((members, self.rules.oneof_required(oneof)))
        message_rules = self.rules.message(message)
        if message_rules is not None:
            for rule in message_rules.oneof:
                members = [self._is_set(message.fields_by_name[name]) for name in rule.fields]
                groups.append((members, rule.required))
            for cel in message_rules.cel:
                notes.append(f"Must satisfy: {cel.message or cel.expression}.")
            for expression in message_rules.cel_expression:
                notes.append(f"Must satisfy: {expression}.")
        parts: list[dict[str, Any]] = []
        pairs = [_pair(a, b) for members, _ in groups for a, b in itertools.combinations(members, 2)]
        if pairs:
            parts.append({"not": {"anyOf": pairs}})
        for members, required in groups:
            if required:
                parts.append({"anyOf": members})
        return parts

    def _is_set(self, fd: descriptor.FieldDescriptor) -> dict[str, Any]:
        """Schema for "this field is set" as protovalidate means it (present; without presence, non-zero)."""
        if fd.has_presence:
            return {"required": [fd.name]}
        return {"required": [fd.name], "properties": {fd.name: {"not": self._zero(fd)}}}

    # -- fields ---------------------------------------------------------------------

    def _field(self, fd: descriptor.FieldDescriptor) -> dict[str, Any]:
        rules = self.rules.field(fd) if self.input else None
        notes: list[str] = []
        ignore = rules.ignore if rules is not None else 0
        if ignore == IGNORE_ALWAYS:
            rules = None
        if is_map(fd):
            out = self._map(fd, rules, notes)
        elif fd.is_repeated:
            out = self._repeated(fd, rules, notes)
        else:
            out = self._single(fd, rules, notes, nullable=True)
        if rules is not None:
            if rules.required and not fd.has_presence and not fd.is_repeated:
                out = _merge_all(out, [{"not": self._zero(fd)}])
            for cel in rules.cel:
                notes.append(f"Must satisfy: {cel.message or cel.expression}.")
            for expression in rules.cel_expression:
                notes.append(f"Must satisfy: {expression}.")
            if ignore == IGNORE_IF_ZERO_VALUE and not fd.has_presence:
                out = {"anyOf": [self._zero(fd), out]}
        return _with_notes(out, self._comment(fd.full_name), notes)

    def _zero(self, fd: descriptor.FieldDescriptor, *, element: bool = False) -> dict[str, Any]:
        """JSON forms of a field's (with element: one item's) zero value, which protovalidate calls unset."""
        if not element and is_map(fd):
            return {"type": "object", "maxProperties": 0}
        if not element and fd.is_repeated:
            return {"type": "array", "maxItems": 0}
        kind = fd.type
        if kind in WIDE_KINDS:
            return {"enum": [0, "0"]}
        if kind in INTEGER_KINDS or kind in FLOAT_KINDS:
            return {"const": 0}
        if kind == FD.TYPE_BOOL:
            return {"const": False}
        if kind in (FD.TYPE_STRING, FD.TYPE_BYTES):
            return {"const": ""}
        if kind == FD.TYPE_ENUM:
            assert fd.enum_type is not None
            return {"enum": [v.name for v in fd.enum_type.values if v.number == 0]}
        return {"type": "object", "maxProperties": 0}

    def _repeated(self, fd: descriptor.FieldDescriptor, rules: Any, notes: list[str]) -> dict[str, Any]:
        item_rules = None
        out: dict[str, Any] = {"type": "array"}
        group = rules.repeated if rules is not None and rules.WhichOneof("type") == "repeated" else None
        if group is not None:
            if group.HasField("items"):
                item_rules = group.items
                if item_rules.ignore == IGNORE_ALWAYS:
                    item_rules = None
            if has(group, "min_items"):
                out["minItems"] = group.min_items
            if has(group, "max_items"):
                out["maxItems"] = group.max_items
            if group.unique:
                out["uniqueItems"] = True
        items = self._single(fd, item_rules, notes, nullable=False, numbers_only=unique_items(rules))
        if item_rules is not None and item_rules.ignore == IGNORE_IF_ZERO_VALUE:
            items = {"anyOf": [self._zero(fd, element=True), items]}
        out["items"] = items
        if rules is not None and rules.required:
            out["minItems"] = max(1, out.get("minItems", 0))
        return out

    def _map(self, fd: descriptor.FieldDescriptor, rules: Any, notes: list[str]) -> dict[str, Any]:
        assert fd.message_type is not None
        key_fd = fd.message_type.fields_by_name["key"]
        value_fd = fd.message_type.fields_by_name["value"]
        group = rules.map if rules is not None and rules.WhichOneof("type") == "map" else None
        key_rules = group.keys if group is not None and group.HasField("keys") else None
        value_rules = group.values if group is not None and group.HasField("values") else None
        if key_rules is not None and key_rules.ignore == IGNORE_ALWAYS:
            key_rules = None
        if value_rules is not None and value_rules.ignore == IGNORE_ALWAYS:
            value_rules = None
        out: dict[str, Any] = {"type": "object"}
        keys = self._map_key(key_fd, key_rules, notes)
        if keys:
            out["propertyNames"] = keys
        value = self._single(value_fd, value_rules, notes, nullable=False)
        if value_rules is not None and value_rules.ignore == IGNORE_IF_ZERO_VALUE:
            value = {"anyOf": [self._zero(value_fd, element=True), value]}
        out["additionalProperties"] = value
        if group is not None:
            if has(group, "min_pairs"):
                out["minProperties"] = group.min_pairs
            if has(group, "max_pairs"):
                out["maxProperties"] = group.max_pairs
        if rules is not None and rules.required:
            out["minProperties"] = max(1, out.get("minProperties", 0))
        return out

    def _map_key(self, fd: descriptor.FieldDescriptor, rules: Any, notes: list[str]) -> dict[str, Any]:
        kind = fd.type
        group = rule_group(rules, kind)
        if kind == FD.TYPE_STRING:
            out = self._string(group, notes)
            out.pop("type", None)
            return out
        if kind == FD.TYPE_BOOL:
            if group is not None and has(group, "const"):
                return {"enum": ["true" if group.const else "false"]}
            return {"enum": ["true", "false"]}
        return self._integer(kind, group, forms=("string",))

    def _single(
        self,
        fd: descriptor.FieldDescriptor,
        rules: Any,
        notes: list[str],
        *,
        nullable: bool,
        numbers_only: bool = False,
    ) -> dict[str, Any]:
        kind = fd.type
        if kind in (FD.TYPE_MESSAGE, FD.TYPE_GROUP):
            assert fd.message_type is not None
            return self._message_field(fd.message_type, rules, notes, nullable=nullable)
        if kind == FD.TYPE_ENUM:
            assert fd.enum_type is not None
            return self._enum(fd.enum_type, rule_group(rules, kind))
        return self._scalar(kind, rule_group(rules, kind), notes, numbers_only=numbers_only)

    def _scalar(
        self, kind: int, group: Any, notes: list[str], *, numbers_only: bool = False
    ) -> dict[str, Any]:
        if kind in INTEGER_KINDS:
            forms: tuple[str, ...] = ("number", "string") if kind in WIDE_KINDS else ("number",)
            if not self.input and kind in WIDE_KINDS:
                forms = ("string",)
            if numbers_only:
                forms = ("number",)
            return self._integer(kind, group, forms=forms)
        if kind in FLOAT_KINDS:
            return self._float(kind, group, numbers_only=numbers_only)
        if kind == FD.TYPE_BOOL:
            out: dict[str, Any] = {"type": "boolean"}
            if group is not None and has(group, "const"):
                out["const"] = group.const
            return out
        if kind == FD.TYPE_STRING:
            return self._string(group, notes)
        if kind == FD.TYPE_BYTES:
            return self._bytes(group, notes)
        raise AssertionError(f"unhandled field type {kind}")

    # -- integers -----------------------------------------------------------------

    def _integer(self, kind: int, group: Any, *, forms: tuple[str, ...]) -> dict[str, Any]:
        """JSON integers (forms has "number") and/or canonical decimal strings (forms has "string")."""
        intervals = integer_intervals(kind, group) if self.input else [INT_RANGES[kind]]
        if not intervals:
            return {"not": {}}
        types = [t for f, t in (("number", "integer"), ("string", "string")) if f in forms]
        out: dict[str, Any] = {"type": types[0] if len(types) == 1 else types}
        if "number" in forms:
            tmin, tmax = INT_RANGES[kind]
            if len(intervals) == 1:
                out["minimum"], out["maximum"] = intervals[0]
            else:
                out["minimum"], out["maximum"] = tmin, tmax
                out["anyOf"] = [{"minimum": intervals[0][0]}, {"maximum": intervals[1][1]}]
        if "string" in forms:
            out["pattern"] = patterns.anchored(patterns.int_range_pattern(list(intervals)))
        if group is None or not self.input:
            if not self.input and kind in WIDE_KINDS:
                return {"type": "string", "pattern": "^-?[0-9]+$", "description": "64-bit integer."}
            if (
                kind in WIDE_KINDS and "string" in forms
            ):  # full range: one shared definition, not a long pattern each
                name = ("int64" if kind in INT64_KINDS else "uint64") + (
                    "" if "number" in forms else "_string"
                )
                out["description"] = (
                    "64-bit integer: a JSON integer or a decimal string."
                    if "number" in forms
                    else "64-bit integer as a decimal string."
                )
                self.defs.setdefault(name, out)
                return {"$ref": f"#/$defs/{name}"}
            return out
        if kind in WIDE_KINDS and "number" in forms and "string" in forms:
            out["description"] = "64-bit integer: a JSON integer or a decimal string."

        def forms_of(values: Iterable[int]) -> list[Any]:
            listed: list[Any] = []
            for value in values:
                if "number" in forms:
                    listed.append(int(value))
                if "string" in forms:
                    listed.append(str(int(value)))
            return listed

        constraints: list[dict[str, Any]] = []
        if has(group, "const"):
            constraints.append({"enum": forms_of([group.const])})
        if has(group, "in"):
            constraints.append({"enum": forms_of(getattr(group, "in"))})
        if has(group, "not_in"):
            constraints.append({"not": {"enum": forms_of(group.not_in)}})
        return _merge_all(out, constraints)

    # -- floats ---------------------------------------------------------------------

    def _float(self, kind: int, group: Any, *, numbers_only: bool) -> dict[str, Any]:
        if not self.input:
            return {"anyOf": [{"type": "number"}, {"enum": list(SPECIAL_FLOATS)}]}
        intervals, _ = _float_bounds(kind, group)
        number: dict[str, Any] = {"type": "number"}
        if len(intervals) == 1:
            number.update(_number_interval_schema(*intervals[0]))
        else:
            number["anyOf"] = [_number_interval_schema(lo, hi) for lo, hi in intervals]
        if group is not None:
            constraints: list[dict[str, Any]] = []
            is32 = kind == FD.TYPE_FLOAT

            def one_of(values: Iterable[float]) -> dict[str, Any]:
                finite = [v for v in values if math.isfinite(v)]
                if not is32:
                    return {"enum": finite} if finite else {"not": {}}
                cells = [_cell_schema(f32_cell(v)) for v in finite]
                if not cells:
                    return {"not": {}}
                return cells[0] if len(cells) == 1 else {"anyOf": cells}

            if has(group, "const"):
                constraints.append(one_of([group.const]))
            if has(group, "in"):
                constraints.append(one_of(list(getattr(group, "in"))))
            if has(group, "not_in"):
                constraints.append({"not": one_of(list(group.not_in))})
            _merge_all(number, constraints)
        specials = (
            []
            if numbers_only
            else [
                name for name, value in SPECIAL_FLOATS.items() if _satisfies_float_rules(value, group, kind)
            ]
        )
        if not specials:
            return number
        return {"anyOf": [number, {"enum": specials}]}

    # -- strings and bytes ---------------------------------------------------------

    def _string(self, group: Any, notes: list[str]) -> dict[str, Any]:
        out: dict[str, Any] = {"type": "string"}
        if group is None or not self.input:
            return out
        found: list[str] = []
        constraints: list[dict[str, Any]] = []
        if has(group, "const"):
            out["const"] = group.const
        if has(group, "len"):
            out["minLength"] = out["maxLength"] = group.len
        if has(group, "min_len"):
            out["minLength"] = max(out.get("minLength", 0), group.min_len)
        if has(group, "max_len"):
            out["maxLength"] = min(out.get("maxLength", group.max_len), group.max_len)
        if has(group, "len_bytes"):
            notes.append(f"Exactly {group.len_bytes} bytes in UTF-8.")
        if has(group, "min_bytes"):
            notes.append(f"At least {group.min_bytes} bytes in UTF-8.")
        if has(group, "max_bytes"):
            notes.append(f"At most {group.max_bytes} bytes in UTF-8.")
        if has(group, "pattern"):
            try:
                found.append(patterns.re2_to_ecma(group.pattern))
            except patterns.UntranslatablePattern as exc:
                notes.append(f"Must match the RE2 regular expression {group.pattern!r} ({exc}).")
        if has(group, "prefix"):
            found.append("^" + patterns.escape(group.prefix))
        if has(group, "suffix"):
            found.append(patterns.escape(group.suffix) + "$")
        if has(group, "contains"):
            found.append(patterns.escape(group.contains))
        if has(group, "not_contains"):
            constraints.append({"not": {"pattern": patterns.escape(group.not_contains)}})
        if has(group, "in"):
            constraints.append({"enum": list(getattr(group, "in"))})
        if has(group, "not_in"):
            constraints.append({"not": {"enum": list(group.not_in)}})
        well_known = group.WhichOneof("well_known")
        if well_known is not None and getattr(group, well_known) not in (False, 0):
            self._string_format(well_known, out, found, notes)
        constraints = [{"pattern": p} for p in found] + constraints
        return _merge_all(out, constraints)

    @staticmethod
    def _string_format(name: str, out: dict[str, Any], found: list[str], notes: list[str]) -> None:
        standard = {"email": "email", "hostname": "hostname", "uuid": "uuid", "ipv4": "ipv4"}
        if name in patterns.FORMATS:
            if name in standard:
                out["format"] = standard[name]
            found.append(patterns.anchored(patterns.FORMATS[name]))
            return
        described = {
            "ipv6": ("ipv6", "an IPv6 address"),
            "ip": (None, "an IPv4 or IPv6 address"),
            "uri": ("uri", "an absolute URI (RFC 3986)"),
            "uri_ref": ("uri-reference", "a URI reference (RFC 3986)"),
            "address": (None, "a hostname or an IP address"),
            "host_and_port": (None, "a host (hostname, IPv4, or [IPv6]) and a port"),
            "ip_with_prefixlen": (None, "an IP address with a prefix length"),
            "ipv4_with_prefixlen": (None, "an IPv4 address with a prefix length"),
            "ipv6_with_prefixlen": (None, "an IPv6 address with a prefix length"),
            "ip_prefix": (None, "an IP prefix"),
            "ipv4_prefix": (None, "an IPv4 prefix"),
            "ipv6_prefix": (None, "an IPv6 prefix"),
            "protobuf_fqn": (None, "a fully-qualified protobuf name"),
            "protobuf_dot_fqn": (None, "a fully-qualified protobuf name with a leading dot"),
            "well_known_regex": (None, "a valid HTTP header name or value"),
        }
        json_format, text = described.get(name, (None, f"a valid {name}"))
        if json_format:
            out["format"] = json_format
        notes.append(f"Must be {text}.")

    def _bytes(self, group: Any, notes: list[str]) -> dict[str, Any]:
        out: dict[str, Any] = {"type": "string", "contentEncoding": "base64"}
        if not self.input:
            return out
        low, high = 0, None
        constraints: list[dict[str, Any]] = []
        if group is not None:
            if has(group, "len"):
                low = high = group.len
            if has(group, "min_len"):
                low = max(low, group.min_len)
            if has(group, "max_len"):
                high = group.max_len if high is None else min(high, group.max_len)
            well_known = group.WhichOneof("well_known")
            if well_known in ("ipv4",) and group.ipv4:
                low, high = max(low, 4), 4 if high is None else min(high, 4)
            elif well_known in ("ipv6", "uuid") and getattr(group, well_known):
                low, high = max(low, 16), 16 if high is None else min(high, 16)
            elif well_known == "ip" and group.ip:
                constraints.append(
                    {
                        "anyOf": [
                            {"pattern": patterns.anchored(patterns.base64_pattern(4, 4))},
                            {"pattern": patterns.anchored(patterns.base64_pattern(16, 16))},
                        ]
                    }
                )
            if has(group, "const"):
                constraints.append({"enum": [_b64(group.const)]})
            if has(group, "in"):
                constraints.append({"enum": [_b64(v) for v in getattr(group, "in")]})
            if has(group, "not_in"):
                constraints.append({"not": {"enum": [_b64(v) for v in group.not_in]}})
            for name, text in (
                ("pattern", "match the RE2 pattern"),
                ("prefix", "start with"),
                ("suffix", "end with"),
                ("contains", "contain"),
            ):
                if has(group, name):
                    value = getattr(group, name)
                    shown = value if isinstance(value, str) else "base64 " + _b64(value)
                    notes.append(f"Decoded bytes must {text} {shown!r}.")
        out["pattern"] = patterns.anchored(patterns.base64_pattern(low, high))
        return _merge_all(out, constraints)

    # -- enums ------------------------------------------------------------------------

    def _enum(self, enum: descriptor.EnumDescriptor, group: Any) -> dict[str, Any]:
        values = list(enum.values)
        if group is not None and self.input:
            if has(group, "const"):
                values = [v for v in values if v.number == group.const]
            if has(group, "in"):
                allowed = set(getattr(group, "in"))
                values = [v for v in values if v.number in allowed]
            if has(group, "not_in"):
                refused = set(group.not_in)
                values = [v for v in values if v.number not in refused]
        if not values:
            return {"not": {}}
        out: dict[str, Any] = {"type": "string", "enum": [v.name for v in values]}
        described = [
            f"{v.name}: {self._comment(f'{enum.full_name}.{v.name}')}"
            for v in values
            if self._comment(f"{enum.full_name}.{v.name}")
        ]
        text = "\n".join(t for t in (self._comment(enum.full_name), *described) if t)
        if text:
            out["description"] = text
        return out

    # -- message-typed fields and well-known types ---------------------------------------

    def _message_field(
        self, message: descriptor.Descriptor, rules: Any, notes: list[str], *, nullable: bool
    ) -> dict[str, Any]:
        name = message.full_name
        if name not in WELL_KNOWN:
            return self._ref(message)
        if name in JSON_STRING_WKTS:
            out: dict[str, Any] = {"type": "string", "pattern": patterns.anchored(JSON_STRING_WKTS[name])}
            if name == TIMESTAMP:
                out["format"] = "date-time"
                out["description"] = "RFC 3339 timestamp, e.g. 2024-05-01T12:00:00Z."
            elif name == DURATION:
                out["description"] = "Duration in seconds with the suffix s, e.g. 1.5s."
            else:
                out["description"] = "Comma-separated lowerCamel field paths, e.g. displayName,address.city."
            if rules is not None and self.input:
                group = rules.WhichOneof("type")
                if group in ("timestamp", "duration", "field_mask"):
                    notes.append(f"Also: {_describe_rules(getattr(rules, group))}.")
            return out
        if name == STRUCT:
            return {"type": "object", "additionalProperties": self._value_ref()}
        if name == VALUE:
            ref = self._value_ref()
            return ref if nullable else {"allOf": [ref], "not": {"type": "null"}}
        if name == LIST_VALUE:
            return {"type": "array", "items": self._value_ref()}
        if name == EMPTY:
            return {"type": "object", "additionalProperties": False}
        if name == ANY:
            if self.input:
                raise InvalidArgument(
                    "google.protobuf.Any is not supported in tool requests",
                    reason=errors_pb2.ERROR_REASON_INVALID_SCHEMA,
                    violations=[
                        FieldViolation(
                            "tool.file_descriptor_set",
                            "a request field is google.protobuf.Any: a model cannot know which message "
                            "types the tool accepts. Use a oneof of the concrete messages instead.",
                        )
                    ],
                )
            return {
                "type": "object",
                "properties": {"@type": {"type": "string", "description": "Type URL of the packed message."}},
                "required": ["@type"],
                "description": "A packed message: its fields and `@type`.",
            }
        kind = WRAPPERS[name]
        inner = self._scalar(kind, rule_group(rules, kind), notes)
        if not nullable or (rules is not None and rules.required):
            return inner
        return _nullable(inner)

    def _value_ref(self) -> dict[str, Any]:
        if VALUE not in self.defs:
            ref = {"$ref": f"#/$defs/{VALUE}"}
            self.defs[VALUE] = {
                "description": "Any JSON value.",
                "anyOf": [
                    {"type": ["null", "boolean", "string"]},
                    {"type": "number", "minimum": -DOUBLE_MAX, "maximum": DOUBLE_MAX},
                    {"type": "array", "items": ref},
                    {"type": "object", "additionalProperties": ref},
                ],
            }
        return {"$ref": f"#/$defs/{VALUE}"}


def _pair(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    if set(a) == {"required"} and set(b) == {"required"}:
        return {"required": [*a["required"], *b["required"]]}
    return {"allOf": [a, b]}


def _nullable(schema: dict[str, Any]) -> dict[str, Any]:
    kind = schema.get("type")
    if isinstance(kind, str) and not {"enum", "const", "anyOf", "allOf", "not"} & schema.keys():
        return {**schema, "type": [kind, "null"]}
    return {"anyOf": [schema, {"type": "null"}]}


def _b64(value: bytes) -> str:
    import base64

    return base64.b64encode(value).decode()


def _describe_rules(group: Message) -> str:
    from google.protobuf import text_format

    return text_format.MessageToString(group, as_one_line=True)


# -- zero values --------------------------------------------------------------------------


def zero_value_violations(schema: ToolSchema, message: descriptor.Descriptor) -> list[str]:
    """Names of fields whose zero value (= absent) protovalidate refuses: they must be sent.

    Raises INVALID_ARGUMENT when the rules do not compile (a broken schema).
    """
    import protovalidate  # loaded at the first validation (see ToolSchema.validator)

    instance = schema.message_class(message)()
    try:
        violations = schema.validator.collect_violations(instance)
    except (protovalidate.CompilationError, protovalidate.EvaluationError) as exc:
        raise InvalidArgument(
            f"protovalidate rules of {message.full_name} do not compile",
            reason=errors_pb2.ERROR_REASON_INVALID_SCHEMA,
            violations=[FieldViolation("tool.file_descriptor_set", f"{message.full_name}: {exc}")],
        ) from None
    names = []
    for violation in violations:
        path = violation.proto.field
        elements = path.elements if path is not None else []
        if elements and elements[0].field_name in message.fields_by_name:
            names.append(elements[0].field_name)
    return names


# -- public API ----------------------------------------------------------------------------


def message_json_schema(schema: ToolSchema, message: descriptor.Descriptor, *, input: bool) -> dict[str, Any]:
    """JSON Schema of one message of the tool's pool (input: what is accepted; else: what is emitted)."""
    return _Builder(schema, input, RuleReader(schema.pool)).root(message)


def tool_json_schemas(schema: ToolSchema) -> tuple[dict[str, Any], dict[str, Any]]:
    """(input schema, output schema) of a tool. INVALID_ARGUMENT for requests the model cannot fill."""
    rules = RuleReader(schema.pool)
    return (
        _Builder(schema, True, rules).root(schema.input_type),
        _Builder(schema, False, rules).root(schema.output_type),
    )


def export_tool_schemas(schema: ToolSchema) -> tuple[str, str]:
    """The schemas as compact JSON text: the registry's `schema_exporter`."""
    inputs, outputs = tool_json_schemas(schema)
    return _dumps(inputs), _dumps(outputs)


def _dumps(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"), allow_nan=False)


def function_definition(name: str, description: str, input_schema: dict[str, Any]) -> dict[str, Any]:
    """An OpenAI-compatible tool definition: `{"type": "function", "function": {...}}`."""
    parameters = {k: v for k, v in input_schema.items() if k not in ("$schema", "$id")}
    return {
        "type": "function",
        "function": {"name": name, "description": description, "parameters": parameters},
    }


ExportFn = Callable[[ToolSchema], tuple[str, str]]
