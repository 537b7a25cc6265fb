"""A tool's proto source, rendered back from its FileDescriptorSet (what the registry stores).

Not byte-for-byte the author's file: syntax, package, imports, messages (nested, oneofs,
maps), enums and services, with their leading comments; options are left out (the
JSON Schema beside it shows the validation rules, the page the tool option). Enough
for a tool developer to read the contract the model is given and compare two versions
line by line.
"""

from __future__ import annotations

from google.protobuf import descriptor_pb2

from tool_registry.descriptors import comments_by_name, parse_descriptor_set

_TYPES = {
    descriptor_pb2.FieldDescriptorProto.TYPE_DOUBLE: "double",
    descriptor_pb2.FieldDescriptorProto.TYPE_FLOAT: "float",
    descriptor_pb2.FieldDescriptorProto.TYPE_INT64: "int64",
    descriptor_pb2.FieldDescriptorProto.TYPE_UINT64: "uint64",
    descriptor_pb2.FieldDescriptorProto.TYPE_INT32: "int32",
    descriptor_pb2.FieldDescriptorProto.TYPE_FIXED64: "fixed64",
    descriptor_pb2.FieldDescriptorProto.TYPE_FIXED32: "fixed32",
    descriptor_pb2.FieldDescriptorProto.TYPE_BOOL: "bool",
    descriptor_pb2.FieldDescriptorProto.TYPE_STRING: "string",
    descriptor_pb2.FieldDescriptorProto.TYPE_BYTES: "bytes",
    descriptor_pb2.FieldDescriptorProto.TYPE_UINT32: "uint32",
    descriptor_pb2.FieldDescriptorProto.TYPE_SFIXED32: "sfixed32",
    descriptor_pb2.FieldDescriptorProto.TYPE_SFIXED64: "sfixed64",
    descriptor_pb2.FieldDescriptorProto.TYPE_SINT32: "sint32",
    descriptor_pb2.FieldDescriptorProto.TYPE_SINT64: "sint64",
}
_SKIPPED_PREFIXES = ("google/protobuf/", "buf/validate/", "agentmesh/v1/tool_options.proto")


def _type_name(field: descriptor_pb2.FieldDescriptorProto) -> str:
    if field.type_name:
        return field.type_name.lstrip(".")
    return _TYPES.get(field.type, "?")


class _Writer:
    def __init__(self, comments: dict[str, str]) -> None:
        self.lines: list[str] = []
        self.comments = comments

    def comment(self, full_name: str, indent: str) -> None:
        for line in self.comments.get(full_name, "").splitlines():
            self.lines.append(f"{indent}// {line}".rstrip())

    def enum(self, enum: descriptor_pb2.EnumDescriptorProto, scope: str, indent: str) -> None:
        name = f"{scope}.{enum.name}" if scope else enum.name
        self.comment(name, indent)
        self.lines.append(f"{indent}enum {enum.name} {{")
        for value in enum.value:
            self.comment(f"{name}.{value.name}", indent + "  ")
            self.lines.append(f"{indent}  {value.name} = {value.number};")
        self.lines.append(f"{indent}}}")

    def message(self, message: descriptor_pb2.DescriptorProto, scope: str, indent: str) -> None:
        name = f"{scope}.{message.name}" if scope else message.name
        maps = {nested.name: nested for nested in message.nested_type if nested.options.map_entry}
        self.comment(name, indent)
        self.lines.append(f"{indent}message {message.name} {{")
        inner = indent + "  "
        for nested in message.nested_type:
            if not nested.options.map_entry:
                self.message(nested, name, inner)
        for enum in message.enum_type:
            self.enum(enum, name, inner)
        open_oneof: int | None = None
        for field in message.field:
            real_oneof = field.HasField("oneof_index") and not field.proto3_optional
            if open_oneof is not None and (not real_oneof or field.oneof_index != open_oneof):
                self.lines.append(f"{inner}}}")
                open_oneof = None
            field_indent = inner
            if real_oneof:
                if open_oneof is None:
                    self.lines.append(f"{inner}oneof {message.oneof_decl[field.oneof_index].name} {{")
                    open_oneof = field.oneof_index
                field_indent = inner + "  "
            self.comment(f"{name}.{field.name}", field_indent)
            entry = maps.get(field.type_name.rsplit(".", 1)[-1]) if field.type_name else None
            if entry is not None and field.label == descriptor_pb2.FieldDescriptorProto.LABEL_REPEATED:
                key, value = entry.field[0], entry.field[1]
                kind = f"map<{_type_name(key)}, {_type_name(value)}>"
            else:
                kind = _type_name(field)
                if field.label == descriptor_pb2.FieldDescriptorProto.LABEL_REPEATED:
                    kind = f"repeated {kind}"
                elif field.proto3_optional:
                    kind = f"optional {kind}"
            self.lines.append(f"{field_indent}{kind} {field.name} = {field.number};")
        if open_oneof is not None:
            self.lines.append(f"{inner}}}")
        self.lines.append(f"{indent}}}")

    def service(self, service: descriptor_pb2.ServiceDescriptorProto, package: str) -> None:
        name = f"{package}.{service.name}" if package else service.name
        self.comment(name, "")
        self.lines.append(f"service {service.name} {{")
        for method in service.method:
            self.comment(f"{name}.{method.name}", "  ")
            request = ("stream " if method.client_streaming else "") + method.input_type.lstrip(".")
            response = ("stream " if method.server_streaming else "") + method.output_type.lstrip(".")
            self.lines.append(f"  rpc {method.name}({request}) returns ({response});")
        self.lines.append("}")


def render_file(file: descriptor_pb2.FileDescriptorProto) -> str:
    writer = _Writer(comments_by_name(file))
    lines = writer.lines
    lines.append(f"// {file.name}")
    lines.append(f'syntax = "{file.syntax or "proto2"}";')
    if file.package:
        lines.append(f"package {file.package};")
    lines += [f'import "{dependency}";' for dependency in file.dependency]
    for message in file.message_type:
        lines.append("")
        writer.message(message, file.package, "")
    for enum in file.enum_type:
        lines.append("")
        writer.enum(enum, file.package, "")
    for service in file.service:
        lines.append("")
        writer.service(service, file.package)
    return "\n".join(lines) + "\n"


def proto_source(file_descriptor_set: bytes) -> str:
    """Every file of the set except the well-known and option protos, in the set's order."""
    fds = parse_descriptor_set(file_descriptor_set)
    return "\n".join(render_file(f) for f in fds.file if not f.name.startswith(_SKIPPED_PREFIXES))
