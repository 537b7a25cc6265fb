"""What a tool version *is*: its content, canonical form and digest (pure).

A version is immutable in its content: schema (the descriptor set) plus
policies (description, method, side effect, approval, scopes, timeout, retry,
rate limit, tags). The endpoint, deprecation and timestamps are runtime data
and not content.

`content_digest` is SHA-256 over a deterministic serialization of a canonical
form, so the same tool registered from a file, through reflection or by the
SDK digests the same when nothing meaningful differs:

- files sorted by name; `json_name` cleared where it equals protoc's default
  (reflection servers often omit it, protoc always fills it);
- comments count (they become the descriptions the model reads), but only
  the comment text: source spans (line/column) are dropped, so reformatting a
  file does not make a new version;
- scopes and tags are sets: sorted, duplicates removed.
"""

from __future__ import annotations

import functools
import hashlib

from google.protobuf import descriptor_pb2

from agentmesh.v1 import tool_pb2

# Fields of ToolSpec that are content; everything else is runtime data or output.
POLICY_FIELDS = (
    "description",
    "method",
    "side_effect",
    "requires_approval",
    "required_scopes",
    "timeout",
    "retry",
    "rate_limit",
    "tags",
)


def _default_json_name(name: str) -> str:
    # protoc's ToJsonName: drop underscores, capitalise the letter after each.
    out = []
    upper = False
    for char in name:
        if char == "_":
            upper = True
        elif upper:
            out.append(char.upper())
            upper = False
        else:
            out.append(char)
    return "".join(out)


def _canonical_message(message: descriptor_pb2.DescriptorProto) -> None:
    for field in message.field:
        if field.HasField("json_name") and field.json_name == _default_json_name(field.name):
            field.ClearField("json_name")
    for nested in message.nested_type:
        _canonical_message(nested)


def _text(value: str | bytes) -> str:
    """descriptor.proto strings are proto2 (not checked as UTF-8): a crafted set can hold raw bytes."""
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else value


def canonical_schema(fds: descriptor_pb2.FileDescriptorSet) -> descriptor_pb2.FileDescriptorSet:
    """A copy of `fds` in canonical form (see module doc)."""
    files = []
    for original in sorted(fds.file, key=lambda f: f.name):
        file = descriptor_pb2.FileDescriptorProto()
        file.CopyFrom(original)
        for message in file.message_type:
            _canonical_message(message)
        for extension in file.extension:
            if extension.HasField("json_name") and extension.json_name == _default_json_name(extension.name):
                extension.ClearField("json_name")
        if file.HasField("source_code_info"):
            kept = [
                descriptor_pb2.SourceCodeInfo.Location(
                    path=location.path,
                    leading_comments=_text(location.leading_comments).strip(),
                    trailing_comments=_text(location.trailing_comments).strip(),
                    leading_detached_comments=[_text(c).strip() for c in location.leading_detached_comments],
                )
                for location in original.source_code_info.location
                if location.leading_comments.strip()
                or location.trailing_comments.strip()
                or any(c.strip() for c in location.leading_detached_comments)
            ]
            file.ClearField("source_code_info")
            if kept:
                file.source_code_info.location.extend(sorted(kept, key=lambda loc: tuple(loc.path)))
        files.append(file)
    return descriptor_pb2.FileDescriptorSet(file=files)


def canonical_schema_bytes(fds: descriptor_pb2.FileDescriptorSet) -> bytes:
    """`canonical_schema(fds)` serialized (deterministic), remembered for the last few sets: a
    deployment registers many tools from one descriptor set, and canonicalizing it was most of
    a RegisterTool's CPU. Keyed by the set's own deterministic bytes, so equal input, equal key."""
    known = _by_identity.get(id(fds))
    if known is not None and known[0] is fds:  # the same loaded set (load_tool_schema remembers it)
        return known[1]
    canonical = _canonical_bytes(fds.SerializeToString(deterministic=True))
    if len(_by_identity) >= 16:
        _by_identity.pop(next(iter(_by_identity)))
    _by_identity[id(fds)] = (fds, canonical)  # holds `fds`, so its id is not reused meanwhile
    return canonical


_by_identity: dict[int, tuple[descriptor_pb2.FileDescriptorSet, bytes]] = {}


@functools.lru_cache(maxsize=16)
def _canonical_bytes(raw: bytes) -> bytes:
    fds = descriptor_pb2.FileDescriptorSet.FromString(raw)
    return canonical_schema(fds).SerializeToString(deterministic=True)


def schema_digest(fds: descriptor_pb2.FileDescriptorSet) -> str:
    return hashlib.sha256(canonical_schema_bytes(fds)).hexdigest()


def canonical_policies(spec: tool_pb2.ToolSpec) -> tool_pb2.ToolSpec:
    """Only the policy fields of `spec`, scopes and tags as sorted sets."""
    policies = tool_pb2.ToolSpec()
    for name in POLICY_FIELDS:
        if name in ("required_scopes", "tags"):
            getattr(policies, name).extend(sorted(set(getattr(spec, name))))
        elif name in ("timeout", "retry", "rate_limit"):
            if spec.HasField(name) and getattr(spec, name).ByteSize():  # type: ignore[arg-type]
                getattr(policies, name).CopyFrom(getattr(spec, name))
        else:
            setattr(policies, name, getattr(spec, name))
    return policies


def content_digest(spec: tool_pb2.ToolSpec, fds: descriptor_pb2.FileDescriptorSet) -> str:
    """SHA-256 (hex) of name, version, canonical schema and canonical policies."""
    digest = hashlib.sha256()
    for part in (
        spec.name.encode(),
        spec.version.encode(),
        canonical_schema_bytes(fds),
        canonical_policies(spec).SerializeToString(deterministic=True),
    ):
        digest.update(len(part).to_bytes(8, "big"))
        digest.update(part)
    return digest.hexdigest()


def differences(
    existing: tool_pb2.ToolSpec,
    existing_fds: descriptor_pb2.FileDescriptorSet,
    candidate: tool_pb2.ToolSpec,
    candidate_fds: descriptor_pb2.FileDescriptorSet,
) -> list[str]:
    """Names of the content parts that differ (`schema`, `description`, `timeout`...)."""
    found = []
    if schema_digest(existing_fds) != schema_digest(candidate_fds):
        found.append("schema")
    old, new = canonical_policies(existing), canonical_policies(candidate)
    for name in POLICY_FIELDS:
        if getattr(old, name) != getattr(new, name):
            found.append(name)
    return found
