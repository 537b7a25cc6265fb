"""Turn a RegisterTool / CheckCompatibility request into a checked candidate (pure).

Name, version and policies default to the method's `agentmesh.v1.tool`
option; a field set in the request overrides it (repeated fields replace the
option's list when non-empty; messages replace it when set). Everything is
checked here and reported in one INVALID_ARGUMENT: the descriptor set, the
method (exists, unary), the tool name (pattern, `agent_` reserved), the
version (strict semver), the policies (retry attempts <= 10, non-negative
durations, multiplier >= 1, rate >= 0, tag and scope patterns) and the
endpoint.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from google.protobuf import duration_pb2

from agentmesh.kit.errors import InvalidArgument
from agentmesh.kit.validation import Violations
from agentmesh.v1 import errors_pb2, tool_options_pb2, tool_pb2
from tool_registry import names, semver
from tool_registry.content import content_digest
from tool_registry.descriptors import ToolSchema, load_tool_schema

MAX_RETRY_ATTEMPTS = 10
MAX_DESCRIPTION_BYTES = 16 * 1024
MAX_LIST_ITEMS = 32
MAX_TIMEOUT_S = 24 * 3600
# ToolSpec fields a request may set (everything else is output only).
_SCALAR_OVERRIDES = ("name", "version", "description", "side_effect", "requires_approval")
_MESSAGE_OVERRIDES = ("timeout", "retry", "rate_limit")
_LIST_OVERRIDES = ("required_scopes", "tags")


@dataclass
class Candidate:
    """A tool version ready to store: spec (without descriptor set), schema and remarks."""

    spec: tool_pb2.ToolSpec
    schema: ToolSchema
    schema_bytes: bytes
    warnings: list[str] = field(default_factory=list)


def _duration_s(value: duration_pb2.Duration) -> float:
    return value.seconds + value.nanos / 1e9


def _check_duration(violations: Violations, value: duration_pb2.Duration, path: str) -> None:
    if value.seconds < 0 or value.nanos < 0:
        violations.add(path, f"is {_duration_s(value)} s; durations must not be negative", "OUT_OF_RANGE")
    elif _duration_s(value) > MAX_TIMEOUT_S:
        violations.add(path, f"is {_duration_s(value)} s; at most {MAX_TIMEOUT_S} s allowed", "OUT_OF_RANGE")


def prepare(tool: tool_pb2.ToolSpec, *, field_prefix: str = "tool") -> Candidate:
    """Check `tool` and build the spec to store; InvalidArgument naming every problem."""
    violations = Violations()
    violations.required(tool.file_descriptor_set, f"{field_prefix}.file_descriptor_set")
    violations.required(tool.method, f"{field_prefix}.method")
    violations.raise_if_any("invalid tool")
    schema = load_tool_schema(tool.file_descriptor_set, tool.method)  # INVALID_ARGUMENT (INVALID_SCHEMA)

    spec = tool_pb2.ToolSpec()
    option = schema.options() or tool_options_pb2.ToolOptions()
    for name in _SCALAR_OVERRIDES:
        setattr(spec, name, getattr(option, name))
    for name in _MESSAGE_OVERRIDES:
        if option.HasField(name):  # type: ignore[arg-type]
            getattr(spec, name).CopyFrom(getattr(option, name))
    for name in _LIST_OVERRIDES:
        getattr(spec, name).extend(getattr(option, name))
    # Request fields override the option.
    for name in _SCALAR_OVERRIDES:
        value = getattr(tool, name)
        if value:
            setattr(spec, name, value)
    for name in _MESSAGE_OVERRIDES:
        if tool.HasField(name):  # type: ignore[arg-type]
            getattr(spec, name).CopyFrom(getattr(tool, name))
    for name in _LIST_OVERRIDES:
        if getattr(tool, name):
            spec.ClearField(name)  # type: ignore[arg-type]
            getattr(spec, name).extend(getattr(tool, name))
    warnings: list[str] = []
    if not spec.description:
        spec.description = schema.description()
    if not spec.description:
        warnings.append(
            f"no description: add a comment to {schema.method_name} or set the option's description"
        )
    if schema.options() is None:
        warnings.append(
            f"{schema.method_name} carries no `agentmesh.v1.tool` option; name, version and policies "
            "came from the request only"
        )
    if spec.side_effect == tool_options_pb2.SIDE_EFFECT_UNSPECIFIED:
        warnings.append("side_effect is unspecified: the runtime treats the tool as NON_IDEMPOTENT")

    spec.method = schema.method_name
    spec.endpoint = tool.endpoint.strip()
    spec.kind = tool_pb2.TOOL_KIND_GRPC
    spec.input_type = schema.input_type.full_name
    spec.output_type = schema.output_type.full_name

    where = f"{field_prefix}."
    option_hint = " (set it in the method's agentmesh.v1.tool option or in the request)"
    if not spec.name:
        violations.add(f"{where}name", "is required" + option_hint, "REQUIRED")
    elif violations.matches(spec.name, names.TOOL_NAME, f"{where}name", "tool name") and names.is_agent_tool(
        spec.name
    ):
        violations.add(
            f"{where}name",
            f"{spec.name!r}: the prefix `agent_` is reserved for agents in the directory (RegisterAgent)",
            "RESERVED",
        )
    if not spec.version:
        violations.add(f"{where}version", "is required" + option_hint, "REQUIRED")
    else:
        try:
            spec.version = str(semver.parse_version(spec.version))
        except semver.VersionError as exc:
            violations.add(f"{where}version", str(exc), "PATTERN")
    violations.max_length(spec.description, MAX_DESCRIPTION_BYTES, f"{where}description")
    if spec.endpoint:
        violations.matches(spec.endpoint, names.ENDPOINT, f"{where}endpoint", "gRPC target")
    if spec.side_effect not in tool_options_pb2.SideEffect.values():
        violations.add(f"{where}side_effect", f"{spec.side_effect} is not a SideEffect", "UNKNOWN_ENUM")
    violations.max_items(spec.required_scopes, MAX_LIST_ITEMS, f"{where}required_scopes")
    for index, scope in enumerate(spec.required_scopes):
        violations.matches(scope, names.SCOPE, f"{where}required_scopes[{index}]", "scope")
    violations.max_items(spec.tags, MAX_LIST_ITEMS, f"{where}tags")
    for index, tag in enumerate(spec.tags):
        violations.matches(tag, names.TAG, f"{where}tags[{index}]", "tag")
    if spec.HasField("timeout"):
        _check_duration(violations, spec.timeout, f"{where}timeout")
    if spec.HasField("retry"):
        retry = spec.retry
        violations.in_range(retry.max_attempts, f"{where}retry.max_attempts", low=0, high=MAX_RETRY_ATTEMPTS)
        _check_duration(violations, retry.initial_backoff, f"{where}retry.initial_backoff")
        _check_duration(violations, retry.max_backoff, f"{where}retry.max_backoff")
        if retry.backoff_multiplier != 0 and not retry.backoff_multiplier >= 1:
            violations.add(
                f"{where}retry.backoff_multiplier",
                f"is {retry.backoff_multiplier}; must be 0 (default) or at least 1",
                "OUT_OF_RANGE",
            )
    if spec.HasField("rate_limit"):
        limit = spec.rate_limit
        if not limit.requests_per_second >= 0 or limit.requests_per_second == float("inf"):
            violations.add(
                f"{where}rate_limit.requests_per_second",
                f"is {limit.requests_per_second}; must be a finite number >= 0",
                "OUT_OF_RANGE",
            )
        violations.in_range(limit.burst, f"{where}rate_limit.burst", low=0)
    if violations:
        raise InvalidArgument(
            f"invalid tool: {', '.join(v.field for v in list(violations)[:5])}",
            reason=errors_pb2.ERROR_REASON_INVALID_SCHEMA,
            violations=list(violations),
        )
    spec.content_digest = content_digest(spec, schema.file_set)
    return Candidate(spec=spec, schema=schema, schema_bytes=tool.file_descriptor_set, warnings=warnings)
