"""A task's event stream: every state change, step and artifact, each with an id.

The events live in one Redis stream per task (`memory.keys.task_events`, in the
slot of the task's queue shard). They are appended by the same script that changes the task, so
the record and its events never disagree; the event id is the stream id, so
WatchTask can resume from any id on any replica. The stream expires with the
task (retention) and is capped at `TaskConfig.events_maxlen` entries.

    async for event in events.watch(task_id, tenant=t, owner=o, after_event_id=last_seen):
        ...   # replays what came after `last_seen`, then live; ends after the terminal change

Stored entries carry the TaskEvent without `event_id`, `task_id` and
`create_time`; readers fill them in from the stream id.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

from google.protobuf.timestamp_pb2 import Timestamp

from agentmesh.kit.errors import FieldViolation, InvalidArgument
from agentmesh.v1 import task_pb2
from memory import codec
from memory.codec import Kind
from memory.connection import redis_errors
from memory.task_states import is_terminal

if TYPE_CHECKING:
    from memory.tasks import TaskStore

EVENT_FORMAT = 1
_EVENT_ID = re.compile(r"^\d{1,20}-\d{1,20}$")
_BATCH = 200


def encode_event(event: task_pb2.TaskEvent) -> bytes:
    if event.event_id or event.task_id or event.HasField("create_time"):
        stored = task_pb2.TaskEvent()
        stored.CopyFrom(event)
        stored.ClearField("event_id")
        stored.ClearField("task_id")
        stored.ClearField("create_time")
        event = stored
    return codec.encode_message(Kind.TASK_EVENT, EVENT_FORMAT, event)


def decode_event(task_id: str, event_id: str | bytes, fields: dict[Any, Any]) -> task_pb2.TaskEvent:
    entry_id = event_id.decode() if isinstance(event_id, bytes) else event_id
    data = fields.get(b"e", fields.get("e"))
    event = codec.decode_message(
        data, Kind.TASK_EVENT, {EVENT_FORMAT}, task_pb2.TaskEvent, f"event {entry_id} of task {task_id}"
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


class TaskEvents:
    """Reads a task's events for its owner: a page after an id, or a live watch."""

    def __init__(self, store: TaskStore, *, block_s: float = 2.0) -> None:
        self._store = store
        self._redis = store.redis
        self.block_ms = max(1, int(block_s * 1000))

    async def read(
        self, task_id: str, *, tenant: str, owner: str, after_event_id: str = "", limit: int = _BATCH
    ) -> list[task_pb2.TaskEvent]:
        """Up to `limit` events after `after_event_id` (empty: from the first)."""
        check_event_id(after_event_id)
        await self._store.get(task_id, tenant=tenant, owner=owner, view=task_pb2.TASK_VIEW_BASIC)
        return await self._range(task_id, after_event_id, limit)

    def _stream(self, task_id: str) -> str:
        task_keys = self._store.task_keys(task_id)
        if task_keys is None:  # callers checked the task exists first
            raise ValueError(f"{task_id!r} is not a task id")
        return task_keys[1]

    async def _range(self, task_id: str, after: str, limit: int) -> list[task_pb2.TaskEvent]:
        start = f"({after}" if after else "-"
        with redis_errors(f"reading the events of task {task_id}"):
            entries: Any = await self._redis.xrange(self._stream(task_id), start, "+", count=limit)
        return [decode_event(task_id, entry_id, fields) for entry_id, fields in entries]

    async def watch(
        self,
        task_id: str,
        *,
        tenant: str,
        owner: str,
        after_event_id: str = "",
        stop: asyncio.Event | None = None,
    ) -> AsyncIterator[task_pb2.TaskEvent]:
        """Events after `after_event_id`, then live ones; ends after the terminal state change.

        Also ends when `stop` is set (the server drains: the client resumes on another
        replica from the last id it got) or when the task expires. Visibility is checked
        once, up front: NOT_FOUND for a task the caller does not own.
        """
        check_event_id(after_event_id)
        task = await self._store.get(task_id, tenant=tenant, owner=owner, view=task_pb2.TASK_VIEW_BASIC)
        last = after_event_id
        if is_terminal(task.state) and last and _id_key(last) >= _id_key(task.last_event_id):
            return
        stream = self._stream(task_id)
        while stop is None or not stop.is_set():
            events = await self._range(task_id, last, _BATCH)
            if not events:
                if await self._finished(task_id, None):
                    # It ended after the read above: its last events were written with the
                    # terminal state, so one more read delivers them.
                    events = await self._range(task_id, last, _BATCH)
                    if not events:
                        return
                else:
                    events = await self._block(stream, task_id, last, stop)
            for event in events:
                yield event
                last = event.event_id
                if is_terminal_event(event) and await self._finished(task_id, last):
                    return

    async def _block(
        self, stream: str, task_id: str, last: str, stop: asyncio.Event | None
    ) -> list[task_pb2.TaskEvent]:
        answer: Any
        read = self._redis.xread({stream: last or "0-0"}, count=_BATCH, block=self.block_ms)
        if stop is None:
            with redis_errors(f"watching task {task_id}"):
                answer = await read
        else:
            reader = asyncio.ensure_future(read)
            stopper = asyncio.ensure_future(stop.wait())
            try:
                done, _ = await asyncio.wait({reader, stopper}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                stopper.cancel()
            if reader not in done:
                reader.cancel()
                return []
            with redis_errors(f"watching task {task_id}"):
                answer = reader.result()
        events: list[task_pb2.TaskEvent] = []
        for _name, entries in answer or []:
            events.extend(decode_event(task_id, entry_id, fields) for entry_id, fields in entries)
        return events

    async def _finished(self, task_id: str, last: str | None) -> bool:
        """True when the task is gone, or terminal and `last` is its newest event.

        `last=None`: the caller has seen every stored event, so terminal is enough
        (a redriven task is no longer terminal, and its watchers keep going).
        """
        snapshot = await self._store.snapshot(task_id)
        if snapshot is None:
            return True
        task = snapshot.task
        if not is_terminal(task.state):
            return False
        return last is None or _id_key(last) >= _id_key(task.last_event_id)


def _id_key(event_id: str) -> tuple[int, int]:
    if not event_id:
        return (0, 0)
    millis, _, seq = event_id.partition("-")
    return (int(millis), int(seq or 0))
