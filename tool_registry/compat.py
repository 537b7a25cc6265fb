"""The compatibility checker: may `after` replace `before` within one major version?

Pure: two loaded ToolSchemas in, a list of violations out. It walks the request
and the response message of the tool method and every message and enum they
reach, pairing old and new elements by full name and fields and enum values
by number, and applies buf's WIRE_JSON rules (wire *and* JSON compatibility;
`buf breaking --config '{"version":"v2","breaking":{"use":["WIRE_JSON"]}}'` is
the reference, checked differentially on tests/fixtures/compat):

- FIELD_NO_DELETE: a field is gone and its number and name are not both reserved;
- FIELD_SAME_NAME / FIELD_SAME_JSON_NAME: the JSON form accepts both names;
- FIELD_WIRE_JSON_COMPATIBLE_TYPE: only int32<->uint32, int64<->uint64,
  fixed32<->sfixed32, fixed64<->sfixed64 may change; message and enum types
  keep their name (an enum may move if it keeps its short name and values);
- FIELD_WIRE_JSON_COMPATIBLE_CARDINALITY: singular / required / repeated / map;
- FIELD_SAME_ONEOF: membership of a (real) oneof;
- FIELD_SAME_DEFAULT, MESSAGE_SAME_REQUIRED_FIELDS, MESSAGE_SAME_MESSAGE_SET_WIRE_FORMAT (proto2);
- RESERVED_MESSAGE_NO_DELETE / RESERVED_ENUM_NO_DELETE: reservations are forever;
- ENUM_VALUE_NO_DELETE (unless number and name reserved), ENUM_VALUE_SAME_NAME,
  ENUM_SAME_TYPE (open vs closed).

Beyond buf (buf compares whole files, the registry compares one method):

- RPC_SAME_REQUEST_TYPE / RPC_SAME_RESPONSE_TYPE / RPC_SAME_CLIENT_STREAMING /
  RPC_SAME_SERVER_STREAMING;
- FIELD_NEW_REQUIRED: protovalidate rules that newly make a request field
  required (`required`, `min_len`/`min_bytes`/`min_items`/`min_pairs` > 0, a
  required oneof), on an existing or a newly added field, anywhere the request
  reaches. Old clients do not send it, so their calls would start failing.
  Required-ness on the response side only strengthens what the server
  promises and is allowed.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from google.protobuf import descriptor, descriptor_pb2, descriptor_pool, message_factory
from google.protobuf.message import DecodeError, Message

from tool_registry.descriptors import ToolSchema
from tool_registry.protoc import validate_descriptor_set

FD = descriptor.FieldDescriptor

# buf's fieldKindToWireJSONCompatibilityGroup: types in one group are wire- and JSON-compatible.
_WIRE_JSON_GROUP: dict[int, int] = {
    FD.TYPE_INT32: 1,
    FD.TYPE_UINT32: 1,
    FD.TYPE_INT64: 2,
    FD.TYPE_UINT64: 2,
    FD.TYPE_FIXED32: 3,
    FD.TYPE_SFIXED32: 3,
    FD.TYPE_FIXED64: 4,
    FD.TYPE_SFIXED64: 4,
    FD.TYPE_BOOL: 5,
    FD.TYPE_SINT32: 6,
    FD.TYPE_SINT64: 7,
    FD.TYPE_STRING: 8,
    FD.TYPE_BYTES: 9,
    FD.TYPE_DOUBLE: 10,
    FD.TYPE_FLOAT: 11,
    FD.TYPE_GROUP: 12,
    FD.TYPE_MESSAGE: 13,
    FD.TYPE_ENUM: 14,
}
_TYPE_NAMES: dict[int, str] = {
    int(value): name.removeprefix("TYPE_").lower()
    for name, value in descriptor_pb2.FieldDescriptorProto.Type.items()
}


@dataclass(frozen=True, order=True)
class Incompatibility:
    """One incompatibility: where (a full name), which rule, and what to do about it."""

    path: str
    rule: str
    message: str


# -- entry points --------------------------------------------------------------


def check_compatibility(before: ToolSchema, after: ToolSchema) -> list[Incompatibility]:
    """Every reason `after` cannot be a new version of `before` in the same major version."""
    found = _Collector()
    old, new = before.method, after.method
    where = after.method_name
    if old.input_type.full_name != new.input_type.full_name:
        found.add(
            where,
            "RPC_SAME_REQUEST_TYPE",
            f"request type changed from {old.input_type.full_name} to {new.input_type.full_name}; "
            "keep the request message (add fields to it) or bump the major version",
        )
    if old.output_type.full_name != new.output_type.full_name:
        found.add(
            where,
            "RPC_SAME_RESPONSE_TYPE",
            f"response type changed from {old.output_type.full_name} to {new.output_type.full_name}; "
            "keep the response message (add fields to it) or bump the major version",
        )
    for attribute, rule in (
        ("client_streaming", "RPC_SAME_CLIENT_STREAMING"),
        ("server_streaming", "RPC_SAME_SERVER_STREAMING"),
    ):
        if getattr(old, attribute) != getattr(new, attribute):
            found.add(where, rule, f"{attribute.replace('_', '-')} changed; a tool must stay unary")
    walker = _Walker(found)
    if old.input_type.full_name == new.input_type.full_name:
        walker.messages(old.input_type, new.input_type, request_side=True)
    if old.output_type.full_name == new.output_type.full_name:
        walker.messages(old.output_type, new.output_type, request_side=False)
    return found.sorted()


def compare_messages(
    before: descriptor.Descriptor, after: descriptor.Descriptor, *, request_side: bool = True
) -> list[Incompatibility]:
    """The checker for one message pair and everything it reaches (tests, tooling)."""
    found = _Collector()
    _Walker(found).messages(before, after, request_side=request_side)
    return found.sorted()


# -- machinery -------------------------------------------------------------------


class _Collector:
    def __init__(self) -> None:
        self._items: dict[tuple[str, str], Incompatibility] = {}

    def add(self, path: str, rule: str, message: str) -> None:
        self._items.setdefault((path, rule), Incompatibility(path, rule, message))

    def sorted(self) -> list[Incompatibility]:
        return sorted(self._items.values())


def _message_proto(message: descriptor.Descriptor) -> descriptor_pb2.DescriptorProto:
    proto = descriptor_pb2.DescriptorProto()
    message.CopyToProto(proto)
    return proto


def _enum_proto(enum: descriptor.EnumDescriptor) -> descriptor_pb2.EnumDescriptorProto:
    proto = descriptor_pb2.EnumDescriptorProto()
    enum.CopyToProto(proto)
    return proto


def _in_ranges(number: int, ranges: Iterable[tuple[int, int]]) -> bool:
    return any(start <= number < end for start, end in ranges)


def _reserved(proto: descriptor_pb2.DescriptorProto) -> tuple[list[tuple[int, int]], set[str]]:
    # DescriptorProto ranges are [start, end); EnumDescriptorProto ranges are inclusive.
    return [(r.start, r.end) for r in proto.reserved_range], set(proto.reserved_name)


def _enum_reserved(proto: descriptor_pb2.EnumDescriptorProto) -> tuple[list[tuple[int, int]], set[str]]:
    return [(r.start, r.end + 1) for r in proto.reserved_range], set(proto.reserved_name)


def _is_map(field: descriptor.FieldDescriptor) -> bool:
    return (
        field.type == FD.TYPE_MESSAGE
        and field.message_type is not None
        and field.message_type.GetOptions().map_entry
    )


def _cardinality(field: descriptor.FieldDescriptor) -> str:
    if _is_map(field):
        return "map"
    if field.is_repeated:
        return "repeated"
    if field.is_required:
        return "required"
    return "singular"


def _real_oneof(field: descriptor.FieldDescriptor, synthetic: set[str]) -> str | None:
    oneof = field.containing_oneof
    if oneof is None or oneof.name in synthetic:
        return None
    return oneof.name


def _synthetic_oneofs(proto: descriptor_pb2.DescriptorProto) -> set[str]:
    return {proto.oneof_decl[f.oneof_index].name for f in proto.field if f.proto3_optional}


def _type_label(field: descriptor.FieldDescriptor) -> str:
    if field.type == FD.TYPE_MESSAGE and field.message_type is not None:
        return field.message_type.full_name
    if field.type == FD.TYPE_ENUM and field.enum_type is not None:
        return field.enum_type.full_name
    return _TYPE_NAMES.get(field.type, str(field.type))


class _Walker:
    def __init__(self, found: _Collector) -> None:
        self.found = found
        self._seen: set[tuple[str, bool]] = set()
        self._seen_enums: set[str] = set()

    # messages ---------------------------------------------------------------

    def messages(self, old: descriptor.Descriptor, new: descriptor.Descriptor, *, request_side: bool) -> None:
        key = (new.full_name, request_side)
        if key in self._seen:
            return
        self._seen.add(key)
        name = new.full_name
        old_proto, new_proto = _message_proto(old), _message_proto(new)
        old_numbers, old_names = _reserved(old_proto)
        new_numbers, new_names = _reserved(new_proto)
        for start, end in old_numbers:
            if not _covers(new_numbers, start, end):
                shown = f"{start}" if end - start == 1 else f"{start} to {end - 1}"
                self.found.add(
                    name,
                    "RESERVED_MESSAGE_NO_DELETE",
                    f"reserved field numbers {shown} are no longer reserved; reservations must stay",
                )
        for reserved_name in sorted(old_names - new_names):
            self.found.add(
                name,
                "RESERVED_MESSAGE_NO_DELETE",
                f"reserved field name {reserved_name!r} is no longer reserved; reservations must stay",
            )
        if old_proto.options.message_set_wire_format != new_proto.options.message_set_wire_format:
            self.found.add(name, "MESSAGE_SAME_MESSAGE_SET_WIRE_FORMAT", "message_set_wire_format changed")
        old_required = {f.number for f in old.fields if f.is_required}
        new_required = {f.number for f in new.fields if f.is_required}
        if old_required != new_required:
            self.found.add(
                name,
                "MESSAGE_SAME_REQUIRED_FIELDS",
                "the set of proto2 `required` fields changed; required fields can never be added or removed",
            )
        is_entry = bool(new.GetOptions().map_entry and old.GetOptions().map_entry)
        old_synthetic, new_synthetic = _synthetic_oneofs(old_proto), _synthetic_oneofs(new_proto)
        new_by_number = new.fields_by_number
        for old_field in old.fields:
            new_field = new_by_number.get(old_field.number)
            if new_field is None:
                self._deleted_field(old_field, name, new_numbers, new_names, request_side=request_side)
                continue
            self.field(
                old_field,
                new_field,
                is_entry=is_entry,
                synthetic=(old_synthetic, new_synthetic),
                request_side=request_side,
            )
        if request_side:
            old_numbers_present = {f.number for f in old.fields}
            for new_field in new.fields:
                if new_field.number not in old_numbers_present and _newly_required(None, new_field):
                    self.found.add(
                        new_field.full_name,
                        "FIELD_NEW_REQUIRED",
                        f"new field {new_field.name!r} is required by its validation rules; callers of the "
                        "previous version do not send it. Make it optional or bump the major version",
                    )
            self._oneof_required(old, new)

    def _deleted_field(
        self,
        field: descriptor.FieldDescriptor,
        message: str,
        numbers: list[tuple[int, int]],
        names: set[str],
        *,
        request_side: bool,
    ) -> None:
        missing = []
        if not _in_ranges(field.number, numbers):
            missing.append(f"`reserved {field.number};`")
        if field.name not in names:
            missing.append(f'`reserved "{field.name}";`')
        if missing:
            self.found.add(
                field.full_name,
                "FIELD_NO_DELETE",
                # A request field is what old clients send; a response field is what they read.
                f"field {field.name!r} (number {field.number}) was deleted; old clients still "
                f"{'send' if request_side else 'read'} it. "
                f"Keep it, or add {' and '.join(missing)} to {message}",
            )

    def field(
        self,
        old: descriptor.FieldDescriptor,
        new: descriptor.FieldDescriptor,
        *,
        is_entry: bool,
        synthetic: tuple[set[str], set[str]],
        request_side: bool,
    ) -> None:
        path = new.full_name
        if old.name != new.name:
            self.found.add(
                path,
                "FIELD_SAME_NAME",
                f"field number {new.number} was renamed from {old.name!r} to {new.name!r}; JSON clients "
                "send the old name",
            )
        if old.json_name != new.json_name:
            self.found.add(
                path,
                "FIELD_SAME_JSON_NAME",
                f"JSON name changed from {old.json_name!r} to {new.json_name!r}",
            )
        if not is_entry:
            old_card, new_card = _cardinality(old), _cardinality(new)
            if old_card != new_card:
                self.found.add(
                    path,
                    "FIELD_WIRE_JSON_COMPATIBLE_CARDINALITY",
                    f"cardinality changed from {old_card} to {new_card}",
                )
        old_oneof, new_oneof = _real_oneof(old, synthetic[0]), _real_oneof(new, synthetic[1])
        if old_oneof != new_oneof:
            if old_oneof is None:
                what = f"moved into oneof {new_oneof!r}"
            elif new_oneof is None:
                what = f"moved out of oneof {old_oneof!r}"
            else:
                what = f"moved from oneof {old_oneof!r} to {new_oneof!r}"
            self.found.add(path, "FIELD_SAME_ONEOF", f"field {new.name!r} {what}")
        if request_side and not is_entry and _newly_required(old, new):
            self.found.add(
                path,
                "FIELD_NEW_REQUIRED",
                f"field {new.name!r} became required by its validation rules; callers of the previous "
                "version may leave it empty. Drop the rule or bump the major version",
            )
        if not self._same_type(old, new, path):
            return
        if new.type in (FD.TYPE_MESSAGE, FD.TYPE_GROUP):
            assert old.message_type is not None and new.message_type is not None
            self.messages(old.message_type, new.message_type, request_side=request_side)
        elif new.type == FD.TYPE_ENUM:
            assert old.enum_type is not None and new.enum_type is not None
            self.enums(old.enum_type, new.enum_type)
        elif not old.is_repeated and not new.is_repeated and old.default_value != new.default_value:
            # (a cardinality change is reported above; a list has no default to compare)
            self.found.add(
                path,
                "FIELD_SAME_DEFAULT",
                f"default changed from {old.default_value!r} to {new.default_value!r}",
            )

    def _same_type(self, old: descriptor.FieldDescriptor, new: descriptor.FieldDescriptor, path: str) -> bool:
        """Report a type change; True when the types match closely enough to descend."""
        if _WIRE_JSON_GROUP.get(old.type) != _WIRE_JSON_GROUP.get(new.type):
            self.found.add(
                path,
                "FIELD_WIRE_JSON_COMPATIBLE_TYPE",
                f"type changed from {_type_label(old)} to {_type_label(new)}; wire- and JSON-compatible "
                "changes are only int32<->uint32, int64<->uint64, fixed32<->sfixed32, fixed64<->sfixed64. "
                "Add a new field instead",
            )
            return False
        if new.type in (FD.TYPE_MESSAGE, FD.TYPE_GROUP):
            assert old.message_type is not None and new.message_type is not None
            if old.message_type.full_name != new.message_type.full_name:
                self.found.add(
                    path,
                    "FIELD_WIRE_JSON_COMPATIBLE_TYPE",
                    f"type changed from {old.message_type.full_name} to {new.message_type.full_name}",
                )
                return False
        if new.type == FD.TYPE_ENUM:
            assert old.enum_type is not None and new.enum_type is not None
            if old.enum_type.full_name != new.enum_type.full_name:
                # buf: a moved enum is the same enum if it keeps its short name and every old value.
                old_values = {(v.name, v.number) for v in old.enum_type.values}
                new_values = {(v.name, v.number) for v in new.enum_type.values}
                if old.enum_type.name != new.enum_type.name or not old_values <= new_values:
                    self.found.add(
                        path,
                        "FIELD_WIRE_JSON_COMPATIBLE_TYPE",
                        f"type changed from {old.enum_type.full_name} to {new.enum_type.full_name}",
                    )
                return False
        return True

    # enums ------------------------------------------------------------------

    def enums(self, old: descriptor.EnumDescriptor, new: descriptor.EnumDescriptor) -> None:
        if new.full_name in self._seen_enums:
            return
        self._seen_enums.add(new.full_name)
        name = new.full_name
        if old.is_closed != new.is_closed:
            before, after = ("closed", "open") if old.is_closed else ("open", "closed")
            self.found.add(name, "ENUM_SAME_TYPE", f"enum changed from {before} to {after}")
        old_proto, new_proto = _enum_proto(old), _enum_proto(new)
        old_numbers, old_names = _enum_reserved(old_proto)
        new_numbers, new_names = _enum_reserved(new_proto)
        for start, end in old_numbers:
            if not _covers(new_numbers, start, end):
                self.found.add(
                    name,
                    "RESERVED_ENUM_NO_DELETE",
                    f"reserved enum numbers {start} to {end - 1} are no longer reserved",
                )
        for reserved_name in sorted(old_names - new_names):
            self.found.add(
                name, "RESERVED_ENUM_NO_DELETE", f"reserved enum name {reserved_name!r} is no longer reserved"
            )
        old_by_number: dict[int, set[str]] = {}
        for value in old.values:
            old_by_number.setdefault(value.number, set()).add(value.name)
        new_by_number: dict[int, set[str]] = {}
        for value in new.values:
            new_by_number.setdefault(value.number, set()).add(value.name)
        for number, names in sorted(old_by_number.items()):
            current = new_by_number.get(number)
            shown = ", ".join(sorted(names))
            if current is None:
                missing = []
                if not _in_ranges(number, new_numbers):
                    missing.append(f"`reserved {number};`")
                unreserved = sorted(names - new_names)
                if unreserved:
                    missing.append(" ".join(f'`reserved "{n}";`' for n in unreserved))
                if missing:
                    self.found.add(
                        f"{name}.{sorted(names)[0]}",
                        "ENUM_VALUE_NO_DELETE",
                        f"enum value {shown} ({number}) was deleted; old peers still send it. Keep it, or "
                        f"add {' and '.join(missing)} to {name}",
                    )
            elif not names <= current:
                self.found.add(
                    f"{name}.{sorted(names)[0]}",
                    "ENUM_VALUE_SAME_NAME",
                    f"enum value {number} was renamed from {shown} to {', '.join(sorted(current))}; "
                    "JSON carries the name",
                )

    # protovalidate ------------------------------------------------------------

    def _oneof_required(self, old: descriptor.Descriptor, new: descriptor.Descriptor) -> None:
        old_required = {o.name for o in old.oneofs if _oneof_is_required(o)}
        for oneof in new.oneofs:
            if _oneof_is_required(oneof) and oneof.name not in old_required:
                self.found.add(
                    oneof.full_name,
                    "FIELD_NEW_REQUIRED",
                    f"oneof {oneof.name!r} became required by its validation rules; callers of the previous "
                    "version may set none of it",
                )


def _covers(ranges: list[tuple[int, int]], start: int, end: int) -> bool:
    """Whether [start, end) lies within the union of `ranges`."""
    number = start
    while number < end:
        containing = next((r for r in ranges if r[0] <= number < r[1]), None)
        if containing is None:
            return False
        number = containing[1]
    return True


# protovalidate rules are read from the raw option bytes with the buf/validate
# descriptors the protovalidate wheel embeds, so any tool's pool works.


@functools.cache
def _validate_classes() -> tuple[
    type[Message], type[Message], descriptor.FieldDescriptor, descriptor.FieldDescriptor
]:
    pool = descriptor_pool.DescriptorPool()
    for file in validate_descriptor_set().file:
        pool.Add(file)
    field_options = message_factory.GetMessageClass(
        pool.FindMessageTypeByName("google.protobuf.FieldOptions")
    )
    oneof_options = message_factory.GetMessageClass(
        pool.FindMessageTypeByName("google.protobuf.OneofOptions")
    )
    message_factory.GetMessageClassesForFiles(["buf/validate/validate.proto"], pool)
    return (
        field_options,
        oneof_options,
        pool.FindExtensionByName("buf.validate.field"),
        pool.FindExtensionByName("buf.validate.oneof"),
    )


def _field_rules(field: descriptor.FieldDescriptor) -> Message | None:
    raw = field.GetOptions().SerializeToString()
    if not raw:
        return None
    options_class, _, extension, _ = _validate_classes()
    try:
        options: Any = options_class.FromString(raw)
    except DecodeError:
        return None
    if not options.HasExtension(extension):
        return None
    rules: Message = options.Extensions[extension]
    return rules


def _oneof_is_required(oneof: descriptor.OneofDescriptor) -> bool:
    raw = oneof.GetOptions().SerializeToString()
    if not raw:
        return False
    _, options_class, _, extension = _validate_classes()
    try:
        options: Any = options_class.FromString(raw)
    except DecodeError:
        return False
    if not options.HasExtension(extension):
        return False
    return bool(options.Extensions[extension].required)


def required_by_rules(field: descriptor.FieldDescriptor) -> bool:
    """Whether protovalidate rules make the field required (a caller must set it)."""
    rules = _field_rules(field)
    if rules is None:
        return False
    if getattr(rules, "required", False):
        return True
    kind = rules.WhichOneof("type")
    if kind is None:
        return False
    typed = getattr(rules, kind)
    for attribute in ("min_len", "min_bytes", "min_items", "min_pairs"):
        if typed.DESCRIPTOR.fields_by_name.get(attribute) is not None and getattr(typed, attribute) > 0:
            return True
    return False


def _newly_required(old: descriptor.FieldDescriptor | None, new: descriptor.FieldDescriptor) -> bool:
    return required_by_rules(new) and (old is None or not required_by_rules(old))
