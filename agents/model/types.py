"""The model boundary: chat messages in, one turn (text and/or tool calls) out.

These types are what the runner speaks; backends translate them to a wire
protocol (OpenAI-compatible chat completions for every backend we ship).
A backend raises `ModelUnavailable` when the model cannot be reached (after
its retries) and `ModelRejected` when the API refuses the request (4xx);
a response that arrives but cannot be understood is `MalformedResponse`.
Per-tool-call problems (arguments that are not JSON) are not errors: they
travel on the `ToolCall` so the runner can feed them back to the model.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from agentmesh.v1 import task_pb2

Reply = Literal["task", "message", "input_required", "reject"]
REPLIES: tuple[Reply, ...] = ("task", "message", "input_required", "reject")


class ChatRole(enum.StrEnum):
    SYSTEM = "system"
    USER = "user"
    ASSISTANT = "assistant"
    TOOL = "tool"


@dataclass(frozen=True, slots=True)
class ToolCall:
    """A function call the model asked for.

    `arguments` is the parsed JSON object, or None when the model sent
    something that is not a JSON object; `arguments_error` then says why.
    `raw_arguments` is what the model sent, for the step record.
    """

    call_id: str
    name: str
    raw_arguments: str
    arguments: dict[str, Any] | None
    arguments_error: str | None = None


@dataclass(frozen=True, slots=True)
class ChatMessage:
    role: ChatRole
    content: str = ""
    tool_calls: tuple[ToolCall, ...] = ()
    tool_call_id: str = ""
    name: str = ""


@dataclass(frozen=True, slots=True)
class TokenUsage:
    prompt_tokens: int = 0
    completion_tokens: int = 0
    # True when the backend did not report usage and the numbers are an estimate.
    estimated: bool = False

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


@dataclass(frozen=True, slots=True)
class ModelTurn:
    """One answer of the model: a final text, tool calls, or both."""

    content: str
    tool_calls: tuple[ToolCall, ...]
    usage: TokenUsage
    # The model that answered, as the API reports it (`scripted:<script>` for
    # the scripted model server).
    model: str
    finish_reason: str = ""
    # Set when the answer came from the scripted model server, never a real model.
    scripted: bool = False
    # How the text is meant (the `agentmesh` extension of the assistant message, see
    # agents.model.wire): a final answer of the task, a direct message reply, a question
    # the caller must answer, or a refusal of the task.
    reply: Reply = "task"
    # Outputs delivered with this turn, in order (chunks of one artifact share its id).
    artifacts: tuple[task_pb2.ArtifactUpdate, ...] = ()


@dataclass(frozen=True, slots=True)
class ChatRequest:
    messages: Sequence[ChatMessage]
    # Function definitions in the OpenAI shape: {"type": "function", "function": {...}}.
    tools: Sequence[Mapping[str, Any]] = ()
    temperature: float = 0.0
    max_tokens: int = 1024
    # For the sanitizer: a JSON Schema the answer must satisfy (sent as
    # response_format json_schema; backends that ignore it are still checked).
    response_schema: Mapping[str, Any] | None = None
    # Extra HTTP headers (the scripted model can match on them).
    headers: Mapping[str, str] = field(default_factory=dict)


class ModelError(Exception):
    """Base of model backend failures; `reason` is a short machine-readable word."""

    reason = "MODEL_ERROR"

    def __init__(self, message: str, *, status: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.status = status


class ModelUnavailable(ModelError):
    """Unreachable, timed out, or 429/5xx after every retry."""

    reason = "DEPENDENCY_UNAVAILABLE"


class ModelRejected(ModelError):
    """The API refused the request (4xx other than 429): retrying cannot help."""

    reason = "MODEL_REJECTED"


class MalformedResponse(ModelError):
    """A response arrived but is not a usable chat completion (no choices, not JSON, ...)."""

    reason = "MALFORMED_RESPONSE"


class ChatModel(Protocol):
    """A chat-completions backend."""

    @property
    def model_name(self) -> str: ...

    async def complete(self, request: ChatRequest, *, timeout: float) -> ModelTurn:
        """One chat completion within `timeout` seconds (retries included)."""
        ...

    async def aclose(self) -> None: ...
