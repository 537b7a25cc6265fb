"""A tool's schema: a FileDescriptorSet, checked and loaded into its own descriptor pool.

Every tool version gets a private `DescriptorPool` (two versions of one tool
define the same message names differently). `load_tool_schema` checks what
registration needs — the bytes parse, the set is self-contained, the method
exists and is unary — and raises INVALID_ARGUMENT with field violations a
developer can act on.
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from google.protobuf import descriptor, descriptor_pb2, descriptor_pool, message_factory, unknown_fields
from google.protobuf.message import DecodeError, Message

from agentmesh.kit.errors import FieldViolation, InvalidArgument
from agentmesh.v1 import errors_pb2, tool_options_pb2

if TYPE_CHECKING:
    import protovalidate

# Larger sets are refused at registration (INVALID_ARGUMENT, never a crash).
MAX_DESCRIPTOR_SET_BYTES = 4 * 1024 * 1024
# What one tool's request and response may reach: the fields of every message
# type they reach (each type once), and the longest chain of message types
# (recursive types count with every type of their cycle). Every walker over a
# tool's messages (JSON Schema, compatibility, argument shapes) recurses along
# such chains, so the depth bound is what keeps them from Python's recursion
# limit; the field bound keeps a tool's JSON Schema (what the model reads with
# every call) small.
MAX_TOOL_FIELDS = 2000
MAX_MESSAGE_DEPTH = 64
DESCRIPTOR_SET_FIELD = "tool.file_descriptor_set"
METHOD_FIELD = "tool.method"

# protovalidate's options (buf/validate/validate.proto): `message`, `oneof` and `field` are
# extension 1159 of MessageOptions, OneofOptions and FieldOptions. Every rule protovalidate
# enforces (CEL expressions included) is declared under one of them; `predefined` (1160)
# only defines rules that a `field` rule then uses.
VALIDATE_OPTION = 1159

# SourceCodeInfo path components (descriptor.proto field numbers).
_FILE_MESSAGE, _FILE_ENUM, _FILE_SERVICE = 4, 5, 6
_MSG_FIELD, _MSG_NESTED, _MSG_ENUM, _MSG_ONEOF = 2, 3, 4, 8
_ENUM_VALUE, _SERVICE_METHOD = 2, 2


def _invalid(message: str, violations: Iterable[FieldViolation]) -> InvalidArgument:
    return InvalidArgument(
        message, reason=errors_pb2.ERROR_REASON_INVALID_SCHEMA, violations=list(violations)
    )


def parse_descriptor_set(data: bytes) -> descriptor_pb2.FileDescriptorSet:
    if not data:
        raise _invalid(
            "file_descriptor_set is empty",
            [
                FieldViolation(
                    DESCRIPTOR_SET_FIELD, "is required: a serialized google.protobuf.FileDescriptorSet"
                )
            ],
        )
    if len(data) > MAX_DESCRIPTOR_SET_BYTES:
        raise _invalid(
            "file_descriptor_set is too large",
            [
                FieldViolation(
                    DESCRIPTOR_SET_FIELD,
                    f"is {len(data)} bytes; at most {MAX_DESCRIPTOR_SET_BYTES} allowed. Register only the "
                    "tool's file and its imports (protoc --include_imports on that one file).",
                )
            ],
        )
    try:
        fds = descriptor_pb2.FileDescriptorSet.FromString(data)
    except (DecodeError, ValueError, RuntimeError) as exc:
        raise _invalid(
            "file_descriptor_set does not parse",
            [
                FieldViolation(
                    DESCRIPTOR_SET_FIELD,
                    f"is not a serialized google.protobuf.FileDescriptorSet ({exc}); produce one with "
                    "`protoc --include_imports --descriptor_set_out=...` or `buf build -o set.binpb`",
                )
            ],
        ) from None
    if not fds.file or any(not f.name for f in fds.file):
        raise _invalid(
            "file_descriptor_set holds no files",
            [
                FieldViolation(
                    DESCRIPTOR_SET_FIELD,
                    "parsed, but holds no named .proto files: is it really a descriptor set?",
                )
            ],
        )
    return fds


def ordered_files(fds: descriptor_pb2.FileDescriptorSet) -> list[descriptor_pb2.FileDescriptorProto]:
    """Files with dependencies first; INVALID_ARGUMENT when an import is missing or names repeat."""
    by_name: dict[str, descriptor_pb2.FileDescriptorProto] = {}
    violations = []
    for file in fds.file:
        if file.name in by_name and by_name[file.name] != file:
            violations.append(
                FieldViolation(DESCRIPTOR_SET_FIELD, f"holds two different files named {file.name!r}")
            )
        by_name[file.name] = file
    missing = sorted({(f.name, dep) for f in by_name.values() for dep in f.dependency if dep not in by_name})
    violations += [
        FieldViolation(
            DESCRIPTOR_SET_FIELD,
            f"is not self-contained: {name!r} imports {dep!r}, which is not in the set "
            "(compile with --include_imports)",
        )
        for name, dep in missing
    ]
    if violations:
        raise _invalid("file_descriptor_set is not usable", violations)
    ordered: list[descriptor_pb2.FileDescriptorProto] = []
    seen: set[str] = set()

    def visit(name: str, path: tuple[str, ...]) -> None:
        if name in seen:
            return
        if name in path:
            raise _invalid(
                "file_descriptor_set has an import cycle",
                [FieldViolation(DESCRIPTOR_SET_FIELD, f"import cycle: {' -> '.join((*path, name))}")],
            )
        for dep in by_name[name].dependency:
            visit(dep, (*path, name))
        seen.add(name)
        ordered.append(by_name[name])

    for name in by_name:
        visit(name, ())
    return ordered


def build_pool(fds: descriptor_pb2.FileDescriptorSet) -> descriptor_pool.DescriptorPool:
    pool = descriptor_pool.DescriptorPool()
    for file in ordered_files(fds):
        try:
            pool.Add(file)
        except (TypeError, ValueError, KeyError) as exc:
            raise _invalid(
                f"file {file.name!r} does not load",
                [FieldViolation(DESCRIPTOR_SET_FIELD, f"{file.name}: {exc}")],
            ) from None
    return pool


def split_method_name(name: str) -> tuple[str, str]:
    """`pkg.Svc/Method`, `/pkg.Svc/Method` or `pkg.Svc.Method` -> (`pkg.Svc`, `Method`)."""
    cleaned = name.strip().lstrip("/")
    if "/" in cleaned:
        service, _, method = cleaned.rpartition("/")
    else:
        service, _, method = cleaned.rpartition(".")
    if not service or not method:
        raise _invalid(
            "method name is malformed",
            [
                FieldViolation(
                    METHOD_FIELD, f"{name!r} is not a full method name like `payments.v1.Payments/Refund`"
                )
            ],
        )
    return service, method


@dataclass(frozen=True)
class ToolSchema:
    """One unary method of a loaded descriptor set, with its private pool."""

    file_set: descriptor_pb2.FileDescriptorSet
    pool: descriptor_pool.DescriptorPool
    method: descriptor.MethodDescriptor
    file_proto: descriptor_pb2.FileDescriptorProto
    method_proto: descriptor_pb2.MethodDescriptorProto
    _classes: dict[str, type[Message]] = field(default_factory=dict, repr=False, compare=False)

    @property
    def method_name(self) -> str:
        """`package.Service/Method`."""
        return f"{self.method.containing_service.full_name}/{self.method.name}"

    @property
    def grpc_path(self) -> str:
        """`/package.Service/Method`, as on the wire."""
        return f"/{self.method_name}"

    @property
    def input_type(self) -> descriptor.Descriptor:
        return self.method.input_type

    @property
    def output_type(self) -> descriptor.Descriptor:
        return self.method.output_type

    def options(self) -> tool_options_pb2.ToolOptions | None:
        """The method's `agentmesh.v1.tool` option, if it carries one."""
        opts = self.method_proto.options
        if opts.HasExtension(tool_options_pb2.tool):
            return opts.Extensions[tool_options_pb2.tool]
        return None

    @functools.cached_property
    def comments(self) -> dict[str, str]:
        """Full name -> leading comment, for every element of every file in the set."""
        merged: dict[str, str] = {}
        for file in self.file_set.file:
            merged.update(_file_comments(file.SerializeToString(deterministic=True)))
        return merged

    @functools.cached_property
    def has_rules(self) -> bool:
        """Whether any message of the set declares a protovalidate rule. Without one there is
        nothing to validate, and protovalidate (~13 MB) need not be loaded at all."""
        return set_has_rules(self.file_set)

    @functools.cached_property
    def validator(self) -> protovalidate.Validator:
        """protovalidate for this version's messages: a validator keeps the descriptors it saw by
        full name, so two versions of one message in the same validator collide."""
        import protovalidate  # ~13 MB: loaded by the first process that validates, not at start

        return protovalidate.Validator()

    def description(self) -> str:
        """The method's leading comment (what the model reads when the option has no description)."""
        return self.comments.get(f"{self.method.containing_service.full_name}.{self.method.name}", "")

    def message_class(self, message_descriptor: descriptor.Descriptor) -> type[Message]:
        cls = self._classes.get(message_descriptor.full_name)
        if cls is None:
            cls = message_factory.GetMessageClass(message_descriptor)
            self._classes[message_descriptor.full_name] = cls
        return cls

    @property
    def request_class(self) -> type[Message]:
        return self.message_class(self.input_type)

    @property
    def response_class(self) -> type[Message]:
        return self.message_class(self.output_type)


_LOADED_MAX = 64
_loaded: dict[tuple[bytes, str], ToolSchema] = {}


def load_tool_schema(data: bytes | descriptor_pb2.FileDescriptorSet, method_name: str) -> ToolSchema:
    """Check and load the method `method_name` of a descriptor set (bytes or parsed).

    Loads from bytes are remembered by (SHA-256 of the bytes, method) for the last few sets: a
    ToolSchema is a pure function of the two (its pool is never changed after loading), and a
    deployment registers many tools from one set, so building the pool was a large part of each
    RegisterTool. A set that does not load raises and is never kept.
    """
    if not isinstance(data, bytes):
        return _load_tool_schema(data, method_name)
    key = (hashlib.sha256(data).digest(), method_name)
    schema = _loaded.get(key)
    if schema is None:
        schema = _load_tool_schema(data, method_name)
        if len(_loaded) >= _LOADED_MAX:
            _loaded.pop(next(iter(_loaded)))
        _loaded[key] = schema
    return schema


def _load_tool_schema(data: bytes | descriptor_pb2.FileDescriptorSet, method_name: str) -> ToolSchema:
    fds = parse_descriptor_set(data) if isinstance(data, bytes) else data
    service_name, method_short = split_method_name(method_name)
    pool = build_pool(fds)
    try:
        service = pool.FindServiceByName(service_name)
    except KeyError:
        known = ", ".join(sorted(all_service_names(fds))) or "no services"
        raise _invalid(
            f"service {service_name!r} is not in the descriptor set",
            [
                FieldViolation(
                    METHOD_FIELD,
                    f"service {service_name!r} not found; the set defines: {known}",
                )
            ],
        ) from None
    method = service.methods_by_name.get(method_short)
    if method is None:
        methods = ", ".join(sorted(m.name for m in service.methods))
        raise _invalid(
            f"method {method_short!r} is not in service {service_name!r}",
            [
                FieldViolation(
                    METHOD_FIELD, f"{service_name} has no method {method_short!r}; it has: {methods}"
                )
            ],
        )
    if method.client_streaming or method.server_streaming:
        kind = "client-streaming" if method.client_streaming else "server-streaming"
        if method.client_streaming and method.server_streaming:
            kind = "bidirectional-streaming"
        raise _invalid(
            f"{service_name}/{method_short} is {kind}",
            [
                FieldViolation(
                    METHOD_FIELD,
                    f"{service_name}/{method_short} is {kind}; a tool must be a unary method "
                    "(one request, one response)",
                )
            ],
        )
    check_tool_size(method)
    file_proto = next(f for f in fds.file if f.name == service.file.name)
    service_proto = next(s for s in file_proto.service if s.name == service.name)
    method_proto = next(m for m in service_proto.method if m.name == method_short)
    return ToolSchema(fds, pool, method, file_proto, method_proto)


def _has_validate_option(options: Message) -> bool:
    """Whether these options carry a buf.validate option: as a known extension, or (the usual
    case, as protovalidate registers none in the default pool) as an unknown field."""
    if not options.ByteSize():
        return False
    if any(fd.is_extension and fd.number == VALIDATE_OPTION for fd, _ in options.ListFields()):
        return True
    unknown = unknown_fields.UnknownFieldSet(options)
    return any(unknown[i].field_number == VALIDATE_OPTION for i in range(len(unknown)))


def _message_has_rules(message: descriptor_pb2.DescriptorProto) -> bool:
    return (
        _has_validate_option(message.options)
        or any(_has_validate_option(f.options) for f in (*message.field, *message.extension))
        or any(_has_validate_option(o.options) for o in message.oneof_decl)
        or any(_message_has_rules(nested) for nested in message.nested_type)
    )


def set_has_rules(fds: descriptor_pb2.FileDescriptorSet) -> bool:
    """Whether any message, field or oneof of the set (every file, not only what one method
    reaches: an over-estimate is safe) declares a protovalidate rule."""
    return any(
        any(_message_has_rules(m) for m in file.message_type)
        or any(_has_validate_option(f.options) for f in file.extension)
        for file in fds.file
    )


def check_tool_size(method: descriptor.MethodDescriptor) -> None:
    """INVALID_ARGUMENT naming the limit when the method's messages reach too many fields or nest too deep."""
    fields, depth = message_graph_size([method.input_type, method.output_type])
    violations = []
    if fields > MAX_TOOL_FIELDS:
        violations.append(
            FieldViolation(
                DESCRIPTOR_SET_FIELD,
                f"the request and response of {method.full_name} reach {fields} fields; at most "
                f"{MAX_TOOL_FIELDS} (MAX_TOOL_FIELDS) allowed per tool",
                "TOO_MANY_FIELDS",
            )
        )
    if depth > MAX_MESSAGE_DEPTH:
        violations.append(
            FieldViolation(
                DESCRIPTOR_SET_FIELD,
                f"the messages of {method.full_name} nest {depth} message types deep; at most "
                f"{MAX_MESSAGE_DEPTH} (MAX_MESSAGE_DEPTH) allowed per tool",
                "TOO_DEEP",
            )
        )
    if violations:
        raise _invalid(f"{method.full_name} is too large to be a tool", violations)


def message_graph_size(roots: Iterable[descriptor.Descriptor]) -> tuple[int, int]:
    """(fields of every message type reachable from `roots`, longest chain of message types).

    Iterative (Tarjan's strongly connected components), so any input is measured
    without recursion: a chain's length counts every type of each cycle on it,
    an upper bound for any walker that stops at a type already on its path.
    """
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    by_name: dict[str, descriptor.Descriptor] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    component: dict[str, int] = {}
    components: list[list[str]] = []  # in reverse topological order (sinks first)

    def children(message: descriptor.Descriptor) -> list[descriptor.Descriptor]:
        return [f.message_type for f in message.fields if f.message_type is not None]

    work: list[tuple[descriptor.Descriptor, Iterator[descriptor.Descriptor]]] = []  # the DFS path
    for root in roots:
        if root.full_name in index:
            continue

        def enter(message: descriptor.Descriptor) -> None:
            name = message.full_name
            by_name[name] = message
            index[name] = low[name] = len(index)
            stack.append(name)
            on_stack.add(name)
            work.append((message, iter(children(message))))

        enter(root)
        while work:
            message, pending = work[-1]
            name = message.full_name
            child = next(pending, None)
            if child is not None:
                if child.full_name not in index:
                    enter(child)
                elif child.full_name in on_stack:
                    low[name] = min(low[name], index[child.full_name])
                continue
            work.pop()
            if work:
                parent = work[-1][0].full_name
                low[parent] = min(low[parent], low[name])
            if low[name] == index[name]:
                members = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component[member] = len(components)
                    members.append(member)
                    if member == name:
                        break
                components.append(members)
    fields = sum(len(message.fields) for message in by_name.values())
    longest: list[int] = []
    for number, members in enumerate(components):  # sinks first: successors are already measured
        below = 0
        for member in members:
            for child in children(by_name[member]):
                other = component[child.full_name]
                if other != number:
                    below = max(below, longest[other])
        longest.append(len(members) + below)
    return fields, max(longest, default=0)


def all_service_names(fds: descriptor_pb2.FileDescriptorSet) -> Iterator[str]:
    for file in fds.file:
        prefix = f"{file.package}." if file.package else ""
        for service in file.service:
            yield f"{prefix}{service.name}"


def tool_methods(fds: descriptor_pb2.FileDescriptorSet) -> list[str]:
    """`pkg.Svc/Method` of every method in the set that carries the `agentmesh.v1.tool` option."""
    found = []
    for file in fds.file:
        prefix = f"{file.package}." if file.package else ""
        for service in file.service:
            for method in service.method:
                if method.options.HasExtension(tool_options_pb2.tool):
                    found.append(f"{prefix}{service.name}/{method.name}")
    return found


def file_descriptor_set_of(*files: descriptor.FileDescriptor) -> descriptor_pb2.FileDescriptorSet:
    """The transitive closure of `files` (dependencies first), e.g. from generated `*_pb2.DESCRIPTOR`."""
    ordered: list[descriptor_pb2.FileDescriptorProto] = []
    seen: set[str] = set()

    def visit(file: descriptor.FileDescriptor) -> None:
        if file.name in seen:
            return
        seen.add(file.name)
        for dep in file.dependencies:
            visit(dep)
        proto = descriptor_pb2.FileDescriptorProto()
        file.CopyToProto(proto)
        ordered.append(proto)

    for file in files:
        visit(file)
    return descriptor_pb2.FileDescriptorSet(file=ordered)


def _clean(comment: str | bytes) -> str:
    # descriptor.proto's strings are proto2 (no UTF-8 check): a crafted set can carry raw bytes.
    text = comment.decode("utf-8", "replace") if isinstance(comment, bytes) else comment
    lines = [line.strip() for line in text.strip().splitlines()]
    return "\n".join(lines).strip()


@functools.lru_cache(maxsize=64)
def _file_comments(raw: bytes) -> dict[str, str]:
    """comments_by_name of a serialized file, remembered for the files of the last few sets
    (read-only: callers copy it)."""
    return comments_by_name(descriptor_pb2.FileDescriptorProto.FromString(raw))


def comments_by_name(file: descriptor_pb2.FileDescriptorProto) -> dict[str, str]:
    """Map full names (messages, fields, oneofs, enums, values, services, methods) to their comments."""
    by_path = {}
    for location in file.source_code_info.location:
        text = location.leading_comments or location.trailing_comments
        if text.strip():
            by_path[tuple(location.path)] = _clean(text)
    names: dict[str, str] = {}
    prefix = f"{file.package}." if file.package else ""

    def note(path: tuple[int, ...], name: str) -> None:
        if path in by_path:
            names[name] = by_path[path]

    def message(msg: descriptor_pb2.DescriptorProto, path: tuple[int, ...], scope: str) -> None:
        name = f"{scope}{msg.name}"
        note(path, name)
        for i, f in enumerate(msg.field):
            note((*path, _MSG_FIELD, i), f"{name}.{f.name}")
        for i, o in enumerate(msg.oneof_decl):
            note((*path, _MSG_ONEOF, i), f"{name}.{o.name}")
        for i, nested in enumerate(msg.nested_type):
            message(nested, (*path, _MSG_NESTED, i), f"{name}.")
        for i, e in enumerate(msg.enum_type):
            enum(e, (*path, _MSG_ENUM, i), f"{name}.")

    def enum(e: descriptor_pb2.EnumDescriptorProto, path: tuple[int, ...], scope: str) -> None:
        name = f"{scope}{e.name}"
        note(path, name)
        for i, v in enumerate(e.value):
            # Enum values are scoped like their enum's siblings in protobuf, but
            # keyed under the enum here so they cannot collide.
            note((*path, _ENUM_VALUE, i), f"{name}.{v.name}")

    for i, msg in enumerate(file.message_type):
        message(msg, (_FILE_MESSAGE, i), prefix)
    for i, e in enumerate(file.enum_type):
        enum(e, (_FILE_ENUM, i), prefix)
    for i, service in enumerate(file.service):
        service_name = f"{prefix}{service.name}"
        note((_FILE_SERVICE, i), service_name)
        for j, method in enumerate(service.method):
            note((_FILE_SERVICE, i, _SERVICE_METHOD, j), f"{service_name}.{method.name}")
    return names
