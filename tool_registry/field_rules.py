"""What the schema exporter and the argument converter both know about a proto field.

Its kind and range (32/64-bit, signed or not, floats), the well-known types
and how JSON spells them, oneofs and maps, and the protovalidate rules it
carries (`RuleReader`, `rule_group`). Pure descriptor facts: no schema is
built and nothing is validated here (tool_registry/jsonschema.py builds,
tool_registry/arguments.py converts and validates).
"""

from __future__ import annotations

import math
from typing import Any

from google.protobuf import descriptor, descriptor_pool, message_factory
from google.protobuf.message import Message

from tool_registry import patterns

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
