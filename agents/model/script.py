"""Scripts for the scripted model server: rules matched on the conversation (pure).

A script is YAML:

    name: fulfillment                 # shown as the model `scripted:fulfillment`
    usage: {prompt_tokens: 120, completion_tokens: 30}   # optional; default: estimated
    rules:                            # first rule whose `when` holds answers
      - name: check-stock
        when:
          last_user: '(?P<order>ORD-\\d+)'      # regex searched in the last user message
          not_called: [inventory_check]         # no result of this tool yet
        then:
          tool_calls:
            - name: inventory_check
              arguments: {sku: "{{ match.sku }}", quantity: "{{ match.qty | int }}"}
      - when: {called: [email_send]}
        then: {answer: "Shipped {{ match.order }}: {{ result.shipping_create_shipment.tracking_number }}"}
    default: {answer: "I cannot help with that."}

Conditions (all must hold): `last_user`, `any_user`, `system` (regexes; named
groups of `last_user` and `any_user` become `match.*`), `called` /
`not_called` (tool names with / without a result in the conversation),
`last_result` (`tool`, `status` regex on the observation status such as `OK`
or `INVALID_ARGUMENT`, `contains` regex on the raw observation), `step`
(assistant turns so far: a number or `{min, max}`), `header` (request header →
regex), `model` (regex on the requested model name), `tools_offered` (the
request offers all of these tools), `structured` (the request asks for a JSON
answer, as the sanitizer step does).

Actions: `tool_calls` (each `name` + `arguments` templated, or `raw_arguments`
sent verbatim, e.g. invalid JSON), `answer` (text, templated), `answer_json`
(an object, templated and serialized), `empty` (an empty choice), `status`
(+ `retry_after`) to answer with an HTTP error, `delay` seconds before
answering, `usage` overriding token counts; `times` limits how often a rule
fires (the server counts). With an `answer`: `reply` says how it is meant
(`task`, the default: the task's final answer; `message`: a direct message
reply; `input_required`: a question, the task waits for the caller's input;
`reject`: the task is refused). With an answer or tool calls, `artifacts`
delivers outputs: each an optional `id` (default `artifact-<n>`), `name`,
`description` and one of `text`, `file` (`name`, `media_type`, content as
`text` or `base64`), `url` (`uri`, `name`, `media_type`), `data` (an object)
or `chunks` (texts streamed as appended updates of one artifact, the last
marked `last_chunk`). They travel on the assistant message's `agentmesh`
extension (agents.model.wire).

Templates: `{{ path | filter }}` with paths `match.<group>`,
`result.<tool>.<field>...` (the latest successful observation's `result`),
`last_result.<field>`, `header.<name>`, `step`; filters `int`, `float`,
`cents` (a decimal amount to integer cents), `json`, `upper`, `lower`. A
string that is exactly one template keeps the value's type.

`include: [other.yaml, {path: b.yaml, when: {...}}]` appends the rules of
other scripts (paths relative to the including file), optionally under extra
conditions, so one server can follow several domains' scripts.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from google.protobuf import json_format
from pydantic import Field, ValidationError, field_validator, model_validator

from agentmesh.kit.file_models import FileModel
from agentmesh.v1 import task_pb2
from agents.model.types import ChatMessage, ChatRole, Reply
from agents.model.wire import EXTENSION, SCRIPTED_FINGERPRINT, SCRIPTED_PREFIX, extension
from memory.context import estimate_tokens

_TEMPLATE = re.compile(r"\{\{\s*([^{}|]+?)\s*(?:\|\s*([a-z]+)\s*)?\}\}")


class ScriptError(ValueError):
    """A script file is unreadable or invalid; the message names the file and field."""


def _compile(value: str | None) -> str | None:
    if value is not None:
        try:
            re.compile(value)
        except re.error as exc:
            raise ValueError(f"{value!r} is not a valid regex: {exc}") from None
    return value


class StepRange(FileModel):
    min: int = 0
    max: int | None = None


class LastResult(FileModel):
    tool: str | None = None
    status: str | None = None
    contains: str | None = None

    _check = field_validator("status", "contains")(_compile)


class When(FileModel):
    last_user: str | None = None
    any_user: str | None = None
    system: str | None = None
    called: tuple[str, ...] = ()
    not_called: tuple[str, ...] = ()
    last_result: LastResult | None = None
    step: int | StepRange | None = None
    header: dict[str, str] = Field(default_factory=dict)
    model: str | None = None
    tools_offered: tuple[str, ...] = ()
    structured: bool | None = None

    _check = field_validator("last_user", "any_user", "system", "model")(_compile)

    @field_validator("header")
    @classmethod
    def _headers(cls, value: dict[str, str]) -> dict[str, str]:
        for pattern in value.values():
            _compile(pattern)
        return {name.lower(): pattern for name, pattern in value.items()}


class ScriptedCall(FileModel):
    name: str
    arguments: dict[str, Any] = Field(default_factory=dict)
    raw_arguments: str | None = None


class Usage(FileModel):
    prompt_tokens: int = Field(ge=0)
    completion_tokens: int = Field(ge=0)


class ScriptedFile(FileModel):
    """A file artifact: its bytes given as text (UTF-8) or as base64."""

    name: str = ""
    media_type: str = "application/octet-stream"
    text: str | None = None
    base64: str | None = None

    @model_validator(mode="after")
    def _one_content(self) -> ScriptedFile:
        if (self.text is None) == (self.base64 is None):
            raise ValueError("a file gives exactly one of: text, base64")
        if self.base64 is not None:
            try:
                base64.b64decode(self.base64, validate=True)
            except binascii.Error as exc:
                raise ValueError(f"base64 is not valid: {exc}") from None
        return self


class ScriptedUrl(FileModel):
    uri: str = Field(min_length=1)
    name: str = ""
    media_type: str = ""


class ScriptedArtifact(FileModel):
    """One output of the turn; `chunks` streams a text artifact as several appended updates."""

    id: str = Field(default="", pattern=r"^[A-Za-z0-9_.:-]{0,64}$")
    name: str = ""
    description: str = ""
    text: str | None = None
    file: ScriptedFile | None = None
    url: ScriptedUrl | None = None
    data: dict[str, Any] | None = None
    chunks: tuple[str, ...] = ()

    @model_validator(mode="after")
    def _one_kind(self) -> ScriptedArtifact:
        given = [self.text is not None, self.file, self.url, self.data is not None, bool(self.chunks)]
        if sum(bool(g) for g in given) != 1:
            raise ValueError("an artifact gives exactly one of: text, file, url, data, chunks")
        return self


class Then(FileModel):
    tool_calls: tuple[ScriptedCall, ...] = ()
    answer: str | None = None
    answer_json: dict[str, Any] | None = None
    # How the answer is meant: the task's final answer, a direct message reply, a question
    # (the task waits in input-required), or a refusal (the task is rejected).
    reply: Reply = "task"
    artifacts: tuple[ScriptedArtifact, ...] = ()
    empty: bool = False
    status: int | None = Field(default=None, ge=400, le=599)
    retry_after: float | None = Field(default=None, ge=0)
    delay: float = Field(default=0.0, ge=0, le=600)
    usage: Usage | None = None

    @model_validator(mode="after")
    def _one_kind(self) -> Then:
        kinds = [
            bool(self.tool_calls or self.answer is not None or self.answer_json is not None),
            self.empty,
            self.status is not None,
        ]
        if sum(kinds) != 1:
            raise ValueError("give exactly one of: tool_calls and/or answer/answer_json, empty, status")
        if self.answer is not None and self.answer_json is not None:
            raise ValueError("give answer or answer_json, not both")
        if self.reply != "task" and (self.answer is None or self.tool_calls):
            raise ValueError(f"reply {self.reply} needs an answer (its text) and no tool calls")
        if self.artifacts and not (
            self.answer is not None or self.answer_json is not None or self.tool_calls
        ):
            raise ValueError("artifacts come with an answer or tool calls")
        return self


class Rule(FileModel):
    name: str = ""
    when: When = Field(default_factory=When)
    then: Then
    times: int | None = Field(default=None, ge=1)


class Script(FileModel):
    name: str = Field(pattern=r"^[A-Za-z0-9_.-]{1,64}$")
    description: str = ""
    usage: Usage | None = None
    rules: tuple[Rule, ...] = ()
    default: Then = Field(default_factory=lambda: Then(answer="(scripted model: no rule matched)"))

    @property
    def model_id(self) -> str:
        return f"{SCRIPTED_PREFIX}{self.name}"


def _included(item: Any, path: Path) -> tuple[Path, dict[str, Any]]:
    if isinstance(item, str):
        return path.parent / item, {}
    if (
        isinstance(item, dict)
        and isinstance(item.get("path"), str)
        and isinstance(item.get("when", {}), dict)
    ):
        return path.parent / item["path"], dict(item.get("when", {}))
    raise ScriptError(f"{path}: include entries are paths or {{path: ..., when: {{...}}}} mappings")


def _with_condition(rule: Any, extra: dict[str, Any]) -> Any:
    """An included rule under the include's extra `when` (headers merged, the rule's own keys win)."""
    if not extra or not isinstance(rule, dict):
        return rule
    own = dict(rule.get("when") or {})
    merged = {**extra, **own}
    if isinstance(extra.get("header"), dict) or isinstance(own.get("header"), dict):
        merged["header"] = {**dict(extra.get("header") or {}), **dict(own.get("header") or {})}
    return {**rule, "when": merged}


def _read(path: Path, seen: tuple[Path, ...]) -> dict[str, Any]:
    if path.resolve() in seen:
        raise ScriptError(f"{path}: included in a loop ({' -> '.join(str(p) for p in seen)})")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ScriptError(f"{path}: cannot read model script ({exc.strerror or exc})") from None
    except yaml.YAMLError as exc:
        raise ScriptError(f"{path}: not valid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise ScriptError(f"{path}: a model script must be a mapping")
    includes = data.pop("include", [])
    if not isinstance(includes, list):
        raise ScriptError(f"{path}: include must be a list (paths relative to this file)")
    rules = list(data.get("rules") or [])
    for item in includes:
        # Included scripts' rules come after this file's own, in the order listed.
        included, extra = _included(item, path)
        rules += [
            _with_condition(r, extra) for r in _read(included, (*seen, path.resolve())).get("rules") or []
        ]
    data["rules"] = rules
    return data


def load_script(path: Path | str) -> Script:
    """Read a script; `include: [other.yaml, ...]` appends the rules of other scripts."""
    path = Path(path)
    data = _read(path, ())
    data.setdefault("name", path.stem)
    try:
        return Script.model_validate(data)
    except ValidationError as exc:
        lines = [f"{path}: invalid model script:"]
        for error in exc.errors():
            where = ".".join(str(p) for p in error["loc"]) or "(top level)"
            lines.append(f"  {where}: {error['msg'].removeprefix('Value error, ')}")
        raise ScriptError("\n".join(lines)) from None


# --- the conversation as the script sees it ----------------------------------


@dataclass(frozen=True, slots=True)
class Observation:
    """One tool result in the conversation, decoded from the runner's observation format."""

    tool: str
    status: str
    raw: str
    result: Any


@dataclass
class Conversation:
    messages: Sequence[ChatMessage]
    tools_offered: frozenset[str] = frozenset()
    headers: Mapping[str, str] = field(default_factory=dict)
    model: str = ""
    structured: bool = False

    def __post_init__(self) -> None:
        names: dict[str, str] = {}
        self.observations: list[Observation] = []
        for message in self.messages:
            for call in message.tool_calls:
                names[call.call_id] = call.name
            if message.role is ChatRole.TOOL:
                tool = names.get(message.tool_call_id, message.name)
                self.observations.append(_observation(tool, message.content))
        self.step = sum(1 for m in self.messages if m.role is ChatRole.ASSISTANT)
        users = [m.content for m in self.messages if m.role is ChatRole.USER]
        self.last_user = users[-1] if users else ""
        self.users = users
        self.system = "\n".join(m.content for m in self.messages if m.role is ChatRole.SYSTEM)

    def called(self, tool: str) -> bool:
        return any(obs.tool == tool for obs in self.observations)

    def latest_result(self, tool: str) -> Any:
        for obs in reversed(self.observations):
            if obs.tool == tool and obs.status == "OK":
                return obs.result
        return None


def _observation(tool: str, content: str) -> Observation:
    try:
        decoded = json.loads(content)
    except json.JSONDecodeError:
        return Observation(tool, "OK", content, content)
    if isinstance(decoded, dict) and isinstance(decoded.get("status"), str):
        return Observation(tool, decoded["status"], content, decoded.get("result", decoded))
    return Observation(tool, "OK", content, decoded)


# --- matching -----------------------------------------------------------------


def _matches(when: When, convo: Conversation, groups: dict[str, Any]) -> bool:
    for pattern, text in ((when.last_user, convo.last_user), (when.system, convo.system)):
        if pattern is not None:
            found = re.search(pattern, text, re.DOTALL)
            if found is None:
                return False
            groups.update({k: v for k, v in found.groupdict().items() if v is not None})
    if when.any_user is not None:
        hits = [re.search(when.any_user, text, re.DOTALL) for text in convo.users]
        found_any = next((hit for hit in hits if hit is not None), None)
        if found_any is None:
            return False
        groups.update({k: v for k, v in found_any.groupdict().items() if v is not None})
    if not all(convo.called(tool) for tool in when.called):
        return False
    if any(convo.called(tool) for tool in when.not_called):
        return False
    if when.last_result is not None and not _last_result_matches(when.last_result, convo):
        return False
    if when.step is not None:
        low, high = (when.step, when.step) if isinstance(when.step, int) else (when.step.min, when.step.max)
        if convo.step < low or (high is not None and convo.step > high):
            return False
    for name, pattern in when.header.items():
        if re.search(pattern, convo.headers.get(name, "")) is None:
            return False
    if when.model is not None and re.search(when.model, convo.model) is None:
        return False
    if not set(when.tools_offered) <= convo.tools_offered:
        return False
    return when.structured is None or when.structured == convo.structured


def _last_result_matches(condition: LastResult, convo: Conversation) -> bool:
    if not convo.observations:
        return False
    last = convo.observations[-1]
    if condition.tool is not None and last.tool != condition.tool:
        return False
    if condition.status is not None and re.fullmatch(condition.status, last.status) is None:
        return False
    return condition.contains is None or re.search(condition.contains, last.raw) is not None


def select(
    script: Script, convo: Conversation, fired: Mapping[int, int]
) -> tuple[int | None, Then, dict[str, Any]]:
    """(rule index or None for the default, the action, the regex groups)."""
    for index, rule in enumerate(script.rules):
        if rule.times is not None and fired.get(index, 0) >= rule.times:
            continue
        groups: dict[str, Any] = {}
        if _matches(rule.when, convo, groups):
            return index, rule.then, groups
    return None, script.default, {}


# --- templating ----------------------------------------------------------------


def _lookup(path: str, scope: Mapping[str, Any]) -> Any:
    head, *rest = path.split(".")
    if head == "result" and rest:
        value: Any = scope["_convo"].latest_result(rest[0])
        rest = rest[1:]
    elif head == "last_result":
        observations = scope["_convo"].observations
        value = observations[-1].result if observations else None
    else:
        value = scope.get(head)
    for key in rest:
        if isinstance(value, Mapping):
            value = value.get(key)
        elif isinstance(value, list) and key.isdigit() and int(key) < len(value):
            value = value[int(key)]
        else:
            return None
    return value


def _apply(value: Any, flt: str | None) -> Any:
    try:
        if flt == "int":
            return int(float(value))
        if flt == "float":
            return float(value)
        if flt == "cents":  # "12.5" -> 1250
            return round(float(value) * 100)
    except (TypeError, ValueError):
        return value
    if flt == "json":
        return json.dumps(value)
    if flt == "upper":
        return str(value).upper()
    if flt == "lower":
        return str(value).lower()
    return value


def render(value: Any, scope: Mapping[str, Any]) -> Any:
    if isinstance(value, str):
        whole = _TEMPLATE.fullmatch(value.strip())
        if whole is not None:
            return _apply(_lookup(whole.group(1), scope), whole.group(2))

        def substitute(found: re.Match[str]) -> str:
            rendered = _apply(_lookup(found.group(1), scope), found.group(2))
            if rendered is None:
                return ""
            return rendered if isinstance(rendered, str) else json.dumps(rendered)

        return _TEMPLATE.sub(substitute, value)
    if isinstance(value, Mapping):  # a key whose template found nothing is left out
        rendered = {key: render(item, scope) for key, item in value.items()}
        return {key: item for key, item in rendered.items() if item is not None}
    if isinstance(value, list | tuple):
        return [render(item, scope) for item in value]
    return value


# --- the response --------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ScriptedReply:
    status: int
    body: dict[str, Any]
    delay: float
    rule: int | None
    retry_after: float | None = None


def respond(
    script: Script,
    convo: Conversation,
    fired: Mapping[int, int],
    *,
    prompt_text: str,
    created: int = 0,
) -> ScriptedReply:
    index, then, groups = select(script, convo, fired)
    scope: dict[str, Any] = {
        "match": groups,
        "step": convo.step,
        "header": dict(convo.headers),
        "_convo": convo,
    }
    if then.status is not None:
        error_body: dict[str, Any] = {
            "error": {
                "message": f"scripted failure (HTTP {then.status})",
                "type": "scripted",
                "code": then.status,
            }
        }
        return ScriptedReply(then.status, error_body, then.delay, index, then.retry_after)
    message: dict[str, Any] = {"role": "assistant", "content": None}
    completion_text = ""
    if then.answer is not None:
        message["content"] = str(render(then.answer, scope))
    elif then.answer_json is not None:
        message["content"] = json.dumps(render(then.answer_json, scope))
    completion_text += message["content"] or ""
    if then.tool_calls:
        calls = []
        for position, call in enumerate(then.tool_calls):
            arguments = (
                call.raw_arguments
                if call.raw_arguments is not None
                else json.dumps(render(call.arguments, scope), separators=(",", ":"))
            )
            completion_text += call.name + arguments
            calls.append(
                {
                    "id": f"call_{convo.step}_{position}",
                    "type": "function",
                    "function": {"name": call.name, "arguments": arguments},
                }
            )
        message["tool_calls"] = calls
    if then.reply != "task" or then.artifacts:
        updates = [
            u for position, a in enumerate(then.artifacts) for u in artifact_updates(a, position, scope)
        ]
        message[EXTENSION] = extension(then.reply, updates)
    usage = then.usage or script.usage
    prompt_tokens = usage.prompt_tokens if usage else estimate_tokens(prompt_text)
    completion_tokens = usage.completion_tokens if usage else estimate_tokens(completion_text)
    body: dict[str, Any] = {
        "id": f"scripted-{script.name}-{convo.step}",
        "object": "chat.completion",
        "created": created,
        "model": script.model_id,
        "system_fingerprint": SCRIPTED_FINGERPRINT,
        "agentmesh_scripted": {"script": script.name, "rule": _rule_name(script, index)},
        "choices": [
            {
                "index": 0,
                "message": message,
                "finish_reason": "tool_calls" if then.tool_calls else "stop",
            }
        ]
        if not then.empty
        else [],
        "usage": {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
        },
    }
    return ScriptedReply(200, body, then.delay, index)


def artifact_updates(
    artifact: ScriptedArtifact, position: int, scope: Mapping[str, Any]
) -> list[task_pb2.ArtifactUpdate]:
    """The updates delivering one scripted artifact: one, or one per chunk (append, last_chunk)."""
    head = task_pb2.Artifact(
        artifact_id=artifact.id or f"artifact-{position + 1}",
        name=str(render(artifact.name, scope)),
        description=artifact.description,
    )
    if artifact.chunks:
        updates = []
        for index, chunk in enumerate(artifact.chunks):
            piece = task_pb2.Artifact()
            piece.CopyFrom(head)
            piece.parts.add(text=str(render(chunk, scope)))
            updates.append(
                task_pb2.ArtifactUpdate(
                    artifact=piece, append=index > 0, last_chunk=index == len(artifact.chunks) - 1
                )
            )
        return updates
    if artifact.text is not None:
        head.parts.add(text=str(render(artifact.text, scope)))
    elif artifact.file is not None:
        file = artifact.file
        content = (
            str(render(file.text, scope)).encode()
            if file.text is not None
            else base64.b64decode(file.base64 or "", validate=True)
        )
        head.parts.add(file=task_pb2.FileBytes(name=file.name, media_type=file.media_type, content=content))
    elif artifact.url is not None:
        url = artifact.url
        head.parts.add(file_uri=task_pb2.FileUri(name=url.name, media_type=url.media_type, uri=url.uri))
    else:
        json_format.ParseDict(render(artifact.data, scope), head.parts.add().data)
    return [task_pb2.ArtifactUpdate(artifact=head, last_chunk=True)]


def _rule_name(script: Script, index: int | None) -> str:
    if index is None:
        return "default"
    return script.rules[index].name or f"rules[{index}]"
