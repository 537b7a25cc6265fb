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
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from google.protobuf import descriptor
from google.protobuf.message import Message

from agentmesh.kit.errors import FieldViolation, InvalidArgument
from agentmesh.v1 import errors_pb2
from tool_registry import patterns
from tool_registry.descriptors import ToolSchema
from tool_registry.field_rules import (
    ANY,
    DOUBLE_MAX,
    DURATION,
    EMPTY,
    FD,
    FLOAT_KINDS,
    IGNORE_ALWAYS,
    IGNORE_IF_ZERO_VALUE,
    INTEGER_KINDS,
    JSON_STRING_WKTS,
    LIST_VALUE,
    STRUCT,
    TIMESTAMP,
    VALUE,
    WELL_KNOWN,
    WIDE_KINDS,
    WRAPPERS,
    RuleReader,
    has,
    is_map,
    real_oneofs,
    rule_group,
    unique_items,
)
from tool_registry.scalar_schema import ScalarSchemas, merge_all

DIALECT = "https://json-schema.org/draft/2020-12/schema"


# -- the builder ------------------------------------------------------------------------


def _with_notes(schema: dict[str, Any], description: str, notes: list[str]) -> dict[str, Any]:
    text = "\n".join(t for t in (description, *notes) if t)
    if text:
        if "$ref" in schema and len(schema) == 1:
            return {"$ref": schema["$ref"], "description": text}
        existing = schema.get("description")
        schema["description"] = f"{text}\n{existing}" if existing and existing != text else text
    return schema


@dataclass
class _Builder(ScalarSchemas):
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
            merge_all(out, self._choice_rules(message, notes))
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
                out = merge_all(out, [{"not": self._zero(fd)}])
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


def _describe_rules(group: Message) -> str:
    from google.protobuf import text_format

    return text_format.MessageToString(group, as_one_line=True)


# -- zero values --------------------------------------------------------------------------


def zero_value_violations(schema: ToolSchema, message: descriptor.Descriptor) -> list[str]:
    """Names of fields whose zero value (= absent) protovalidate refuses: they must be sent.

    Raises INVALID_ARGUMENT when the rules do not compile (a broken schema).
    """
    if not schema.has_rules:  # no rule refuses anything
        return []
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
