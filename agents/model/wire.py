"""OpenAI-compatible chat-completions wire format, both directions (pure functions).

Shared by the HTTP client and the scripted model server so they cannot drift.
Parsing is forgiving where real servers differ (arguments as a JSON string or
an object, content as a string or a list of text parts, a missing usage
block) and strict where the answer would be unusable (no choices, no
message): those raise `MalformedResponse`, which the runner turns into an
observation for the model instead of a crash.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from google.protobuf import json_format

from agentmesh.v1 import task_pb2
from agents.model.types import (
    REPLIES,
    ChatMessage,
    ChatRequest,
    ChatRole,
    MalformedResponse,
    ModelTurn,
    Reply,
    TokenUsage,
    ToolCall,
)
from memory.context import TurnToolCall, chat_message, estimate_tokens

SCRIPTED_FINGERPRINT = "scripted"
SCRIPTED_HEADER = "x-agentmesh-scripted"
SCRIPTED_PREFIX = "scripted:"
# Longest raw tool-call arguments string kept (a runaway model must not bloat
# the step records or the next prompt).
MAX_RAW_ARGUMENTS = 64 * 1024
# The assistant message's extension field (not part of the OpenAI API; only the scripted
# model sends it): {"reply": "task" | "message" | "input_required" | "reject",
# "artifacts": [agentmesh.v1.ArtifactUpdate as protobuf JSON, ...]}.
EXTENSION = "agentmesh"
MAX_ARTIFACT_UPDATES = 64


def message_to_wire(message: ChatMessage) -> dict[str, Any]:
    """The OpenAI-compatible message (memory.context.chat_message, the one serializer)."""
    return chat_message(
        message.role.value,
        message.content,
        tool_calls=[TurnToolCall(c.call_id, c.name, c.raw_arguments) for c in message.tool_calls],
        tool_call_id=message.tool_call_id,
        name=message.name,
    )


def request_body(model: str, request: ChatRequest) -> dict[str, Any]:
    body: dict[str, Any] = {
        "model": model,
        "messages": [message_to_wire(message) for message in request.messages],
        "temperature": request.temperature,
        "max_tokens": request.max_tokens,
        "stream": False,
    }
    if request.tools:
        body["tools"] = [dict(tool) for tool in request.tools]
        body["tool_choice"] = "auto"
    if request.response_schema is not None:
        body["response_format"] = {
            "type": "json_schema",
            "json_schema": {"name": "structured_intent", "schema": dict(request.response_schema)},
        }
    return body


def prompt_text(messages: Sequence[ChatMessage]) -> str:
    parts: list[str] = []
    for message in messages:
        parts.append(message.content)
        for call in message.tool_calls:
            parts.append(call.name)
            parts.append(call.raw_arguments)
    return "\n".join(parts)


def parse_arguments(raw: Any) -> tuple[str, dict[str, Any] | None, str | None]:
    """(raw text, parsed object or None, error or None) for one tool call's arguments."""
    if isinstance(raw, Mapping):
        text = json.dumps(raw, separators=(",", ":"))
        return text[:MAX_RAW_ARGUMENTS], dict(raw), None
    if raw is None or raw == "":
        return "", {}, None  # a call without arguments is a call with an empty object
    if not isinstance(raw, str):
        return (
            str(raw)[:MAX_RAW_ARGUMENTS],
            None,
            f"arguments must be a JSON object, got {type(raw).__name__}",
        )
    text = raw[:MAX_RAW_ARGUMENTS]
    if len(raw) > MAX_RAW_ARGUMENTS:
        return text, None, f"arguments are {len(raw)} characters; at most {MAX_RAW_ARGUMENTS} allowed"
    try:
        value = json.loads(raw)
    except (json.JSONDecodeError, RecursionError) as exc:
        detail = exc.msg if isinstance(exc, json.JSONDecodeError) else "nested too deeply"
        where = f" at character {exc.pos}" if isinstance(exc, json.JSONDecodeError) else ""
        return text, None, f"arguments are not valid JSON: {detail}{where}"
    if not isinstance(value, dict):
        return text, None, f"arguments must be a JSON object, got {type(value).__name__}"
    return text, value, None


def _content_text(content: Any) -> str:
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):  # [{"type": "text", "text": "..."}]
        texts = [
            str(part.get("text", "")) for part in content if isinstance(part, Mapping) and "text" in part
        ]
        return "".join(texts)
    raise MalformedResponse(f"message content has unexpected type {type(content).__name__}")


def _tool_calls(message: Mapping[str, Any]) -> tuple[ToolCall, ...]:
    raw_calls = message.get("tool_calls")
    if raw_calls is None and isinstance(message.get("function_call"), Mapping):
        raw_calls = [{"id": "", "function": message["function_call"]}]  # legacy single-call shape
    if raw_calls is None:
        return ()
    if not isinstance(raw_calls, list):
        raise MalformedResponse("tool_calls is not a list")
    calls: list[ToolCall] = []
    for index, raw in enumerate(raw_calls):
        if not isinstance(raw, Mapping):
            raise MalformedResponse(f"tool_calls[{index}] is not an object")
        function = raw.get("function")
        if not isinstance(function, Mapping):
            raise MalformedResponse(f"tool_calls[{index}] has no function")
        name = function.get("name")
        text, arguments, error = parse_arguments(function.get("arguments"))
        call_id = raw.get("id") if isinstance(raw.get("id"), str) and raw.get("id") else f"call_{index}"
        calls.append(
            ToolCall(
                call_id=str(call_id),
                name=name if isinstance(name, str) else "",
                raw_arguments=text,
                arguments=arguments,
                arguments_error=error,
            )
        )
    return tuple(calls)


def parse_response(
    body: Any,
    *,
    request_messages: Sequence[ChatMessage] = (),
    fallback_model: str = "",
    scripted: bool = False,
) -> ModelTurn:
    """A chat-completions response body → ModelTurn; MalformedResponse when unusable."""
    if not isinstance(body, Mapping):
        raise MalformedResponse(f"response is not a JSON object ({type(body).__name__})")
    if isinstance(body.get("error"), Mapping):
        message = body["error"].get("message") or "error without message"
        raise MalformedResponse(f"model returned an error object: {str(message)[:200]}")
    choices = body.get("choices")
    if not isinstance(choices, list) or not choices:
        raise MalformedResponse("response has no choices")
    choice = choices[0]
    if not isinstance(choice, Mapping) or not isinstance(choice.get("message"), Mapping):
        raise MalformedResponse("choices[0] has no message")
    message = choice["message"]
    content = _content_text(message.get("content"))
    calls = _tool_calls(message)
    if not content.strip() and not calls:
        raise MalformedResponse("choices[0] is empty: no text and no tool calls")
    model = body.get("model") if isinstance(body.get("model"), str) else fallback_model
    reply, artifacts = _extension(message.get(EXTENSION))
    scripted = (
        scripted
        or body.get("system_fingerprint") == SCRIPTED_FINGERPRINT
        or str(model).startswith(SCRIPTED_PREFIX)
    )
    return ModelTurn(
        content=content,
        tool_calls=calls,
        usage=_usage(body.get("usage"), request_messages, content, calls),
        model=str(model or fallback_model),
        finish_reason=str(choice.get("finish_reason") or ""),
        scripted=bool(scripted),
        reply=reply,
        artifacts=artifacts,
    )


def extension(reply: Reply, artifacts: Sequence[task_pb2.ArtifactUpdate]) -> dict[str, Any]:
    """The `agentmesh` extension of an assistant message (what the scripted model sends)."""
    return {"reply": reply, "artifacts": [json_format.MessageToDict(a) for a in artifacts]}


def _extension(raw: Any) -> tuple[Reply, tuple[task_pb2.ArtifactUpdate, ...]]:
    if raw is None:
        return "task", ()
    if not isinstance(raw, Mapping):
        raise MalformedResponse(f"message.{EXTENSION} is not an object")
    reply = raw.get("reply", "task")
    if reply not in REPLIES:
        raise MalformedResponse(f"message.{EXTENSION}.reply {str(reply)[:40]!r} is not one of {REPLIES}")
    items = raw.get("artifacts") or []
    if not isinstance(items, list) or len(items) > MAX_ARTIFACT_UPDATES:
        raise MalformedResponse(
            f"message.{EXTENSION}.artifacts is not a list of at most {MAX_ARTIFACT_UPDATES}"
        )
    updates: list[task_pb2.ArtifactUpdate] = []
    for index, item in enumerate(items):
        try:
            update = json_format.ParseDict(item, task_pb2.ArtifactUpdate())
        except (json_format.ParseError, TypeError) as exc:
            raise MalformedResponse(f"message.{EXTENSION}.artifacts[{index}]: {str(exc)[:200]}") from None
        if not update.artifact.artifact_id or not update.artifact.parts:
            raise MalformedResponse(f"message.{EXTENSION}.artifacts[{index}] needs an artifact_id and parts")
        updates.append(update)
    return reply, tuple(updates)


def _usage(
    raw: Any, messages: Sequence[ChatMessage], content: str, calls: tuple[ToolCall, ...]
) -> TokenUsage:
    if isinstance(raw, Mapping):
        prompt, completion = raw.get("prompt_tokens"), raw.get("completion_tokens")
        if isinstance(prompt, int) and isinstance(completion, int) and prompt >= 0 and completion >= 0:
            return TokenUsage(prompt, completion)
    # No usable usage block: estimate, so token budgets still hold.
    completion_text = content + "".join(call.name + call.raw_arguments for call in calls)
    return TokenUsage(
        estimate_tokens(prompt_text(messages)), estimate_tokens(completion_text), estimated=True
    )


def message_from_wire(raw: Any, index: int = 0) -> ChatMessage:
    """One request message as the scripted server receives it (strict on role)."""
    if not isinstance(raw, Mapping):
        raise ValueError(f"messages[{index}] is not an object")
    try:
        role = ChatRole(str(raw.get("role")))
    except ValueError:
        raise ValueError(
            f"messages[{index}].role {raw.get('role')!r} is not system/user/assistant/tool"
        ) from None
    calls: tuple[ToolCall, ...] = ()
    if role is ChatRole.ASSISTANT and raw.get("tool_calls"):
        try:
            calls = _tool_calls(raw)
        except MalformedResponse as exc:
            raise ValueError(f"messages[{index}]: {exc}") from None
    try:
        content = _content_text(raw.get("content"))
    except MalformedResponse as exc:
        raise ValueError(f"messages[{index}]: {exc}") from None
    return ChatMessage(
        role=role,
        content=content,
        tool_calls=calls,
        tool_call_id=str(raw.get("tool_call_id") or ""),
        name=str(raw.get("name") or ""),
    )
