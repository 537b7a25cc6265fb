"""TaskSweeper: queues inline runs whose process died, expires pending actions.

Submitting, resuming and redriving a task queue it in the same script that
changes it (memory/tasks/admission.py, answers.py, dead_letters.py), so nothing is
left half-done there. What
still needs a sweeper:

- An inline Run registers its task in the shard's outbox when it is created
  and leaves it (atomically) when it ends, pauses or hands the task to the
  queue. A task still there after the claim idle timeout is either still
  running (live lease: keep it, look again later) or its process died: then
  the recover script queues it (one script: checked and queued at once, so
  several sweepers never queue it twice). Gone or finished tasks are dropped.
- Paused tasks whose pending action expired are failed (STOP_REASON_EXPIRED), after the
  queue's `settle_failed` (compensations of their completed side effects).

Every worker runs it periodically (TaskWorker); running it on several replicas
at once is safe.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

from agentmesh.kit import metrics
from agentmesh.kit.errors import DataLoss
from agentmesh.v1 import task_pb2
from memory import keys
from memory.codec import as_text
from memory.connection import redis_errors
from memory.tasks import scripts, states
from memory.tasks.entries import entry_record
from memory.tasks.queue import TaskQueue
from memory.tasks.records import millis_of, now_ms
from memory.tasks.store import expiry_failure

log = logging.getLogger(__name__)

_BATCH = 100


@dataclass(slots=True)
class SweepReport:
    enqueued: int = 0
    dropped: int = 0
    kept: int = 0
    expired: int = 0


class TaskSweeper:
    def __init__(
        self, queue: TaskQueue, *, grace_s: float | None = None, clock: Callable[[], int] = now_ms
    ) -> None:
        """`clock`: milliseconds since the epoch (tests pass a controllable one)."""
        self.clock = clock
        self.queue = queue
        self.store = queue.store
        self.grace_ms = int((queue.config.claim_idle_timeout_s if grace_s is None else grace_s) * 1000)
        self._recover = queue.redis.register_script(scripts.RECOVER)

    async def sweep(self) -> SweepReport:
        report = SweepReport()
        for shard in self.queue.shards():
            await self._sweep_outbox(shard, report)
        await self._expire_pending(report)
        return report

    async def _sweep_outbox(self, shard: int, report: SweepReport) -> None:
        outbox = keys.outbox(self.queue.domain, shard)
        with redis_errors("reading the task outbox"):
            due = await self.queue.redis.zrangebyscore(
                outbox, "-inf", now_ms() - self.grace_ms, start=0, num=_BATCH
            )
        for raw in due:
            task_id = raw.decode() if isinstance(raw, bytes) else str(raw)
            try:
                snapshot = await self.store.snapshot(task_id)
            except DataLoss:  # one unreadable task must not stop the sweep of the others
                log.error("outbox names an unreadable task; dropped", extra={"task_id": task_id})
                snapshot = None
            if snapshot is None:
                with redis_errors("cleaning the task outbox"):
                    await self.queue.redis.zrem(outbox, task_id)
                report.dropped += 1
                continue
            outcome = await self._recover_inline(task_id, snapshot.carrier)
            if outcome == "enqueued":
                report.enqueued += 1
                metrics.TASK_OUTBOX_REPAIRS.labels(domain=self.queue.domain).inc()
                log.info("queued an inline run whose process was lost", extra={"task_id": task_id})
            elif outcome == "kept":
                report.kept += 1
            elif outcome == "dropped":
                report.dropped += 1

    async def _recover_inline(self, task_id: str, carrier: dict[str, str]) -> str:
        """An inline run in the outbox (scripts.RECOVER): 'enqueued' if its process died before it
        ended; 'kept' (lease alive), 'dropped' or 'gone' otherwise."""
        task_keys = self.store.task_keys(task_id)
        if task_keys is None:
            return "dropped"
        shard = self.queue.shard_of(task_id)
        with redis_errors(f"recovering task {task_id}"):
            outcome = await self._recover(
                keys=[
                    keys.outbox(self.queue.domain, shard),
                    keys.queue(self.queue.domain, shard),
                    task_keys[0],
                ],
                args=[task_id, now_ms(), entry_record(carrier)],
            )
        return as_text(outcome)

    async def _settle_expired(self, task_id: str, now: int) -> None:
        """Before failing an expired pause: the queue's `settle_failed` (the agent runtime's
        compensations). Once expired, a pause can only fail (ResumeTask refuses it), so what the
        settlement records stands; a sweeper on another replica doing the same concurrently makes
        the same calls under the same idempotency keys, and one record of each step wins."""
        if self.queue.settlement.hook is None:
            return
        snapshot = await self.store.snapshot(task_id)
        if snapshot is None:
            return
        task = snapshot.task
        pending = task.pending_action
        if task.state != states.INPUT_REQUIRED or not pending.HasField("expire_time"):
            return
        if millis_of(pending.expire_time) > now:
            return
        message, error = expiry_failure(task)
        await self.queue.settlement.settle(snapshot, task_pb2.STOP_REASON_EXPIRED, error, message)

    async def _expire_pending(self, report: SweepReport) -> None:
        index = keys.pending_expiry(self.queue.domain)
        now = self.clock()
        with redis_errors("reading pending expiries"):
            due = await self.queue.redis.zrangebyscore(index, "-inf", now, start=0, num=_BATCH)
        for raw in due:
            task_id = raw.decode() if isinstance(raw, bytes) else str(raw)
            try:
                await self._settle_expired(task_id, now)
                if await self.store.expire_pending(task_id, now) is not None:
                    report.expired += 1
                    continue
                snapshot = await self.store.snapshot(task_id)
            except DataLoss:
                log.error("paused task unreadable; dropped from the expiry index", extra={"task_id": task_id})
                snapshot = None
            if snapshot is None or snapshot.task.state != states.INPUT_REQUIRED:
                with redis_errors("cleaning pending expiries"):
                    await self.queue.redis.zrem(index, task_id)
