"""Admission: creating a task — queued (SubmitTask) or run inline (Run) — idempotent on its request id.

One script writes the record (only if absent), its first events, the owner's index entry, and
either the queue entry (submit) or the lease and the outbox registration (an inline Run). The
task id is derived from (tenant, owner, domain, request id) and names the task's shard
(memory/tasks/ids.py); the same request id with the same request returns the same task, with a
different request it is INVALID_ARGUMENT (IDEMPOTENCY_KEY_REUSED).

An inline Run runs its first attempt in the receiving process; when the caller's deadline comes
first the queue takes the task over (STOP_REASON_HANDED_OFF). If its process dies, the sweeper
(memory/tasks/sweeper.py) queues it once its lease has expired.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from agentmesh.kit.errors import DataLoss, FieldViolation, InvalidArgument, echo
from agentmesh.v1 import errors_pb2, task_pb2
from memory.tasks import ids, pages, scripts, states
from memory.tasks.entries import entry_record
from memory.tasks.events import status_event
from memory.tasks.execution import Attempt, Executor, LeaseLost, run_attempt
from memory.tasks.records import Field, Patch, TaskSnapshot, new_id, now_ms, set_millis
from memory.tasks.store import TaskStore, not_found
from memory.tasks.trace_context import current_carrier, current_trace_id


@dataclass(frozen=True, slots=True)
class _Created:
    task: task_pb2.Task
    new: bool
    start_id: str = ""
    snapshot: TaskSnapshot | None = None  # a new inline task as its create script wrote it


def task_id_for(tenant: str, owner: str, domain: str, request_id: str, *, shards: int) -> str:
    """The task id a request id names: the same (tenant, owner, domain, request id) and shard count
    give the same id (memory/tasks/ids.py)."""
    return ids.for_request(tenant, owner, domain, request_id, shards=shards)


@dataclass(frozen=True, slots=True)
class NewTask:
    """What a caller asks of a new task (SubmitTask, Run): what the task keeps of the request.

    `fingerprint` is what must match for a repeated request id to be a replay; the layer that
    decoded the request computes it from the request as sent (agents/requests.py)."""

    instruction: str
    fingerprint: str
    parts: Sequence[task_pb2.Part] = ()
    session_id: str = ""
    request_id: str = ""
    labels: Mapping[str, str] = field(default_factory=dict)
    limits: task_pb2.Limits | None = None


class TaskAdmission:
    """Creates the tasks of one domain (see the module docstring)."""

    def __init__(self, store: TaskStore) -> None:
        self.store = store
        self.domain = store.domain
        self.config = store.config

    async def submit(
        self,
        request: NewTask,
        *,
        tenant: str,
        owner: str,
        limits: task_pb2.Limits | None = None,
    ) -> task_pb2.Task:
        """Create the task (state SUBMITTED) and queue it, in one step; idempotent on
        `request.request_id`.

        The same request id with the same request returns the same task; with a different
        request it is INVALID_ARGUMENT (IDEMPOTENCY_KEY_REUSED). `limits` are the limits in
        force (the request's merged with the domain's caps) stored on the task.
        """
        if not request.request_id:
            raise InvalidArgument(
                "request_id is required",
                violations=[FieldViolation("request_id", "is required", "REQUIRED")],
            )
        return (await self._create("submit", request, tenant, owner, limits, inline=False)).task

    async def run(
        self,
        request: NewTask,
        execute: Executor,
        *,
        tenant: str,
        owner: str,
        timeout_s: float,
        limits: task_pb2.Limits | None = None,
    ) -> task_pb2.Task:
        """Run a task inline (Run): same task record, checkpoints and ids as a submitted task.

        Returns the task when it ends, pauses (INPUT_REQUIRED), or when `timeout_s` runs out:
        then it is handed to the queue (state WORKING, STOP_REASON_HANDED_OFF) and a worker
        resumes it from the last checkpoint. A repeated request id returns the existing task
        without running it again. If this process dies, the sweeper hands the task to the
        queue once its lease expires.
        """
        created = await self._create("run", request, tenant, owner, limits, inline=True)
        if not created.new:
            return created.task
        # The create script wrote the record, the lease and attempt 1 atomically: the attempt
        # starts from what it wrote, without reading the task back (one round trip less).
        snapshot = created.snapshot
        if snapshot is None:
            raise DataLoss(f"task {created.task.task_id}: created inline without its snapshot")
        attempt = Attempt(self, snapshot, start_id=created.start_id, entry=None, inline=True)
        deadline = asyncio.timeout(timeout_s)
        try:
            async with deadline:
                return await run_attempt(attempt, execute)
        except TimeoutError:
            if not deadline.expired():
                raise
            return await asyncio.shield(self._hand_off(attempt, tenant, owner))
        except LeaseLost:
            return await self.store.get(created.task.task_id, tenant=tenant, owner=owner)
        except asyncio.CancelledError:
            with contextlib.suppress(Exception):
                await asyncio.shield(self._hand_off(attempt, tenant, owner))
            raise

    async def _hand_off(self, attempt: Attempt, tenant: str, owner: str) -> task_pb2.Task:
        """The Run's deadline passed (or its call was canceled): the queue takes over the task."""
        if attempt.finished:
            return attempt.task
        try:
            await attempt.hand_back(
                "the Run deadline passed; the task continues on the durable path",
                stop_reason=task_pb2.STOP_REASON_HANDED_OFF,
            )
        except LeaseLost:  # it ended (or was taken over) just before: report what is stored
            return await self.store.get(attempt.task_id, tenant=tenant, owner=owner)
        return attempt.task

    async def _create(
        self,
        mode: str,
        request: NewTask,
        tenant: str,
        owner: str,
        limits: task_pb2.Limits | None,
        *,
        inline: bool,
    ) -> _Created:
        """One script: the record (only if absent), its first events, the owner's index entry, and
        either the queue entry (submit) or the lease and the outbox registration (inline Run)."""
        if not tenant or not owner:
            raise ValueError("tasks need a tenant and an owner")
        shards = self.config.shards
        task_id = (
            ids.for_request(tenant, owner, self.domain, request.request_id, shards=shards)
            if request.request_id
            else ids.random_id(shards=shards)
        )
        fingerprint = request.fingerprint
        now = now_ms()
        carrier = current_carrier()
        task = task_pb2.Task(
            task_id=task_id,
            domain=self.domain,
            tenant=tenant,
            owner=owner,
            session_id=request.session_id,
            state=states.SUBMITTED,
            status_message="submitted",
            instruction=request.instruction,
            input_parts=request.parts,
            request_id=request.request_id,
            labels=dict(request.labels),
            trace_id=current_trace_id(),
        )
        in_force = limits if limits is not None else request.limits
        task.limits.CopyFrom(in_force if in_force is not None else task_pb2.Limits())
        set_millis(task.create_time, now)
        set_millis(task.update_time, now)
        retention = self.config.run_retention_ms if inline else self.config.retention_ms
        events = [status_event(task)]
        fields: dict[str, str | bytes | int] = {
            Field.LAYOUT: scripts.LAYOUT,
            Field.FINGERPRINT: fingerprint,
            Field.TRACE: json.dumps(carrier) if carrier else "{}",
            Field.RETENTION: retention,
            Field.MODE: mode,
        }
        patch = Patch(
            guard="new",
            task=task,
            fields=fields,
            events=events,
            index=(tenant, owner, pages.index_member(now, task_id)),
        )
        start_id = ""
        if inline:
            start_id = new_id()
            task.state = states.WORKING
            task.status_message = "running"
            task.attempt = 1
            patch.events = [*events, status_event(task)]
            patch.fields[Field.RUNNING] = "1"
            patch.lease, patch.lease_value, patch.lease_ms = "set", f"1:{start_id}", self.config.lease_ms
            patch.outbox = "add"
        else:
            patch.enqueue = entry_record(carrier)
        result = await self.store.commit(task_id, patch)
        if result.status == "exists":
            if result.detail and result.detail[0] != fingerprint:
                raise InvalidArgument(
                    f"request_id {echo(request.request_id)} was already used for a different request",
                    reason=errors_pb2.ERROR_REASON_IDEMPOTENCY_KEY_REUSED,
                    metadata={"request_id": request.request_id, "task_id": task_id},
                    violations=[
                        FieldViolation("request_id", "was already used for a different request", "REUSED")
                    ],
                )
            snapshot = await self.store.snapshot(task_id, steps=True)
            if snapshot is None or not self.store.visible(snapshot.task, tenant, owner):
                raise not_found(task_id)  # expired between the two reads; the caller may retry
            return _Created(snapshot.task, new=False)
        if not result.ok:
            raise DataLoss(f"task {task_id}: creation refused ({result.status})")
        task.last_event_id = result.last_event_id
        snapshot = None
        if inline:
            written = task_pb2.Task()
            written.CopyFrom(task)
            snapshot = TaskSnapshot(
                task=written,
                rev=result.rev,
                running=True,
                lease_ttl_ms=self.config.lease_ms,
                cancel=result.cancel,
                fingerprint=fingerprint,
                fails=0,
                error="",
                retention_ms=retention,
                carrier=dict(carrier) if carrier else {},
                mode=mode,
                resumption=None,
            )
        return _Created(task, new=True, start_id=start_id, snapshot=snapshot)
