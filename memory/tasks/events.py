"""A task's event stream: every state change, step and artifact, each with an id.

The events live in one Redis stream per task (`memory.keys.task_events`, in the
slot of the task's queue shard). They are appended by the same script that changes the task, so
the record and its events never disagree; the event id is the stream id, so
WatchTask can resume from any id on any replica. The stream expires with the
task (retention) and is capped at `TaskConfig.events_maxlen` entries.

Stored entries carry the TaskEvent without `event_id`, `task_id` and
`create_time`; readers fill them in from the stream id (`decode_event`). Reading a
task's events for its owner is memory/tasks/reader.py.
"""

from __future__ import annotations

import re
from typing import Any

from google.protobuf.timestamp_pb2 import Timestamp

from agentmesh.kit.errors import FieldViolation, InvalidArgument
from agentmesh.v1 import task_pb2
from memory import codec
from memory.codec import RecordKind
from memory.tasks.states import is_terminal

EVENT_FORMAT = 1
_EVENT_ID = re.compile(r"^\d{1,20}-\d{1,20}$")


def encode_event(event: task_pb2.TaskEvent) -> bytes:
    if event.event_id or event.task_id or event.HasField("create_time"):
        stored = task_pb2.TaskEvent()
        stored.CopyFrom(event)
        stored.ClearField("event_id")
        stored.ClearField("task_id")
        stored.ClearField("create_time")
        event = stored
    return codec.encode_message(RecordKind.TASK_EVENT, EVENT_FORMAT, event)


def decode_event(task_id: str, event_id: str | bytes, fields: dict[Any, Any]) -> task_pb2.TaskEvent:
    entry_id = event_id.decode() if isinstance(event_id, bytes) else event_id
    data = fields.get(b"e", fields.get("e"))
    event = codec.decode_message(
        data, RecordKind.TASK_EVENT, {EVENT_FORMAT}, task_pb2.TaskEvent, f"event {entry_id} of task {task_id}"
    )
    event.event_id = entry_id
    event.task_id = task_id
    event.create_time.CopyFrom(event_time(entry_id))
    return event


def event_time(event_id: str) -> Timestamp:
    """A stream id starts with the milliseconds at which it was added."""
    millis = int(event_id.partition("-")[0])
    return Timestamp(seconds=millis // 1000, nanos=(millis % 1000) * 1_000_000)


def status_event(task: task_pb2.Task) -> task_pb2.TaskEvent:
    """The status update describing `task` as it is now."""
    update = task_pb2.TaskStatusUpdate(
        state=task.state,
        stop_reason=task.stop_reason,
        message=task.status_message,
        final_answer=task.final_answer,
    )
    if task.HasField("pending_action"):
        update.pending_action.CopyFrom(task.pending_action)
    if task.HasField("error"):
        update.error.CopyFrom(task.error)
    if task.HasField("usage"):
        update.usage.CopyFrom(task.usage)
    return task_pb2.TaskEvent(status_update=update)


def step_event(step: task_pb2.Step, *, finished: bool) -> task_pb2.TaskEvent:
    return task_pb2.TaskEvent(step_update=task_pb2.StepUpdate(step=step, finished=finished))


def artifact_event(update: task_pb2.ArtifactUpdate) -> task_pb2.TaskEvent:
    return task_pb2.TaskEvent(artifact_update=update)


def approval_event(record: task_pb2.ApprovalRecord) -> task_pb2.TaskEvent:
    return task_pb2.TaskEvent(approval=record)


def is_terminal_event(event: task_pb2.TaskEvent) -> bool:
    return event.HasField("status_update") and is_terminal(event.status_update.state)


def check_event_id(value: str, field: str = "after_event_id") -> str:
    if value and not _EVENT_ID.fullmatch(value):
        raise InvalidArgument(
            f"{field} {value[:40]!r} is not an event id",
            violations=[FieldViolation(field, "must be an event id like 1700000000000-0", "PATTERN")],
        )
    return value
