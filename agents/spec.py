"""Domain specs: one YAML file describes a reasoning domain; no code per domain.

    spec = load_spec(Path("agents/domains/fulfillment.yaml"))

A spec names the domain (its slug), what it does (description, skills), how
it thinks (system prompt, model settings, an optional sanitizer step), what it
may touch (tools with version ranges, `agent_<slug>` for delegation) and how far
it may go (caps and defaults, rate limits, required caller scopes, delegation
depth, approval timeout). One agent process serves one spec, chosen by
AGENTMESH_DOMAIN_SPEC. The JSON Schema of this format is published in
docs/domain-spec.md (`agentmesh agent spec-schema`).

Invalid specs raise `SpecError` naming the file and every bad field path, so a
typo fails the process at start with a message an operator can act on.
"""

from __future__ import annotations

import re
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Any

import yaml
from pydantic import (
    BeforeValidator,
    Field,
    PlainSerializer,
    ValidationError,
    WithJsonSchema,
    field_validator,
    model_validator,
)

from agentmesh.kit.file_models import FileModel
from agentmesh.kit.validation import DOMAIN_SLUG, TOOL_NAME

AGENT_TOOL_PREFIX = "agent_"
# A version range as GetTool accepts it: exact (`1.2.0`), `latest`, `^1.2`,
# `~1.2`, `1.x`, comparisons (`>=1.0 <2.0`). The registry resolves it; the spec
# only rejects what can never be a range.
_VERSION_ATOM = r"(?:[\^~]|[<>]=?|=)?\s*v?\d+(?:\.(?:\d+|[xX*]))?(?:\.(?:\d+|[xX*]))?(?:-[0-9A-Za-z.-]+)?"
VERSION_RANGE = re.compile(rf"^(?:latest|\*|{_VERSION_ATOM}(?:\s+{_VERSION_ATOM})*)$")
_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h)")
_SKILL_ID = re.compile(r"^[a-z][a-z0-9-]{0,62}$")
_SCOPE = re.compile(r"^[A-Za-z0-9_.:/-]{1,128}$")


class SpecError(ValueError):
    """A domain spec is unreadable or invalid; the message names the file and the fields."""


def agent_tool_name(slug: str) -> str:
    """The virtual tool of an agent: `agent_<slug with - as _>`."""
    return AGENT_TOOL_PREFIX + slug.replace("-", "_")


def _parse_duration(value: Any) -> Any:
    """`30s`, `1m30s`, `500ms`, `2h`, or a number of seconds."""
    if isinstance(value, timedelta):
        return value
    if isinstance(value, bool):
        raise ValueError("a duration is a number of seconds or a string like '30s', '2m', '500ms'")
    if isinstance(value, int | float):
        return timedelta(seconds=value)
    if isinstance(value, str):
        text = value.strip().replace(" ", "")
        if re.fullmatch(r"\d+(?:\.\d+)?", text):
            return timedelta(seconds=float(text))
        if text and _DURATION_PART.sub("", text) == "":
            total = 0.0
            for number, unit in _DURATION_PART.findall(text):
                total += float(number) * {"ms": 0.001, "s": 1, "m": 60, "h": 3600}[unit]
            return timedelta(seconds=total)
    raise ValueError(f"{value!r} is not a duration (use a number of seconds or e.g. '30s', '2m', '500ms')")


def _format_duration(value: timedelta) -> str:
    seconds = value.total_seconds()
    return f"{seconds:g}s"


Duration = Annotated[
    timedelta,
    BeforeValidator(_parse_duration),
    PlainSerializer(_format_duration, return_type=str),
    WithJsonSchema(
        {
            "anyOf": [
                {"type": "number", "minimum": 0},
                {"type": "string", "pattern": r"^(\d+(\.\d+)?(ms|s|m|h))+$|^\d+(\.\d+)?$"},
            ],
            "description": "Seconds, or a string like '30s', '1m30s', '500ms', '2h'.",
        }
    ),
]


class Skill(FileModel):
    """A capability the agent advertises on its card (A2A "skill")."""

    id: str = Field(description="Stable id, e.g. `issue-refund` (lower case, digits, hyphens).")
    name: str = Field(min_length=1, max_length=128, description="Short name.")
    description: str = Field(min_length=1, max_length=2048, description="What the agent does with it.")
    tags: tuple[str, ...] = Field(default=(), description="Discovery labels.")
    examples: tuple[str, ...] = Field(default=(), description="Example instructions.")

    @field_validator("id")
    @classmethod
    def _skill_id(cls, value: str) -> str:
        if not _SKILL_ID.fullmatch(value):
            raise ValueError(f"must match {_SKILL_ID.pattern}")
        return value


class ModelSettings(FileModel):
    """How the domain calls its language model. MODEL_NAME in the environment overrides `name`."""

    name: str | None = Field(default=None, description="Model name sent to the API; MODEL_NAME overrides it.")
    temperature: float = Field(default=0.0, ge=0.0, le=2.0, description="Sampling temperature.")
    max_tokens: int = Field(default=1024, ge=1, le=1_000_000, description="Completion tokens per call.")
    timeout: Duration = Field(default=timedelta(seconds=60), description="Per-call timeout.")
    max_retries: int = Field(
        default=3, ge=1, le=10, description="Attempts per call on 429/5xx/connection errors (1 = none)."
    )


_POINTER = re.compile(r"^/(arguments|result)(/([^/~]|~[01])*)*$")
_IN_DOUBT_POINTER = re.compile(r"^(/arguments(/([^/~]|~[01])*)*|/idempotency_key)$")


class InDoubtCompensation(FileModel):
    """The call that undoes a call whose outcome is unknown (it may or may not have happened)."""

    tool: str = Field(
        description=(
            "Tool name of a compensating tool that is safe to call whether or not the effect happened "
            "(`inventory_release_reserved`: nothing reserved under that key, nothing changes)."
        )
    )
    version: str = Field(default="latest", description="Version range of that tool.")
    arguments: dict[str, str] = Field(
        description=(
            "Its arguments: each value a JSON Pointer into "
            '`{"arguments": <the call\'s arguments>, "idempotency_key": <the key it was sent with>}` '
            "(there is no result to point into), e.g. `/idempotency_key`."
        )
    )

    @field_validator("tool")
    @classmethod
    def _tool_name(cls, value: str) -> str:
        return Compensation._tool_name(value)

    @field_validator("version")
    @classmethod
    def _version_range(cls, value: str) -> str:
        return Compensation._version_range(value)

    @field_validator("arguments")
    @classmethod
    def _pointers(cls, value: dict[str, str]) -> dict[str, str]:
        for name, pointer in value.items():
            if not _IN_DOUBT_POINTER.fullmatch(pointer):
                raise ValueError(
                    f"arguments.{name}: {pointer!r} is neither a JSON Pointer under /arguments "
                    "nor /idempotency_key"
                )
        return value


class Compensation(FileModel):
    """The tool that undoes a completed call of a side-effecting tool when its task ends FAILED."""

    tool: str = Field(description="Tool name of the compensating tool (`inventory_release`).")
    version: str = Field(
        default="latest", description="Version range of the compensating tool (as for `tools[].version`)."
    )
    arguments: dict[str, str] | None = Field(
        default=None,
        description=(
            "The compensating call's arguments: each value is a JSON Pointer into "
            '`{"arguments": <the completed call\'s arguments>, "result": <its answer>}`, e.g. '
            "`/result/reservation_id`. Omitted: the completed call's arguments, unchanged."
        ),
    )
    in_doubt: InDoubtCompensation | None = Field(
        default=None,
        description=(
            "How to undo a call whose outcome is unknown (the worker died after sending it, or a "
            "NON_IDEMPOTENT call failed ambiguously) when the task ends FAILED. Omitted: such a call "
            "is listed as in doubt and not compensated. See docs/compensation.md."
        ),
    )

    @field_validator("tool")
    @classmethod
    def _tool_name(cls, value: str) -> str:
        if not TOOL_NAME.fullmatch(value):
            raise ValueError(f"{value!r} is not a tool name (must match {TOOL_NAME.pattern})")
        if value.startswith(AGENT_TOOL_PREFIX):
            raise ValueError(f"{value!r}: an agent cannot be a compensating tool")
        return value

    @field_validator("version")
    @classmethod
    def _version_range(cls, value: str) -> str:
        if not VERSION_RANGE.fullmatch(value.strip()):
            raise ValueError(f"{value!r} is not a version range (e.g. latest, 1.2.0, ^1.0, ~1.2, >=1.0 <2.0)")
        return value.strip()

    @field_validator("arguments")
    @classmethod
    def _pointers(cls, value: dict[str, str] | None) -> dict[str, str] | None:
        for name, pointer in (value or {}).items():
            if not _POINTER.fullmatch(pointer):
                raise ValueError(
                    f"arguments.{name}: {pointer!r} is not a JSON Pointer under /arguments or /result"
                )
        return value


class ToolRef(FileModel):
    """A tool the domain may call: its name and the accepted versions."""

    name: str = Field(description="Tool name (`inventory_reserve`), or `agent_<slug>` to delegate.")
    version: str = Field(
        default="latest", description="Version range: `latest`, `1.2.0`, `^1.0`, `~1.2`, `>=1.0 <2.0`, `1.x`."
    )
    compensation: Compensation | None = Field(
        default=None,
        description=(
            "For a side-effecting tool: the tool the runtime calls to undo a completed call of it when "
            "the task ends FAILED (budget exhausted, dead-lettered, policy). See docs/compensation.md."
        ),
    )

    @field_validator("name")
    @classmethod
    def _tool_name(cls, value: str) -> str:
        if not TOOL_NAME.fullmatch(value):
            raise ValueError(f"{value!r} is not a tool name (must match {TOOL_NAME.pattern})")
        return value

    @field_validator("version")
    @classmethod
    def _version_range(cls, value: str) -> str:
        if not VERSION_RANGE.fullmatch(value.strip()):
            raise ValueError(f"{value!r} is not a version range (e.g. latest, 1.2.0, ^1.0, ~1.2, >=1.0 <2.0)")
        return value.strip()

    @property
    def is_agent(self) -> bool:
        return self.name.startswith(AGENT_TOOL_PREFIX)


class LimitSet(FileModel):
    """Budgets of one task. As `caps`: the most a request may ask for; as `defaults`: what it gets."""

    max_iterations: int = Field(default=12, ge=1, le=1000, description="Model turns.")
    token_cap: int = Field(default=16384, ge=1, le=100_000_000, description="Prompt + completion tokens.")
    max_tool_calls: int = Field(default=24, ge=1, le=10_000, description="Tool calls (retries included).")
    deadline: Duration = Field(default=timedelta(seconds=120), description="Wall-clock time per task.")
    max_cost_usd: float = Field(
        default=1.0, ge=0.0, le=100_000, description="Model cost in USD (0 = no cap)."
    )

    @field_validator("deadline")
    @classmethod
    def _positive_deadline(cls, value: timedelta) -> timedelta:
        if value.total_seconds() <= 0:
            raise ValueError("must be positive")
        return value


class RateLimit(FileModel):
    """A token bucket: sustained calls per second and burst size."""

    requests_per_second: float = Field(gt=0, description="Sustained Run calls per second.")
    burst: int = Field(default=0, ge=0, description="Bucket size; 0 = max(1, ceil(requests_per_second)).")


class RateLimits(FileModel):
    """Run admission limits; all that are set apply and the most restrictive wins."""

    tenant: RateLimit | None = Field(default=None, description="Per tenant.")
    user: RateLimit | None = Field(default=None, description="Per (tenant, user).")
    domain: RateLimit | None = Field(default=None, description="For the whole domain.")


class Sanitizer(FileModel):
    """A tool-less model call that turns untrusted input into structured intent.

    The acting loop then sees only the sanitizer's JSON output, never the raw
    text (the dual-agent pattern against prompt injection).
    """

    prompt: str = Field(min_length=1, description="System prompt of the sanitizer call.")
    output_schema: dict[str, Any] = Field(description="JSON Schema (2020-12) the output must satisfy.")
    max_tokens: int = Field(default=512, ge=1, le=100_000, description="Completion tokens of the call.")

    @field_validator("output_schema")
    @classmethod
    def _valid_schema(cls, value: dict[str, Any]) -> dict[str, Any]:
        from jsonschema import Draft202012Validator, SchemaError

        try:
            Draft202012Validator.check_schema(value)
        except SchemaError as exc:
            raise ValueError(f"not a valid JSON Schema: {exc.message}") from None
        if value.get("type") != "object":
            raise ValueError("must describe a JSON object (type: object)")
        return value


class DomainSpec(FileModel):
    """One reasoning domain of the mesh."""

    slug: str = Field(description="Domain slug, DNS-safe: ^[a-z][a-z0-9-]{0,30}$ (e.g. `refunds`).")
    display_name: str = Field(min_length=1, max_length=128, description="Human-friendly name.")
    description: str = Field(
        min_length=1, max_length=4096, description="What the agent does; also its virtual tool's description."
    )
    skills: tuple[Skill, ...] = Field(default=(), description="Advertised skills.")
    system_prompt: str = Field(
        min_length=1, max_length=65536, description="System prompt of the acting loop."
    )
    model: ModelSettings = Field(default_factory=ModelSettings, description="Model settings.")
    tools: tuple[ToolRef, ...] = Field(default=(), description="Tools the model may call (and nothing else).")
    caps: LimitSet = Field(
        default_factory=LimitSet, description="Hard caps; requests above them are refused."
    )
    defaults: LimitSet | None = Field(
        default=None, description="Limits when a request sets none; each at most its cap. Default: the caps."
    )
    rate_limits: RateLimits = Field(default_factory=RateLimits, description="Admission rate limits.")
    required_scopes: tuple[str, ...] = Field(default=(), description="Scopes a caller must hold.")
    max_delegation_depth: int = Field(
        default=2, ge=0, le=16, description="How deep a chain of agents calling agents may reach this one."
    )
    approval_timeout: Duration = Field(
        default=timedelta(hours=24), description="How long an approval request waits before it expires."
    )
    allow_self_approval: bool = Field(
        default=False,
        description="Whether a task's owner who holds `<slug>:approve` may approve their own task's "
        "pending calls. Default: approvals come from someone else.",
    )
    max_observation_bytes: int = Field(
        default=4096, ge=256, le=1_048_576, description="Largest tool observation shown to the model."
    )
    sanitizer: Sanitizer | None = Field(default=None, description="Optional sanitizer step.")

    @field_validator("slug")
    @classmethod
    def _slug(cls, value: str) -> str:
        if not DOMAIN_SLUG.fullmatch(value):
            raise ValueError(f"{value!r} is not a domain slug (must match {DOMAIN_SLUG.pattern})")
        return value

    @field_validator("required_scopes")
    @classmethod
    def _scopes(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for scope in value:
            if not _SCOPE.fullmatch(scope):
                raise ValueError(f"{scope!r} is not a scope (must match {_SCOPE.pattern})")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> DomainSpec:
        problems: list[str] = []
        seen: set[str] = set()
        for index, tool in enumerate(self.tools):
            if tool.name in seen:
                problems.append(f"tools[{index}].name: {tool.name!r} is listed twice")
            seen.add(tool.name)
            if tool.name == agent_tool_name(self.slug):
                problems.append(f"tools[{index}].name: a domain cannot delegate to itself")
            if tool.compensation is not None:
                if tool.is_agent:
                    problems.append(f"tools[{index}].compensation: a delegation cannot be compensated")
                if tool.compensation.tool == tool.name:
                    problems.append(f"tools[{index}].compensation.tool: a tool cannot compensate itself")
        skill_ids = [skill.id for skill in self.skills]
        for skill_id in {s for s in skill_ids if skill_ids.count(s) > 1}:
            problems.append(f"skills: id {skill_id!r} is used twice")
        if self.defaults is not None:
            for field, value in self.defaults:
                cap = getattr(self.caps, field)
                if field == "max_cost_usd" and self.caps.max_cost_usd == 0:
                    continue
                if value > cap:
                    problems.append(f"defaults.{field}: {_show(value)} is above caps.{field} ({_show(cap)})")
        if problems:
            raise ValueError("; ".join(problems))
        return self

    @property
    def default_limits(self) -> LimitSet:
        return self.defaults if self.defaults is not None else self.caps

    @property
    def tool_names(self) -> tuple[str, ...]:
        return tuple(tool.name for tool in self.tools)

    @property
    def agent_tool(self) -> str:
        return agent_tool_name(self.slug)


def _show(value: object) -> str:
    return _format_duration(value) if isinstance(value, timedelta) else str(value)


def parse_spec(data: Any, source: str = "<spec>") -> DomainSpec:
    """Validate already-loaded YAML/JSON data; SpecError names `source` and each bad field."""
    if not isinstance(data, dict):
        raise SpecError(f"{source}: a domain spec must be a mapping, got {type(data).__name__}")
    try:
        return DomainSpec.model_validate(data)
    except ValidationError as exc:
        raise SpecError(describe_errors(exc, source)) from None


def load_spec(path: Path | str) -> DomainSpec:
    """Read and validate a spec file (YAML, which includes JSON)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise SpecError(f"{path}: cannot read domain spec ({exc.strerror or exc})") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        where = ""
        mark = getattr(exc, "problem_mark", None)
        if mark is not None:
            where = f" at line {mark.line + 1}, column {mark.column + 1}"
        problem = getattr(exc, "problem", None) or str(exc)
        raise SpecError(f"{path}: not valid YAML{where}: {problem}") from None
    return parse_spec(data, str(path))


def describe_errors(exc: ValidationError, source: str) -> str:
    lines = [f"{source}: invalid domain spec:"]
    for error in exc.errors():
        where = ".".join(str(part) for part in error["loc"]) or "(top level)"
        message = error["msg"].removeprefix("Value error, ")
        if error["type"] == "extra_forbidden":
            message = "unknown field (check the spelling; see docs/domain-spec.md)"
        lines.append(f"  {where}: {message}")
    return "\n".join(lines)


def spec_json_schema() -> dict[str, Any]:
    """The JSON Schema (2020-12) of the domain spec format."""
    schema = DomainSpec.model_json_schema(mode="validation")
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "agentmesh domain spec"
    return schema


def reference_markdown() -> str:
    """docs/domain-spec.md: the format, by example and by schema (generated)."""
    import json

    example = (Path(__file__).parent / "domains" / "fulfillment.yaml").read_text(encoding="utf-8")
    return "\n".join(
        [
            "# Domain spec reference",
            "",
            "Generated from `agents/spec.py` by `agentmesh agent spec-schema`; do not edit by hand.",
            "",
            "A domain spec is a YAML file describing one reasoning domain: its slug, what it does, its",
            "system prompt and model settings, the tools it may call (with version ranges; `agent_<slug>`",
            "delegates to another agent), its caps and default limits, rate limits, required caller",
            "scopes, delegation depth, approval timeout and an optional sanitizer step. An agent process",
            "serves the spec named by `AGENTMESH_DOMAIN_SPEC`; a new domain needs no code.",
            "",
            "Durations are seconds or strings like `30s`, `2m`, `500ms`, `1h`. Check a file with",
            "`agentmesh agent validate FILE`.",
            "",
            "## Example (`agents/domains/fulfillment.yaml`)",
            "",
            "```yaml",
            example.rstrip("\n"),
            "```",
            "",
            "## JSON Schema",
            "",
            "```json",
            json.dumps(spec_json_schema(), indent=2, sort_keys=True),
            "```",
            "",
        ]
    )
