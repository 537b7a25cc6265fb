"""A task's record (pure): the hash fields, their codec, snapshots, patches, resumptions.

A task is one Redis hash (memory.keys.task): the `agentmesh.v1.Task` record (without its steps,
its hot fields beside it), one field per checkpointed step, the lease, the resumption of a
pause. This module names the fields (`Field`, the layout memory/tasks/scripts.py's Lua reads),
encodes and decodes them (`encode_task`, `decode_snapshot`), and describes one guarded change
(`Patch`) and its answer (`CommitResult`); memory/tasks/store.py applies them in one script.
Nothing here does I/O.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from google.protobuf.timestamp_pb2 import Timestamp

from agentmesh.kit.errors import DataLoss
from agentmesh.v1 import task_pb2
from memory import codec
from memory.codec import RecordKind
from memory.tasks import scripts
from memory.tasks.states import check_transition

TASK_FORMAT = 1
STEP_FORMAT = 1
RESUMPTION_FORMAT = 1
LAYOUT = scripts.LAYOUT.encode()  # the task hash layout (field names below)

# Pending actions an approver answers (the awaiting-approval index).
APPROVAL_KINDS = frozenset(
    {task_pb2.PENDING_ACTION_KIND_APPROVAL, task_pb2.PENDING_ACTION_KIND_OUTCOME_UNKNOWN}
)


class Field:
    """Names of the task hash fields (see memory/tasks/scripts.py)."""

    LAYOUT = "v"
    RECORD = "rec"
    STATE = "state"
    STOP = "stop"
    MESSAGE = "msg"
    ATTEMPT = "attempt"
    UPDATED = "upd"
    LAST_EVENT = "last"
    REV = "rev"
    RUNNING = "run"
    FAILS = "fails"
    ERROR = "err"
    CANCEL = "cancel"
    FINGERPRINT = "fp"
    TRACE = "tp"
    RETENTION = "ret"
    MODE = "mode"
    RESUME = "res"
    RESUME_ACTION = "res_action"
    RESUME_BY = "res_by"
    LEASE = "lease"
    LEASE_UNTIL = "until"
    STEP_PREFIX = "s:"  # one field per checkpointed step: s:<index>


# What a read without the steps asks for (every field but `cid` and the steps).
SNAPSHOT_FIELDS = tuple(
    value
    for name, value in vars(Field).items()
    if name.isupper() and value not in {Field.STEP_PREFIX} and not name.startswith("_")
)


@dataclass(frozen=True, slots=True)
class Resumption:
    """The answer ResumeTask gave to a paused task, for the executor of the next attempt.

    Present from the resume until the next checkpoint: `action` is what the task
    waited for, `answer` carries the decision or the input, `approver` is who
    answered (empty when the owner did).
    """

    action: task_pb2.PendingAction
    answer: task_pb2.PendingActionAnswer
    approver: str = ""


@dataclass(slots=True)
class TaskSnapshot:
    """A task as stored: the record (hot fields overlaid, steps if asked) and the bookkeeping."""

    task: task_pb2.Task
    rev: int
    running: bool
    lease_ttl_ms: int
    cancel: str
    fingerprint: str
    fails: int
    error: str
    retention_ms: int
    carrier: dict[str, str]
    mode: str
    resumption: Resumption | None

    @property
    def lease_alive(self) -> bool:
        return self.lease_ttl_ms > 0


@dataclass(slots=True)
class Patch:
    """One guarded change of a task (see scripts.COMMIT)."""

    guard: Literal["new", "rev", "fence"]
    guard_value: str = ""
    task: task_pb2.Task | None = None
    fields: dict[str, str | bytes | int] = field(default_factory=dict)
    delete: Sequence[str] = ()
    step: task_pb2.Step | None = None
    events: Sequence[task_pb2.TaskEvent] = ()
    lease: Literal["", "set", "release"] = ""
    lease_value: str = ""
    lease_ms: int = 0
    ttl_ms: int | None = None  # None: keep; 0: persist; n: expire every key of the task after n ms
    commit_id: str = ""  # fixed across retries of one change, so a re-sent change applies once
    # What the change means for the task's queue shard, applied in the same script:
    ack: str = ""  # acknowledge and delete this entry (the attempt's)
    touch: tuple[str, str] | None = None  # (entry id, consumer): reset the entry's idle time
    enqueue: bytes = b""  # add a queue entry with this record
    dead_letter: bytes = b""  # add this dead letter (with `ack`: the entry moves there)
    drop_dead_letter: str = ""  # delete this dead letter (redrive)
    outbox: Literal["", "add", "rem"] = ""  # (un)register an inline run for recovery
    index: tuple[str, str, str] | None = None  # (tenant, owner, member): the owner's index entry


@dataclass(frozen=True, slots=True)
class CommitResult:
    status: str  # "ok", or why it was refused: exists, missing, stale, fenced, step_conflict, corrupt
    rev: int = 0
    last_event_id: str = ""
    cancel: str = ""
    detail: tuple[str, ...] = ()
    entry_id: str = ""  # the queue entry `Patch.enqueue` added

    @property
    def ok(self) -> bool:
        return self.status == "ok"


# -- time and encoding ------------------------------------------------------------------------


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def new_id() -> str:
    """A random id (commit ids, attempt start ids): 128 bits, hex."""
    return os.urandom(16).hex()


def timestamp(millis: int) -> Timestamp:
    return Timestamp(seconds=millis // 1000, nanos=(millis % 1000) * 1_000_000)


def set_millis(ts: Timestamp, millis: int) -> None:
    """`ts.CopyFrom(timestamp(millis))` without the intermediate message."""
    ts.seconds = millis // 1000
    ts.nanos = (millis % 1000) * 1_000_000


def millis_of(ts: Timestamp) -> int:
    return ts.seconds * 1000 + ts.nanos // 1_000_000


def encode_task(task: task_pb2.Task) -> bytes:
    """The stored record: everything but the steps (kept beside it) and the last event id (hot field)."""
    if task.steps or task.last_event_id:
        stored = task_pb2.Task()
        stored.CopyFrom(task)
        stored.ClearField("steps")
        stored.ClearField("last_event_id")
        task = stored
    return codec.encode_message(RecordKind.TASK, TASK_FORMAT, task)


def encode_step(step: task_pb2.Step) -> bytes:
    return codec.encode_message(RecordKind.STEP, STEP_FORMAT, step)


def record_fields(task: task_pb2.Task) -> dict[str, str | bytes | int]:
    """The hash fields that describe `task`: the record and the hot fields scripts read."""
    flat = record_args(task)
    return {str(name): value for name, value in zip(flat[0::2], flat[1::2], strict=True)}


def record_args(task: task_pb2.Task) -> list[str | bytes | int]:
    """`record_fields` as the flat name/value list a script takes."""
    return [
        Field.RECORD,
        encode_task(task),
        Field.STATE,
        int(task.state),
        Field.STOP,
        int(task.stop_reason),
        Field.MESSAGE,
        task.status_message,
        Field.ATTEMPT,
        task.attempt,
        Field.UPDATED,
        millis_of(task.update_time),
    ]


def pairs(flat: Sequence[Any]) -> dict[bytes, bytes]:
    """A Lua HGETALL reply (flat list of bytes; this layer never decodes replies) as a dict."""
    return dict(zip(flat[0::2], flat[1::2], strict=True))


_STEP_PREFIX = Field.STEP_PREFIX.encode()
_LEASE = Field.LEASE.encode()


def step_field(index: int) -> str:
    return f"{Field.STEP_PREFIX}{index}"


_ENCODED: dict[str, bytes] = {}


def _int(fields: Mapping[bytes, bytes], name: str, task_id: str, default: int = 0) -> int:
    raw = fields.get(_ENCODED.get(name) or _ENCODED.setdefault(name, name.encode()))
    if not raw:
        return default
    try:
        return int(raw)
    except ValueError:
        raise DataLoss(f"task {task_id}: field {name!r} holds {raw[:20]!r}, not a number") from None


def _text(fields: Mapping[bytes, bytes], name: str) -> str:
    raw = fields.get(_ENCODED.get(name) or _ENCODED.setdefault(name, name.encode()))
    return "" if raw is None else raw.decode(errors="replace")


def decode_snapshot(task_id: str, fields: Mapping[bytes, bytes], clock_ms: int | None = None) -> TaskSnapshot:
    """Build a snapshot from the task hash (its steps: the `s:<index>` fields present); DataLoss if
    the hash is not a task of ours. `clock_ms`: the Redis clock when it was read, to tell whether
    the lease is alive (None: unknown, taken as not alive)."""
    what = f"task {task_id}"
    if fields.get(Field.LAYOUT.encode()) != LAYOUT:
        found = fields.get(Field.LAYOUT.encode())
        raise DataLoss(
            f"{what}: the record hash has layout {found!r}, this release reads {LAYOUT!r} "
            "(foreign or corrupt data under an agentmesh key)"
        )
    task = codec.decode_message(
        fields.get(Field.RECORD.encode()), RecordKind.TASK, {TASK_FORMAT}, task_pb2.Task, what
    )
    if task.task_id != task_id:
        raise DataLoss(f"{what}: the record belongs to task {task.task_id!r}")
    task.state = _int(fields, Field.STATE, task_id)  # type: ignore[assignment]
    task.stop_reason = _int(fields, Field.STOP, task_id)  # type: ignore[assignment]
    task.status_message = _text(fields, Field.MESSAGE)
    task.attempt = _int(fields, Field.ATTEMPT, task_id)
    task.last_event_id = _text(fields, Field.LAST_EVENT)
    updated = _int(fields, Field.UPDATED, task_id)
    if updated:
        set_millis(task.update_time, updated)
    steps = [(name, data) for name, data in fields.items() if name.startswith(_STEP_PREFIX)]
    if steps:
        decoded = [
            codec.decode_message(data, RecordKind.STEP, {STEP_FORMAT}, task_pb2.Step, f"{what} {name!r}")
            for name, data in steps
        ]
        task.steps.extend(sorted(decoded, key=lambda s: s.index))
    lease_ttl_ms = -2
    if clock_ms is not None and fields.get(_LEASE):
        lease_ttl_ms = max(_int(fields, Field.LEASE_UNTIL, task_id) - clock_ms, -1)
    carrier_raw = fields.get(Field.TRACE.encode())
    try:
        carrier = json.loads(carrier_raw) if carrier_raw and carrier_raw != b"{}" else {}
    except ValueError:
        raise DataLoss(f"{what}: trace context is not JSON") from None
    return TaskSnapshot(
        task=task,
        rev=_int(fields, Field.REV, task_id),
        running=fields.get(Field.RUNNING.encode()) == b"1",
        lease_ttl_ms=lease_ttl_ms,
        cancel=_text(fields, Field.CANCEL),
        fingerprint=_text(fields, Field.FINGERPRINT),
        fails=_int(fields, Field.FAILS, task_id),
        error=_text(fields, Field.ERROR),
        retention_ms=_int(fields, Field.RETENTION, task_id),
        carrier=carrier if isinstance(carrier, dict) else {},
        mode=_text(fields, Field.MODE),
        resumption=_decode_resumption(task_id, fields),
    )


def _decode_resumption(task_id: str, fields: Mapping[bytes, bytes]) -> Resumption | None:
    raw = fields.get(Field.RESUME.encode())
    if not raw:
        return None
    what = f"task {task_id} resumption"
    # Records written before PendingActionAnswer hold ResumeTaskRequest bytes: the same fields.
    answer = codec.decode_message(
        raw, RecordKind.RESUMPTION, {RESUMPTION_FORMAT}, task_pb2.PendingActionAnswer, what
    )
    action = codec.decode_message(
        fields.get(Field.RESUME_ACTION.encode()),
        RecordKind.PENDING_ACTION,
        {RESUMPTION_FORMAT},
        task_pb2.PendingAction,
        what,
    )
    return Resumption(action=action, answer=answer, approver=_text(fields, Field.RESUME_BY))


def resumption_fields(resumption: Resumption) -> dict[str, str | bytes | int]:
    return {
        Field.RESUME: codec.encode_message(RecordKind.RESUMPTION, RESUMPTION_FORMAT, resumption.answer),
        Field.RESUME_ACTION: codec.encode_message(
            RecordKind.PENDING_ACTION, RESUMPTION_FORMAT, resumption.action
        ),
        Field.RESUME_BY: resumption.approver,
    }


RESUMPTION_FIELDS = (Field.RESUME, Field.RESUME_ACTION, Field.RESUME_BY)


def finish(
    task: task_pb2.Task,
    state: int,
    *,
    stop_reason: int,
    message: str,
    now: int,
    retention_ms: int,
) -> task_pb2.Task:
    """A copy of `task` in a terminal state, with end and expiry times."""
    check_transition(task.task_id, task.state, state)
    done = task_pb2.Task()
    done.CopyFrom(task)
    done.ClearField("steps")
    done.ClearField("last_event_id")  # a hot field; the caller sets the new one
    done.state = state  # type: ignore[assignment]
    done.stop_reason = stop_reason  # type: ignore[assignment]
    done.status_message = message
    done.ClearField("pending_action")
    set_millis(done.update_time, now)
    set_millis(done.end_time, now)
    set_millis(done.expire_time, now + retention_ms)
    return done
