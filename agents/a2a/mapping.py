"""A2A v1.0 ↔ mesh tasks (pure): one task model, two protocols.

An A2A task *is* a mesh task: its `id` is the mesh task id, its `contextId`
the mesh `session_id`; an incoming message becomes a SubmitTask whose
`request_id` is the message id (a re-sent message finds its task instead of
making a second one). States map one to one (A2A's AUTH_REQUIRED has no mesh
counterpart). Parts: text ↔ text, raw bytes ↔ FileBytes, url ↔ FileUri,
structured data ↔ a Struct (a non-object value travels as `{"value": …}`).
"""

from __future__ import annotations

import json
from collections.abc import Iterable

from a2a.types import a2a_pb2 as a2a
from google.protobuf import json_format, struct_pb2

from agentmesh.kit.errors import FieldViolation, InvalidArgument
from agentmesh.v1 import agent_service_pb2, task_pb2

# Part and message bounds (the native API's own limits: a 32 KiB instruction, 64 parts).
MAX_PARTS = 64
MAX_TEXT_BYTES = 32 * 1024
MAX_PART_BYTES = 1024 * 1024
WRAPPED_VALUE = "value"

STATE_TO_A2A: dict[int, a2a.TaskState] = {
    task_pb2.TASK_STATE_SUBMITTED: a2a.TASK_STATE_SUBMITTED,
    task_pb2.TASK_STATE_WORKING: a2a.TASK_STATE_WORKING,
    task_pb2.TASK_STATE_INPUT_REQUIRED: a2a.TASK_STATE_INPUT_REQUIRED,
    task_pb2.TASK_STATE_COMPLETED: a2a.TASK_STATE_COMPLETED,
    task_pb2.TASK_STATE_FAILED: a2a.TASK_STATE_FAILED,
    task_pb2.TASK_STATE_CANCELED: a2a.TASK_STATE_CANCELED,
    task_pb2.TASK_STATE_REJECTED: a2a.TASK_STATE_REJECTED,
}
STATE_FROM_A2A: dict[int, int] = {int(v): k for k, v in STATE_TO_A2A.items()}
# States after which an A2A stream ends: terminal, or interrupted (waiting for someone).
FINAL_STATES = frozenset(
    {
        a2a.TASK_STATE_COMPLETED,
        a2a.TASK_STATE_FAILED,
        a2a.TASK_STATE_CANCELED,
        a2a.TASK_STATE_REJECTED,
        a2a.TASK_STATE_INPUT_REQUIRED,
        a2a.TASK_STATE_AUTH_REQUIRED,
    }
)


# -- parts -------------------------------------------------------------------------------


def part_from_a2a(part: a2a.Part, path: str) -> task_pb2.Part | None:
    """The mesh part of an A2A part (None for a text part: text goes to the instruction)."""
    kind = part.WhichOneof("content")
    if kind == "text":
        return None
    if kind == "raw":
        return task_pb2.Part(
            file=task_pb2.FileBytes(name=part.filename, media_type=part.media_type, content=part.raw)
        )
    if kind == "url":
        return task_pb2.Part(
            file_uri=task_pb2.FileUri(name=part.filename, media_type=part.media_type, uri=part.url)
        )
    if kind == "data":
        return task_pb2.Part(data=_as_struct(part.data))
    raise InvalidArgument(
        f"{path} has no content", violations=[FieldViolation(path, "a part needs text, raw, url or data")]
    )


def part_to_a2a(part: task_pb2.Part) -> a2a.Part:
    kind = part.WhichOneof("kind")
    if kind == "text":
        return a2a.Part(text=part.text)
    if kind == "file":
        return a2a.Part(raw=part.file.content, filename=part.file.name, media_type=part.file.media_type)
    if kind == "file_uri":
        return a2a.Part(
            url=part.file_uri.uri, filename=part.file_uri.name, media_type=part.file_uri.media_type
        )
    if kind == "data":
        return a2a.Part(data=_from_struct(part.data))
    return a2a.Part(text="")


def _as_struct(value: struct_pb2.Value) -> struct_pb2.Struct:
    if value.WhichOneof("kind") == "struct_value":
        return value.struct_value
    wrapped = struct_pb2.Struct()
    wrapped.fields[WRAPPED_VALUE].CopyFrom(value)
    return wrapped


def _from_struct(data: struct_pb2.Struct) -> struct_pb2.Value:
    if set(data.fields) == {WRAPPED_VALUE}:
        return data.fields[WRAPPED_VALUE]
    return struct_pb2.Value(struct_value=data)


# -- requests ----------------------------------------------------------------------------


def submit_request(message: a2a.Message) -> agent_service_pb2.SubmitTaskRequest:
    """A new task from an A2A message: text parts → instruction, other parts → parts."""
    problems: list[FieldViolation] = []
    if not message.message_id:
        problems.append(FieldViolation("message.message_id", "required"))
    if not message.parts:
        problems.append(FieldViolation("message.parts", "a message needs at least one part"))
    if len(message.parts) > MAX_PARTS:
        problems.append(FieldViolation("message.parts", f"at most {MAX_PARTS} parts"))
    texts: list[str] = []
    parts: list[task_pb2.Part] = []
    for index, part in enumerate(message.parts[:MAX_PARTS]):
        path = f"message.parts[{index}]"
        if part.ByteSize() > MAX_PART_BYTES:
            problems.append(FieldViolation(path, f"a part may hold at most {MAX_PART_BYTES} bytes"))
            continue
        try:
            converted = part_from_a2a(part, path)
        except InvalidArgument as exc:
            problems.extend(exc.violations)
            continue
        if converted is None:
            texts.append(part.text)
        else:
            parts.append(converted)
    instruction = "\n".join(t for t in texts if t)
    if len(instruction.encode()) > MAX_TEXT_BYTES:
        problems.append(FieldViolation("message.parts", f"the text parts exceed {MAX_TEXT_BYTES} bytes"))
    if not instruction and not problems:
        problems.append(FieldViolation("message.parts", "a message to an agent needs a text part"))
    if problems:
        raise InvalidArgument("invalid A2A message", violations=problems, reason="INVALID_PARAMS")
    return agent_service_pb2.SubmitTaskRequest(
        instruction=instruction,
        parts=parts,
        session_id=message.context_id,
        request_id=message.message_id[:128],
    )


# -- tasks, messages, events -------------------------------------------------------------


def agent_message(task: task_pb2.Task, text: str) -> a2a.Message:
    return a2a.Message(
        message_id=f"{task.task_id}:{task.last_event_id or 'status'}",
        context_id=task.session_id,
        task_id=task.task_id,
        role=a2a.ROLE_AGENT,
        parts=[a2a.Part(text=text)],
    )


def direct_reply(task: task_pb2.Task) -> a2a.Message:
    """The model's direct message reply: a message, not a task (no task id)."""
    return a2a.Message(
        message_id=f"{task.task_id}:reply",
        context_id=task.session_id,
        role=a2a.ROLE_AGENT,
        parts=[a2a.Part(text=task.final_answer)],
    )


def status_of(task: task_pb2.Task) -> a2a.TaskStatus:
    status = a2a.TaskStatus(state=STATE_TO_A2A.get(task.state, a2a.TASK_STATE_UNSPECIFIED))
    text = (
        task.final_answer
        or task.status_message
        or (task.pending_action.message if task.HasField("pending_action") else "")
    )
    if text:
        status.message.CopyFrom(agent_message(task, text))
    if task.HasField("update_time"):
        status.timestamp.CopyFrom(task.update_time)
    return status


def history_of(task: task_pb2.Task) -> list[a2a.Message]:
    """The conversation A2A shows, in order, from the stored steps (so any replica tells the same).

    The user's message; for each input-required exchange, the agent's question
    (a model turn that replied `input_required`) and the user's answer (a
    STEP_KIND_USER_INPUT step); then the agent's answer when there is one.
    Steps come only with TASK_VIEW_FULL: a basic view shows the first and last
    messages only.
    """
    user = a2a.Message(
        message_id=task.request_id or f"{task.task_id}:request",
        context_id=task.session_id,
        task_id=task.task_id,
        role=a2a.ROLE_USER,
        parts=[a2a.Part(text=task.instruction), *(part_to_a2a(p) for p in task.input_parts)],
    )
    messages = [user]
    for step in task.steps:
        turn = _exchange_turn(step)
        if turn is not None:
            role, text, message_id = turn
            messages.append(
                a2a.Message(
                    message_id=message_id or f"{task.task_id}:step-{step.index}",
                    context_id=task.session_id,
                    task_id=task.task_id,
                    role=role,
                    parts=[a2a.Part(text=text)],
                )
            )
    if task.final_answer:
        messages.append(agent_message(task, task.final_answer))
    return messages


def _exchange_turn(step: task_pb2.Step) -> tuple[a2a.Role, str, str] | None:
    """(role, text, message id if known) of a conversation step: a question asked, an answer given."""
    if step.kind not in (task_pb2.STEP_KIND_MODEL_CALL, task_pb2.STEP_KIND_USER_INPUT):
        return None
    try:
        record = json.loads(step.result_json) if step.result_json.startswith("{") else {}
    except ValueError:
        return None
    if step.kind == task_pb2.STEP_KIND_USER_INPUT:
        return a2a.ROLE_USER, str(record.get("text", "")), str(record.get("request_id", ""))
    if record.get("reply") == "input_required":
        return a2a.ROLE_AGENT, str(record.get("content", "")), ""
    return None


def artifact_to_a2a(artifact: task_pb2.Artifact) -> a2a.Artifact:
    out = a2a.Artifact(
        artifact_id=artifact.artifact_id,
        name=artifact.name,
        description=artifact.description,
        parts=[part_to_a2a(p) for p in artifact.parts],
    )
    if artifact.metadata:
        json_format.ParseDict(dict(artifact.metadata), out.metadata)
    return out


def task_to_a2a(task: task_pb2.Task, *, history_length: int | None = None) -> a2a.Task:
    """The A2A view of a mesh task; `history_length` 0 omits the history, None keeps all of it."""
    out = a2a.Task(
        id=task.task_id,
        context_id=task.session_id,
        status=status_of(task),
        artifacts=[artifact_to_a2a(a) for a in task.artifacts],
    )
    history = history_of(task)
    if history_length is not None:
        history = history[-history_length:] if history_length > 0 else []
    out.history.extend(history)
    return out


def stream_responses(event: task_pb2.TaskEvent, task: task_pb2.Task) -> Iterable[a2a.StreamResponse]:
    """What one mesh task event means on an A2A stream (a step update means nothing there)."""
    kind = event.WhichOneof("event")
    if kind == "status_update":
        update = event.status_update
        status = a2a.TaskStatus(state=STATE_TO_A2A.get(update.state, a2a.TASK_STATE_UNSPECIFIED))
        text = update.final_answer or update.message
        if text:
            status.message.CopyFrom(agent_message(task, text))
        if event.HasField("create_time"):
            status.timestamp.CopyFrom(event.create_time)
        yield a2a.StreamResponse(
            status_update=a2a.TaskStatusUpdateEvent(
                task_id=task.task_id, context_id=task.session_id, status=status
            )
        )
    elif kind == "artifact_update":
        chunk = event.artifact_update
        yield a2a.StreamResponse(
            artifact_update=a2a.TaskArtifactUpdateEvent(
                task_id=task.task_id,
                context_id=task.session_id,
                artifact=artifact_to_a2a(chunk.artifact),
                append=chunk.append,
                last_chunk=chunk.last_chunk,
            )
        )


def list_filter(request: a2a.ListTasksRequest) -> tuple[list[task_pb2.TaskState.ValueType], str]:
    """(mesh states, session id) for an A2A ListTasks request."""
    states = (
        [task_pb2.TaskState.ValueType(STATE_FROM_A2A[request.status])]
        if request.status in STATE_FROM_A2A
        else []
    )
    return states, request.context_id
