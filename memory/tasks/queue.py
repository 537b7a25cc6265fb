"""TaskQueue: durable tasks of one domain on sharded Redis Streams, with crash recovery.

What the agent runtime calls (tenant/owner come from the caller's token):

    queue = TaskQueue(redis, domain="refunds", config=TaskConfig.from_settings(settings))
    task = await queue.submit(request, tenant=t, owner=o, limits=in_force)      # SubmitTask
    task = await queue.run(request, execute, tenant=t, owner=o, timeout_s=9.5)  # Run (inline)
    task = await queue.resume(request, tenant=t, owner=o)                       # ResumeTask
    queue.store.get / list / cancel / list_awaiting_approval                    # memory/tasks/store.py
    queue.events.watch(task_id, tenant=t, owner=o, after_event_id=...)          # WatchTask
    worker = TaskWorker(queue, execute, concurrency=settings.worker_concurrency) # memory/tasks/worker.py

Layout: N shards per domain (`AGENTMESH_QUEUE_SHARDS`). The slot of a shard,
`{q:<domain>:<shard>}`, holds its stream (consumer group named after the
domain), its dead letters, its outbox of inline runs, the owner indexes of
its tasks, and the tasks themselves: a task lives in the shard written in its
id (memory/tasks/ids.py), chosen at creation.

Because a task and its stream share a slot, each step of a task's life is one
script (memory/tasks/scripts.py), i.e. one round trip:

- submit: the record, its first event, its owner-index entry and its queue
  entry, all at once (idempotent on the task id, derived from the request id);
- claim: read the shard's next entry and begin an attempt on its task
  (attempt number = fencing token, lease, WORKING event); a worker waits on a
  blocking read only when the shard was empty;
- checkpoint: the step, its event, the lease renewal;
- finish: the final record and event, the retention TTL and the
  acknowledgement of the entry — a fenced-out worker can neither write nor
  acknowledge anything.

A worker that dies leaves its entry pending; after the idle timeout another
worker XAUTOCLAIMs it, the start script sees the dead attempt, counts a
failure and resumes from the last checkpoint. After `AGENTMESH_MAX_ATTEMPTS`
failed attempts the task is FAILED (STOP_REASON_DEAD_LETTERED) and, in the
same script, its entry moves to the dead letters, where an operator can
`redrive` it (`agentmesh tasks dead-letters list|redrive`).

Run executes inline: its record is created with a lease and registered in the
shard's outbox; if its process dies, the sweeper (memory/tasks/sweeper.py)
queues it once the lease has expired.

Trace context: the W3C `traceparent` of the submitting call is stored with the
task and carried in each queue entry; attempts run in that trace.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import redis.exceptions as rexc
from opentelemetry import propagate, trace

from agentmesh.kit import metrics
from agentmesh.kit.errors import (
    Aborted,
    DataLoss,
    FailedPrecondition,
    FieldViolation,
    InvalidArgument,
    NotFound,
    echo,
)
from agentmesh.v1 import agent_service_pb2, errors_pb2, task_pb2
from memory import codec, keys
from memory.connection import AnyRedis, redis_errors
from memory.tasks import ids, pages, scripts, states
from memory.tasks.effects import task_effects
from memory.tasks.entries import (
    QueueEntry,
    decode_entry_payload,
    encode_entry,
    entry_record,
    queue_entry,
    stream_id_key,
)
from memory.tasks.events import approval_event, encode_event, status_event, step_event
from memory.tasks.execution import Attempt, Executor, LeaseLost, run_attempt
from memory.tasks.reader import TaskEvents
from memory.tasks.records import (
    APPROVAL_KINDS,
    Field,
    Patch,
    Resumption,
    TaskSnapshot,
    decode_snapshot,
    finish,
    millis_of,
    new_id,
    now_ms,
    pairs,
    resumption_fields,
    set_millis,
)
from memory.tasks.store import TaskConfig, TaskStore, not_found, record_finished, refuse_state

log = logging.getLogger(__name__)

# `settle_failed(task with its steps, stop reason, error, status message, record)`: what the agent
# runtime does before the task layer itself fails a task — dead-lettering it, or expiring its
# pending action (its compensations); `record(step)` checkpoints one step of it.
StepRecorder = Callable[[task_pb2.Step], Awaitable[None]]
SettleFailed = Callable[[task_pb2.Task, int, task_pb2.TaskError, str, StepRecorder], Awaitable[object]]

MAX_LETTER_EFFECTS = 50
_CAS_RETRIES = 16


@dataclass(frozen=True, slots=True)
class _Created:
    task: task_pb2.Task
    new: bool
    start_id: str = ""
    snapshot: TaskSnapshot | None = None  # a new inline task as its create script wrote it


@dataclass(frozen=True, slots=True)
class DeadLetter:
    shard: int
    entry_id: str
    task_id: str
    reason: str
    failed_attempts: int
    dead_ms: int
    original_entry_id: str
    # The task's side effects when it was dead-lettered: step, tool, status, arguments_sha256, result
    # (memory.tasks.effects; `agentmesh tasks dead-letters show` prints them in full).
    effects: tuple[dict[str, Any], ...] = ()


@dataclass(frozen=True, slots=True)
class RedriveResult:
    entry_id: str
    task_id: str
    outcome: str  # redriven | gone (the task expired) | skipped (not dead-lettered any more)
    detail: str = ""


@dataclass(frozen=True, slots=True)
class QueueStats:
    depth: int  # entries not yet delivered to any worker
    pending: int  # delivered, not yet acknowledged (running, or held by a dead worker)
    lag_s: float  # age of the oldest undelivered entry
    dead_letters: int
    outbox: int  # inline runs (Run) registered for recovery


def task_id_for(tenant: str, owner: str, domain: str, request_id: str, *, shards: int) -> str:
    """The task id a request id names: the same (tenant, owner, domain, request id) and shard count
    give the same id (memory/tasks/ids.py)."""
    return ids.for_request(tenant, owner, domain, request_id, shards=shards)


def request_fingerprint(
    mode: str, request: agent_service_pb2.RunRequest | agent_service_pb2.SubmitTaskRequest
) -> str:
    """What must match for a repeated request id to be a replay (not the requested view)."""
    body = request.SerializeToString(deterministic=True)
    if isinstance(request, agent_service_pb2.RunRequest) and request.view:
        copy = agent_service_pb2.RunRequest()
        copy.CopyFrom(request)
        copy.ClearField("view")
        body = copy.SerializeToString(deterministic=True)
    return hashlib.sha256(mode.encode() + b"\0" + body).hexdigest()


def _s(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class TaskQueue:
    """Durable tasks of one domain; see the module docstring."""

    def __init__(
        self,
        redis: AnyRedis,
        *,
        domain: str,
        config: TaskConfig | None = None,
        settle_failed: SettleFailed | None = None,
    ) -> None:
        self.redis = redis
        self.domain = domain
        # Called before the task layer fails a task (the agent runtime's compensations); see
        # `_dead_letter_task` and TaskSweeper.
        self.settle_failed = settle_failed
        # The consumer group is named after the domain (the Helm chart's KEDA trigger reads its lag).
        self.group = domain
        self.config = config or TaskConfig()
        self.store = TaskStore(redis, domain=domain, config=self.config)
        self.events = TaskEvents(self.store, block_s=self.config.read_block_s)
        self._claim = redis.register_script(scripts.CLAIM)
        self._start = redis.register_script(scripts.START)
        self._recover = redis.register_script(scripts.RECOVER)
        self._requeue = redis.register_script(scripts.REQUEUE)
        self._dead_letter = redis.register_script(scripts.DEAD_LETTER)
        working = task_pb2.TASK_STATE_WORKING
        self._started_event = encode_event(
            task_pb2.TaskEvent(status_update=task_pb2.TaskStatusUpdate(state=working, message="running"))
        )
        self._resumed_event = encode_event(
            task_pb2.TaskEvent(
                status_update=task_pb2.TaskStatusUpdate(state=working, message=_RESUMED_MESSAGE)
            )
        )
        # What beginning an attempt needs besides the start id (scripts `begin`).
        self._begin_args: tuple[str | bytes | int, ...] = (
            self.config.lease_ms,
            self.config.max_attempts,
            self.config.events_maxlen,
            self._started_event,
            self._resumed_event,
            "running",
            _RESUMED_MESSAGE,
        )

    def shard_of(self, task_id: str) -> int:
        """The shard a task lives in (written in its id); NOT_FOUND for an id no task can have."""
        shard = ids.shard_of(task_id)
        if shard is None:
            raise not_found(task_id)
        return shard

    def shards(self) -> range:
        return range(self.config.shards)

    # -- creating tasks -------------------------------------------------------------------

    async def submit(
        self,
        request: agent_service_pb2.SubmitTaskRequest,
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
        request: agent_service_pb2.RunRequest,
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
        request: agent_service_pb2.RunRequest | agent_service_pb2.SubmitTaskRequest,
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
        fingerprint = request_fingerprint(mode, request)
        now = now_ms()
        carrier = _carrier_now()
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
            labels=request.labels,
            trace_id=_trace_id(),
        )
        task.limits.CopyFrom(limits if limits is not None else request.limits)
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

    # -- resuming paused tasks --------------------------------------------------------------

    async def resume(
        self, request: agent_service_pb2.ResumeTaskRequest, *, tenant: str, owner: str
    ) -> task_pb2.Task:
        """Answer the owner's paused task (INPUT_REQUIRED -> WORKING, queued again)."""
        return await self._resume(
            request, approver="", visible=lambda t: self.store.visible(t, tenant, owner)
        )

    async def resume_as_approver(
        self, request: agent_service_pb2.ResumeTaskRequest, *, tenant: str, approver: str
    ) -> task_pb2.Task:
        """Answer a task awaiting approval in this domain and tenant (the caller checked the
        approver's `<domain>:approve` scope); the approver is recorded with the decision."""

        def visible(task: task_pb2.Task) -> bool:
            return task.tenant == tenant and task.domain == self.domain

        return await self._resume(request, approver=approver, visible=visible)

    async def _resume(
        self, request: agent_service_pb2.ResumeTaskRequest, *, approver: str, visible: Any
    ) -> task_pb2.Task:
        _check_resume_request(request)
        task_id = request.task_id
        for _ in range(_CAS_RETRIES):
            snapshot = await self.store.snapshot(task_id)
            if snapshot is None or not visible(snapshot.task):
                raise not_found(task_id)
            task = snapshot.task
            if _replayed_resume(snapshot, request, approver):
                return task
            if approver and not (
                task.state == states.INPUT_REQUIRED and task.pending_action.kind in APPROVAL_KINDS
            ):
                raise not_found(task_id)  # approvers see only tasks that await an approval
            if task.state != states.INPUT_REQUIRED:
                raise refuse_state(task, "only a task waiting for input or approval can be resumed")
            pending = task.pending_action
            _check_answer(task, request)
            if pending.HasField("expire_time") and millis_of(pending.expire_time) <= now_ms():
                await self.store.expire_pending(task_id)
                raise _stale(task, f"pending action {pending.action_id} expired")
            resumed = _resumed(task, request, approver or task.owner)
            events: list[task_pb2.TaskEvent] = []
            if request.HasField("decision"):
                events.append(
                    approval_event(
                        task_pb2.ApprovalRecord(
                            action_id=pending.action_id,
                            approved=request.decision.approve,
                            approver=approver or task.owner,
                            reason=request.decision.reason,
                        )
                    )
                )
            events.append(status_event(resumed))
            fields = {
                Field.RETENTION: max(snapshot.retention_ms, self.config.retention_ms),
                **resumption_fields(Resumption(action=pending, request=request, approver=approver)),
            }
            # The answer and the new queue entry in one script: a resumed task is always queued.
            result = await self.store.commit(
                task_id,
                Patch(
                    guard="rev",
                    guard_value=str(snapshot.rev),
                    task=resumed,
                    fields=fields,
                    events=events,
                    enqueue=entry_record(_carrier_now() or snapshot.carrier),
                ),
            )
            if result.status == "stale":
                continue
            if not result.ok:
                raise not_found(task_id)
            resumed.last_event_id = result.last_event_id
            await self.store.forget_pause(task)
            return resumed
        raise FailedPrecondition(
            f"task {task_id} changed concurrently too often; retry",
            reason=errors_pb2.ERROR_REASON_INVALID_STATE,
            metadata={"task_id": task_id},
        )

    # -- reading and claiming -------------------------------------------------------------

    async def ensure_groups(self) -> None:
        """Create the consumer group of every shard (idempotent; from the start of the stream)."""
        for shard in self.shards():
            await self._ensure_group(shard)

    async def _ensure_group(self, shard: int) -> None:
        try:
            with redis_errors("creating the queue's consumer group"):
                await self.redis.xgroup_create(
                    keys.queue(self.domain, shard), self.group, id="0", mkstream=True
                )
        except rexc.ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    async def claim(self, consumer: str, shard: int) -> Attempt | None:
        """Take the next new entry of `shard` and begin an attempt on its task, in one script.

        None when there is nothing to start now: the shard is empty (wait with `read(...,
        block_ms=...)`), or its next entry needed other handling (a task another attempt holds,
        an unreadable entry, a task that failed too often).
        """
        domain = self.domain
        start_id = new_id()
        try:
            with redis_errors("claiming a task"):
                reply = await self._claim(
                    keys=[keys.queue(domain, shard), keys.claim_memo(domain, shard, consumer)],
                    args=[
                        self.group,
                        consumer,
                        start_id,
                        *self._begin_args,
                        keys.task_prefix(domain, shard),
                        f"{shard:02x}",
                    ],
                )
        except rexc.ResponseError as exc:
            if "NOGROUP" not in str(exc):
                raise
            await self._ensure_group(shard)
            return None
        status = _s(reply[0])
        if status in {"empty", "settled"}:
            return None
        entry_id = _s(reply[1])
        if status == "unreadable":
            await self._park_unreadable(shard, entry_id, codec.as_bytes(reply[2]) or b"")
            return None
        entry = queue_entry(shard, entry_id, _s(reply[2]), codec.as_bytes(reply[3]) or b"")
        return await self._begun(entry, consumer, start_id, status, reply[4:])

    async def read(
        self, consumer: str, shard: int, *, count: int = 1, block_ms: int | None = None
    ) -> list[QueueEntry]:
        """New entries of one shard for `consumer` (XREADGROUP; blocks up to `block_ms`); begin
        each with `start`."""
        stream = keys.queue(self.domain, shard)
        try:
            with redis_errors("reading the task queue"):
                reply: Any = await self.redis.xreadgroup(
                    self.group, consumer, {stream: ">"}, count=count, block=block_ms
                )
        except rexc.ResponseError as exc:
            if "NOGROUP" not in str(exc):
                raise
            await self._ensure_group(shard)
            return []
        entries: list[QueueEntry] = []
        for _stream, items in reply or []:
            entries.extend(await self._entries(shard, items))
        return entries

    async def reclaim(self, consumer: str, shard: int, *, count: int) -> list[QueueEntry]:
        """Entries of dead (or stalled) workers: pending longer than the claim idle timeout."""
        stream = keys.queue(self.domain, shard)
        try:
            with redis_errors("reclaiming idle queue entries"):
                reply: Any = await self.redis.xautoclaim(
                    stream,
                    self.group,
                    consumer,
                    min_idle_time=self.config.lease_ms,
                    start_id="0-0",
                    count=count,
                )
        except rexc.ResponseError as exc:
            if "NOGROUP" not in str(exc):
                raise
            await self._ensure_group(shard)
            return []
        return await self._entries(shard, reply[1] if len(reply) > 1 else [])

    async def reclaimable(self, shard: int, *, count: int) -> int:
        """How many entries of `shard` a reclaim would take now (idle past the claim timeout), up to
        `count`; a read (XPENDING IDLE), nothing changes hands."""
        stream = keys.queue(self.domain, shard)
        try:
            with redis_errors("reading idle queue entries"):
                pending: Any = await self.redis.xpending_range(
                    stream, self.group, "-", "+", count, idle=self.config.lease_ms
                )
        except rexc.ResponseError as exc:
            if "NOGROUP" not in str(exc):
                raise
            await self._ensure_group(shard)
            return 0
        return len(pending)

    async def _entries(self, shard: int, items: Iterable[Any]) -> list[QueueEntry]:
        entries = []
        for entry_id, fields in items:
            entry_id = _s(entry_id)
            if not fields:  # deleted after it was delivered (XAUTOCLAIM reports it); nothing to run
                continue
            task_id = _s(fields.get(b"t", b""))
            record = fields.get(b"e") or b""
            if ids.shard_of(task_id) != shard:
                await self._park_unreadable(shard, entry_id, record)
                continue
            entries.append(queue_entry(shard, entry_id, task_id, record))
        return entries

    async def start(self, entry: QueueEntry, consumer: str) -> Attempt | None:
        """Begin an attempt on the task of an entry delivered to `consumer`, or settle the entry (None)
        when there is nothing to run.

        A task another live attempt holds is left alone (None; that attempt acknowledges the
        entry); a finished, paused or vanished task's entry is acknowledged; a task that
        failed too often is dead-lettered.
        """
        task_keys = self.store.task_keys(entry.task_id)
        if task_keys is None:
            await self._park_unreadable(entry.shard, entry.entry_id, entry.raw)
            return None
        start_id = new_id()
        with redis_errors(f"starting task {entry.task_id}"):
            reply = await self._start(
                keys=[task_keys[0], task_keys[1], keys.queue(self.domain, entry.shard)],
                args=[start_id, *self._begin_args, self.group, entry.entry_id],
            )
        return await self._begun(entry, consumer, start_id, _s(reply[0]), reply[1:])

    async def _begun(
        self, entry: QueueEntry, consumer: str, start_id: str, status: str, reply: Sequence[Any]
    ) -> Attempt | None:
        """What a claim or start answered (scripts `begin`: the fields read and the fields it
        wrote over them), for `entry`."""
        task_id = entry.task_id
        if status == "started":
            try:
                snapshot = decode_snapshot(task_id, _written(reply))
            except DataLoss as exc:  # unreadable: park the entry where an operator sees it
                log.error("task record unreadable; entry dead-lettered", extra={"task_id": task_id})
                await self._move_to_dead_letters(entry.shard, entry.entry_id, task_id, str(exc), 0)
                return None
            snapshot.lease_ttl_ms = self.config.lease_ms  # just taken
            if _s(reply[2]) == "1":
                metrics.TASK_RECOVERIES.labels(domain=self.domain).inc()
            return Attempt(self, snapshot, start_id=start_id, entry=entry, consumer=consumer)
        if status in {"busy", "missing", "idle"}:  # held by a live attempt, or settled by the script
            return None
        if status == "corrupt":
            reason = f"task {task_id}: the record is corrupt"
            await self._move_to_dead_letters(entry.shard, entry.entry_id, task_id, reason, 0)
            return None
        if status == "poison":
            await self._dead_letter_task(entry, decode_snapshot(task_id, _written(reply)))
            return None
        raise DataLoss(f"task {task_id}: unexpected start answer {status!r}")

    async def _dead_letter_task(self, entry: QueueEntry, snapshot: TaskSnapshot) -> None:
        """FAILED (DEAD_LETTERED) and the entry moved to the dead letters, in one script.

        First `settle_failed` (when set) may record steps — the agent runtime's compensations of
        the task's completed side effects — each checkpointed on its own (guarded by the record's
        revision), so a crash in between leaves the entry pending: the next worker finds the task
        poisoned again and settles only what is left. A failing hook is logged, never retried
        here: the task is dead-lettered all the same. The dead letter lists the task's side
        effects (memory.tasks.effects) so they outlive the task's retention."""
        reason = snapshot.error or "failed too many attempts"
        message = f"dead-lettered after {snapshot.fails} failed attempts: {reason}"
        error = task_pb2.TaskError(
            reason="DEAD_LETTERED",
            message=reason[:1000],
            metadata={"failed_attempts": str(snapshot.fails), "domain": self.domain},
        )
        if self.settle_failed is not None:
            settled = await self.settle(snapshot, task_pb2.STOP_REASON_DEAD_LETTERED, error, message[:1000])
            if settled is None:
                return
            snapshot = settled
        full = await self.store.snapshot(snapshot.task.task_id, steps=True)
        steps = list(full.task.steps) if full is not None else []
        task = snapshot.task
        done = finish(
            task,
            states.FAILED,
            stop_reason=task_pb2.STOP_REASON_DEAD_LETTERED,
            message=message[:1000],
            now=now_ms(),
            retention_ms=max(snapshot.retention_ms, self.config.retention_ms),
        )
        done.error.CopyFrom(error)
        patch = self.store.terminal_patch(done, snapshot, guard="rev")
        patch.ack = entry.entry_id
        effects = [
            {
                "step": e.step,
                "tool": e.tool,
                "status": e.status,
                "arguments_sha256": e.arguments_sha256,
                "result": e.result,
            }
            for e in task_effects(task.task_id, steps)
        ]
        patch.dead_letter = _dead_letter_record(
            task.task_id, reason, snapshot.fails, entry.entry_id, effects=effects
        )
        result = await self.store.commit(task.task_id, patch)
        if not result.ok:  # changed meanwhile (canceled?): the entry comes back and is settled then
            log.info("dead-lettering raced with another change", extra={"task_id": task.task_id})
            return
        record_finished(self.domain, done.state)
        metrics.TASK_DEAD_LETTERS.labels(domain=self.domain).inc()
        log.warning("task dead-lettered", extra={"task_id": task.task_id, "reason": reason})

    async def settle(
        self, snapshot: TaskSnapshot, stop_reason: int, error: task_pb2.TaskError, message: str
    ) -> TaskSnapshot | None:
        """Run `settle_failed` on a task the task layer is about to fail; the snapshot to fail it
        from after that (None: the task changed meanwhile, e.g. canceled or resumed)."""
        task_id = snapshot.task.task_id
        full = await self.store.snapshot(task_id, steps=True)
        if full is None or full.rev != snapshot.rev:
            return None

        async def record(step: task_pb2.Step) -> None:
            for _ in range(_CAS_RETRIES):
                current = await self.store.snapshot(task_id)
                if current is None:
                    raise NotFound(f"task {task_id} is gone")
                result = await self.store.commit(
                    task_id,
                    Patch(
                        guard="rev",
                        guard_value=str(current.rev),
                        step=step,
                        events=[step_event(step, finished=True)],
                        fields={Field.UPDATED: now_ms()},
                    ),
                )
                if result.ok or result.status == "step_conflict":  # recorded (here or by a rival)
                    return
                if result.status != "stale":
                    raise FailedPrecondition(f"task {task_id}: recording step {step.index}: {result.status}")
            raise Aborted(f"task {task_id} kept changing while recording step {step.index}")

        assert self.settle_failed is not None
        try:
            await self.settle_failed(full.task, stop_reason, error, message, record)
        except Exception:  # fail it all the same: an operator sees the effects (`show`)
            log.exception("settling a failing task failed", extra={"task_id": task_id})
        return await self.store.snapshot(task_id)

    async def _park_unreadable(self, shard: int, entry_id: str, record: bytes) -> None:
        """An entry that names no task of its shard: to the dead letters, with why."""
        try:
            decode_entry_payload(record, f"queue entry {entry_id}")
            reason = f"queue entry {entry_id} names no task of shard {shard}"
        except DataLoss as exc:
            reason = str(exc)
        log.error("unreadable queue entry moved to the dead letters", extra={"entry_id": entry_id})
        await self._move_to_dead_letters(shard, entry_id, "", reason, 0)

    async def _move_to_dead_letters(
        self, shard: int, entry_id: str, task_id: str, reason: str, fails: int
    ) -> None:
        """Move an entry whose task cannot be changed (unreadable) to the dead letters."""
        with redis_errors("moving an entry to the dead letters"):
            await self._dead_letter(
                keys=[keys.queue(self.domain, shard), keys.dead_letters(self.domain, shard)],
                args=[
                    self.group,
                    entry_id,
                    _dead_letter_record(task_id, reason, fails, entry_id),
                    self.config.dead_letters_maxlen,
                ],
            )

    async def requeue(self, entry: QueueEntry) -> bool:
        """Hand an entry back untouched (read while draining): a fresh copy other workers read at
        once. False if the entry was no longer pending (nothing was added)."""
        with redis_errors("handing a queue entry back"):
            return bool(
                await self._requeue(
                    keys=[keys.queue(self.domain, entry.shard)],
                    args=[self.group, entry.entry_id, entry.task_id, entry.raw],
                )
            )

    async def recover_inline(self, task_id: str, carrier: dict[str, str]) -> str:
        """The sweeper's look at an inline run in the outbox (scripts.RECOVER): 'enqueued' if
        its process died before it ended; 'kept' (lease alive), 'dropped' or 'gone' otherwise."""
        task_keys = self.store.task_keys(task_id)
        if task_keys is None:
            return "dropped"
        shard = self.shard_of(task_id)
        with redis_errors(f"recovering task {task_id}"):
            outcome = await self._recover(
                keys=[
                    keys.outbox(self.domain, shard),
                    keys.queue(self.domain, shard),
                    task_keys[0],
                ],
                args=[task_id, now_ms(), entry_record(carrier)],
            )
        return _s(outcome)

    # -- dead letters -----------------------------------------------------------------------

    async def dead_letters(self, *, limit: int = 100) -> list[DeadLetter]:
        """The newest dead letters over all shards."""
        found: list[DeadLetter] = []
        for shard in self.shards():
            with redis_errors("reading the dead letters"):
                items: Any = await self.redis.xrevrange(
                    keys.dead_letters(self.domain, shard), "+", "-", count=limit
                )
            for entry_id, fields in items:
                entry_id = _s(entry_id)
                try:
                    payload = decode_entry_payload(
                        fields.get(b"e"), f"dead letter {entry_id}", needs_task=False
                    )
                except DataLoss as exc:
                    payload = {"t": "", "reason": str(exc)}
                found.append(
                    DeadLetter(
                        shard=shard,
                        entry_id=entry_id,
                        task_id=str(payload.get("t", "")),
                        reason=str(payload.get("reason", "")),
                        failed_attempts=int(payload.get("fails", 0) or 0),
                        dead_ms=int(payload.get("at", 0) or 0),
                        original_entry_id=str(payload.get("entry", "")),
                        effects=tuple(e for e in payload.get("effects", ()) if isinstance(e, dict)),
                    )
                )
        found.sort(key=lambda d: stream_id_key(d.entry_id), reverse=True)
        return found[:limit]

    async def redrive(
        self, entry_ids: Sequence[str] | None = None, *, limit: int = 1000
    ) -> list[RedriveResult]:
        """Re-open dead-lettered tasks (FAILED -> SUBMITTED, attempts reset) and queue them again.

        `entry_ids=None` redrives every dead letter (up to `limit`).
        """
        letters = await self.dead_letters(limit=limit)
        if entry_ids is not None:
            wanted = set(entry_ids)
            letters = [d for d in letters if d.entry_id in wanted]
            missing = wanted - {d.entry_id for d in letters}
        else:
            missing = set()
        results = [RedriveResult(e, "", "gone", "no such dead letter") for e in sorted(missing)]
        for letter in letters:
            results.append(await self._redrive_one(letter))
        return results

    async def _redrive_one(self, letter: DeadLetter) -> RedriveResult:
        if not letter.task_id:
            return RedriveResult(
                letter.entry_id, "", "skipped", "the dead letter names no task (corrupt entry)"
            )
        for _ in range(_CAS_RETRIES):
            snapshot = await self.store.snapshot(letter.task_id)
            if snapshot is None:
                return RedriveResult(letter.entry_id, letter.task_id, "gone", "the task expired")
            task = snapshot.task
            if not states.can_redrive(task.state, task.stop_reason):
                await self._drop_dead_letter(letter)
                return RedriveResult(
                    letter.entry_id,
                    letter.task_id,
                    "skipped",
                    f"task is {states.state_name(task.state)}",
                )
            reopened = task_pb2.Task()
            reopened.CopyFrom(task)
            now = now_ms()
            reopened.state = states.SUBMITTED
            reopened.stop_reason = task_pb2.STOP_REASON_UNSPECIFIED
            reopened.status_message = "redriven from the dead letters"
            for name in ("end_time", "expire_time", "error"):
                reopened.ClearField(name)
            set_millis(reopened.update_time, now)
            # The letter lives in the task's shard, so re-opening, queueing and dropping the letter
            # are one script.
            same_shard = ids.shard_of(task.task_id) == letter.shard
            result = await self.store.commit(
                task.task_id,
                Patch(
                    guard="rev",
                    guard_value=str(snapshot.rev),
                    task=reopened,
                    fields={Field.FAILS: 0, Field.ERROR: ""},
                    delete=(Field.RUNNING, Field.CANCEL),
                    events=[status_event(reopened)],
                    ttl_ms=0,
                    enqueue=entry_record(snapshot.carrier),
                    drop_dead_letter=letter.entry_id if same_shard else "",
                ),
            )
            if result.status == "stale":
                continue
            if not result.ok:
                return RedriveResult(letter.entry_id, letter.task_id, "gone", result.status)
            if not same_shard:
                await self._drop_dead_letter(letter)
            return RedriveResult(letter.entry_id, letter.task_id, "redriven")
        return RedriveResult(letter.entry_id, letter.task_id, "skipped", "the task kept changing; try again")

    async def _drop_dead_letter(self, letter: DeadLetter) -> None:
        with redis_errors("dropping a dead letter"):
            await self.redis.xdel(keys.dead_letters(self.domain, letter.shard), letter.entry_id)

    # -- statistics -----------------------------------------------------------------------

    async def stats(self) -> QueueStats:
        """Depth, pending, lag and dead letters over all shards; also exported as metrics."""
        depth = pending = dead = outbox = 0
        lag_s = 0.0
        now = now_ms()
        for shard in self.shards():
            stream = keys.queue(self.domain, shard)
            with redis_errors("reading queue statistics"):
                try:
                    groups = await self.redis.xinfo_groups(stream)
                except rexc.ResponseError:  # no stream yet
                    groups = []
                pipe = self.redis.pipeline(transaction=False)
                pipe.xlen(keys.dead_letters(self.domain, shard))
                pipe.zcard(keys.outbox(self.domain, shard))
                dead_n, outbox_n = await pipe.execute()
            dead += int(dead_n)
            outbox += int(outbox_n)
            for group in groups:
                if _s(group.get("name", b"")) != self.group:
                    continue
                pending += int(group.get("pending") or 0)
                shard_lag = group.get("lag")
                last = _s(group.get("last-delivered-id") or "0-0")
                with redis_errors("reading queue statistics"):
                    oldest: Any = await self.redis.xrange(stream, f"({last}", "+", count=1)
                    if shard_lag is None:
                        backlog: Any = await self.redis.xrange(stream, f"({last}", "+", count=10_000)
                        shard_lag = len(backlog)
                depth += int(shard_lag)
                if oldest:
                    lag_s = max(lag_s, (now - stream_id_key(_s(oldest[0][0]))[0]) / 1000)
        metrics.TASK_QUEUE_DEPTH.labels(domain=self.domain).set(depth)
        metrics.TASK_QUEUE_PENDING.labels(domain=self.domain).set(pending)
        metrics.TASK_QUEUE_LAG.labels(domain=self.domain).set(lag_s)
        metrics.TASK_DEAD_LETTER_DEPTH.labels(domain=self.domain).set(dead)
        return QueueStats(depth=depth, pending=pending, lag_s=lag_s, dead_letters=dead, outbox=outbox)


_RESUMED_MESSAGE = "resumed from the last checkpoint after its worker was lost"


def _written(reply: Sequence[Any]) -> dict[bytes, bytes]:
    """A task hash as `begin` saw it, with what it wrote on top."""
    fields = pairs(reply[0])
    fields.update(pairs(reply[1]))
    return fields


def _dead_letter_record(
    task_id: str, reason: str, fails: int, entry_id: str, *, effects: Sequence[dict[str, Any]] = ()
) -> bytes:
    payload: dict[str, Any] = {
        "t": task_id,
        "reason": reason[:1000],
        "fails": fails,
        "entry": entry_id,
        "at": now_ms(),
    }
    if effects:  # the side effects the task's steps record (bounded: a dead letter stays small)
        payload["effects"] = list(effects[:MAX_LETTER_EFFECTS])
    return encode_entry(payload)


def _carrier_now() -> dict[str, str]:
    carrier: dict[str, str] = {}
    propagate.inject(carrier)
    return carrier


def _trace_id() -> str:
    context = trace.get_current_span().get_span_context()
    return f"{context.trace_id:032x}" if context.is_valid else ""


def _check_resume_request(request: agent_service_pb2.ResumeTaskRequest) -> None:
    violations = []
    if not request.task_id:
        violations.append(FieldViolation("task_id", "is required", "REQUIRED"))
    if not request.action_id:
        violations.append(FieldViolation("action_id", "is required", "REQUIRED"))
    if request.WhichOneof("answer") is None:
        violations.append(FieldViolation("decision", "an answer (decision or input) is required", "REQUIRED"))
    if violations:
        raise InvalidArgument("invalid ResumeTask request", violations=violations)


def _check_answer(task: task_pb2.Task, request: agent_service_pb2.ResumeTaskRequest) -> None:
    pending = task.pending_action
    if request.action_id != pending.action_id:
        raise _stale(task, f"action {echo(request.action_id)} is not the pending action")
    if pending.kind == task_pb2.PENDING_ACTION_KIND_INPUT:
        if not request.HasField("input") or not request.input.parts:
            raise InvalidArgument(
                "this task waits for input: send `input` with at least one part",
                violations=[FieldViolation("input", "required for a pending input request", "REQUIRED")],
            )
    elif not request.HasField("decision"):
        raise InvalidArgument(
            "this task waits for a decision: send `decision`",
            violations=[FieldViolation("decision", "required for a pending approval", "REQUIRED")],
        )


def _stale(task: task_pb2.Task, why: str) -> FailedPrecondition:
    return FailedPrecondition(
        f"task {task.task_id}: {why}",
        reason=errors_pb2.ERROR_REASON_STALE_ACTION,
        metadata={"task_id": task.task_id, "pending_action_id": task.pending_action.action_id},
    )


def _replayed_resume(
    snapshot: TaskSnapshot, request: agent_service_pb2.ResumeTaskRequest, approver: str
) -> bool:
    """A repeated ResumeTask (same request id, same answer) after it was applied."""
    done = snapshot.resumption
    return bool(
        request.request_id
        and done is not None
        and done.approver == approver
        and done.request.SerializeToString(deterministic=True)
        == request.SerializeToString(deterministic=True)
    )


def _resumed(
    task: task_pb2.Task, request: agent_service_pb2.ResumeTaskRequest, answered_by: str
) -> task_pb2.Task:
    states.check_transition(task.task_id, task.state, states.WORKING)
    resumed = task_pb2.Task()
    resumed.CopyFrom(task)
    resumed.ClearField("steps")
    resumed.ClearField("pending_action")
    resumed.state = states.WORKING
    resumed.stop_reason = task_pb2.STOP_REASON_UNSPECIFIED
    if request.HasField("decision"):
        verdict = "approved" if request.decision.approve else "rejected"
        resumed.status_message = f"{verdict} by {answered_by}; queued to continue"
    else:
        resumed.status_message = "input received; queued to continue"
    set_millis(resumed.update_time, now_ms())
    return resumed
