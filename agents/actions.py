"""What the run's state machine asks its driver to do, and how a run ends (no I/O).

The vocabulary shared by the machine (agents.machine), the runner that performs
the actions (agents.runner), the tool box (agents.tools) and compensation: the
tools offered, the task's input, a model call, a tool invocation, the outcome.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from google.protobuf import json_format, timestamp_pb2

from agentmesh.v1 import task_pb2, tool_options_pb2
from agents.model.types import ChatMessage, ChatRequest, ToolCall

Pricing = Callable[[str, int, int], float]


def free(model: str, prompt_tokens: int, completion_tokens: int) -> float:
    return 0.0


# Side-effect classes whose repeat the tool cannot deduplicate (agentmesh.v1.SideEffect).
UNGUARDED = frozenset({tool_options_pb2.SIDE_EFFECT_UNSPECIFIED, tool_options_pb2.SIDE_EFFECT_NON_IDEMPOTENT})


class StaleAction(ValueError):
    """A decision names a pending action that does not exist (any more)."""


@dataclass(frozen=True, slots=True)
class ToolOffer:
    """A tool the model may call in this task (resolved from the registry)."""

    name: str
    version: str
    definition: Mapping[str, Any]  # OpenAI function definition
    requires_approval: bool = False
    is_agent: bool = False
    side_effect: int = 0  # agentmesh.v1.SideEffect


@dataclass(frozen=True, slots=True)
class TaskInput:
    task_id: str
    # The instruction with its parts rendered as text (untrusted when a sanitizer is configured).
    instruction: str
    # Earlier turns of the session (the memory layer's context packet).
    context: Sequence[ChatMessage] = ()
    # Creation time (epoch seconds): the task deadline counts from here.
    created_at: float = 0.0


@dataclass(frozen=True, slots=True)
class ModelCall:
    request: ChatRequest
    index: int
    sanitize: bool = False


@dataclass(frozen=True, slots=True)
class ToolInvocation:
    call: ToolCall
    offer: ToolOffer
    index: int
    # `<task id>:<step index>`: the same for every retry of this call and for a
    # resumed task, so a side effect runs at most once.
    idempotency_key: str
    # The pending action id a human approved, sent as x-agentmesh-approval.
    approval: str = ""


@dataclass(frozen=True, slots=True)
class RunOutcome:
    state: task_pb2.TaskState.ValueType
    stop_reason: task_pb2.StopReason.ValueType
    message: str
    final_answer: str = ""
    error: task_pb2.TaskError | None = None
    pending: task_pb2.PendingAction | None = None

    @property
    def waiting(self) -> bool:
        return self.state == task_pb2.TASK_STATE_INPUT_REQUIRED


@dataclass(frozen=True, slots=True)
class Finished:
    outcome: RunOutcome


Action = ModelCall | ToolInvocation | Finished


def timestamp(epoch: float) -> timestamp_pb2.Timestamp:
    stamp = timestamp_pb2.Timestamp()
    stamp.FromNanoseconds(int(epoch * 1e9))
    return stamp


def parked_outcome(pending: task_pb2.PendingAction, stop_reason: task_pb2.StopReason.ValueType) -> RunOutcome:
    if pending.kind == task_pb2.PENDING_ACTION_KIND_INPUT:
        return RunOutcome(
            task_pb2.TASK_STATE_INPUT_REQUIRED, stop_reason, pending.message[:300], pending=pending
        )
    what = "approval of" if pending.kind == task_pb2.PENDING_ACTION_KIND_APPROVAL else "a decision on"
    return RunOutcome(
        task_pb2.TASK_STATE_INPUT_REQUIRED,
        stop_reason,
        f"waiting for {what} {pending.tool_name}: {pending.message}"[:300],
        pending=pending,
    )


def failure(
    stop_reason: task_pb2.StopReason.ValueType, reason: str, message: str, **metadata: str
) -> RunOutcome:
    return RunOutcome(
        state=task_pb2.TASK_STATE_FAILED,
        stop_reason=stop_reason,
        message=message,
        error=task_pb2.TaskError(reason=reason, message=message, metadata=metadata),
    )


def render_input(instruction: str, parts: Sequence[task_pb2.Part]) -> str:
    """The instruction and its parts as one text for the model (files by name, never bytes)."""
    lines = [instruction]
    for index, part in enumerate(parts):
        kind = part.WhichOneof("kind")
        label = f"[part {index + 1}]"
        if kind == "text":
            lines.append(f"{label} {part.text}")
        elif kind == "data":
            data = json_format.MessageToDict(part.data)
            lines.append(f"{label} data: {json.dumps(data, ensure_ascii=False, sort_keys=True)}")
        elif kind == "file":
            lines.append(
                f"{label} file {part.file.name or '(unnamed)'} ({part.file.media_type or 'unknown type'}, "
                f"{len(part.file.content)} bytes; content not shown)"
            )
        elif kind == "file_uri":
            lines.append(f"{label} file {part.file_uri.name or '(unnamed)'} at {part.file_uri.uri}")
    return "\n".join(lines)
