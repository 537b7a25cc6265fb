"""Delivery: handing a shard's queue entries to workers and beginning an attempt on each task.

Each shard is a Redis stream read by one consumer group named after the domain. A worker
claims the next entry and begins an attempt on its task in one script (scripts `begin`:
attempt number = fencing token, lease, WORKING event), and waits on a blocking read only when
the shard was empty. An entry of a dead (or stalled) worker stays pending; after the claim idle
timeout another worker reclaims it (XAUTOCLAIM) and the start script sees the dead attempt,
counts a failure and resumes from the last checkpoint. An entry whose task failed too often, or
that cannot be read, goes to the dead letters (memory/tasks/dead_letters.py).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from typing import Any

import redis.exceptions as rexc

from agentmesh.kit import metrics
from agentmesh.kit.errors import DataLoss
from agentmesh.v1 import task_pb2
from memory import codec, keys
from memory.codec import as_text
from memory.connection import redis_errors
from memory.tasks import ids, scripts
from memory.tasks.dead_letters import DeadLetters
from memory.tasks.entries import QueueEntry, queue_entry
from memory.tasks.events import encode_event
from memory.tasks.execution import Attempt
from memory.tasks.records import decode_snapshot, new_id, pairs
from memory.tasks.store import TaskStore

log = logging.getLogger(__name__)

_RESUMED_MESSAGE = "resumed from the last checkpoint after its worker was lost"


class TaskDelivery:
    """Hands the entries of one domain's queue (consumer group `group`) to workers."""

    def __init__(self, store: TaskStore, dead_letters: DeadLetters, *, group: str) -> None:
        self.store = store
        self.redis = store.redis
        self.domain = store.domain
        self.config = store.config
        self.group = group
        self.dead_letters = dead_letters
        redis = store.redis
        self._claim = redis.register_script(scripts.CLAIM)
        self._start = redis.register_script(scripts.START)
        self._requeue = redis.register_script(scripts.REQUEUE)
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

    async def ensure_groups(self) -> None:
        """Create the consumer group of every shard (idempotent; from the start of the stream)."""
        for shard in range(self.config.shards):
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
        status = as_text(reply[0])
        if status in {"empty", "settled"}:
            return None
        entry_id = as_text(reply[1])
        if status == "unreadable":
            await self.dead_letters.park_unreadable(shard, entry_id, codec.as_bytes(reply[2]) or b"")
            return None
        entry = queue_entry(shard, entry_id, as_text(reply[2]), codec.as_bytes(reply[3]) or b"")
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
            entry_id = as_text(entry_id)
            if not fields:  # deleted after it was delivered (XAUTOCLAIM reports it); nothing to run
                continue
            task_id = as_text(fields.get(b"t", b""))
            record = fields.get(b"e") or b""
            if ids.shard_of(task_id) != shard:
                await self.dead_letters.park_unreadable(shard, entry_id, record)
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
            await self.dead_letters.park_unreadable(entry.shard, entry.entry_id, entry.raw)
            return None
        start_id = new_id()
        with redis_errors(f"starting task {entry.task_id}"):
            reply = await self._start(
                keys=[task_keys[0], task_keys[1], keys.queue(self.domain, entry.shard)],
                args=[start_id, *self._begin_args, self.group, entry.entry_id],
            )
        return await self._begun(entry, consumer, start_id, as_text(reply[0]), reply[1:])

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
                await self.dead_letters.move(entry.shard, entry.entry_id, task_id, str(exc), 0)
                return None
            snapshot.lease_ttl_ms = self.config.lease_ms  # just taken
            if as_text(reply[2]) == "1":
                metrics.TASK_RECOVERIES.labels(domain=self.domain).inc()
            return Attempt(self, snapshot, start_id=start_id, entry=entry, consumer=consumer)
        if status in {"busy", "missing", "idle"}:  # held by a live attempt, or settled by the script
            return None
        if status == "corrupt":
            reason = f"task {task_id}: the record is corrupt"
            await self.dead_letters.move(entry.shard, entry.entry_id, task_id, reason, 0)
            return None
        if status == "poison":
            await self.dead_letters.fail_task(entry, decode_snapshot(task_id, _written(reply)))
            return None
        raise DataLoss(f"task {task_id}: unexpected start answer {status!r}")

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


def _written(reply: Sequence[Any]) -> dict[bytes, bytes]:
    """A task hash as `begin` saw it, with what it wrote on top."""
    fields = pairs(reply[0])
    fields.update(pairs(reply[1]))
    return fields
