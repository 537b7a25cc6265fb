"""TaskStore: task records in Redis, checked transitions, owner-only visibility, listings.

    store = TaskStore(redis, domain="refunds", config=TaskConfig.from_settings(settings))
    task = await store.get(task_id, tenant=t, owner=o)               # NOT_FOUND unless o owns it
    page = await store.list_tasks(tenant=t, owner=o, states=[...], page_token=token)
    task = await store.cancel(task_id, tenant=t, owner=o, reason="changed my mind")
    page = await store.list_awaiting_approval(tenant=t)              # approvers (scope checked by caller)

A task's keys (its hash — record, checkpointed steps, lease — and its event
stream) live in the slot of its queue shard `{q:<domain>:<shard>}`; the shard
is written in the task id (memory/tasks/ids.py). Every change goes through one script
(`scripts.COMMIT`) that checks a guard first and then writes the record,
the step, the events, the lease, the retention TTL and what the change means
for the queue (enqueue, acknowledge, dead-letter, owner index) together: a
task is never half-written, the record never disagrees with its events, and
its queue entry never disagrees with its state. Guards:

- `new`: create only if absent (idempotent creation; the request fingerprint is
  returned when the task exists);
- `rev`: compare-and-set on the record revision (API-side read-modify-write:
  cancel, resume, expiry, dead-lettering);
- `fence`: the caller's attempt number must still be the task's current attempt
  and the attempt still in progress — a worker whose task was taken over can
  no longer write anything (see memory/tasks/queue.py).

Records are `agentmesh.v1.Task` (memory.codec, versioned); a few hot fields
(state, stop reason, status message, attempt, update time, last event id) live
beside the record in the hash so scripts can change them without decoding
protobuf, and readers overlay them on the record. Terminal tasks expire after
the retention (`TaskConfig.retention_s`, Run tasks `run_retention_s`).

Visibility: every read takes (tenant, owner); a task of someone else, of
another domain, or that does not exist is NOT_FOUND (TASK_NOT_FOUND) — the
answers are identical, so ids cannot be probed.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from agentmesh.kit import metrics
from agentmesh.kit.config import Settings
from agentmesh.kit.errors import Aborted, DataLoss, FailedPrecondition, NotFound, echo
from agentmesh.kit.pages import decode_page_token, encode_page_token, filter_fingerprint
from agentmesh.v1 import errors_pb2, task_pb2
from memory import codec, keys
from memory.connection import AnyRedis, redis_errors
from memory.tasks import ids, pages, scripts
from memory.tasks.events import encode_event, status_event
from memory.tasks.records import (
    APPROVAL_KINDS,
    RESUMPTION_FIELDS,
    SNAPSHOT_FIELDS,
    CommitResult,
    Field,
    Patch,
    TaskSnapshot,
    decode_snapshot,
    encode_step,
    finish,
    millis_of,
    new_id,
    now_ms,
    pairs,
    record_args,
    timestamp,
)
from memory.tasks.states import (
    CANCELED,
    FAILED,
    INPUT_REQUIRED,
    check_transition,
    state_name,
)

log = logging.getLogger(__name__)

# How often a read-modify-write guarded by the record's revision is tried before it gives up.
CAS_RETRIES = 16


@dataclass(frozen=True, slots=True)
class TaskConfig:
    """Tuning of the task layer; `from_settings` reads the AGENTMESH_* variables."""

    shards: int = 4
    retention_s: float = 7 * 86400.0
    run_retention_s: float = 3600.0
    claim_idle_timeout_s: float = 30.0
    max_attempts: int = 3
    read_block_s: float = 2.0
    events_maxlen: int = 10_000
    dead_letters_maxlen: int = 10_000
    index_ttl_s: float = 30 * 86400.0

    def __post_init__(self) -> None:
        if not 1 <= self.shards <= ids.MAX_SHARDS or self.max_attempts < 1:
            raise ValueError(f"shards must be 1..{ids.MAX_SHARDS} and max_attempts at least 1")
        if min(self.retention_s, self.run_retention_s, self.claim_idle_timeout_s, self.read_block_s) <= 0:
            raise ValueError("retention, idle timeout and read block must be positive")

    @classmethod
    def from_settings(cls, settings: Settings, **overrides: Any) -> TaskConfig:
        values: dict[str, Any] = {
            "shards": settings.queue_shards,
            "retention_s": settings.task_retention_s,
            "run_retention_s": settings.run_retention_s,
            "claim_idle_timeout_s": settings.claim_idle_timeout_s,
            "max_attempts": settings.max_attempts,
        }
        values.update(overrides)
        return cls(**values)

    @property
    def lease_ms(self) -> int:
        return int(self.claim_idle_timeout_s * 1000)

    @property
    def retention_ms(self) -> int:
        return int(self.retention_s * 1000)

    @property
    def run_retention_ms(self) -> int:
        return int(self.run_retention_s * 1000)


@dataclass(frozen=True, slots=True)
class TaskPage:
    tasks: list[task_pb2.Task]
    next_page_token: str


def not_found(task_id: str) -> NotFound:
    return NotFound(
        f"task {echo(task_id)} not found",
        reason=errors_pb2.ERROR_REASON_TASK_NOT_FOUND,
        metadata={"task_id": task_id},
    )


class TaskStore:
    """Task records of one domain. See the module docstring."""

    def __init__(self, redis: AnyRedis, *, domain: str, config: TaskConfig | None = None) -> None:
        self.redis = redis
        self.domain = domain
        self.config = config or TaskConfig()
        self._index_ttl_ms = int(self.config.index_ttl_s * 1000)
        self._commit = redis.register_script(scripts.COMMIT)
        self._read = redis.register_script(scripts.READ)

    # -- low level: one guarded change, one consistent read ------------------------------------

    def task_keys(self, task_id: str) -> list[str] | None:
        """The keys a commit of `task_id` uses (task, events, and its shard's stream, outbox, dead
        letters); None for an id no task can have."""
        shard = ids.shard_of(task_id)
        if shard is None:
            return None
        domain = self.domain
        return [
            *keys.task_keys(domain, shard, task_id),
            keys.queue(domain, shard),
            keys.outbox(domain, shard),
            keys.dead_letters(domain, shard),
        ]

    async def commit(self, task_id: str, patch: Patch, *, task_keys: list[str] | None = None) -> CommitResult:
        """Apply one guarded change (scripts.COMMIT). `task_keys`: `self.task_keys(task_id)`,
        for callers that keep them."""
        task_keys = task_keys or self.task_keys(task_id)
        if task_keys is None:
            return CommitResult("missing")
        args: list[str | bytes | int] = [
            patch.commit_id or new_id(),
            patch.guard,
            patch.guard_value,
            self.config.events_maxlen,
            0,
        ]
        if patch.task is not None:
            args += record_args(patch.task)
        for name, value in patch.fields.items():  # after the record: these win (HSET keeps the last)
            args += (name, value)
        args[4] = (len(args) - 5) // 2
        args.append(len(patch.delete))  # cleared: written as '' in the same HSET
        args += patch.delete
        args.append(len(patch.events))
        args += [encode_event(event) for event in patch.events]
        if patch.lease == "set":
            args += ("lease", patch.lease_value, patch.lease_ms)
        elif patch.lease == "release":
            args.append("unlease")
        if patch.ttl_ms is not None:
            args += ("ttl", patch.ttl_ms)
        if patch.step is not None:
            args += ("step", patch.step.index, encode_step(patch.step))
        if patch.ack:
            args += ("ack", self.domain, patch.ack)
        if patch.touch is not None:
            args += ("touch", self.domain, *patch.touch)
        if patch.enqueue:
            args += ("enqueue", task_id, patch.enqueue)
        if patch.dead_letter:
            args += ("dead", patch.dead_letter, self.config.dead_letters_maxlen)
        if patch.drop_dead_letter:
            args += ("undead", patch.drop_dead_letter)
        if patch.outbox:
            args += ("outbox", patch.outbox, task_id, now_ms())
        if patch.index is not None:
            tenant, owner, member = patch.index
            shard = ids.shard_of(task_id)
            assert shard is not None  # task_keys exist
            task_keys = [*task_keys, keys.owner_tasks(self.domain, shard, tenant, owner)]
            args += ("index", member, self._index_ttl_ms)
        with redis_errors(f"writing task {task_id}"):
            reply = await self._commit(keys=task_keys, args=args)
        if reply[0] == b"ok":
            last, cancel, entry = reply[2], reply[3], reply[4]
            return CommitResult(
                "ok",
                rev=int(reply[1]),
                last_event_id=last.decode() if last else "",
                cancel=cancel.decode() if cancel else "",
                entry_id=entry.decode() if entry else "",
            )
        status = codec.as_text(reply[0])
        if status == "corrupt":
            which = codec.as_text(reply[1]) if len(reply) > 1 else "record"
            raise DataLoss(
                f"task {task_id}: its {which} key holds data this release cannot read (foreign or corrupt); "
                "nothing was written"
            )
        return CommitResult(status, detail=tuple(codec.as_text(x) for x in reply[1:]))

    async def snapshot(self, task_id: str, *, steps: bool = False) -> TaskSnapshot | None:
        """The stored task (None if absent), regardless of who may see it."""
        task_keys = self.task_keys(task_id)
        if task_keys is None:
            return None
        with redis_errors(f"reading task {task_id}"):
            fields, clock = await self._read(keys=[task_keys[0]], args=[] if steps else SNAPSHOT_FIELDS)
        if not fields:
            return None
        return decode_snapshot(task_id, pairs(fields), int(clock))

    # -- reads for callers -------------------------------------------------------------------

    def visible(self, task: task_pb2.Task, tenant: str, owner: str) -> bool:
        return task.tenant == tenant and task.owner == owner and task.domain == self.domain

    async def get(
        self, task_id: str, *, tenant: str, owner: str, view: int = task_pb2.TASK_VIEW_FULL
    ) -> task_pb2.Task:
        """The caller's task; NOT_FOUND if it does not exist or belongs to someone else."""
        snapshot = await self.snapshot(task_id, steps=view != task_pb2.TASK_VIEW_BASIC)
        if snapshot is None or not self.visible(snapshot.task, tenant, owner):
            raise not_found(task_id)
        return snapshot.task

    async def get_awaiting_approval(
        self, task_id: str, *, tenant: str, view: int = task_pb2.TASK_VIEW_FULL
    ) -> task_pb2.Task:
        """For an approver of this domain (scope checked by the caller): a task of the tenant that
        waits for an approval; anything else is NOT_FOUND."""
        snapshot = await self.snapshot(task_id, steps=view != task_pb2.TASK_VIEW_BASIC)
        if snapshot is None or not self._awaits_approval(snapshot.task, tenant):
            raise not_found(task_id)
        return snapshot.task

    def _awaits_approval(self, task: task_pb2.Task, tenant: str) -> bool:
        return (
            task.tenant == tenant
            and task.domain == self.domain
            and task.state == INPUT_REQUIRED
            and task.pending_action.kind in APPROVAL_KINDS
        )

    async def list_tasks(
        self,
        *,
        tenant: str,
        owner: str,
        states: Iterable[int] = (),
        session_id: str = "",
        page_size: int = 0,
        page_token: str = "",
        view: int = task_pb2.TASK_VIEW_BASIC,
    ) -> TaskPage:
        """The owner's tasks in this domain, newest first, optionally only some states / one session."""
        wanted = frozenset(states)
        filters = filter_fingerprint(sorted(wanted), session_id)

        def keep(task: task_pb2.Task) -> bool:
            return (
                self.visible(task, tenant, owner)
                and (not wanted or task.state in wanted)
                and (not session_id or task.session_id == session_id)
            )

        indexes = [keys.owner_tasks(self.domain, shard, tenant, owner) for shard in range(self.config.shards)]
        return await self._page(indexes, "owner", filters, keep, page_size, page_token, view)

    async def list_awaiting_approval(
        self, *, tenant: str, page_size: int = 0, page_token: str = "", view: int = task_pb2.TASK_VIEW_BASIC
    ) -> TaskPage:
        """For approvers (scope checked by the caller): the tenant's tasks of this domain waiting for
        an approval, newest first."""
        return await self._page(
            [keys.awaiting_approval(tenant, self.domain)],
            "approval",
            filter_fingerprint(tenant),
            lambda task: self._awaits_approval(task, tenant),
            page_size,
            page_token,
            view,
        )

    async def _page(
        self,
        indexes: Sequence[str],
        listing: str,
        filters: str,
        keep: Any,
        requested_size: int,
        page_token: str,
        view: int,
    ) -> TaskPage:
        """One page over task indexes (an owner's is one sorted set per shard, merged here: members
        sort newest first across all of them, so a member is the cursor of the merged order)."""
        size = pages.page_size(requested_size)
        cursor = decode_page_token(page_token, listing, filters) if page_token else ""
        found: list[task_pb2.Task] = []
        gone: dict[str, list[str]] = {}
        budget = max(4 * size, 200)  # members examined per call: a sparse filter returns short pages
        scanned = 0
        exhausted = False
        with_steps = view == task_pb2.TASK_VIEW_FULL
        while len(found) < size and scanned < budget:
            batch_size = min(max(size - len(found), 16) * 2, 256)
            pipe = self.redis.pipeline(transaction=False)
            for index in indexes:
                pipe.zrange(
                    index,
                    f"({cursor}" if cursor else "+",
                    "-",
                    desc=True,
                    bylex=True,
                    offset=0,
                    num=batch_size,
                )
            with redis_errors("listing tasks"):
                replies: Any = await pipe.execute()
            # The next `batch_size` members of the merged order are among each index's next ones.
            merged = sorted(
                (
                    (codec.as_text(m), index)
                    for index, members in zip(indexes, replies, strict=True)
                    for m in members
                ),
                reverse=True,
            )[:batch_size]
            if not merged:
                exhausted = True
                break
            snapshots = await self._load([pages.member_task_id(m) for m, _ in merged], with_steps)
            for (member, index), snapshot in zip(merged, snapshots, strict=True):
                cursor = member
                scanned += 1
                if snapshot is None or member != pages.index_member(
                    millis_of(snapshot.task.create_time), snapshot.task.task_id
                ):
                    gone.setdefault(index, []).append(member)  # expired, or not a member we wrote
                elif keep(snapshot.task):
                    found.append(snapshot.task)
                    if len(found) == size:
                        break
            if len(merged) < batch_size and cursor == merged[-1][0]:
                exhausted = True
                break
        if gone:
            pipe = self.redis.pipeline(transaction=False)
            for index, members in gone.items():
                pipe.zrem(index, *members)
            with redis_errors("cleaning a task index"):
                await pipe.execute()
        token = "" if exhausted else encode_page_token(listing, filters, cursor)
        return TaskPage(found, token)

    async def _load(self, task_ids_: Sequence[str], with_steps: bool) -> list[TaskSnapshot | None]:
        pipe = self.redis.pipeline(transaction=False)
        readable = []
        for task_id in task_ids_:
            task_keys = self.task_keys(task_id)
            readable.append(task_keys is not None)
            if task_keys is None:
                continue
            if with_steps:
                pipe.hgetall(task_keys[0])
            else:
                pipe.hmget(task_keys[0], SNAPSHOT_FIELDS)
        with redis_errors("reading tasks"):
            replies = iter(await pipe.execute() if len(pipe) else [])
        loaded: list[TaskSnapshot | None] = []
        for task_id, ok in zip(task_ids_, readable, strict=True):
            reply = next(replies) if ok else None
            fields = reply if with_steps or reply is None else _named(reply)
            loaded.append(decode_snapshot(task_id, fields) if fields else None)
        return loaded

    # -- changes for callers -----------------------------------------------------------------

    async def cancel(self, task_id: str, *, tenant: str, owner: str, reason: str = "") -> task_pb2.Task:
        """Cancel the caller's unfinished task.

        A task with a live attempt gets a cancel request that its worker notices at its next
        checkpoint (within one step); a queued, paused or orphaned task is CANCELED at once.
        A finished task is FAILED_PRECONDITION (INVALID_STATE).
        """
        why = reason or "canceled by its owner"
        for _ in range(CAS_RETRIES):
            snapshot = await self.snapshot(task_id)
            if snapshot is None or not self.visible(snapshot.task, tenant, owner):
                raise not_found(task_id)
            task = snapshot.task
            check_transition(task_id, task.state, CANCELED)
            now = now_ms()
            if snapshot.running and snapshot.lease_alive:
                if snapshot.cancel:
                    return task
                task.status_message = f"cancel requested: {why}"
                task.update_time.CopyFrom(timestamp(now))
                result = await self.commit(
                    task_id,
                    Patch(
                        guard="rev",
                        guard_value=str(snapshot.rev),
                        fields={Field.CANCEL: why, Field.MESSAGE: task.status_message, Field.UPDATED: now},
                        events=[status_event(task)],
                    ),
                )
                if result.ok:
                    task.last_event_id = result.last_event_id
                    return task
                continue
            done = finish(
                task,
                CANCELED,
                stop_reason=task_pb2.STOP_REASON_CANCELED,
                message=why,
                now=now,
                retention_ms=snapshot.retention_ms or self.config.retention_ms,
            )
            if await self._commit_finished(task, done, snapshot):
                return done
        raise _contention(task_id)

    async def _commit_finished(
        self, task: task_pb2.Task, done: task_pb2.Task, snapshot: TaskSnapshot
    ) -> bool:
        """An API-side terminal change (cancel, expiry) guarded by the revision read, and what follows
        it; False when the task changed meanwhile (the caller reads it again)."""
        result = await self.commit(done.task_id, self.terminal_patch(done, snapshot, guard="rev"))
        if not result.ok:
            return False
        done.last_event_id = result.last_event_id
        await self.forget_pause(task)
        record_finished(self.domain, done.state)
        return True

    def terminal_patch(
        self, done: task_pb2.Task, snapshot: TaskSnapshot, *, guard: Literal["rev", "fence"], value: str = ""
    ) -> Patch:
        """The change that ends a task: record, status event, lease released, retention TTL."""
        return Patch(
            guard=guard,
            guard_value=value or str(snapshot.rev),
            task=done,
            delete=(Field.RUNNING, Field.CANCEL, *RESUMPTION_FIELDS),
            events=[status_event(done)],
            lease="release",
            ttl_ms=millis_of(done.expire_time) - millis_of(done.end_time),
        )

    # -- the indexes of paused tasks (approvers, expiry) --------------------------------------

    async def remember_pause(self, task: task_pb2.Task) -> None:
        """Index a task about to pause: in the approvers' view and/or by expiry. Written BEFORE the
        record changes, so a crash in between leaves at most an entry readers skip."""
        pending = task.pending_action
        pipe = self.redis.pipeline(transaction=False)
        if pending.kind in APPROVAL_KINDS:
            index = keys.awaiting_approval(task.tenant, self.domain)
            pipe.zadd(index, {pages.index_member(millis_of(task.create_time), task.task_id): 0})
            pipe.pexpire(index, int(self.config.index_ttl_s * 1000))
        if pending.HasField("expire_time"):
            pipe.zadd(keys.pending_expiry(self.domain), {task.task_id: millis_of(pending.expire_time)})
        if len(pipe):
            with redis_errors(f"indexing paused task {task.task_id}"):
                await pipe.execute()

    async def forget_pause(self, task: task_pb2.Task) -> None:
        """Drop a task that no longer waits from the pause indexes (best effort: readers re-check)."""
        if task.state != INPUT_REQUIRED:
            return
        pipe = self.redis.pipeline(transaction=False)
        pipe.zrem(
            keys.awaiting_approval(task.tenant, self.domain),
            pages.index_member(millis_of(task.create_time), task.task_id),
        )
        pipe.zrem(keys.pending_expiry(self.domain), task.task_id)
        try:
            with redis_errors(f"unindexing task {task.task_id}"):
                await pipe.execute()
        except Exception:  # the record is already right; a stale index entry is skipped on read
            log.warning("could not drop task from the pause indexes", extra={"task_id": task.task_id})

    async def expire_pending(self, task_id: str, now: int | None = None) -> task_pb2.Task | None:
        """Fail a paused task whose pending action expired (STOP_REASON_EXPIRED); None if it is not
        (or no longer) such a task."""
        for _ in range(CAS_RETRIES):
            snapshot = await self.snapshot(task_id)
            if snapshot is None:
                return None
            task = snapshot.task
            at = now_ms() if now is None else now
            if task.state != INPUT_REQUIRED or not task.pending_action.HasField("expire_time"):
                return None
            if millis_of(task.pending_action.expire_time) > at:
                return None
            message, error = expiry_failure(task)
            done = finish(
                task,
                FAILED,
                stop_reason=task_pb2.STOP_REASON_EXPIRED,
                message=message,
                now=at,
                retention_ms=snapshot.retention_ms or self.config.retention_ms,
            )
            done.error.CopyFrom(error)
            if await self._commit_finished(task, done, snapshot):
                return done
        raise _contention(task_id)


def record_finished(domain: str, state: int) -> None:
    _finished_counter(domain, state).inc()


@functools.lru_cache(maxsize=1024)  # domains x states; labels() takes a lock and a dict lookup each time
def _finished_counter(domain: str, state: int) -> Any:
    return metrics.TASKS_FINISHED.labels(domain=domain, state=state_name(state))


def expiry_failure(task: task_pb2.Task) -> tuple[str, task_pb2.TaskError]:
    """(status message, error) of a paused task whose pending action expired."""
    message = f"{_pending_what(task.pending_action)} expired before anyone answered"
    error = task_pb2.TaskError(
        reason="EXPIRED", message=message, metadata={"action_id": task.pending_action.action_id}
    )
    return message, error


def _pending_what(pending: task_pb2.PendingAction) -> str:
    if pending.kind == task_pb2.PENDING_ACTION_KIND_INPUT:
        return "the request for input"
    if pending.tool_name:
        return f"the approval of {pending.tool_name}"
    return "the pending approval"


def _contention(task_id: str) -> Aborted:
    return Aborted(
        f"task {task_id} changed concurrently too often; retry",
        reason=errors_pb2.ERROR_REASON_IN_FLIGHT,
        metadata={"task_id": task_id},
        retry_after=0.1,
    )


_SNAPSHOT_FIELD_NAMES = [name.encode() for name in SNAPSHOT_FIELDS]


def _named(values: Sequence[bytes | None]) -> dict[bytes, bytes]:
    """An HMGET of SNAPSHOT_FIELDS as a hash (absent fields left out)."""
    named = zip(_SNAPSHOT_FIELD_NAMES, values, strict=True)
    return {name: value for name, value in named if value is not None}


def refuse_state(task: task_pb2.Task, what: str) -> FailedPrecondition:
    """FAILED_PRECONDITION (INVALID_STATE) for an operation the task's state does not allow."""
    return FailedPrecondition(
        f"task {task.task_id} is {state_name(task.state)}; {what}",
        reason=errors_pb2.ERROR_REASON_INVALID_STATE,
        metadata={"task_id": task.task_id, "state": state_name(task.state)},
    )
